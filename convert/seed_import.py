"""Import the replaced system's trained model and tokenizer: check, rebuild, export, convert, bundle.

The original is Show-Attend-Tell on MobileNetV2 (alpha 1.4, 224 px) with a GRU that restarted from zeros at every
step (its hidden state only steered attention). `scenecap.train.model.ShowAttendTell` with
`decoder_state="legacy-zero"` computes exactly that step, so the import is: check every array against the
original layout, copy it into the matching layer, and hand the model to the normal export and converter.
The bundle's manifest then records `decoder.state: legacy-zero`, and its captions are the original's.

`--vocab-limit N` keeps only the N most frequent ids (the output layer is most of a decoder step's cost at 26,556
words): the embedding rows and fc2's columns are cut to them, and the manifest's training section and recipe say so.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scenecap import ScenecapError
from scenecap.convert.safe_pickle import SeedTokenizer, load_tokenizer
from scenecap.convert.seed_layout import (
    ArraySpec,
    FoundArray,
    SeedDims,
    keep_vocab_ids,
    locate_weights,
    seed_layout,
)
from scenecap.edge.bundle import QUANTS
from scenecap.edge.errors import first_line
from scenecap.edge.fileio import sha256_file
from scenecap.edge.preprocess import PreprocessSpec
from scenecap.edge.vocab import Vocab

log = logging.getLogger("scenecap.convert")

SEED_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "start": "<start>", "end": "<end>"}
# The original: tf.image.resize (bilinear, aspect not kept) to 224x224; x / 127.5 - 1 is inside the encoder graph.
SEED_RESIZE = "bilinear"


# --- tokenizer -> vocabulary -------------------------------------------------------------------------------


def seed_vocab_size(tok: SeedTokenizer) -> int:
    """Keras' convention `len(word_index) + 1` (the seed: 26555 words including '<pad>' -> 26556 ids)."""
    return max(len(tok.word_index) + 1, max(tok.index_word) + 1)


def seed_vocab(tok: SeedTokenizer, where: str = "tokenizer") -> Vocab:
    """The tokenizer's ids as a scenecap vocabulary: id i is index_word[i]; pad is id 0.

    Ids the model has but the tokenizer never assigned (the seed's last id, 26555) get a visible placeholder
    `<unused-ID>`: a trained model never predicts them, and if one did the caption shows it rather than crashing.
    """
    n = seed_vocab_size(tok)
    tokens: list[str | None] = [None] * n
    for i, w in tok.index_word.items():
        tokens[i] = w
    if tokens[0] not in (None, SEED_SPECIALS["pad"]):
        raise ScenecapError(f"{where}: id 0 is the word {tokens[0]!r}; the seed reserves id 0 for padding")
    tokens[0] = SEED_SPECIALS["pad"]
    specials = dict(SEED_SPECIALS)
    if tok.oov_token is None:
        raise ScenecapError(f"{where}: the tokenizer has no oov_token; the seed's is '<unk>'")
    specials["unk"] = tok.oov_token
    for role in ("unk", "start", "end"):
        if specials[role] not in tok.word_index:
            raise ScenecapError(f"{where}: no {specials[role]!r} in word_index; the seed's captions are wrapped "
                                "in '<start>' ... '<end>' and unknown words are '<unk>'")
    filled = [t if t is not None else f"<unused-{i}>" for i, t in enumerate(tokens)]
    try:
        return Vocab(filled, specials)
    except ScenecapError as e:
        raise ScenecapError(f"{where}: {e}") from None


# --- weights -----------------------------------------------------------------------------------------------


def _vocab_hint(spec: ArraySpec, dims: SeedDims) -> str:
    if spec.layer in ("embedding", "fc2"):
        return (f"; the tokenizer gives {dims.vocab_size} ids (len(word_index) + 1): were these weights trained "
                "with this tokenizer?")
    return ""


def check_arrays(found: dict[str, FoundArray], dims: SeedDims, where: str) -> list[ArraySpec]:
    """Every expected array present with its exact shape and a float dtype, nothing unexpected.

    Raises one ScenecapError line naming the first wrong or missing file and what was expected.
    """
    layout = seed_layout(dims)
    problems = []
    for spec in layout:
        f = found.get(spec.key)
        if f is None:
            problems.append(f"{where}: {spec.key}.npy missing; expected the {spec.role}, shape {spec.shape}")
        elif f.shape != spec.shape:
            problems.append(f"{f.where}: shape {f.shape}; expected {spec.shape} ({spec.role})"
                            f"{_vocab_hint(spec, dims)}")
        elif f.dtype.kind != "f":
            problems.append(f"{f.where}: dtype {f.dtype}; expected floating-point weights ({spec.role}, "
                            f"shape {spec.shape})")
    expected = {s.key for s in layout}
    for key in sorted(set(found) - expected):
        problems.append(f"{found[key].where}: not part of the original layout ({len(layout)} arrays, "
                        f"layer_0_embedding ... layer_4_bahdanau_attention and the encoder's layer_0_dense)")
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise ScenecapError(problems[0] + more)
    return layout


