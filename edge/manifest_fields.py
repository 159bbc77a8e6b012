"""Checks of single manifest fields, shared by every section, and the one-line error naming file and field.

A `where` is "<manifest path>: <field>", e.g. "bundles/x/manifest.json: decoder.embedding": the messages built
from it read "...: decoder.embedding.file 'x'; expected ..." whichever section raised them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scenecap.edge.errors import ScenecapError

DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
MAX_TENSOR_ELEMENTS = 1 << 28  # 1 GiB of float32: more than any input, output or word table of a captioner


def err(where: str, msg: str) -> ScenecapError:
    return ScenecapError(f"{where}: {msg}")


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def key(prefix: str, name: Any) -> str:
    """`prefix.name` for a plain key; `prefix['a\\nb']` for one a message would otherwise break over lines."""
    return f"{prefix}.{name}" if isinstance(name, str) and name.isprintable() else f"{prefix}[{name!r}]"


def plain_name(name: Any, label: str) -> str:
    """A file name inside the bundle folder: no folders, no '..', nothing absolute, no control characters (a NUL
    or newline, which no model file has and which would break the messages quoting the name). `label` is the
    file and field, e.g. "manifest.json: vocab"."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or \
            name.startswith("~") or ":" in name or not name.isprintable():
        raise ScenecapError(f"{label} {name!r}; expected a plain file name inside the bundle folder")
    return name


def check_dtype(dtype: Any, label: str) -> str:
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ScenecapError(f"{label} {dtype!r}; expected one of {', '.join(DTYPES)}")
    return dtype


def check_shape(shape: Any, where: str) -> list[int]:
    """A static tensor shape of positive integers, small enough to allocate."""
    if not isinstance(shape, list) or not all(is_int(x) and x >= 1 for x in shape):
        raise err(where, f"shape {shape!r}; expected a list of positive integers (static shapes only)")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise err(where, f"shape {shape!r} has more than {MAX_TENSOR_ELEMENTS} elements; expected a captioner's")
    return list(shape)


def quant_params(d: dict, dtype: str, where: str) -> tuple[float, int]:
    """(scale, zero_point), optional (0 = not quantised): numbers that fit the dtype."""
    scale, zp = d.get("scale", 0.0), d.get("zero_point", 0)
    if not is_number(scale) or not math.isfinite(scale) or scale < 0:
        raise err(where, f"scale {scale!r}; expected a finite number >= 0 (0 = not quantised)")
    if not is_int(zp):
        raise err(where, f"zero_point {zp!r}; expected an integer")
    if scale > 0 and dtype in ("int8", "uint8"):
        info = np.iinfo(dtype)
        if not info.min <= zp <= info.max:
            raise err(where, f"zero_point {zp} outside the {dtype} range")
    return float(scale), int(zp)


def whole_number(d: dict, name: str, low: int, high: int, where: str) -> int:
    """d[name], an integer from low to high; `where` names the section ("...: confidence")."""
    v = d.get(name)
    if not is_int(v) or not low <= v <= high:
        raise ScenecapError(f"{where}.{name} is {v!r}; expected a whole number from {low} to {high}")
    return v


def string_list(v: Any, label: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(o, str) for o in v):
        raise ScenecapError(f"{label} must be a list of strings")
    return list(v)
