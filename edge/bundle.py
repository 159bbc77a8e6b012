"""The bundle format (v1): a folder of .tflite models, vocab.json and manifest.json.

The manifest is the single source of truth for everything both sides must agree on: shapes, preprocessing,
special tokens, quantisation parameters, decoder state mode. convert/ writes it; edge/ reads it, here.

Validation on load: required keys and their types, tensor shapes that fit together (encoder outputs feed the
decoder, the decoder batch is the manifest's, the vocabulary size matches the logits), file names that stay
inside the bundle, and every listed file's sha256. A newer major format version is refused; a newer minor
one is read, and keys this version does not know are kept (and written back by `to_json`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from scenecap.edge.confidence import MAX_COMPONENTS  # the confidence section's PCA dimensions
from scenecap.edge.errors import ScenecapError
from scenecap.edge.fileio import read_regular
from scenecap.edge.modelinfo import MAX_MODEL_BYTES
from scenecap.edge.preprocess import PreprocessSpec
from scenecap.edge.vocab import Vocab

FORMAT = "scenecap-bundle"
# major.minor: a newer minor adds optional keys; a newer major is refused.
# 1.1 adds models.*.options/runtimes and decoder.embedding (the Edge TPU decoder's lookup table).
# 1.2 adds the optional `confidence` section (image statistics and the unsure threshold, from `scenecap calibrate`).
FORMAT_VERSION = "1.2"
MANIFEST = "manifest.json"
DECODER_STATES = ("carry", "legacy-zero")
# int16x8: int16 activations, int8 weights (decoder step only): full-integer, yet the attention softmax and the
# carried hidden state keep their precision.
QUANTS = ("float32", "float16", "dynamic", "int8", "int16x8", "edgetpu")
DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
MODEL_NAMES = ("encoder", "decoder_step")
_OP_RE = re.compile(r"^[A-Za-z0-9_]+(\([^)]*\))?:v\d+$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# Bounds on what a manifest may ask for, so a small file cannot make the loader allocate without limit.
# A caption is one sentence (the original system stopped at 46 words); 1024 steps is ~15 s of decoding on a Pi, and
# a model that never says <end> must still stop in bounded time and memory.
MAX_LENGTH = 1024
MAX_MANIFEST_BYTES = 4 << 20  # a manifest is a few kB; its op lists are the bulk
MAX_TENSOR_ELEMENTS = 1 << 28  # 1 GiB of float32: more than any input, output or word table of a captioner
# A vocab.json holds one JSON string per logit: 1 kB per token is far more than any word needs (escaped or not).
VOCAB_BYTES_PER_TOKEN = 1024
VOCAB_BYTES_OVERHEAD = 64 << 10
NPY_HEADER_BYTES = 64 << 10  # an .npy header is ~128 bytes; room for any numpy version's padding
MAX_STATS_REFERENCES = 100_000  # calibration distances kept in the stats file
ZIP_MEMBER_OVERHEAD = 1 << 10  # a zip member's local header, central entry and name


@dataclass
class TensorSpec:
    """One model input or output, with the affine quantisation real = scale * (q - zero_point) if quantised."""

    name: str
    shape: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point}


@dataclass
class ModelSpec:
    file: str
    quant: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    ops: list[str] = field(default_factory=list)  # "FULLY_CONNECTED:v9", one entry per distinct op
    edgetpu_file: str | None = None
    options: list[str] = field(default_factory=list)  # conversion options, e.g. "per-tensor-dense"
    runtimes: dict[str, str] = field(default_factory=dict)  # target runtime -> "ok" or why it cannot load
    extra: dict[str, Any] = field(default_factory=dict)  # unknown optional keys, kept on rewrite

    def to_json(self) -> dict:
        d: dict[str, Any] = {
            "file": self.file, "quant": self.quant,
            "inputs": {k: v.to_json() for k, v in self.inputs.items()},
            "outputs": {k: v.to_json() for k, v in self.outputs.items()},
            "ops": list(self.ops),
        }
        if self.edgetpu_file:
            d["edgetpu_file"] = self.edgetpu_file
        if self.options:
            d["options"] = list(self.options)
        if self.runtimes:
            d["runtimes"] = dict(self.runtimes)
        return {**d, **self.extra}


@dataclass
class Manifest:
    language: str
    preprocess: PreprocessSpec
    tokens: dict[str, int]  # pad, unk, start, end ids; vocab.json must agree
    max_length: int
    model: dict[str, Any]  # dimensions: backbone, alpha, image_size, locations, feature_dim, units, vocab_size...
    decoder: dict[str, Any]  # state: carry|legacy-zero; batch: fixed beam width; embedding: table for Edge TPU
    models: dict[str, ModelSpec]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {sha256, bytes}
    vocab: str = "vocab.json"
    scenecap_version: str = ""
    format_version: str = FORMAT_VERSION
    training: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown optional keys, kept on rewrite

    @property
    def decoder_state(self) -> str:
        return self.decoder.get("state", "carry")

    @property
    def decoder_batch(self) -> int:
        return int(self.decoder.get("batch", 1))

    @property
    def confidence(self) -> dict | None:
        """The optional confidence section (format 1.2, `scenecap calibrate`): {file, components, pooled_dim,
        references, threshold, percentile, ...}; None: captions get confidence from word probabilities only."""
        return self.extra.get("confidence")

    @property
    def embedding(self) -> dict | None:
        """An embedding-input decoder's word table (Edge TPU, int16x8): {file, shape, dtype, scale, zero_point}."""
        return self.decoder.get("embedding")

    def to_json(self) -> dict:
        d = {
            "format": FORMAT,
            "format_version": self.format_version,
            "scenecap_version": self.scenecap_version,
            "language": self.language,
            "preprocess": self.preprocess.to_json(),
            "tokens": dict(self.tokens),
            "max_length": self.max_length,
            "model": dict(self.model),
            "decoder": dict(self.decoder),
            "models": {k: v.to_json() for k, v in self.models.items()},
            "files": {k: dict(v) for k, v in self.files.items()},
            "vocab": self.vocab,
            "training": self.training,
            "provenance": self.provenance,
        }
        return {**d, **self.extra}