def load_arrays(found: dict[str, FoundArray], layout: list[ArraySpec]) -> dict[str, np.ndarray]:
    arrays = {}
    for spec in layout:
        a = np.asarray(found[spec.key].load(), dtype=np.float32)
        if a.shape != spec.shape:  # the header said otherwise: the file changed under us
            raise ScenecapError(f"{found[spec.key].where}: shape {a.shape}; expected {spec.shape} ({spec.role})")
        if not np.isfinite(a).all():
            raise ScenecapError(f"{found[spec.key].where}: contains NaN or infinity; expected trained weights")
        arrays[spec.key] = a
    return arrays


def read_seed_weights(weights: str | Path, dims: SeedDims) -> tuple[str, dict[str, np.ndarray]]:
    """(description, {folder/stem: float32 array}) from a seed weights folder, every name and shape checked."""
    desc, found = locate_weights(weights)
    layout = check_arrays(found, dims, str(weights))
    return desc, load_arrays(found, layout)


# --- model -------------------------------------------------------------------------------------------------


def seed_model_config(dims: SeedDims, backbone_weights: str | None):
    from scenecap.train.model import ModelConfig

    # scenecap's max_length counts <start>; the original predicted up to max_length words after it.
    return ModelConfig(vocab_size=dims.vocab_size, max_length=dims.max_length + 1, backbone="mobilenet_v2",
                       alpha=dims.alpha, image_size=dims.image_size, weights=backbone_weights,
                       embed_dim=dims.embed_dim, units=dims.units, attention_units=dims.attention_units,
                       fc_units=dims.fc_units, decoder_state="legacy-zero")


def build_seed_model(dims: SeedDims, arrays: dict[str, np.ndarray], backbone_weights: str | None):
    """ShowAttendTell at the seed's dimensions with the seed's arrays in its layers (legacy-zero decoder)."""
    from scenecap.train.model import build

    try:
        model = build(seed_model_config(dims, backbone_weights))
    except ScenecapError as e:  # the model module words these for 'scenecap train --weights'
        raise ScenecapError(first_line(e).replace("--weights", "--backbone-weights")) from None
    if (model.locations, model.backbone_channels) != (dims.locations, dims.backbone_channels):
        raise ScenecapError(f"MobileNetV2 alpha={dims.alpha} at {dims.image_size}px gives {model.locations}x"
                            f"{model.backbone_channels} features; the seed layout expects {dims.locations}x"
                            f"{dims.backbone_channels}")
    by_layer: dict[str, list[tuple[int, np.ndarray]]] = {}
    for spec in seed_layout(dims):
        by_layer.setdefault(spec.layer, []).append((spec.index, arrays[spec.key]))
    for name, ws in by_layer.items():
        layer = getattr(model, name)
        layer.set_weights([a for _, a in sorted(ws, key=lambda t: t[0])])
    return model


# --- --vocab-limit ------------------------------------------------------------------------------------------


def check_vocab_limit(limit, vocab: Vocab) -> int:
    """--vocab-limit N as an int from (specials + 1) to the vocabulary's size, or one line saying so."""
    specials = len(set(vocab.ids.values()))
    if isinstance(limit, bool) or not isinstance(limit, int) or not specials < limit <= len(vocab):
        raise ScenecapError(f"--vocab-limit {limit!r}: expected a whole number from {specials + 1} (the {specials} "
                            f"special tokens and one word) to {len(vocab)} (the tokenizer's ids)")
    return limit


def _word_counts(tok: SeedTokenizer) -> dict[str, int]:
    counts = tok.extra.get("word_counts")
    if not isinstance(counts, dict):
        return {}
    return {w: c for w, c in counts.items() if isinstance(c, int) and not isinstance(c, bool)}


