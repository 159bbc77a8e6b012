"""The training settings as a flat table: every scalar field of TrainConfig and of its tables (model, text,
augment) with its type and default, and the fixed lists some settings choose from. The dataclasses are the one
truth (a field added there is an option of `scenecap train`); none of them imports Keras, so the command line
builds on a Pi without TensorFlow too (tests/test_train_edge_install.py).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import MISSING, dataclass
from typing import Any

from scenecap.train.datasets import FORMATS
from scenecap.train.model_config import BACKBONES, FEATURE_STRIDES
from scenecap.train.text import NORMALIZATIONS

SCALARS = {"bool": bool, "int": int, "float": float, "str": str}

MODES = ("finetune", "cached")
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
MONITORS = ("auto", "loss", "val_loss", "val_bleu4", "val_cider")
CACHE_IMAGES = ("auto", "memory", "none")


@dataclass(frozen=True)
class Setting:
    key: str  # dotted inside a table: model.units
    type: type  # bool, int, float or str (None may be allowed besides)
    default: Any  # dataclasses.MISSING when the field has none (train, model.vocab_size)


def _scalar(annotation: Any) -> type | None:
    """The one scalar type of an annotation ('str | None' -> str); None for lists, tables and the like."""
    names = [n.strip() for n in str(annotation).split("|")]
    found = [SCALARS[n] for n in names if n in SCALARS]
    return found[0] if len(found) == 1 and all(n in SCALARS or n == "None" for n in names) else None


def _table_settings(cls: type, prefix: str = ""):
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        table = f.default_factory() if f.default_factory is not MISSING else None
        if dataclasses.is_dataclass(table):
            yield from _table_settings(type(table), f"{key}.")  # a table: model, text, augment
            continue
        kind = _scalar(f.type)
        if kind is not None:  # a list or mapping would be set in a file, not as one option (none exists yet)
            yield Setting(key, kind, f.default)


@functools.cache
def settings() -> tuple[Setting, ...]:
    """Every scalar setting, in the order the dataclasses define them."""
    from scenecap.train.config import TrainConfig  # config imports CHOICES from here

    return tuple(_table_settings(TrainConfig))


# Settings that take one of a fixed list: offered as choices by `scenecap train`, checked by config.check_values.
CHOICES = {
    "mode": MODES, "strategy": STRATEGIES, "monitor": MONITORS, "cache_images": CACHE_IMAGES,
    "dataset_format": ("auto", *FORMATS), "text.normalization": NORMALIZATIONS,
    "model.backbone": BACKBONES,
    "model.feature_stride": FEATURE_STRIDES,
}
