"""The bundle manifest's schema (format v1): one frozen dataclass per section, each checking its own fields.

The manifest is the single source of truth for everything both sides must agree on: shapes, preprocessing,
special tokens, quantisation parameters, decoder state mode. convert/ writes it with these classes; edge/ reads
it with `parse_manifest`, which returns a Manifest or raises one ScenecapError line naming the file and the field.
How the sections fit together (tensor shapes, vocabulary size) is checked in manifest_shapes.py; loading and
verifying a bundle's files is edge/bundle.py's. A newer major format version is refused; a newer minor one is
read, and keys this version does not know are kept in each section's `extra` (and written back by `to_json`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from scenecap.edge.confidence import MAX_COMPONENTS, MAX_REFERENCES, stats_shapes
from scenecap.edge.errors import ScenecapError
from scenecap.edge.manifest_fields import (
    check_dtype,
    err,
    is_int,
    is_number,
    key,
    plain_name,
    quant_params,
    whole_number,
)
from scenecap.edge.manifest_models import ModelSpec
from scenecap.edge.manifest_shapes import check_shapes
from scenecap.edge.preprocess import PreprocessSpec

FORMAT = "scenecap-bundle"
# major.minor: a newer minor adds optional keys; a newer major is refused.
# 1.1 adds models.*.options/runtimes and decoder.embedding (the Edge TPU decoder's lookup table).
# 1.2 adds the optional `confidence` section (image statistics and the unsure threshold, from `scenecap calibrate`).
# 1.3 adds confidence.direction_references: outlier exposure (`calibrate --outlier-images`), the discriminant
# direction and its scale as two more arrays of the stats file, which a 1.2 runtime refuses rather than ignores.
# models.decoder_step.outputs.log_norm (optional, float32 [batch]: each logits row's log-sum-exp, from convert's
# float-logit decoders) needs no new version: outputs always mapped names to tensors, and a runtime from before it
# binds every output the manifest lists and reads only the three it knows (so it computes the log-sum-exp itself).
# 1.4 adds confidence.second_look (`calibrate --second-look`): the zoom of the gate's second view and the
# threshold that goes with it; a 1.3 runtime ignores it and applies `threshold`, the one-look one, as before.
FORMAT_VERSION = "1.4"
MANIFEST = "manifest.json"
DECODER_STATES = ("carry", "legacy-zero")
MODEL_NAMES = ("encoder", "decoder_step")
# A caption is one sentence (the original system stopped at 46 words); 1024 steps is ~15 s of decoding on a Pi, and
# a model that never says <end> must still stop in bounded time and memory.
MAX_LENGTH = 1024
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def _split(d: dict, cls: type) -> tuple[dict, dict]:
    """(the keys that are cls's fields, the others): a section's known keys and its `extra`."""
    known = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in d.items() if k in known}, {k: v for k, v in d.items() if k not in known}


@dataclass(frozen=True)
class ModelDims:
    """`model`: the network's dimensions as training recorded them, each optional (None: not recorded). What the
    runtime needs it takes from the tensors (Manifest.vocab_size, feature_dim); locations, units and vocab_size,
    when given, must agree with them (manifest_shapes.py). Fields in the order training writes them."""

    backbone: Any = None  # backbone, alpha, backbone_channels, fc_units, output_rank: for people, not checked
    alpha: Any = None
    image_size: int | None = None
    locations: int | None = None
    backbone_channels: Any = None
    feature_dim: int | None = None
    embed_dim: int | None = None
    attention_dim: int | None = None
    units: int | None = None
    fc_units: Any = None
    vocab_size: int | None = None
    output_rank: Any = None  # a factored output layer's rank (train --set model.output_rank), not checked
    extra: dict[str, Any] = field(default_factory=dict)  # unknown optional keys, kept on rewrite

    @classmethod
    def from_json(cls, d: dict, where: str) -> ModelDims:
        """`where`: "<manifest>: model"."""
        for name in ("image_size", "locations", "feature_dim", "embed_dim", "attention_dim", "units", "vocab_size"):
            v = d.get(name)
            if v is not None and (not is_int(v) or v < 1):
                raise ScenecapError(f"{where}.{name} is {v!r}; expected a positive integer")
        known, extra = _split(d, cls)
        return cls(**known, extra=extra)

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in d.items() if v is not None}, **self.extra}


@dataclass(frozen=True)
class EmbeddingTable:
    """decoder.embedding: an embedding-input decoder's word table (Edge TPU, int16x8), [vocabulary, embed_dim],
    stored like the decoder's embedding input. The loader sizes the file from these before reading it, and
    inspect prints them."""

    file: str
    shape: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, e: Any, where: str) -> EmbeddingTable:
        """`where`: "<manifest>: decoder.embedding"."""
        if not isinstance(e, dict):
            raise ScenecapError(f"{where} is {type(e).__name__}; expected an object with a file")
        file = plain_name(e.get("file"), f"{where}.file")
        shape = e.get("shape")
        if not isinstance(shape, list) or len(shape) != 2 or not all(is_int(x) and x >= 1 for x in shape):
            raise ScenecapError(f"{where}.shape {shape!r}; expected [vocabulary, embed_dim]")
        dtype = check_dtype(e.get("dtype"), f"{where}.dtype")
        scale, zero_point = quant_params(e, dtype, where)
        return cls(file, list(shape), dtype, scale, zero_point, _split(e, cls)[1])

    def to_json(self) -> dict:
        return {"file": self.file, "shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point, **self.extra}


@dataclass(frozen=True)
class DecoderSpec:
    """`decoder`: how the decoder step is driven."""

    state: str = "carry"  # carry: the hidden state goes from word to word; legacy-zero: imported canesee models
    batch: int = 1  # the beam width one invoke advances
    embedding: EmbeddingTable | None = None  # an embedding-input decoder's word table (Edge TPU, int16x8)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown optional keys, kept on rewrite

    @classmethod
    def from_json(cls, d: dict, where: str) -> DecoderSpec:
        """`where`: "<manifest>: decoder"."""
        state = d.get("state", "carry")
        if state not in DECODER_STATES:
            raise ScenecapError(f"{where}.state {state!r}; expected one of {DECODER_STATES}")
        batch = d.get("batch", 1)
        if not is_int(batch) or batch < 1:
            raise ScenecapError(f"{where}.batch {batch!r}; expected a positive integer")
        table = d.get("embedding")  # checked whatever the decoder's input: its file is among the hashed files
        embedding = None if table is None else EmbeddingTable.from_json(table, f"{where}.embedding")
        return cls(state, batch, embedding, _split(d, cls)[1])

    def to_json(self) -> dict:
        table = {"embedding": self.embedding.to_json()} if self.embedding else {}
        return {"state": self.state, "batch": self.batch, **table, **self.extra}


MAX_ZOOM = 2.0  # a second look at half the image would be another picture, not another view of it


@dataclass(frozen=True)
class SecondLook:
    """confidence.second_look (format 1.4): the zoom of the second view and the threshold calibrated with it."""

    zoom: float
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)  # how it was chosen (val_confident...), not read

    @classmethod
    def from_json(cls, c: Any, where: str) -> SecondLook:
        if not isinstance(c, dict):
            raise ScenecapError(f"{where} is {type(c).__name__}; expected an object with a zoom and a threshold")
        z, t = c.get("zoom"), c.get("threshold")
        if not is_number(z) or not 1 < z <= MAX_ZOOM:
            raise ScenecapError(f"{where}.zoom is {z!r}; expected a number above 1 and at most {MAX_ZOOM:g}")
        if not is_number(t) or not 0 <= t <= 1:
            raise ScenecapError(f"{where}.threshold is {t!r}; expected a number from 0 to 1")
        return cls(float(z), float(t), _split(c, cls)[1])

    def to_json(self) -> dict:
        return {"zoom": self.zoom, "threshold": self.threshold, **self.extra}


@dataclass(frozen=True)
class ConfidenceSection:
    """`confidence` (format 1.2, `scenecap calibrate`): the image statistics file, its sizes (the loader sizes the
    file's arrays from them before reading it) and the unsure threshold. None in a Manifest: captions get
    confidence from word probabilities only."""

    file: str
    components: int
    pooled_dim: int  # mean and spread of each encoder feature channel: 2 * feature_dim
    references: int
    threshold: float
    direction_references: int = 0  # format 1.3: the outlier direction's scale (0: no outlier exposure)
    second_look: SecondLook | None = None  # format 1.4: `threshold` applies to one look, this to two
    extra: dict[str, Any] = field(default_factory=dict)  # how they were chosen (percentile, images...), not read

    @classmethod
    def from_json(cls, c: Any, where: str, feature_dim: int) -> ConfidenceSection:
        """`where`: "<manifest>: confidence"; feature_dim: the encoder's features' channels."""
        if not isinstance(c, dict):
            raise ScenecapError(f"{where} is {type(c).__name__}; expected an object with a file")
        file = plain_name(c.get("file"), f"{where}.file")
        if not file.endswith(".npz"):
            raise ScenecapError(f"{where}.file {file!r}; expected a .npz stats file")
        components = whole_number(c, "components", 1, MAX_COMPONENTS, where)
        references = whole_number(c, "references", 2, MAX_REFERENCES, where)
        if c.get("pooled_dim") != 2 * feature_dim:
            raise ScenecapError(f"{where}.pooled_dim is {c.get('pooled_dim')!r}; the encoder's features give "
                                f"{2 * feature_dim} (mean and spread of {feature_dim} channels)")
        t = c.get("threshold")
        if not is_number(t) or not 0 <= t <= 1:
            raise ScenecapError(f"{where}.threshold is {t!r}; expected a number from 0 to 1")
        direction = whole_number(c, "direction_references", 2, MAX_REFERENCES, where) \
            if "direction_references" in c else 0
        look = SecondLook.from_json(c["second_look"], f"{where}.second_look") if "second_look" in c else None
        return cls(file, components, c["pooled_dim"], references, t, direction, look, _split(c, cls)[1])

    @property
    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        """The stats file's arrays and their shapes (float32 each)."""
        return stats_shapes(self.components, self.pooled_dim, self.references, self.direction_references)

    def to_json(self) -> dict:
        direction = {"direction_references": self.direction_references} if self.direction_references else {}
        look = {"second_look": self.second_look.to_json()} if self.second_look else {}
        return {"file": self.file, "components": self.components, "pooled_dim": self.pooled_dim,
                "references": self.references, "threshold": self.threshold, **direction, **look, **self.extra}


@dataclass(frozen=True)
class FileEntry:
    """files.<name>: what a bundle file must hash to, and its size (checked before it is read) if recorded."""

    sha256: str
    bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, info: Any, where: str) -> FileEntry:
        """`where`: "<manifest>: files.<name>"."""
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or \
                not _SHA_RE.match(info["sha256"]):
            raise err(where, "expected an object with a sha256 (64 hex digits)")
        size = info.get("bytes")
        if "bytes" in info and (not is_int(size) or size < 0):
            raise ScenecapError(f"{where}.bytes {size!r}; expected a non-negative integer")
        return cls(info["sha256"], size, _split(info, cls)[1])

    def to_json(self) -> dict:
        size = {} if self.bytes is None else {"bytes": self.bytes}
        return {"sha256": self.sha256, **size, **self.extra}


@dataclass(frozen=True)
class Manifest:
    language: str
    preprocess: PreprocessSpec
    tokens: dict[str, int]  # pad, unk, start, end ids (and any other role's); vocab.json must agree
    max_length: int
    model: ModelDims
    decoder: DecoderSpec
    models: dict[str, ModelSpec]
    files: dict[str, FileEntry] = field(default_factory=dict)  # every file of the bundle but the manifest
    vocab: str = "vocab.json"
    scenecap_version: str = ""
    format_version: str = FORMAT_VERSION
    training: dict[str, Any] = field(default_factory=dict)  # free JSON for people: the run's configuration, recipe
    provenance: dict[str, Any] = field(default_factory=dict)  # free JSON for people: how it was converted
    confidence: ConfidenceSection | None = None  # format 1.2, `scenecap calibrate`
    extra: dict[str, Any] = field(default_factory=dict)  # unknown optional keys, kept on rewrite

    @property
    def decoder_state(self) -> str:
        return self.decoder.state

    @property
    def decoder_batch(self) -> int:
        return self.decoder.batch

    @property
    def embedding(self) -> EmbeddingTable | None:
        """An embedding-input decoder's word table (Edge TPU, int16x8), or None for a token-input decoder."""
        return self.decoder.embedding

    @property
    def vocab_size(self) -> int:
        """As the decoder's logits [batch, vocabulary] say: the one source (model.vocab_size, if recorded, agrees)."""
        return self.models["decoder_step"].outputs["logits"].shape[1]

    @property
    def feature_dim(self) -> int:
        """Channels of the encoder's features [1, locations, feature_dim]."""
        return self.models["encoder"].outputs["features"].shape[2]

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST) -> Manifest:
        """Validate a manifest's JSON (`where`: the file, for messages), or raise one ScenecapError line."""
        version = _format_version(data, where)
        _required_keys(data, where)
        pre = _preprocess(data["preprocess"], where)
        tokens = _tokens(data["tokens"], where)
        if not 2 <= data["max_length"] <= MAX_LENGTH:
            raise err(where, f"max_length {data['max_length']}; expected 2 to {MAX_LENGTH} (tokens, <start> included)")
        dims = ModelDims.from_json(data["model"], f"{where}: model")
        decoder = DecoderSpec.from_json(data["decoder"], f"{where}: decoder")
        models = _models(data["models"], where)
        check_shapes(models, pre, dims, decoder, tokens, where)
        files = _files(data["files"], where)
        vocab = plain_name(data["vocab"], f"{where}: vocab")
        confidence = None
        if "confidence" in data:
            feature_dim = models["encoder"].outputs["features"].shape[2]
            confidence = ConfidenceSection.from_json(data["confidence"], f"{where}: confidence", feature_dim)
        _all_hashed(files, _named_files(models, vocab, decoder, confidence), where)
        for name in ("training", "provenance"):
            if name in data and not isinstance(data[name], dict):
                raise err(where, f"{name!r} is {type(data[name]).__name__}; expected an object")
        return cls(language=data["language"], preprocess=pre, tokens=tokens, max_length=data["max_length"],
                   model=dims, decoder=decoder, models=models, files=files, vocab=vocab,
                   scenecap_version=str(data.get("scenecap_version", "")), format_version=version,
                   training=data.get("training", {}), provenance=data.get("provenance", {}), confidence=confidence,
                   extra={k: v for k, v in data.items() if k not in _TOP_KEYS})

    def to_json(self) -> dict:
        d = {
            "format": FORMAT,
            "format_version": self.format_version,
            "scenecap_version": self.scenecap_version,
            "language": self.language,
            "preprocess": self.preprocess.to_json(),
            "tokens": dict(self.tokens),
            "max_length": self.max_length,
            "model": self.model.to_json(),
            "decoder": self.decoder.to_json(),
            "models": {k: v.to_json() for k, v in self.models.items()},
            "files": {k: v.to_json() for k, v in self.files.items()},
            "vocab": self.vocab,
            "training": self.training,
            "provenance": self.provenance,
        }
        if self.confidence:
            d["confidence"] = self.confidence.to_json()
        return {**d, **self.extra}