def kept_ids(tok: SeedTokenizer, vocab: Vocab, limit: int) -> list[int]:
    """The ids --vocab-limit keeps, in id order: the special tokens and the most frequent other ids.

    Keras numbers words by descending word_counts, so for a Keras tokenizer (the seed's: checked, no exception)
    these are the lowest ids; the counts decide should they disagree, ties and uncounted ids go by id.
    """
    check_vocab_limit(limit, vocab)
    specials = set(vocab.ids.values())
    counts = _word_counts(tok)
    others = sorted((i for i in range(len(vocab)) if i not in specials),
                    key=lambda i: (-counts.get(vocab.tokens[i], 0), i))
    return sorted(specials | set(others[: limit - len(specials)]))


def limit_vocab(tok: SeedTokenizer, vocab: Vocab, arrays: dict[str, np.ndarray], dims: SeedDims,
                limit: int) -> tuple[Vocab, dict[str, np.ndarray], SeedDims]:
    """(vocabulary, arrays, dims) with only the `limit` most frequent ids; a word left out reads as <unk>."""
    ids = kept_ids(tok, vocab, limit)
    arrays = keep_vocab_ids(arrays, ids, dims)
    log.info("vocabulary limited to the %d most frequent ids of %d: %s", limit, len(vocab),
             _coverage(tok, vocab, ids))
    return Vocab([vocab.tokens[i] for i in ids], dict(vocab.specials)), arrays, replace(dims, vocab_size=len(ids))


def _coverage(tok: SeedTokenizer, vocab: Vocab, ids: list[int]) -> str:
    """How much of the tokenizer's running text (word_counts, special tokens left out) the kept ids cover."""
    counts, specials = _word_counts(tok), set(vocab.specials.values())
    words = {w: c for w, c in counts.items() if w not in specials}
    total = sum(words.values())
    if not total:
        return "the tokenizer has no word_counts to tell how many running words that covers"
    kept = sum(words.get(vocab.tokens[i], 0) for i in ids)
    return f"{100 * kept / total:.1f}% of the running words its word_counts hold"


# --- the whole import --------------------------------------------------------------------------------------


@dataclass
class SeedImportOptions:
    weights: str
    tokenizer: str
    out: str
    encoder_quant: str = "float32"
    decoder_quant: str = "float32"
    backbone_weights: str = "imagenet"  # "imagenet", "none" (random: tests only) or a local .h5
    calibration_images: str | None = None
    calibration_count: int = 100
    decoder_batch: int = 1
    language: str = "ar"
    keep_export: str | None = None  # also keep the SavedModel export here
    seed: int = 0
    force: bool = False
    dims: SeedDims | None = None  # None: the original's; tests pass smaller ones (vocab_size comes from tokenizer)
    vocab_limit: int | None = None  # keep only the N most frequent ids (specials always); None: every id


@dataclass
class SeedFiles:
    """What the import read and checked: the vocabulary, dimensions and arrays the model is built from."""

    vocab: Vocab
    dims: SeedDims
    arrays: dict[str, np.ndarray]
    weights_format: str


def import_seed(opts: SeedImportOptions) -> Path:
    """Seed weights + tokenizer -> bundle at `opts.out`. Returns the bundle folder."""
    _check_options(opts)
    backbone = _backbone_weights(opts.backbone_weights)
    t0 = time.perf_counter()
    seed = read_seed(opts)

    # TensorFlow only now: every check above answers in a second.
    from scenecap.convert.bundle_writer import guarded_folder
    from scenecap.train.export import export_model

    dims = seed.dims
    model = build_seed_model(dims, seed.arrays, backbone)
    log.info("model built: MobileNetV2 alpha %s at %d px, %dx%d features, vocabulary %d, decoder legacy-zero "
             "(%.1f s)", dims.alpha, dims.image_size, dims.locations, dims.backbone_channels, dims.vocab_size,
             time.perf_counter() - t0)
    out, janitor = Path(opts.out), ExitStack()
    if opts.keep_export:
        export_dir, tmp = Path(opts.keep_export), None
    else:
        # Named and guarded like write_bundle's folder: a janitor process removes it if we are SIGKILLed, and the
        # next write to `out` (sweep_leftovers) does if the janitor died too.
        where = out.parent if out.parent.exists() else Path(tempfile.gettempdir())
        tmp, _ = janitor.enter_context(guarded_folder(out, "seed-export.", where))
        export_dir = tmp / "export"
    try:
        export_model(model, seed.vocab, export_dir, _export_info(opts, seed, backbone),
                     decoder_batches=(opts.decoder_batch,), force=opts.force)
        del model
        log.info("exported SavedModel (%.1f s)", time.perf_counter() - t0)
        bundle = _convert(opts, export_dir)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        janitor.close()  # tells it we are done
    log.info("bundle %s written (%.1f s)", bundle, time.perf_counter() - t0)
    return bundle


