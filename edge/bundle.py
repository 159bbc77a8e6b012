"""The bundle format (v1): a folder of .tflite models, vocab.json and manifest.json.

The manifest is the single source of truth for everything both sides must agree on: shapes, preprocessing,
special tokens, quantisation parameters, decoder state mode. convert/ writes it; edge/ reads it, here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scenecap.edge.errors import ScenecapError
from scenecap.edge.fileio import sha256_file
from scenecap.edge.preprocess import PreprocessSpec
from scenecap.edge.vocab import Vocab

FORMAT = "scenecap-bundle"
FORMAT_VERSION = "1.0"  # major.minor: a newer minor adds optional keys; a newer major is refused
MANIFEST = "manifest.json"
DECODER_STATES = ("carry", "legacy-zero")
QUANTS = ("float32", "float16", "dynamic", "int8", "edgetpu")


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


@dataclass
class ModelSpec:
    file: str
    quant: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    ops: list[str] = field(default_factory=list)  # "FULLY_CONNECTED:v9", one entry per distinct op
    edgetpu_file: str | None = None


@dataclass
class Manifest:
    language: str
    preprocess: PreprocessSpec
    tokens: dict[str, int]  # pad, unk, start, end ids; vocab.json must agree
    max_length: int
    model: dict[str, Any]  # dimensions: backbone, alpha, image_size, locations, feature_dim, units, vocab_size...
    decoder: dict[str, Any]  # state: carry|legacy-zero; batch: fixed beam width of decoder_step
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

    def to_json(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d = {"format": FORMAT, **d, **extra}
        return d


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


def _err(where: str, msg: str) -> ScenecapError:
    return ScenecapError(f"{where}: {msg}")


def _tensor(d: Any, where: str) -> TensorSpec:
    if not isinstance(d, dict):
        raise _err(where, "expected an object with name, shape, dtype")
    try:
        shape = [int(x) for x in d["shape"]]
        return TensorSpec(
            name=str(d["name"]),
            shape=shape,
            dtype=str(d["dtype"]),
            scale=float(d.get("scale", 0.0)),
            zero_point=int(d.get("zero_point", 0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _err(where, f"bad tensor description ({e!r}); expected name, shape (list of int), dtype") from None


def parse_manifest(data: Any, where: str = MANIFEST) -> Manifest:
    """Validate a manifest's JSON and return it as a Manifest, or raise one ScenecapError line."""
    if not isinstance(data, dict):
        raise _err(where, "expected a JSON object")
    if data.get("format") != FORMAT:
        raise _err(where, f"'format' is {data.get('format')!r}; expected {FORMAT!r}")
    for key, typ in _REQUIRED.items():
        if key not in data:
            raise _err(where, f"missing required key {key!r}")
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise _err(where, f"{key!r} is {type(data[key]).__name__}; expected {typ.__name__}")
    version = data["format_version"]
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise _err(where, f"format_version {version!r}; expected MAJOR.MINOR") from None
    ours = int(FORMAT_VERSION.split(".")[0])
    if major > ours:
        raise _err(where, f"bundle format {version} is newer than this runtime reads ({FORMAT_VERSION}); "
                   "upgrade scenecap")
    if major < 1:
        raise _err(where, f"format_version {version!r}; expected 1.x")
    try:
        pre = PreprocessSpec(**data["preprocess"])
    except TypeError as e:
        raise _err(where, f"preprocess: {e}") from None
    except ScenecapError as e:
        raise _err(where, f"preprocess: {e}") from None
    tokens = data["tokens"]
    for role in ("pad", "unk", "start", "end"):
        if not isinstance(tokens.get(role), int) or isinstance(tokens.get(role), bool):
            raise _err(where, f"tokens.{role} missing or not an integer id")
    if data["max_length"] < 2:
        raise _err(where, f"max_length {data['max_length']}; expected at least 2")
    state = data["decoder"].get("state", "carry")
    if state not in DECODER_STATES:
        raise _err(where, f"decoder.state {state!r}; expected one of {DECODER_STATES}")
    batch = data["decoder"].get("batch", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise _err(where, f"decoder.batch {batch!r}; expected a positive integer")
    models = {}
    for name in ("encoder", "decoder_step"):
        m = data["models"].get(name)
        if not isinstance(m, dict):
            raise _err(where, f"models.{name} missing; expected an object with file, quant, inputs, outputs")
        if not isinstance(m.get("file"), str) or not m.get("file"):
            raise _err(where, f"models.{name}.file missing; expected a file name")
        if not isinstance(m.get("inputs"), dict) or not isinstance(m.get("outputs"), dict):
            raise _err(where, f"models.{name}: inputs and outputs must be objects")
        quant = m.get("quant", "float32")
        if quant not in QUANTS:
            raise _err(where, f"models.{name}.quant {quant!r}; expected one of {QUANTS}")
        models[name] = ModelSpec(
            file=m["file"],
            quant=quant,
            inputs={k: _tensor(v, f"{where}: models.{name}.inputs.{k}") for k, v in m["inputs"].items()},
            outputs={k: _tensor(v, f"{where}: models.{name}.outputs.{k}") for k, v in m["outputs"].items()},
            ops=[str(o) for o in m.get("ops", [])],
            edgetpu_file=m.get("edgetpu_file"),
        )
    for name, info in data["files"].items():
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise _err(where, f"files.{name}: expected an object with a sha256 string")
    known = {f.name for f in Manifest.__dataclass_fields__.values()} | {"format"}
    return Manifest(
        language=data["language"],
        preprocess=pre,
        tokens={k: int(v) for k, v in tokens.items()},
        max_length=data["max_length"],
        model=data["model"],
        decoder=data["decoder"],
        models=models,
        files=data["files"],
        vocab=data["vocab"],
        scenecap_version=str(data.get("scenecap_version", "")),
        format_version=version,
        training=data.get("training", {}) if isinstance(data.get("training"), dict) else {},
        provenance=data.get("provenance", {}) if isinstance(data.get("provenance"), dict) else {},
        extra={k: v for k, v in data.items() if k not in known},
    )


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    vocab: Vocab

    def file(self, name: str) -> Path:
        return self.path / name


def read_manifest(bundle_dir: str | Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST
    if not Path(bundle_dir).is_dir():
        raise ScenecapError(f"{bundle_dir}: not a bundle folder (no such directory)")
    if not path.is_file():
        raise ScenecapError(f"{path}: missing; a bundle folder needs a manifest.json (is this a bundle?)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ScenecapError(f"{path}: not UTF-8 text; expected JSON") from None
    except json.JSONDecodeError as e:
        raise ScenecapError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return parse_manifest(data, str(path))


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Every file the manifest lists exists and has the recorded sha256."""
    needed = {manifest.vocab} | {m.file for m in manifest.models.values()}
    for name in sorted(needed):
        if name not in manifest.files:
            raise ScenecapError(f"{bundle_dir / MANIFEST}: files has no hash for {name}")
    for name, info in sorted(manifest.files.items()):
        p = bundle_dir / name
        if not p.is_file():
            raise ScenecapError(f"{p}: missing from the bundle (listed in manifest.json)")
        digest = sha256_file(p)
        if digest != info["sha256"]:
            raise ScenecapError(
                f"{p}: sha256 {digest[:12]}... does not match the manifest's {info['sha256'][:12]}...; "
                "the file was changed or corrupted"
            )


def load_bundle(bundle_dir: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle: manifest valid, files present with matching hashes, vocab consistent."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    if verify:
        verify_files(bundle_dir, manifest)
    vocab = Vocab.load(bundle_dir / manifest.vocab)
    if vocab.ids != {k: manifest.tokens[k] for k in vocab.ids}:
        raise ScenecapError(
            f"{bundle_dir / manifest.vocab}: special token ids {vocab.ids} differ from the manifest's {manifest.tokens}"
        )
    vsize = manifest.model.get("vocab_size")
    if vsize is not None and vsize != len(vocab):
        raise ScenecapError(f"{bundle_dir / manifest.vocab}: {len(vocab)} tokens; the manifest says {vsize}")
    return Bundle(bundle_dir, manifest, vocab)