_REQUIRED = {
    "format_version": str,
    "language": str,
    "preprocess": dict,
    "tokens": dict,
    "max_length": int,
    "model": dict,
    "decoder": dict,
    "models": dict,
    "files": dict,
    "vocab": str,
}
_MODEL_KEYS = {"file", "quant", "inputs", "outputs", "ops", "edgetpu_file", "options", "runtimes"}
_POSITIVE_DIMS = ("image_size", "locations", "feature_dim", "embed_dim", "attention_dim", "units", "vocab_size")


def _err(where: str, msg: str) -> ScenecapError:
    return ScenecapError(f"{where}: {msg}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _key(prefix: str, key: Any) -> str:
    """`prefix.key` for a plain key; `prefix['a\\nb']` for one a message would otherwise break over lines."""
    return f"{prefix}.{key}" if isinstance(key, str) and key.isprintable() else f"{prefix}[{key!r}]"


def _plain_name(name: Any, where: str, what: str) -> str:
    """A file name inside the bundle folder: no folders, no '..', nothing absolute, no control characters (a NUL
    or newline, which no model file has and which would break the messages quoting the name)."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or \
            name.startswith("~") or ":" in name or not name.isprintable():
        raise _err(where, f"{what} {name!r}; expected a plain file name inside the bundle folder")
    return name


def _tensor(d: Any, where: str) -> TensorSpec:
    if not isinstance(d, dict):
        raise _err(where, "expected an object with name, shape, dtype")
    shape, dtype = d.get("shape"), d.get("dtype")
    if not isinstance(d.get("name"), str):
        raise _err(where, "name missing or not a string")
    if not isinstance(shape, list) or not all(_is_int(x) and x >= 1 for x in shape):
        raise _err(where, f"shape {shape!r}; expected a list of positive integers (static shapes only)")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise _err(where, f"shape {shape!r} has more than {MAX_TENSOR_ELEMENTS} elements; expected a captioner's")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _err(where, f"dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    _quant_params(d, dtype, where)
    return TensorSpec(d["name"], list(shape), dtype, float(d.get("scale", 0.0)), int(d.get("zero_point", 0)))


def _quant_params(d: dict, dtype: str, where: str) -> None:
    """scale and zero_point (optional: 0 = not quantised) are numbers that fit the dtype."""
    scale, zp = d.get("scale", 0.0), d.get("zero_point", 0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise _err(where, f"scale {scale!r}; expected a finite number >= 0 (0 = not quantised)")
    if not _is_int(zp):
        raise _err(where, f"zero_point {zp!r}; expected an integer")
    if scale > 0 and dtype in ("int8", "uint8"):
        info = np.iinfo(dtype)
        if not info.min <= zp <= info.max:
            raise _err(where, f"zero_point {zp} outside the {dtype} range")


def _embedding_table(e: Any, where: str) -> None:
    """decoder.embedding: {file, shape [vocab, embed_dim], dtype, scale, zero_point}, each of the right type (the
    loader allocates the table from them, and inspect prints them)."""
    if not isinstance(e, dict):
        raise _err(where, f"decoder.embedding is {type(e).__name__}; expected an object with a file")
    _plain_name(e.get("file"), where, "decoder.embedding.file")
    shape, dtype = e.get("shape"), e.get("dtype")
    if not isinstance(shape, list) or len(shape) != 2 or not all(_is_int(x) and x >= 1 for x in shape):
        raise _err(where, f"decoder.embedding.shape {shape!r}; expected [vocabulary, embed_dim]")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _err(where, f"decoder.embedding.dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    _quant_params(e, dtype, f"{where}: decoder.embedding")


def _confidence_section(c: Any, feature_dim: int, where: str) -> None:
    """confidence: {file, components 1..16, pooled_dim = 2 * feature_dim, references, threshold in [0, 1]} (the
    loader sizes the stats file's arrays from these before reading it)."""
    if not isinstance(c, dict):
        raise _err(where, f"confidence is {type(c).__name__}; expected an object with a file")
    _plain_name(c.get("file"), where, "confidence.file")
    if not str(c["file"]).endswith(".npz"):
        raise _err(where, f"confidence.file {c['file']!r}; expected a .npz stats file")
    for key, low, high in (("components", 1, MAX_COMPONENTS), ("references", 2, MAX_STATS_REFERENCES)):
        if not _is_int(c.get(key)) or not low <= c[key] <= high:
            raise _err(where, f"confidence.{key} is {c.get(key)!r}; expected a whole number from {low} to {high}")
    if c.get("pooled_dim") != 2 * feature_dim:
        raise _err(where, f"confidence.pooled_dim is {c.get('pooled_dim')!r}; the encoder's features give "
                   f"{2 * feature_dim} (mean and spread of {feature_dim} channels)")
    t = c.get("threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
        raise _err(where, f"confidence.threshold is {t!r}; expected a number from 0 to 1")


def _model_spec(name: str, m: Any, where: str) -> ModelSpec:
    at = _key("models", name)
    w = f"{where}: {at}"
    if not isinstance(m, dict):
        what = "missing" if m is None else f"is {type(m).__name__}"
        raise _err(where, f"{at} {what}; expected an object with file, quant, inputs, outputs")
    if not isinstance(m.get("file"), str) or not m.get("file"):
        raise _err(where, f"{at}.file missing; expected a file name")
    file = _plain_name(m["file"], where, f"{at}.file")
    if not isinstance(m.get("inputs"), dict) or not isinstance(m.get("outputs"), dict):
        raise _err(where, f"{at}: inputs and outputs must be objects")
    if not m["inputs"] or not m["outputs"]:
        raise _err(where, f"{at}: inputs and outputs must not be empty")
    quant = m.get("quant", "float32")
    if quant not in QUANTS:
        raise _err(where, f"{at}.quant {quant!r}; expected one of {QUANTS}")
    ops = m.get("ops", [])
    if not isinstance(ops, list) or not all(isinstance(o, str) and _OP_RE.match(o) for o in ops):
        raise _err(where, f"{at}.ops must be a list of 'OP_NAME:vN' strings")
    edgetpu = m.get("edgetpu_file")
    if edgetpu is not None:
        _plain_name(edgetpu, where, f"{at}.edgetpu_file")
    options = m.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise _err(where, f"{at}.options must be a list of strings")
    runtimes = m.get("runtimes", {})
    if not isinstance(runtimes, dict) or not all(isinstance(v, str) for v in runtimes.values()):
        raise _err(where, f"{at}.runtimes must map runtime names to strings")
    return ModelSpec(
        file=file, quant=quant,
        inputs={k: _tensor(v, _key(f"{w}.inputs", k)) for k, v in m["inputs"].items()},
        outputs={k: _tensor(v, _key(f"{w}.outputs", k)) for k, v in m["outputs"].items()},
        ops=list(ops), edgetpu_file=edgetpu, options=list(options), runtimes=dict(runtimes),
        extra={k: v for k, v in m.items() if k not in _MODEL_KEYS},
    )


def _need(spec: ModelSpec, kind: str, name: str, where: str, model: str) -> TensorSpec:
    tensors = spec.inputs if kind == "input" else spec.outputs
    t = tensors.get(name)
    if t is None:
        raise _err(where, f"models.{model} has no {kind} {name!r} (it has {sorted(tensors)})")
    return t


def _check_shapes(data: dict, models: dict[str, ModelSpec], pre: PreprocessSpec, batch: int, where: str) -> None:
    """The encoder's outputs fit the decoder's inputs, the decoder's batch is the manifest's, sizes agree."""
    enc, dec = models["encoder"], models["decoder_step"]
    image = _need(enc, "input", "image", where, "encoder")
    if image.shape != [1, pre.height, pre.width, 3]:
        raise _err(where, f"models.encoder input image is {image.shape}; preprocess says "
                   f"[1, {pre.height}, {pre.width}, 3]")
    dims = data["model"]

    def expect(t: TensorSpec, shape: list[int], what: str) -> None:
        if t.shape != shape:
            raise _err(where, f"{what} has shape {t.shape}; expected {shape}")

    feats, keys = _need(enc, "output", "features", where, "encoder"), _need(enc, "output", "keys", where, "encoder")
    if len(feats.shape) != 3 or len(keys.shape) != 3 or feats.shape[0] != 1 or keys.shape[:2] != feats.shape[:2]:
        raise _err(where, f"models.encoder outputs features {feats.shape} and keys {keys.shape}; expected "
                   "[1, locations, feature_dim] and [1, locations, attention_dim]")
    locations = feats.shape[1]
    hidden = _need(dec, "input", "hidden", where, "decoder_step")
    if len(hidden.shape) != 2:
        raise _err(where, f"models.decoder_step input hidden has shape {hidden.shape}; expected [batch, units]")
    units = hidden.shape[1]
    expect(hidden, [batch, units], f"models.decoder_step input hidden (decoder.batch {batch})")
    expect(_need(dec, "input", "features", where, "decoder_step"), [batch, *feats.shape[1:]],
           "models.decoder_step input features")
    expect(_need(dec, "input", "keys", where, "decoder_step"), [batch, *keys.shape[1:]],
           "models.decoder_step input keys")
    logits = _need(dec, "output", "logits", where, "decoder_step")
    if len(logits.shape) != 2 or logits.shape[0] != batch:
        raise _err(where, f"models.decoder_step output logits has shape {logits.shape}; expected [{batch}, vocab]")
    vocab_size = logits.shape[1]
    expect(_need(dec, "output", "new_hidden", where, "decoder_step"), [batch, units],
           "models.decoder_step output new_hidden")
    expect(_need(dec, "output", "attention", where, "decoder_step"), [batch, locations],
           "models.decoder_step output attention")
    for key, value in (("vocab_size", vocab_size), ("locations", locations), ("units", units)):
        if _is_int(dims.get(key)) and dims[key] != value:
            raise _err(where, f"model.{key} is {dims[key]} but the models use {value}")
    if "token" in dec.inputs:
        token = dec.inputs["token"]
        if token.shape != [batch] or token.dtype not in ("int32", "int64"):
            raise _err(where, f"models.decoder_step input token is {token.dtype}{token.shape}; expected int32[{batch}]")
        if data["decoder"].get("embedding") is not None:  # the captioner would look words up for a token input
            raise _err(where, "decoder.embedding (a word table) is given but models.decoder_step takes a token "
                       "input; expected the table only for a decoder with an embedding input")
    elif "embedding" in dec.inputs:
        emb_in = dec.inputs["embedding"]
        table = data["decoder"].get("embedding")
        if not isinstance(table, dict):
            raise _err(where, "models.decoder_step takes an embedding input but decoder.embedding (the lookup "
                       "table) is missing")
        if len(emb_in.shape) != 2 or emb_in.shape[0] != batch:  # checked before indexing: a file may say []
            raise _err(where, f"models.decoder_step input embedding has shape {emb_in.shape}; expected "
                       f"[{batch}, embed_dim]")
        shape = table.get("shape")
        if shape != [vocab_size, emb_in.shape[1]]:
            raise _err(where, f"decoder.embedding.shape {shape!r} does not fit the decoder input embedding "
                       f"{emb_in.shape} and vocabulary {vocab_size}")
        if table.get("dtype") != emb_in.dtype or table.get("scale", 0.0) != emb_in.scale or \
                table.get("zero_point", 0) != emb_in.zero_point:
            raise _err(where, "decoder.embedding dtype/scale/zero_point differ from the decoder's embedding input")
    else:
        raise _err(where, "models.decoder_step needs a token or an embedding input")
    for role, idx in data["tokens"].items():
        if _is_int(idx) and not 0 <= idx < vocab_size:
            raise _err(where, f"{_key('tokens', role)} = {idx} is outside the vocabulary (0..{vocab_size - 1})")


def parse_manifest(data: Any, where: str = MANIFEST) -> Manifest:
    """Validate a manifest's JSON and return it as a Manifest, or raise one ScenecapError line."""
    if not isinstance(data, dict):
        raise _err(where, "expected a JSON object")
    if data.get("format") != FORMAT:
        raise _err(where, f"'format' is {data.get('format')!r}; expected {FORMAT!r}")
    if "format_version" not in data:
        raise _err(where, "missing required key 'format_version'")
    version = data["format_version"]
    if not isinstance(version, str) or not re.match(r"^\d+\.\d+$", version):
        raise _err(where, f"format_version {version!r}; expected 'MAJOR.MINOR' such as {FORMAT_VERSION!r}")
    major = int(version.split(".")[0])
    ours = int(FORMAT_VERSION.split(".")[0])
    if major > ours:
        raise _err(where, f"bundle format {version} is newer than this runtime reads ({FORMAT_VERSION}); "
                   "upgrade scenecap")
    if major < 1:
        raise _err(where, f"format_version {version!r}; expected 1.x")
    for key, typ in _REQUIRED.items():
        if key not in data:
            raise _err(where, f"missing required key {key!r}")
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise _err(where, f"{key!r} is {type(data[key]).__name__}; expected {typ.__name__}")
    for key in ("height", "width"):  # checked here: PreprocessSpec would fail comparing a string with 1
        if not _is_int(data["preprocess"].get(key)):
            raise _err(where, f"preprocess.{key} is {data['preprocess'].get(key)!r}; expected a positive integer")
    # Named here with repr: the TypeError PreprocessSpec(**...) gives would quote a key such as "\n" raw.
    unknown = [k for k in data["preprocess"] if k not in {f.name for f in fields(PreprocessSpec)}]
    if unknown:
        raise _err(where, f"preprocess has unknown key(s) {', '.join(map(repr, unknown))}; expected "
                   f"{', '.join(f.name for f in fields(PreprocessSpec))}")
    try:
        pre = PreprocessSpec(**data["preprocess"])
    except TypeError as e:
        raise _err(where, f"preprocess: {e}") from None
    except ScenecapError as e:
        raise _err(where, f"preprocess: {e}") from None
    tokens = data["tokens"]
    for role in ("pad", "unk", "start", "end"):
        if not _is_int(tokens.get(role)):
            raise _err(where, f"tokens.{role} missing or not an integer id")
    for role, idx in tokens.items():  # extra roles too: every id is checked against the vocabulary size
        if not _is_int(idx):
            raise _err(where, f"{_key('tokens', role)} is {idx!r}; expected an integer id")
    if not 2 <= data["max_length"] <= MAX_LENGTH:
        raise _err(where, f"max_length {data['max_length']}; expected 2 to {MAX_LENGTH} (tokens, <start> included)")
    for key in _POSITIVE_DIMS:
        v = data["model"].get(key)
        if v is not None and (not _is_int(v) or v < 1):
            raise _err(where, f"model.{key} is {v!r}; expected a positive integer")
    state = data["decoder"].get("state", "carry")
    if state not in DECODER_STATES:
        raise _err(where, f"decoder.state {state!r}; expected one of {DECODER_STATES}")
    batch = data["decoder"].get("batch", 1)
    if not _is_int(batch) or batch < 1:
        raise _err(where, f"decoder.batch {batch!r}; expected a positive integer")
    embedding = data["decoder"].get("embedding")
    if embedding is not None:  # checked whatever the decoder's input: its file is listed among the hashed files
        _embedding_table(embedding, where)
    models = {name: _model_spec(name, data["models"].get(name), where) for name in MODEL_NAMES}
    for name, m in data["models"].items():  # other models (future minor versions) must still be well-formed
        if name not in models:
            models[name] = _model_spec(name, m, where)
    _check_shapes(data, models, pre, batch, where)
    for name, info in data["files"].items():
        _plain_name(name, where, "files entry")
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or \
                not _SHA_RE.match(info["sha256"]):
            raise _err(where, f"{_key('files', name)}: expected an object with a sha256 (64 hex digits)")
        if "bytes" in info and (not _is_int(info["bytes"]) or info["bytes"] < 0):
            raise _err(where, f"{_key('files', name)}.bytes {info['bytes']!r}; expected a non-negative integer")
    vocab_name = _plain_name(data["vocab"], where, "vocab")
    needed = {vocab_name} | {m.file for m in models.values()} | {m.edgetpu_file for m in models.values()
                                                                  if m.edgetpu_file}
    if embedding is not None:
        needed.add(embedding["file"])
    if "confidence" in data:
        _confidence_section(data["confidence"], models["encoder"].outputs["features"].shape[2], where)
        needed.add(data["confidence"]["file"])
    for name in sorted(needed):
        if name not in data["files"]:
            raise _err(where, f"files has no hash for {name}")
    for key in ("training", "provenance"):
        if key in data and not isinstance(data[key], dict):
            raise _err(where, f"{key!r} is {type(data[key]).__name__}; expected an object")
    known = {"format", "scenecap_version", "training", "provenance", *_REQUIRED}
    return Manifest(
        language=data["language"],
        preprocess=pre,
        tokens=dict(tokens),
        max_length=data["max_length"],
        model=data["model"],
        decoder=data["decoder"],
        models=models,
        files=data["files"],
        vocab=vocab_name,
        scenecap_version=str(data.get("scenecap_version", "")),
        format_version=version,
        training=data.get("training", {}),
        provenance=data.get("provenance", {}),
        extra={k: v for k, v in data.items() if k not in known},
    )


@dataclass
class Bundle:
    """A loaded bundle. `data` holds each listed file's bytes as read once and verified: the models, vocabulary and
    word table are made from these bytes, never by opening the files again (a file swapped or rewritten after the
    check is never used, and no model is memory-mapped from a file that can change under it)."""

    path: Path
    manifest: Manifest
    vocab: Vocab
    data: dict[str, bytes] = field(default_factory=dict, repr=False)

    def file(self, name: str) -> Path:
        return self.path / name

    def content(self, name: str) -> bytes:
        """A listed file's verified bytes."""
        return self.data[name]


def _logits_vocab(manifest: Manifest) -> int:
    """The vocabulary size, as the decoder's logits tensor says (the one source of truth; checked [batch, V])."""
    return manifest.models["decoder_step"].outputs["logits"].shape[1]


def _size_bound(manifest: Manifest, name: str) -> tuple[int, str]:
    """The most bytes a listed file can need, from what the models already say, and why: checked before the file
    is read, whatever its recorded size (which whoever wrote the file also wrote)."""
    if name == manifest.vocab:
        n = _logits_vocab(manifest)
        return n * VOCAB_BYTES_PER_TOKEN + VOCAB_BYTES_OVERHEAD, f"a vocabulary of {n} tokens (the decoder's logits)"
    conf = manifest.confidence
    if conf and name == conf["file"]:
        shapes = _stats_shapes(conf)
        need = sum(math.prod(s) * 4 + NPY_HEADER_BYTES + ZIP_MEMBER_OVERHEAD for s in shapes.values())
        return need, f"confidence statistics of {conf['components']} components and {conf['references']} references"
    table = manifest.embedding
    if table and name == table["file"]:
        need = math.prod(table["shape"]) * np.dtype(table["dtype"]).itemsize
        return need + NPY_HEADER_BYTES, f"a {table['dtype']}{table['shape']} word table"
    return MAX_MODEL_BYTES, "a model (a flatbuffer addresses 2 GiB at most)"


def read_manifest(bundle_dir: str | Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if bundle_dir.is_file():
        raise ScenecapError(f"{bundle_dir}: is a file; expected a bundle folder (with manifest.json and models)")
    if not bundle_dir.is_dir():
        raise ScenecapError(f"{bundle_dir}: not a bundle folder (no such directory)")
    if not os.path.lexists(path) or path.is_dir() and not path.is_symlink():
        raise ScenecapError(f"{path}: missing; a bundle folder needs a manifest.json (is this a bundle?)")
    raw = read_regular(path, MAX_MANIFEST_BYTES, "manifest file")  # no link, FIFO or device; bounded
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ScenecapError(f"{path}: not UTF-8 text; expected JSON") from None
    except json.JSONDecodeError as e:
        raise ScenecapError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except ValueError as e:  # not a JSONDecodeError: an integer past Python's 4300-digit limit
        raise ScenecapError(f"{path}: invalid JSON: {str(e).split(':')[0]}") from None
    except RecursionError:  # json gives up on deeply nested arrays this way, not with a JSONDecodeError
        raise ScenecapError(f"{path}: JSON nested too deeply; expected a bundle manifest object") from None
    return parse_manifest(data, str(path))


def read_files(bundle_dir: Path, manifest: Manifest, verify: bool = True) -> dict[str, bytes]:
    """Every file the manifest lists, read once: a regular file inside the bundle (no link), of the recorded size,
    and (verify) of the recorded sha256. The bytes returned are the bytes checked."""
    out = {}
    for name, info in sorted(manifest.files.items()):
        p = bundle_dir / name
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            raise ScenecapError(f"{p}: missing from the bundle (listed in manifest.json)") from None
        except OSError as e:
            raise ScenecapError(f"{p}: cannot read the bundle file ({e.strerror})") from None
        bound, why = _size_bound(manifest, name)
        size = st.st_size if stat.S_ISREG(st.st_mode) else None  # a link or FIFO: read_regular says what it is
        if size is not None and size > bound:
            raise ScenecapError(f"{p}: {size} bytes; expected at most {bound} for {why}")
        if size is None or "bytes" not in info or size == info["bytes"]:
            raw = read_regular(p, min(bound, info.get("bytes", bound)), "bundle file")
            size = len(raw)  # it may have changed since the lstat
        if "bytes" in info and size != info["bytes"]:
            raise ScenecapError(f"{p}: {size} bytes; the manifest says {info['bytes']} (the file was "
                                "changed or truncated)")
        digest = hashlib.sha256(raw).hexdigest()
        if verify and digest != info["sha256"]:
            raise ScenecapError(
                f"{p}: sha256 {digest[:12]}... does not match the manifest's {info['sha256'][:12]}...; "
                "the file was changed or corrupted"
            )
        out[name] = raw
    return out


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Every file the manifest lists exists, has the recorded size and the recorded sha256."""
    read_files(bundle_dir, manifest)


def load_bundle(bundle_dir: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle: manifest valid, files present with matching hashes, vocab consistent.

    Each file is read once; the Bundle keeps the verified bytes, from which everything else is made."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    data = read_files(bundle_dir, manifest, verify)
    vocab_path = bundle_dir / manifest.vocab
    vocab = Vocab.parse(data[manifest.vocab], vocab_path)
    if vocab.ids != {k: manifest.tokens[k] for k in vocab.ids}:
        raise ScenecapError(
            f"{vocab_path}: special token ids {vocab.ids} differ from the manifest's {manifest.tokens}"
        )
    vsize = manifest.model.get("vocab_size")
    if vsize is not None and vsize != len(vocab):
        raise ScenecapError(f"{vocab_path}: {len(vocab)} tokens; the manifest says {vsize}")
    logits = _logits_vocab(manifest)  # checked whether or not model.vocab_size is given: a word per logit
    if len(vocab) != logits:
        raise ScenecapError(f"{vocab_path}: {len(vocab)} tokens; the decoder's logits score {logits} (one token "
                            "per logit expected)")
    return Bundle(bundle_dir, manifest, vocab, data)


def load_embedding(bundle: Bundle) -> np.ndarray | None:
    """An embedding-input decoder's word table (quantised like its input, if that is quantised), or None.

    Read from the verified bytes, never unpickled; the header's shape and dtype are checked against the manifest
    before any data is read, so a header claiming a huge array allocates nothing."""
    spec = bundle.manifest.embedding
    if not spec:
        return None
    path = bundle.file(spec["file"])
    shape, fortran, dtype, body = _npy_header(bundle.content(spec["file"]), path)
    if list(shape) != list(spec["shape"]) or dtype.name != spec["dtype"] or fortran:
        raise ScenecapError(f"{path}: {dtype.name}{list(shape)}{' (Fortran order)' if fortran else ''}; the "
                            f"manifest says {spec['dtype']}{spec['shape']}")
    return _npy_data(body, shape, dtype, path)


def _npy_header(raw: bytes, where: object) -> tuple[tuple[int, ...], bool, np.dtype, memoryview]:
    """A .npy file's (shape, fortran order, dtype, data bytes), its header read without touching the data and
    never unpickled: the caller checks them against the manifest before anything is allocated."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"format version {version[0]}.{version[1]}; expected 1.0 or 2.0")
        shape, fortran, dtype = readers[version](f, max_header_size=NPY_HEADER_BYTES)
    except (OSError, ValueError, SyntaxError, TypeError) as e:
        raise ScenecapError(f"{where}: not a readable .npy array ({str(e).splitlines()[0] if str(e) else e})") from None
    return tuple(shape), fortran, dtype, memoryview(raw)[f.tell():]


def _npy_data(body: memoryview, shape: tuple[int, ...], dtype: np.dtype, where: object) -> np.ndarray:
    """The array of a checked header: exactly the bytes it needs, copied (writable, not tied to the file's)."""
    needed = math.prod(shape) * dtype.itemsize
    if len(body) != needed:
        raise ScenecapError(f"{where}: {len(body)} bytes of data; {dtype.name}{list(shape)} needs {needed}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def _stats_shapes(conf: dict) -> dict[str, tuple[int, ...]]:
    """The stats file's arrays and their shapes, as the confidence section says (float32 each)."""
    k, p = conf["components"], conf["pooled_dim"]
    return {"mean": (p,), "components": (k, p), "variances": (k,), "residual": (1,),
            "references": (conf["references"],)}


def _npy_array(raw: bytes, shape: tuple[int, ...], where: str) -> np.ndarray:
    """One float32 .npy array of this shape from bytes: header checked before the data is touched, never
    unpickled."""
    got, fortran, dtype, body = _npy_header(raw, where)
    if got != tuple(shape) or dtype != np.dtype("<f4") or fortran:
        raise ScenecapError(f"{where}: {dtype.name}{list(got)}; the manifest says float32{list(shape)}")
    return _npy_data(body, shape, dtype, where)


def load_confidence_arrays(bundle: Bundle) -> dict[str, np.ndarray] | None:
    """The confidence section's statistics (mean, components, variances, residual, references), or None.

    From the verified bytes: a .npz (zip) whose members are exactly the expected .npy arrays, each member's
    stated size checked against the manifest's shapes before it is decompressed, each read with its header
    checked (no pickle, no allocation a header asks for)."""
    conf = bundle.manifest.confidence
    if not conf:
        return None
    import zipfile

    path = bundle.file(conf["file"])
    shapes = _stats_shapes(conf)
    try:
        with zipfile.ZipFile(io.BytesIO(bundle.content(conf["file"]))) as z:
            names = sorted(i.filename for i in z.infolist())
            if names != sorted(f"{n}.npy" for n in shapes):
                raise ScenecapError(f"{path}: holds {names}; expected {', '.join(f'{n}.npy' for n in shapes)}")
            out = {}
            for name, shape in shapes.items():
                info = z.getinfo(f"{name}.npy")
                if info.file_size > math.prod(shape) * 4 + NPY_HEADER_BYTES:
                    raise ScenecapError(f"{path}: {name}.npy is {info.file_size} bytes; float32{list(shape)} "
                                        "needs far less")
                out[name] = _npy_array(z.read(info), shape, f"{path}: {name}.npy")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, ValueError) as e:
        raise ScenecapError(f"{path}: not a readable stats file ({str(e).splitlines()[0] if str(e) else e}); "
                            "re-run 'scenecap calibrate'") from None
    return out