def read_seed(opts: SeedImportOptions) -> SeedFiles:
    """Tokenizer and weights read and checked against each other (and --vocab-limit applied): no TensorFlow."""
    tok = load_tokenizer(opts.tokenizer)
    vocab = seed_vocab(tok, opts.tokenizer)
    if opts.vocab_limit is not None:
        check_vocab_limit(opts.vocab_limit, vocab)  # before the weights: a wrong number answers at once
    dims = replace(opts.dims or SeedDims(), vocab_size=len(vocab))
    log.info("tokenizer %s: %d words, %d ids (%s=%d, %s=%d, %s=%d)", opts.tokenizer, tok.size, len(vocab),
             vocab.specials["unk"], vocab.unk, vocab.specials["start"], vocab.start, vocab.specials["end"], vocab.end)
    desc, arrays = read_seed_weights(opts.weights, dims)
    log.info("weights %s: %d arrays, names and shapes as the original", desc, len(arrays))
    if opts.vocab_limit is not None:
        vocab, arrays, dims = limit_vocab(tok, vocab, arrays, dims, opts.vocab_limit)
    return SeedFiles(vocab, dims, arrays, desc)


def _export_info(opts: SeedImportOptions, seed: SeedFiles, backbone: str | None) -> dict:
    """The export's sidecar facts: language, preprocessing and where the model came from (the manifest's
    training section)."""
    size = seed.dims.image_size
    training = {
        "imported_from": "seed (canesee Show-Attend-Tell)",
        "weights": str(Path(opts.weights).resolve()),
        "weights_format": seed.weights_format,
        "tokenizer": str(Path(opts.tokenizer).resolve()),
        "tokenizer_sha256": sha256_file(opts.tokenizer),
        "backbone_weights": opts.backbone_weights if backbone is not None else "none (random: not for use)",
    }
    if opts.vocab_limit is not None:
        training["vocab_limit"] = opts.vocab_limit
    return {"language": opts.language, "training": training, "calibration": {},
            "preprocess": PreprocessSpec(size, size, resize=SEED_RESIZE, keep_aspect=False).to_json()}


def _convert(opts: SeedImportOptions, export_dir: Path) -> Path:
    from scenecap.convert.run import ConvertOptions, convert

    recipe = (f"scenecap import-seed --weights {opts.weights} --tokenizer {opts.tokenizer} --out {opts.out} "
              f"--encoder-quant {opts.encoder_quant} --decoder-quant {opts.decoder_quant} "
              f"--backbone-weights {opts.backbone_weights}")
    if opts.vocab_limit is not None:
        recipe += f" --vocab-limit {opts.vocab_limit}"
    return convert(ConvertOptions(
        export=str(export_dir), out=opts.out, encoder_quant=opts.encoder_quant, decoder_quant=opts.decoder_quant,
        decoder_batch=opts.decoder_batch, calibration_images=opts.calibration_images,
        calibration_count=opts.calibration_count, seed=opts.seed, force=opts.force, recipe=recipe))


def _check_options(opts: SeedImportOptions) -> None:
    """Every option that can be checked in a second, before any file is read."""
    for q in (opts.encoder_quant, opts.decoder_quant):
        if q not in QUANTS:
            raise ScenecapError(f"--quant {q!r} unknown; expected one of {', '.join(QUANTS)}")
    for folder in (opts.out, opts.keep_export):
        if folder and Path(folder).exists() and not opts.force:
            raise ScenecapError(f"{folder}: already exists; pass --force to replace it")
    if {opts.encoder_quant, opts.decoder_quant} & {"int8", "edgetpu"} and not opts.calibration_images:
        raise ScenecapError("int8 needs calibration images and the seed has no training data with it; pass "
                            "--calibration-images DIR (a few hundred photos like the ones the cane will see)")


def _backbone_weights(value: str) -> str | None:
    if value in ("none", "None", ""):
        return None
    if value == "imagenet":
        return "imagenet"
    p = Path(value)
    if not p.is_file():
        raise ScenecapError(f"--backbone-weights {value}: file not found; expected 'imagenet', 'none' or a local "
                            "MobileNetV2 alpha 1.4 no-top .h5")
    return str(p)
