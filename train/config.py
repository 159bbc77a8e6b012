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
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from scenecap import ScenecapError, __version__
from scenecap.edge.bundle import DECODER_STATES
from scenecap.edge.preprocess import RESIZE_METHODS, PreprocessSpec
from scenecap.train.datasets import FORMATS
from scenecap.train.model import BACKBONES, FEATURE_STRIDES, ModelConfig
from scenecap.train.text import TextOptions

MODES = ("finetune", "cached")
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
MONITORS = ("auto", "loss", "val_loss", "val_bleu4", "val_cider")
CACHE_IMAGES = ("auto", "memory", "none")


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
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScenecapError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
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
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, _FromText) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], source, key)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return tp(**_typed(tp, value, source, key + "."))
    text = isinstance(value, _FromText)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if text and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if text:
                return int(value)
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if text:
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return str(value)
        else:
            return value
    except ValueError:
        pass
    want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))
    raise ScenecapError(f"{source}: '{key}' must be {want}, got {str(value) if text else repr(value)}")


def check_values(cfg: TrainConfig) -> None:
    """Values every later stage relies on, checked before any data is read."""
    def bad(key, value, want):
        raise ScenecapError(f"config: {key} = {value!r}; expected {want}")

    if cfg.mode not in MODES:
        bad("mode", cfg.mode, f"one of {MODES}")
    if cfg.strategy not in STRATEGIES:
        bad("strategy", cfg.strategy, f"one of {STRATEGIES}")
    if cfg.monitor not in MONITORS:
        bad("monitor", cfg.monitor, f"one of {MONITORS}")
    if cfg.cache_images not in CACHE_IMAGES:
        bad("cache_images", cfg.cache_images, f"one of {CACHE_IMAGES}")
    # Checked here, before any data is read, rather than later: dataset_format when the file is read; resize,
    # min_count and max_vocab only after validation has decoded every image (hours for a big dataset).
    if cfg.dataset_format not in ("auto", *FORMATS):
        bad("dataset_format", cfg.dataset_format, f"auto or one of {FORMATS}")
    if cfg.resize not in RESIZE_METHODS:
        bad("resize", cfg.resize, f"one of {tuple(RESIZE_METHODS)}")
    if cfg.min_count < 1:
        bad("min_count", cfg.min_count, "1 or more")
    if cfg.max_vocab is not None and cfg.max_vocab <= 4:
        bad("max_vocab", cfg.max_vocab, "more than the 4 special tokens")
    for key in ("epochs", "batch_size", "val_caption_images", "log_every_steps"):
        if getattr(cfg, key) < (0 if key in ("val_caption_images",) else 1):
            bad(key, getattr(cfg, key), "a positive integer")
    for key in ("freeze_epochs", "early_stopping", "checkpoint_every_steps"):
        if getattr(cfg, key) < 0:
            bad(key, getattr(cfg, key), "0 or more")
    if not 0 < cfg.learning_rate < math.inf:
        bad("learning_rate", cfg.learning_rate, "a positive number")
    if cfg.finetune_learning_rate is not None and not 0 < cfg.finetune_learning_rate < math.inf:
        bad("finetune_learning_rate", cfg.finetune_learning_rate, "a positive number")
    if not 0 <= cfg.clipnorm < math.inf:  # Keras silently ignores a negative or NaN one; inf gives NaN gradients
        bad("clipnorm", cfg.clipnorm, "0 (no clipping) or a positive number")
    m = cfg.model
    if m.backbone not in BACKBONES:  # else found only when the model is built, after validation
        bad("model.backbone", m.backbone, f"one of {BACKBONES}")
    if m.decoder_state not in DECODER_STATES:
        bad("model.decoder_state", m.decoder_state, f"one of {DECODER_STATES}")
    if m.feature_stride not in FEATURE_STRIDES:
        bad("model.feature_stride", m.feature_stride, f"one of {FEATURE_STRIDES}")
    if m.max_length != 0 and m.max_length < 3:
        bad("model.max_length", m.max_length, "3 or more (<start>, a word, <end>), or 0 to fit the captions")
    if m.image_size < 32 or m.image_size % 32:  # the backbone halves the image five times
        bad("model.image_size", m.image_size, "a multiple of 32, 32 or more (96 to 224 recommended for photos)")
    for key in ("embed_dim", "units", "attention_units", "fc_units"):
        if getattr(m, key) < 1:
            bad(f"model.{key}", getattr(m, key), "a positive integer")
    if m.backbone == "mobilenet_v2" and m.alpha not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        bad("model.alpha", m.alpha, "0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 for mobilenet_v2")
    if m.backbone.startswith("mobilenet_v3") and not 0.1 <= m.alpha <= 1.5:
        bad("model.alpha", m.alpha, "0.75 or 1.0 (with ImageNet weights) for MobileNetV3")
    if m.weights == "imagenet" and m.image_size not in (96, 128, 160, 192, 224):
        bad("model.image_size", m.image_size, "96, 128, 160, 192 or 224 with ImageNet weights")
