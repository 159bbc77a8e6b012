"""A cheaper output layer, as an option: `scenecap train` with a vocabulary cap (--max-vocab) and a low-rank
output projection (model.output_rank), and `scenecap import-seed --vocab-limit N`.

At the original's dimensions the decoder step is memory-bound on its 26,556-word output layer; both options shrink
it. Each is checked end to end: trained (or imported), exported, converted to float32 and captioned on the edge
runtime, the tokens identical to the Keras (or the original's own) computation.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from seed_helpers import arabic_index_word
from test_seed_import import Original, without_end, write_images

from scenecap import ScenecapError
from scenecap.convert.safe_pickle import load_tokenizer
from scenecap.convert.seed_import import SeedImportOptions, import_seed, kept_ids, read_seed, seed_vocab
from scenecap.convert.seed_layout import (
    SeedDims,
    keep_vocab_ids,
    random_seed_arrays,
    seed_layout,
    write_npy_tree,
    write_random_backbone,
    write_seed_tokenizer,
)
from scenecap.edge.captioner import Captioner
from scenecap.edge.images import load_image
from scenecap.edge.modelinfo import read_model

RANK = 8
MAX_VOCAB = 30  # the synthetic scenes' captions use ~35 words: the rarest few become <unk>
SMALL = SeedDims(vocab_size=500, alpha=0.35, image_size=96)  # as tests/test_seed_import.py
LIMIT = 120


def _fc_weight_shapes(model_file) -> list[tuple[int, ...]]:
    info = read_model(model_file)
    return [tuple(info.tensor(op.inputs[1]).shape) for op in info.operators if op.name == "FULLY_CONNECTED"]


def _first_step_logits(cap: Captioner, image: np.ndarray) -> np.ndarray:
    with cap.start(cap.encode(image)) as session:
        logits, _, _ = session.step(np.array([cap.vocab.start], np.int32), session.hidden0())
    return logits


# --- scenecap train: --max-vocab and model.output_rank -------------------------------------------------------


@pytest.fixture(scope="module")
def rank_bundle(tmp_path_factory):
    """A tiny captioner with a rank-8 output projection and a 30-token vocabulary: 2 epochs, exported, float32."""
    from scenecap.convert.run import ConvertOptions, convert
    from scenecap.train.config import TrainConfig
    from scenecap.train.export import export_run
    from scenecap.train.model import ModelConfig
    from scenecap.train.synthetic import generate
    from scenecap.train.trainer import run

    root = tmp_path_factory.mktemp("output_rank")
    data = generate(root / "data", 240, 24, 24, seed=31, lang="en", img_size=64, style="classic")
    model = ModelConfig(vocab_size=0, image_size=64, alpha=0.35, embed_dim=64, units=128, attention_units=64,
                        fc_units=128, max_length=32, feature_stride=8, output_rank=RANK)
    cfg = TrainConfig(train=str(data / "captions_train.json"), val=str(data / "captions_val.json"),
                      out=str(root / "run"), epochs=2, batch_size=32, learning_rate=3e-3, seed=1,
                      max_vocab=MAX_VOCAB, tensorboard=False, val_caption_images=0, model=model)
    run_dir = run(cfg, progress=False)
    export = export_run(run_dir, root / "export")
    bundle = root / "bundle"
    convert(ConvertOptions(export=str(export), out=str(bundle), encoder_quant="float32", decoder_quant="float32",
                           calibration_count=16, force=True))
    return {"run": run_dir, "bundle": bundle, "data": data}


def test_low_rank_output_layer_gives_the_keras_tokens_on_the_edge(rank_bundle):
    from scenecap.edge.preprocess import prepare
    from scenecap.train.datasets import load_coco
    from scenecap.train.trainer import load_trained

    model, cfg, vocab = load_trained(rank_bundle["run"])
    assert model.fc_rank.kernel.shape == (128, RANK) and model.fc2.kernel.shape == (RANK, MAX_VOCAB)
    cap = Captioner.load(rank_bundle["bundle"])
    for s in load_coco(rank_bundle["data"] / "captions_test.json")[:8]:
        image = prepare(load_image(s.image), cfg.preprocess)
        keras_tokens = model.greedy_caption(image, vocab.start, vocab.end)
        assert cap.caption(load_image(s.image)).tokens == [t for t in keras_tokens if t != vocab.end], s.image
        features, keys = model.encode(image[None])
        hidden = np.zeros((1, cfg.model.units), np.float32)
        keras_logits, _, _ = model.step(np.array([vocab.start], np.int32), hidden, features, keys)
        np.testing.assert_allclose(_first_step_logits(cap, image), np.asarray(keras_logits), rtol=1e-4, atol=1e-4)


def test_low_rank_and_capped_vocabulary_reach_the_bundle(rank_bundle):
    from scenecap.train.datasets import load_coco
    from scenecap.train.text import tokenize

    cap = Captioner.load(rank_bundle["bundle"])
    m = cap.bundle.manifest
    assert len(cap.vocab) == MAX_VOCAB and m.model.vocab_size == MAX_VOCAB
    assert m.model.output_rank == RANK and m.training["model"]["output_rank"] == RANK
    assert m.training["max_vocab"] == MAX_VOCAB
    # The decoder step's output layer is two matmuls, 128 -> 8 -> 30; no 128 x 30 one is left.
    shapes = _fc_weight_shapes(rank_bundle["bundle"] / m.models["decoder_step"].file)
    assert (RANK, 128) in shapes and (MAX_VOCAB, RANK) in shapes and (MAX_VOCAB, 128) not in shapes
    assert _first_step_logits(cap, np.zeros((64, 64, 3), np.uint8)).shape == (1, MAX_VOCAB)
    words = {w for s in load_coco(rank_bundle["data"] / "captions_train.json") for c in s.captions
             for w in tokenize(c)}
    dropped = sorted(words - set(cap.vocab.tokens))
    assert dropped, "the cap should leave some of the synthetic scenes' words out"
    v = cap.vocab
    assert v.encode([dropped[0], v.tokens[4]]) == [v.start, v.unk, 4, v.end]


def test_a_bad_output_rank_is_one_line():
    from scenecap.train.model import ModelConfig, build

    for bad in (-1, 2.5, True):
        with pytest.raises(ScenecapError) as e:
            build(ModelConfig(vocab_size=10, image_size=32, output_rank=bad))
        assert "\n" not in str(e.value) and f"output_rank {bad!r}" in str(e.value)


# --- scenecap import-seed --vocab-limit ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_seed(tmp_path_factory):
    """The seed's files at small dimensions (ids by descending count, as Keras numbers them), imported with
    --vocab-limit 120 into a float32 bundle."""
    root = tmp_path_factory.mktemp("vocab_limit")
    index_word = arabic_index_word(SMALL.vocab_size)
    counts = {w: 10_000 - i for i, w in index_word.items()}
    weights = write_npy_tree(root / "canesee", random_seed_arrays(SMALL, seed=21))
    tokenizer = write_seed_tokenizer(root / "tokenizer.pickle", index_word, counts=counts)
    backbone = write_random_backbone(root / "mobilenet_v2_0.35_96.weights.h5", SMALL, seed=3)
    images = write_images(root / "images", 4, SMALL.image_size, seed=5)
    bundle = import_seed(SeedImportOptions(weights=str(weights), tokenizer=str(tokenizer), out=str(root / "bundle"),
                                           backbone_weights=str(backbone), dims=SMALL, vocab_limit=LIMIT))
    return {"root": root, "weights": weights, "tokenizer": tokenizer, "backbone": backbone, "images": images,
            "bundle": bundle, "index_word": index_word}


def test_vocab_limit_gives_the_originals_tokens_among_the_kept_ids(limited_seed):
    cap = Captioner.load(limited_seed["bundle"])
    m = cap.bundle.manifest
    iw = limited_seed["index_word"]
    assert len(cap.vocab) == LIMIT and m.model.vocab_size == LIMIT
    assert cap.vocab.tokens == [iw[i] for i in range(LIMIT)]  # the commonest ids are the lowest
    assert m.tokens == {"pad": 0, "unk": 1, "start": 2, "end": 3}
    assert m.training["vocab_limit"] == LIMIT and m.provenance["recipe"].endswith(f"--vocab-limit {LIMIT}")
    v = cap.vocab
    assert v.encode([iw[LIMIT + 10], iw[7]]) == [v.start, v.unk, 7, v.end]  # outside the limit: <unk>
    # The original's own computation over the kept embedding rows and output columns.
    original = Original(limited_seed["weights"], limited_seed["backbone"], SMALL)
    original.emb = original.emb[:LIMIT]
    original.fc2 = [original.fc2[0][:, :LIMIT], original.fc2[1][:LIMIT]]
    theirs = []
    for path in limited_seed["images"]:
        features = original.features(path)
        theirs.append(original.caption(features, 2, 3))
        assert cap.caption(load_image(path)).tokens == without_end(theirs[-1])
        logits, _ = original.decoder(2, features, np.zeros((1, SMALL.units), np.float32))
        np.testing.assert_allclose(_first_step_logits(cap, load_image(path)), logits, rtol=1e-4, atol=1e-4)
    assert len({tuple(t) for t in theirs}) >= 2


def test_kept_ids_follow_word_counts_and_always_keep_the_specials(tmp_path):
    index_word = arabic_index_word(20)
    counts = {w: 100 - i for i, w in index_word.items()}
    counts[index_word[15]] = 1000  # should the counts disagree with the ids, the counts decide
    tok = load_tokenizer(write_seed_tokenizer(tmp_path / "t.pickle", index_word, counts=counts))
    vocab = seed_vocab(tok)
    assert kept_ids(tok, vocab, 7) == [0, 1, 2, 3, 4, 5, 15]
    assert kept_ids(tok, vocab, 5) == [0, 1, 2, 3, 15]
    assert kept_ids(tok, vocab, len(vocab)) == list(range(len(vocab)))


def test_keep_vocab_ids_cuts_the_embedding_rows_and_output_columns_only():
    dims = SeedDims(vocab_size=40, alpha=0.35, image_size=96, units=16, attention_units=8, fc_units=12, embed_dim=6)
    arrays = random_seed_arrays(dims, seed=2)
    ids = [0, 1, 2, 3, 9, 30]
    cut = keep_vocab_ids(arrays, ids, dims)
    for spec in seed_layout(dims):
        a, b = arrays[spec.key], cut[spec.key]
        if spec.layer == "embedding":
            np.testing.assert_array_equal(b, a[ids])
        elif spec.layer == "fc2":
            np.testing.assert_array_equal(b, a[..., ids])
        else:
            assert b is a


def test_without_vocab_limit_every_id_stays(limited_seed):
    opts = SeedImportOptions(weights=str(limited_seed["weights"]), tokenizer=str(limited_seed["tokenizer"]),
                             out="unused", dims=SMALL)
    seed = read_seed(opts)
    assert len(seed.vocab) == SMALL.vocab_size == seed.dims.vocab_size
    assert seed.arrays["decoder_layer_weights/layer_3_dense_2_weights_0"].shape == (SMALL.fc_units, SMALL.vocab_size)


@pytest.mark.parametrize("limit", [4, 501, 0, 2.5, True])
def test_a_bad_vocab_limit_is_one_line_before_anything_is_built(limited_seed, tmp_path, limit):
    with pytest.raises(ScenecapError) as e:
        import_seed(SeedImportOptions(weights=str(limited_seed["weights"]), tokenizer=str(limited_seed["tokenizer"]),
                                      out=str(tmp_path / "b"), backbone_weights="none", dims=SMALL,
                                      vocab_limit=limit))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--vocab-limit {limit!r}: expected") and "5" in msg and "500" in msg
    assert not (tmp_path / "b").exists()


def test_the_command_line_refuses_a_bad_vocab_limit_in_one_line(limited_seed, tmp_path):
    r = subprocess.run([sys.executable, "-m", "scenecap", "import-seed", "--weights", str(limited_seed["weights"]),
                        "--tokenizer", str(limited_seed["tokenizer"]), "--out", str(tmp_path / "b"),
                        "--backbone-weights", str(limited_seed["backbone"]), "--vocab-limit", "4"],
                       capture_output=True, text=True, encoding="utf-8")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("scenecap: error: --vocab-limit 4: expected a whole number from 5 "
                                                 "(the 4 special tokens and one word) to 500 (the tokenizer's ids)")
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()
