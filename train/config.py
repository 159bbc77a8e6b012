"""The training configuration: one dataclass, read from a TOML or YAML file, overridden from the command line,
type-checked with one-line errors, saved beside the checkpoints (config.json) and carried into the bundle.

    # train.toml                          # train.yaml
    train = "data/captions_train.json"    train: data/captions_train.json
    val = "data/captions_val.json"        val: data/captions_val.json
    epochs = 30                           epochs: 30
    mode = "cached"                       mode: cached
    [model]                               model:
    backbone = "mobilenet_v3_large"         backbone: mobilenet_v3_large
    image_size = 224                        image_size: 224

    scenecap train --config train.toml --epochs 40 --set model.units=256
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from scenecap import ScenecapError, __version__
from scenecap.edge.bundle import DECODER_STATES
from scenecap.edge.fileio import parse_json
from scenecap.edge.preprocess import RESIZE_METHODS, PreprocessSpec
from scenecap.train.config_fields import CHOICES
from scenecap.train.datasets import FORMATS
from scenecap.train.model_config import ModelConfig
from scenecap.train.text import TextOptions


@dataclass
class AugmentConfig:
    """Optional augmentation of the training images (finetune mode; cached features are computed once, so they
    cannot be). All off by default: a user turns on only what keeps their captions true."""
    colour: bool = False  # hue within +-0.02 of the circle (~7 degrees: no named colour becomes another),
    #                        brightness +-0.1, saturation x0.85-1.15
    crop: bool = False  # a random crop of 85-100% of each side, resized back: objects move a little
    flip: bool = False  # mirror half the images, swapping left/right words where the language says how


@dataclass
class TrainConfig:
    train: str  # annotation file of the training split
    val: str | None = None  # annotation file of the validation split (a Karpathy file: its 'val' split)
    images: str | None = None  # image folder (default: images/ or Images/ ... beside the annotation file)
    out: str = "runs/latest"
    language: str | None = None  # None: detected from the captions' script when training starts
    epochs: int = 10
    batch_size: int = 32  # per replica: the global batch is this times the number of GPUs/workers
    learning_rate: float = 1e-3
    seed: int = 0
    min_count: int = 1
    max_vocab: int | None = None
    resize: str = "area"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(vocab_size=0))
    text: TextOptions = field(default_factory=TextOptions)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # data
    dataset_format: str = "auto"  # auto | coco | karpathy | flickr | csv | jsonl
    train_list: str | None = None  # keep only the images named in this file (e.g. Flickr_8k.trainImages.txt)
    val_list: str | None = None
    skip_missing: bool = False  # train without missing/unreadable images instead of stopping
    check_images: bool = True  # decode every image before training starts
    cache_images: str = "auto"  # decoded images in RAM: auto (if under 1 GiB) | memory | none
    # speed and scale
    mode: str = "finetune"  # finetune: backbone trains | cached: backbone frozen, its features cached on disk
    freeze_epochs: int = 0  # finetune: keep the backbone frozen for this many epochs first
    finetune_learning_rate: float | None = None  # learning rate once the backbone unfreezes (default: same)
    feature_cache: str | None = None  # cached mode: feature shard folder (default: OUT/features), shareable
    strategy: str = "auto"  # auto: several workers from TF_CONFIG, else all local GPUs, else one device
    mixed_precision: bool = False  # float16 compute, float32 variables, loss scaling (for GPUs)
    jit_compile: bool = False  # XLA-compile the train step (slower on CPU, often faster on GPU)
    clipnorm: float = 5.0
    # runs
    monitor: str = "auto"  # best checkpoint and early stopping: auto = val_cider with validation data, else loss
    early_stopping: int = 0  # stop after this many epochs without improvement (0: never)
    val_caption_images: int = 200  # validation images captioned each epoch for BLEU/CIDEr
    checkpoint_every_steps: int = 0  # also save a resumable state every N steps (0: every epoch only)
    tensorboard: bool = True
    log_every_steps: int = 20

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scenecap_version"] = __version__
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "train config") -> TrainConfig:
        d = dict(d)
        d.pop("scenecap_version", None)
        return build_config(d, source)

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec(self.model.image_size, self.model.image_size, self.resize)


# --- reading files ------------------------------------------------------------------------------------------

def read_config_file(path: str | Path) -> dict:
    """A TOML (.toml) or YAML (.yaml/.yml) file -> dict; JSON (.json, e.g. a run's config.json) also works."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScenecapError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ScenecapError(f"{path}: is a folder; expected a .toml or .yaml config file") from None
    suffix = path.suffix.lower()
    try:
        text = raw.decode("utf-8-sig")  # -sig: Windows editors may start the file with a BOM, which TOML refuses
    except UnicodeDecodeError as e:
        raise ScenecapError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = _parse(path, suffix, text)
    except RecursionError:  # all three parsers give up on deep nesting this way, not with their own error
        raise ScenecapError(f"{path}: nested too deeply; expected a table of settings") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenecapError(f"{path}: expected a table of settings at the top level, got {type(data).__name__}")
    data.pop("scenecap_version", None)
    return data


def _parse(path: Path, suffix: str, text: str) -> typing.Any:
    """The file's text parsed by its suffix; syntax errors are one line naming the file (and line if known)."""
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ScenecapError(f"{path}: invalid TOML: {e}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise ScenecapError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    elif suffix == ".json":
        data = parse_json(text.encode("utf-8"), path, "table of settings")  # re-encoded: the BOM is off
    else:
        raise ScenecapError(f"{path}: unknown config file type {suffix!r}; expected .toml, .yaml or .yml")
    return data


# --- overrides ----------------------------------------------------------------------------------------------

def apply_override(d: dict, assignment: str, source: str = "--set") -> None:
    """'model.units=256' -> d['model']['units'] = '256' (a string: typed later, with the same checks as files)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ScenecapError(f"{source} {assignment!r}: expected KEY=VALUE, e.g. model.units=256")
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ScenecapError(f"{source} {assignment!r}: {p} is not a table")
    node[parts[-1]] = _FromText(value.strip())


class _FromText(str):
    """A value typed on the command line: parsed by the field's type ('256' -> 256, 'true' -> True)."""


# --- typing -------------------------------------------------------------------------------------------------

def build_config(d: dict, source: str = "config") -> TrainConfig:
    """A nested dict (file + overrides) -> TrainConfig; unknown keys and wrong types are one-line errors."""
    values = _typed(TrainConfig, d, source, "")
    if "train" not in values or not values["train"]:
        raise ScenecapError(f"{source}: no training annotations; give them on the command line or as 'train'")
    return TrainConfig(**values)


def _typed(cls, d: dict, source: str, prefix: str) -> dict:
    if not isinstance(d, dict):
        raise ScenecapError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a table, got {d!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    out = {}
    for key, value in d.items():
        if key not in known:
            # A misspelt table ([modle]) is meant to be a table: suggest 'model', not the closer 'mode'.
            tables = [k for k in known if dataclasses.is_dataclass(hints[k])] if isinstance(value, dict) else []
            close = difflib.get_close_matches(str(key), tables, n=1) or difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; expected one of {sorted(known)}"
            raise ScenecapError(f"{source}: unknown key '{prefix}{key}'{hint}")
        out[key] = _coerce(value, hints[key], source, prefix + key)
    if cls is ModelConfig:
        out.setdefault("vocab_size", 0)
    return out


def _coerce(value, tp, source: str, key: str):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _coerce_optional(value, typing.get_args(tp), source, key)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else tp(**_typed(tp, value, source, key + "."))
    if tp not in _SCALARS:
        return value
    parse, want = _SCALARS[tp]
    text = isinstance(value, _FromText)
    try:
        return parse(value, text)
    except ValueError:
        raise ScenecapError(f"{source}: '{key}' must be {want}, got {str(value) if text else repr(value)}") from None


def _coerce_optional(value, args: tuple, source: str, key: str):
    unset = value is None or (isinstance(value, _FromText) and value.lower() in ("none", "null", ""))
    if unset and type(None) in args:
        return None
    inner = [a for a in args if a is not type(None)]
    return _coerce(value, inner[0], source, key)


# Each parser takes a value from a file (already typed: 3, true) or typed on the command line (text: '3', 'true'),
# and raises ValueError for anything else. A bool is never taken for a number, nor a number for text.
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _as_bool(value, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError(value)


def _as_int(value, text: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if text:
        return int(value)
    raise ValueError(value)


def _as_float(value, text: bool) -> float:
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or text:
        return float(value)
    raise ValueError(value)


def _as_str(value, text: bool) -> str:
    if isinstance(value, str):
        return str(value)  # a plain str, not the _FromText marker
    raise ValueError(value)


_SCALARS = {bool: (_as_bool, "true or false"), int: (_as_int, "an integer"), float: (_as_float, "a number"),
            str: (_as_str, "a string")}


# --- values -------------------------------------------------------------------------------------------------

def _one_of(allowed) -> typing.Callable[[typing.Any], bool]:
    return lambda value: value in allowed


def _positive(value) -> bool:
    return 0 < value < math.inf


def _at_least(low: int) -> typing.Callable[[typing.Any], bool]:
    return lambda value: value >= low


def _choice(key: str) -> tuple:
    return key, _one_of(CHOICES[key]), f"one of {CHOICES[key]}"


# (key, test, what is expected), in the order checked: the first that fails is reported. Checked here, before
# any data is read, rather than where they are used: dataset_format when the file is read; resize, min_count and
# max_vocab only after validation has decoded every image (hours for a big dataset); the model's settings only
# when the model is built.
CHECKS: list[tuple[str, typing.Callable[[typing.Any], bool], str]] = [
    *map(_choice, ("mode", "strategy", "monitor", "cache_images")),
    ("dataset_format", _one_of(CHOICES["dataset_format"]), f"auto or one of {FORMATS}"),
    ("resize", _one_of(RESIZE_METHODS), f"one of {tuple(RESIZE_METHODS)}"),
    ("min_count", _at_least(1), "1 or more"),
    ("max_vocab", lambda v: v is None or v > 4, "more than the 4 special tokens"),
    *((key, _at_least(1), "a positive integer") for key in ("epochs", "batch_size")),
    ("val_caption_images", _at_least(0), "a positive integer"),
    ("log_every_steps", _at_least(1), "a positive integer"),
    *((key, _at_least(0), "0 or more") for key in ("freeze_epochs", "early_stopping", "checkpoint_every_steps")),
    ("learning_rate", _positive, "a positive number"),
    ("finetune_learning_rate", lambda v: v is None or _positive(v), "a positive number"),
    # Keras silently ignores a negative or NaN clipnorm; inf gives NaN gradients.
    ("clipnorm", lambda v: 0 <= v < math.inf, "0 (no clipping) or a positive number"),
    _choice("model.backbone"),
    ("model.decoder_state", _one_of(DECODER_STATES), f"one of {DECODER_STATES}"),
    _choice("model.feature_stride"),
    ("model.max_length", lambda v: v == 0 or v >= 3, "3 or more (<start>, a word, <end>), or 0 to fit the captions"),
    # The backbone halves the image five times.
    ("model.image_size", lambda v: v >= 32 and v % 32 == 0,
     "a multiple of 32, 32 or more (96 to 224 recommended for photos)"),
    *((f"model.{key}", _at_least(1), "a positive integer")
      for key in ("embed_dim", "units", "attention_units", "fc_units")),
]
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)


def check_values(cfg: TrainConfig) -> None:
    """Values every later stage relies on, checked before any data is read."""
    for key, ok, want in CHECKS:
        value = functools.reduce(getattr, key.split("."), cfg)
        if not ok(value):
            _bad(key, value, want)
    _check_backbone(cfg.model)


def _check_backbone(m: ModelConfig) -> None:
    """The settings that depend on the backbone or its weights."""
    if m.backbone == "mobilenet_v2" and m.alpha not in MOBILENET_V2_ALPHAS:
        _bad("model.alpha", m.alpha, "0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 for mobilenet_v2")
    if m.backbone.startswith("mobilenet_v3") and not 0.1 <= m.alpha <= 1.5:
        _bad("model.alpha", m.alpha, "0.75 or 1.0 (with ImageNet weights) for MobileNetV3")
    if m.weights == "imagenet" and m.image_size not in IMAGENET_SIZES:
        _bad("model.image_size", m.image_size, "96, 128, 160, 192 or 224 with ImageNet weights")


def _bad(key: str, value, want: str) -> typing.NoReturn:
    raise ScenecapError(f"config: {key} = {value!r}; expected {want}")
