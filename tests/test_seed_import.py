"""Bringing the replaced system over: its per-layer weights and tokenizer -> a bundle with the same captions.

The trained arrays are not public, so the seed's files are written here with random seeded values under the exact
original names and shapes (a 500-word vocabulary and a small backbone keep it fast; one slow run uses the full
original dimensions). The original's inference is re-implemented below from the seed's README, eagerly,
step by step, and the imported float32 bundle must produce the very same tokens on the edge runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from seed_helpers import arabic_index_word, real_tokenizer

from scenecap import ScenecapError
from scenecap.convert.seed_import import SeedImportOptions, import_seed, read_seed_weights
from scenecap.convert.seed_layout import (
    DECODER_DIR,
    ENCODER_DIR,
    SeedDims,
    locate_weights,
    random_seed_arrays,
    seed_layout,
    write_keras_h5,
    write_npy_tree,
    write_random_backbone,
    write_seed_tokenizer,
)
from scenecap.edge.captioner import Captioner
from scenecap.edge.images import load_image

# The original's decoder at its real sizes, a 500-id vocabulary, and a small backbone (MobileNetV2 0.35 at 96 px:
# 3x3 locations x 1280 features) so the whole import-convert-caption cycle stays well under a minute.
SMALL = SeedDims(vocab_size=500, alpha=0.35, image_size=96)
ARABIC = range(0x0600, 0x0700)


def is_arabic(text: str) -> bool:
    letters = [c for c in text if not c.isspace()]
    return bool(letters) and sum(ord(c) in ARABIC for c in letters) / len(letters) > 0.9


# --- the original's inference, re-implemented from the seed README ---------------------------------------------


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def original_gru_step(x, h_prev, kernel, recurrent, bias):
    """Keras GRU, reset_after=True, gates side by side in the order z, r, h; bias rows: input, recurrent."""
    u = h_prev.shape[-1]
    mx = x @ kernel + bias[0]
    mh = h_prev @ recurrent + bias[1]
    z = sigmoid(mx[:, :u] + mh[:, :u])
    r = sigmoid(mx[:, u : 2 * u] + mh[:, u : 2 * u])
    hh = np.tanh(mx[:, 2 * u :] + r * mh[:, 2 * u :])
    return z * h_prev + (1.0 - z) * hh


class Original:
    """The replaced system's inference (../shared/seed/README.md), eager, one call per word.

    carry=False is the original: the GRU is called without an initial state, so it restarts from zeros at every
    step and the hidden state it returns only feeds the next step's attention. carry=True is what it was meant
    to do; the test uses it to show the two differ, so the parity check can tell them apart.
    """

    def __init__(self, weights_dir: Path, backbone_h5: Path, dims: SeedDims):
        import keras

        self.dims = dims
        s = dims.image_size
        self.cnn = keras.applications.MobileNetV2(input_shape=(s, s, 3), alpha=dims.alpha, include_top=False,
                                                  weights=str(backbone_h5))
        enc, dec = weights_dir / ENCODER_DIR, weights_dir / DECODER_DIR

        def w(folder, name):
            return np.load(folder / f"{name}.npy")

        self.enc_k, self.enc_b = w(enc, "layer_0_dense_weights_0"), w(enc, "layer_0_dense_weights_1")
        self.emb = w(dec, "layer_0_embedding_weights_0")
        self.gru = [w(dec, f"layer_1_gru_weights_{j}") for j in range(3)]
        self.fc1 = [w(dec, f"layer_2_dense_1_weights_{j}") for j in range(2)]
        self.fc2 = [w(dec, f"layer_3_dense_2_weights_{j}") for j in range(2)]
        self.att = [w(dec, f"layer_4_bahdanau_attention_weights_{j}") for j in range(6)]

    def load_image(self, path: Path):
        import keras
        import tensorflow as tf

        img = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
        img = tf.image.resize(img, (self.dims.image_size, self.dims.image_size))  # bilinear, aspect not kept
        return keras.applications.mobilenet_v2.preprocess_input(img)

    def features(self, path: Path) -> np.ndarray:
        fmap = np.asarray(self.cnn(self.load_image(path)[None], training=False))
        fmap = fmap.reshape(1, -1, fmap.shape[-1])  # 7x7x1792 -> 49 x 1792 at the original size
        return np.maximum(fmap @ self.enc_k + self.enc_b, 0.0)  # encoder: Dense(256) then ReLU

    def decoder(self, token: int, features: np.ndarray, hidden: np.ndarray, carry: bool = False):
        w1k, w1b, w2k, w2b, vk, vb = self.att
        score = np.tanh(features @ w1k + w1b + (hidden @ w2k + w2b)[:, None, :]) @ vk + vb  # [1, L, 1]
        e = np.exp(score - score.max(axis=1, keepdims=True))
        attention = e / e.sum(axis=1, keepdims=True)  # softmax over the locations
        context = (attention * features).sum(axis=1)
        x = np.concatenate([context, self.emb[[token]]], axis=-1)  # [context, embedding]
        h0 = hidden if carry else np.zeros_like(hidden)  # the original passes the GRU no initial_state
        state = original_gru_step(x, h0, *self.gru)
        logits = (state @ self.fc1[0] + self.fc1[1]) @ self.fc2[0] + self.fc2[1]  # fc1 is linear
        return logits, state

    def caption(self, features: np.ndarray, start: int, end: int, carry: bool = False) -> list[int]:
        hidden = np.zeros((1, self.dims.units), np.float32)  # decoder.reset_state()
        token, out = start, []
        for _ in range(self.dims.max_length):
            logits, hidden = self.decoder(token, features, hidden, carry)
            token = int(np.argmax(logits[0]))
            out.append(token)
            if token == end:
                break
        return out


def without_end(tokens: list[int], end: int = 3) -> list[int]:
    """The original appends <end> to its result; a scenecap Caption leaves it out."""
    return tokens[:-1] if tokens and tokens[-1] == end else tokens


def test_reference_gru_is_keras_gru_without_initial_state():
    """The reference's GRU is Keras' own: reset_after=True, z/r/h order, zero state when none is given."""
    import keras

    rng = np.random.default_rng(0)
    gru = keras.layers.GRU(8, return_sequences=True, return_state=True)
    x = rng.normal(size=(1, 1, 6)).astype(np.float32)
    out, state = gru(x)
    gru.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in gru.get_weights()])
    out, state = gru(x)
    k, rk, b = gru.get_weights()
    assert b.shape == (2, 24)  # reset_after=True keeps input and recurrent biases apart
    ours = original_gru_step(x[:, 0], np.zeros((1, 8), np.float32), k, rk, b)
    np.testing.assert_allclose(ours, np.asarray(state), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours, np.asarray(out)[:, 0], rtol=1e-5, atol=1e-6)


# --- the seed's files, written in the original layout ----------------------------------------------------------


def write_images(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    """Smooth colour fields with a few shapes (PNG, lossless), at exactly the model's input size."""
    import cv2

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        img = cv2.resize(rng.integers(0, 256, (5, 5, 3)).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_LINEAR).astype(np.uint8)
        for _ in range(2):
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            x, y, r = (int(v) for v in rng.integers(size // 6, size - size // 6, 3))
            cv2.circle(img, (x, y), max(4, r // 3), c, -1)
        paths.append(folder / f"scene_{k:02d}.png")
        cv2.imwrite(str(paths[-1]), img[:, :, ::-1])
    return paths


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed")
    arrays = random_seed_arrays(SMALL, seed=1)
    weights = write_npy_tree(root / "canesee", arrays)
    tokenizer = write_seed_tokenizer(root / "canesee" / "tokenizer.pickle", arabic_index_word(SMALL.vocab_size))
    backbone = write_random_backbone(root / "mobilenet_v2_0.35_96.weights.h5", SMALL, seed=3)
    images = write_images(root / "images", 5, SMALL.image_size, seed=5)
    calibration = write_images(root / "calibration", 24, SMALL.image_size, seed=6)
    return {"root": root, "arrays": arrays, "weights": weights, "tokenizer": tokenizer, "backbone": backbone,
            "images": images, "calibration": calibration[0].parent}


@pytest.fixture(scope="module")
def imported(seed_files):
    """The import a user runs (float32), keeping the SavedModel to convert the int8 variant from it."""
    root = seed_files["root"]
    t0 = time.perf_counter()
    bundle = import_seed(SeedImportOptions(
        weights=str(seed_files["weights"]), tokenizer=str(seed_files["tokenizer"]), out=str(root / "bundle-f32"),
        backbone_weights=str(seed_files["backbone"]), keep_export=str(root / "export"), dims=SMALL))
    print(f"\nimport at small dimensions: {time.perf_counter() - t0:.1f} s")
    return {"bundle": bundle, "export": root / "export"}


def test_imported_float_bundle_gives_the_originals_tokens(seed_files, imported):
    cap = Captioner.load(imported["bundle"])
    m = cap.bundle.manifest
    assert m.decoder_state == "legacy-zero"
    assert m.tokens == {"pad": 0, "unk": 1, "start": 2, "end": 3}
    assert m.model.vocab_size == SMALL.vocab_size and m.max_length == SMALL.max_length + 1
    assert (m.preprocess.height, m.preprocess.resize, m.preprocess.keep_aspect) == (96, "bilinear", False)

    original = Original(seed_files["weights"], seed_files["backbone"], SMALL)
    ours, theirs, carried = [], [], []
    for path in seed_files["images"]:
        features = original.features(path)
        theirs.append(original.caption(features, 2, 3))
        carried.append(original.caption(features, 2, 3, carry=True))
        c = cap.caption(load_image(path))
        ours.append(c.tokens)
        print(f"{path.name}: {c.text}")
    assert ours == [without_end(t) for t in theirs]
    # The check has teeth: the images get different captions, and carrying the state would change them.
    assert len({tuple(t) for t in theirs}) >= 3
    assert carried != theirs


@pytest.mark.slow  # a second conversion with calibration: about a minute
def test_int8_bundle_agreement_with_float32_is_reported(seed_files, imported):
    from scenecap.convert.run import ConvertOptions, convert

    bundle = convert(ConvertOptions(export=str(imported["export"]), out=str(seed_files["root"] / "bundle-int8"),
                                    encoder_quant="int8", decoder_quant="int8",
                                    calibration_images=str(seed_files["calibration"]), calibration_count=24))
    f32, i8 = Captioner.load(imported["bundle"]), Captioner.load(bundle)
    assert i8.bundle.manifest.decoder_state == "legacy-zero"
    assert i8.bundle.manifest.models["decoder_step"].quant == "int8"
    same_words = total = exact = 0
    for path in seed_files["images"] + sorted(seed_files["calibration"].glob("*.png"))[:5]:
        a, b = f32.caption(load_image(path)), i8.caption(load_image(path))
        same_words += sum(x == y for x, y in zip(a.tokens, b.tokens, strict=False))
        total += max(len(a.tokens), len(b.tokens))
        exact += a.tokens == b.tokens
        assert is_arabic(b.text)
    print(f"\nint8 vs float32 (random seed weights, 10 images): {same_words}/{total} words at the same position "
          f"({same_words / total:.0%}), {exact}/10 captions identical")
    # Random weights have no margin to spare, so int8 drifts; a broken calibration would agree on ~nothing.
    assert same_words / total > 0.3


def test_h5_weight_files_read_as_the_npy_layout(seed_files, tmp_path):
    """The original's Keras .h5 weight files hold the same arrays; either form imports identically."""
    enc, dec = write_keras_h5(tmp_path, seed_files["arrays"])
    desc, found = locate_weights(tmp_path)
    assert enc.name in desc and dec.name in desc
    assert set(found) == {s.key for s in seed_layout(SMALL)}
    _, from_h5 = read_seed_weights(tmp_path, SMALL)
    _, from_npy = read_seed_weights(seed_files["weights"], SMALL)
    for key, a in from_npy.items():
        np.testing.assert_array_equal(from_h5[key], a)


def test_h5_written_by_keras_from_the_original_model_classes_reads_as_the_npy_layout(tmp_path):
    """The original's classes (as in its notebook) saved by Keras' own legacy .h5 writer: names and order match."""
    import h5py
    import keras
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    d = SMALL

    class BahdanauAttention(keras.Model):
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.W1, self.W2, self.V = keras.layers.Dense(units), keras.layers.Dense(units), keras.layers.Dense(1)

        def call(self, features, hidden):
            score = self.V(keras.ops.tanh(self.W1(features) + self.W2(keras.ops.expand_dims(hidden, 1))))
            weights = keras.ops.softmax(score, axis=1)
            return keras.ops.sum(weights * features, axis=1), weights

    class RNNDecoder(keras.Model):
        def __init__(self, embedding_dim, units, vocab_size, **kw):
            super().__init__(**kw)
            self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
            self.gru = keras.layers.GRU(units, return_sequences=True, return_state=True, name="gru")
            self.fc1 = keras.layers.Dense(units, name="dense_1")
            self.fc2 = keras.layers.Dense(vocab_size, name="dense_2")
            self.attention = BahdanauAttention(d.attention_units, name="bahdanau_attention")

        def call(self, x, features, hidden):
            context, _ = self.attention(features, hidden)
            x = keras.ops.concatenate([keras.ops.expand_dims(context, 1), self.embedding(x)], axis=-1)
            output, state = self.gru(x)
            return self.fc2(self.fc1(output[:, 0])), state

    encoder = keras.Sequential([keras.Input((d.locations, d.backbone_channels)),
                                keras.layers.Dense(d.embed_dim, activation="relu", name="dense")])
    decoder = RNNDecoder(d.embed_dim, d.units, d.vocab_size)
    decoder(np.zeros((1, 1), np.int32), np.zeros((1, d.locations, d.embed_dim), np.float32),
            np.zeros((1, d.units), np.float32))
    arrays = random_seed_arrays(d, seed=4)
    enc_specs = [s for s in seed_layout(d) if s.folder == ENCODER_DIR]
    dec_specs = [s for s in seed_layout(d) if s.folder == DECODER_DIR]
    encoder.set_weights([arrays[s.key] for s in enc_specs])
    decoder.set_weights([arrays[s.key] for s in dec_specs])  # file order is the model's weight order
    for model, name in ((encoder, "encoder_weights_100k_ar.h5"), (decoder, "decoder_weights_100k_ar.h5")):
        with h5py.File(tmp_path / name, "w") as f:
            save_weights_to_hdf5_group(f, model)
    _, found = read_seed_weights(tmp_path, d)
    assert set(found) == set(arrays)
    for key, a in arrays.items():
        np.testing.assert_array_equal(found[key], a)


def _broken_copy(seed_files, tmp_path, how: str) -> tuple[Path, str]:
    arrays = dict(seed_files["arrays"])
    if how == "missing":
        del arrays[f"{DECODER_DIR}/layer_1_gru_weights_1"]
        named = ("layer_1_gru_weights_1", "(512, 1536)")
    elif how == "wrong_shape":
        arrays[f"{DECODER_DIR}/layer_1_gru_weights_0"] = np.zeros((256, 1536), np.float32)
        named = ("layer_1_gru_weights_0.npy", "(512, 1536)")
    elif how == "vocab_mismatch":
        arrays[f"{DECODER_DIR}/layer_3_dense_2_weights_0"] = np.zeros((512, 499), np.float32)
        named = ("layer_3_dense_2_weights_0.npy", "(512, 500)")
    elif how == "extra":
        arrays[f"{DECODER_DIR}/layer_5_dense_3_weights_0"] = np.zeros((3,), np.float32)
        named = ("layer_5_dense_3_weights_0.npy", "original layout")
    weights = write_npy_tree(tmp_path, arrays)
    if how == "pickled":  # an object array: loading it would unpickle; its header alone refuses it
        np.save(weights / ENCODER_DIR / "layer_0_dense_weights_1.npy", np.array([{"a": 1}] * 256, dtype=object),
                allow_pickle=True)
        named = ("layer_0_dense_weights_1.npy", "floating-point")
    return weights, named


@pytest.mark.parametrize("how", ["missing", "wrong_shape", "vocab_mismatch", "extra", "pickled"])
def test_wrong_or_missing_weight_file_is_one_line_naming_it(seed_files, tmp_path, how):
    weights, (name, expected) = _broken_copy(seed_files, tmp_path, how)
    out = tmp_path / "bundle"
    with pytest.raises(ScenecapError) as e:
        import_seed(SeedImportOptions(weights=str(weights), tokenizer=str(seed_files["tokenizer"]), out=str(out),
                                      backbone_weights="none", dims=SMALL))
    msg = str(e.value)
    assert "\n" not in msg and name in msg and expected in msg, msg
    assert not out.exists()


def scenecap(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scenecap", *args], capture_output=True, text=True,
                          encoding="utf-8", **kw)


def test_import_seed_help_explains_with_examples():
    r = scenecap("import-seed", "--help")
    assert r.returncode == 0
    for words in ("--weights", "--tokenizer", "--backbone-weights", "legacy-zero", "example", "--quant"):
        assert words in r.stdout


def test_import_seed_command_refuses_a_bad_layout_in_one_line_after_a_loud_warning(seed_files, tmp_path):
    """The user's command line; with --backbone-weights none the warning is loud; a wrong file stops it early."""
    # A tokenizer of the original's size (26555 words), so the vocabulary-sized arrays differ too.
    tokenizer = write_seed_tokenizer(tmp_path / "tokenizer.pickle", arabic_index_word(26556))
    r = scenecap("import-seed", "--weights", str(seed_files["weights"]), "--tokenizer", str(tokenizer),
                 "--out", str(tmp_path / "b"), "--backbone-weights", "none")
    assert r.returncode == 2
    assert "RANDOM" in r.stderr and "MEANINGLESS" in r.stderr
    err = r.stderr.strip().splitlines()[-1]
    # The small test weights against the original dimensions: the first file that differs is named.
    assert err.startswith("scenecap: error:") and "layer_0_dense_weights_0.npy" in err, err
    assert "shape (1280, 256); expected (1792, 256)" in err and "more problems" in err
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists()


def test_int8_without_calibration_images_says_what_to_pass(seed_files, tmp_path):
    with pytest.raises(ScenecapError, match="--calibration-images"):
        import_seed(SeedImportOptions(weights=str(seed_files["weights"]), tokenizer=str(seed_files["tokenizer"]),
                                      out=str(tmp_path / "b"), encoder_quant="int8", decoder_quant="int8",
                                      backbone_weights="none", dims=SMALL))


def test_imported_captions_are_arabic_on_stdout_and_in_jsonl(seed_files, imported, tmp_path):
    out = tmp_path / "captions.jsonl"
    r = scenecap("caption", *map(str, seed_files["images"][:3]), "--bundle", str(imported["bundle"]),
                 "--jsonl", str(out), env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        print(line)
        assert is_arabic(line.split("\t")[1])
    raw = out.read_bytes()
    assert b"\\u06" not in raw  # written as UTF-8 text, not escaped
    recs = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    cap = Captioner.load(imported["bundle"])
    for rec, path in zip(recs, seed_files["images"][:3], strict=True):
        assert is_arabic(rec["caption"]) and rec["caption"] in raw.decode("utf-8")
        assert rec["caption"] == cap.caption(load_image(path)).text


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SCENECAP_SEED_FULL") != "1",
                    reason="over 3 minutes (199 s measured on 2 busy cores); set SCENECAP_SEED_FULL=1 to run it")
def test_full_original_dimensions_give_the_originals_tokens(tmp_path):
    """The real tokenizer (26556 ids), MobileNetV2 alpha 1.4 at 224 px, 49x1792 features, via the command line.

    Measured at 199 s with the machine's 2 cores shared 3 ways, over this issue's share of the suite's time, so
    it runs only when asked: SCENECAP_SEED_FULL=1 pytest tests/test_seed_import.py -k full_original
    """
    full = SeedDims()
    weights = write_npy_tree(tmp_path / "canesee", random_seed_arrays(full, seed=11))
    backbone = write_random_backbone(tmp_path / "mobilenet_v2_1.4_224.weights.h5", full, seed=12, images=4)
    images = write_images(tmp_path / "images", 2, full.image_size, seed=13)
    t0 = time.perf_counter()
    r = scenecap("import-seed", "--weights", str(weights), "--tokenizer", str(real_tokenizer()),
                 "--out", str(tmp_path / "bundle"), "--backbone-weights", str(backbone))
    assert r.returncode == 0, r.stderr[-2000:]
    print(f"\nimport at the original dimensions: {time.perf_counter() - t0:.0f} s")
    cap = Captioner.load(tmp_path / "bundle")
    m = cap.bundle.manifest
    assert m.decoder_state == "legacy-zero" and len(cap.vocab) == 26556
    assert (m.model.locations, m.model.backbone_channels) == (49, 1792)
    original = Original(weights, backbone, replace(full, vocab_size=26556))
    for path in images:
        theirs = original.caption(original.features(path), 2, 3)
        c = cap.caption(load_image(path))
        assert c.tokens == without_end(theirs)
        print(f"{path.name}: {c.text}")