def parse_manifest(data: Any, where: str = MANIFEST) -> Manifest:
    """Validate a manifest's JSON and return it as a Manifest, or raise one ScenecapError line."""
    return Manifest.from_json(data, where)


_REQUIRED = {"format_version": str, "language": str, "preprocess": dict, "tokens": dict, "max_length": int,
             "model": dict, "decoder": dict, "models": dict, "files": dict, "vocab": str}
_TOP_KEYS = {"format", "scenecap_version", "training", "provenance", "confidence", *_REQUIRED}


def _format_version(data: Any, where: str) -> str:
    """A scenecap bundle manifest of a major version this runtime reads: its format_version."""
    if not isinstance(data, dict):
        raise err(where, "expected a JSON object")
    if data.get("format") != FORMAT:
        raise err(where, f"'format' is {data.get('format')!r}; expected {FORMAT!r}")
    if "format_version" not in data:
        raise err(where, "missing required key 'format_version'")
    version = data["format_version"]
    if not isinstance(version, str) or not re.match(r"^\d+\.\d+$", version):
        raise err(where, f"format_version {version!r}; expected 'MAJOR.MINOR' such as {FORMAT_VERSION!r}")
    major, ours = int(version.split(".")[0]), int(FORMAT_VERSION.split(".")[0])
    if major > ours:
        raise err(where, f"bundle format {version} is newer than this runtime reads ({FORMAT_VERSION}); "
                  "upgrade scenecap")
    if major < 1:
        raise err(where, f"format_version {version!r}; expected 1.x")
    return version


