"""The training settings, described without importing them: every field of TrainConfig and of its tables (model,
text, augment) with its type and default, and the fixed lists some settings choose from.

The fields are read from the dataclasses' source rather than imported: train/model.py imports Keras, and the
command line that lists them is built on every `scenecap` run, `scenecap train --help` on a Pi without TensorFlow
included (tests/test_train_edge_install.py). The source stays the one truth: a field added to a dataclass is
listed here, with the default written there.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from scenecap.train.datasets import FORMATS
from scenecap.train.text import NORMALIZATIONS

HERE = Path(__file__).parent
# A table's name (the TrainConfig field holding it; "" for the top level) -> the file and class defining it.
TABLES = {"": ("config.py", "TrainConfig"), "model": ("model.py", "ModelConfig"), "text": ("text.py", "TextOptions"),
          "augment": ("config.py", "AugmentConfig")}
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


@functools.cache
def _module(file: str) -> ast.Module:
    return ast.parse((HERE / file).read_text(encoding="utf-8"))


def _class(file: str, name: str) -> ast.ClassDef:
    return next(n for n in _module(file).body if isinstance(n, ast.ClassDef) and n.name == name)


def constant(file: str, name: str) -> Any:
    """A module-level literal of a file in train/ (BACKBONES in model.py), read without importing the file."""
    for node in _module(file).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{file} defines no {name}")


def _type_names(node: ast.expr | None) -> set[str]:
    """The names in an annotation: 'str | None' -> {'str', 'None'}."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _type_names(node.left) | _type_names(node.right)
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Constant):  # None, or an annotation written as a string
        return {str(node.value)}
    return set()


def _default(node: ast.expr | None) -> Any:
    try:
        return MISSING if node is None else ast.literal_eval(node)
    except ValueError:  # not a literal (field(default_factory=...)): no default to show
        return MISSING


def _table_settings(table: str):
    file, name = TABLES[table]
    for node in _class(file, name).body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue  # methods, docstrings, class constants
        key = f"{table}.{node.target.id}" if table else node.target.id
        if key in TABLES:
            yield from _table_settings(key)
            continue
        scalar = [SCALARS[n] for n in _type_names(node.annotation) if n in SCALARS]
        if len(scalar) == 1:  # a list or mapping would be set in a file, not as one option (none exists yet)
            yield Setting(key, scalar[0], _default(node.value))


@functools.cache
def settings() -> tuple[Setting, ...]:
    """Every scalar setting, in the order the dataclasses define them."""
    return tuple(_table_settings(""))


# Settings that take one of a fixed list: offered as choices by `scenecap train`, checked by config.check_values.
CHOICES = {
    "mode": MODES, "strategy": STRATEGIES, "monitor": MONITORS, "cache_images": CACHE_IMAGES,
    "dataset_format": ("auto", *FORMATS), "text.normalization": NORMALIZATIONS,
    "model.backbone": constant("model.py", "BACKBONES"),
    "model.feature_stride": constant("model.py", "FEATURE_STRIDES"),
}