def _required_keys(data: dict, where: str) -> None:
    for name, typ in _REQUIRED.items():
        if name not in data:
            raise err(where, f"missing required key {name!r}")
        if not isinstance(data[name], typ) or (typ is int and isinstance(data[name], bool)):
            raise err(where, f"{name!r} is {type(data[name]).__name__}; expected {typ.__name__}")


def _preprocess(d: dict, where: str) -> PreprocessSpec:
    for name in ("height", "width"):  # checked here: PreprocessSpec would fail comparing a string with 1
        if not is_int(d.get(name)):
            raise err(where, f"preprocess.{name} is {d.get(name)!r}; expected a positive integer")
    # Named here with repr: the TypeError PreprocessSpec(**...) gives would quote a key such as "\n" raw.
    names = [f.name for f in fields(PreprocessSpec)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise err(where, f"preprocess has unknown key(s) {', '.join(map(repr, unknown))}; expected {', '.join(names)}")
    try:
        return PreprocessSpec(**d)
    except (TypeError, ScenecapError) as e:
        raise err(where, f"preprocess: {e}") from None


def _tokens(tokens: dict, where: str) -> dict[str, int]:
    for role in ("pad", "unk", "start", "end"):
        if not is_int(tokens.get(role)):
            raise err(where, f"tokens.{role} missing or not an integer id")
    for role, idx in tokens.items():  # extra roles too: every id is checked against the vocabulary size
        if not is_int(idx):
            raise err(where, f"{key('tokens', role)} is {idx!r}; expected an integer id")
    return dict(tokens)


def _models(d: dict, where: str) -> dict[str, ModelSpec]:
    """The encoder and the decoder step, then any other model (a newer minor version's), each well-formed."""
    names = [*MODEL_NAMES, *(n for n in d if n not in MODEL_NAMES)]
    return {n: ModelSpec.from_json(d.get(n), f"{where}: {key('models', n)}") for n in names}


def _files(d: dict, where: str) -> dict[str, FileEntry]:
    out = {}
    for name, info in d.items():
        plain_name(name, f"{where}: files entry")
        out[name] = FileEntry.from_json(info, f"{where}: {key('files', name)}")
    return out


def _named_files(models: dict[str, ModelSpec], vocab: str, decoder: DecoderSpec,
                 confidence: ConfidenceSection | None) -> set[str]:
    """Every file the manifest's sections name: each must be hashed."""
    named = {vocab} | {m.file for m in models.values()} | {m.edgetpu_file for m in models.values() if m.edgetpu_file}
    if decoder.embedding:
        named.add(decoder.embedding.file)
    if confidence:
        named.add(confidence.file)
    return named


def _all_hashed(files: dict[str, FileEntry], named: set[str], where: str) -> None:
    for name in sorted(named):
        if name not in files:
            raise err(where, f"files has no hash for {name}")
