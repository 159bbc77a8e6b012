"""The manifest's `models` section: each .tflite file, its quantisation and its tensors as the runtime sees them.

The interpreter binds these specs to the model's signature and (de)quantises with them; manifest_shapes.py checks
that the encoder's and the decoder step's fit together. Messages name the file and field (manifest_fields.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from scenecap.edge.errors import ScenecapError
from scenecap.edge.manifest_fields import check_dtype, check_shape, err, key, plain_name, quant_params, string_list

# int16x8: int16 activations, int8 weights (decoder step only): full-integer, yet the attention softmax and the
# carried hidden state keep their precision. int8-fstate/-fattn/-mixed: int8 decoder steps with parts kept float
# (convert/tflite.py says which).
QUANTS = ("float32", "float16", "dynamic", "int8", "int16x8", "edgetpu", "int8-fstate", "int8-fattn", "int8-mixed")
# Decoder steps whose logits stay float all the way: convert gives them the `log_norm` output (the log-sum-exp of
# each logits row, in the graph). The integer-quantised ones never carry it: a quantised log_norm would be too
# coarse, and its ops would run on the CPU beside an Edge TPU.
LOG_NORM_QUANTS = ("float32", "float16", "dynamic")
_MODEL_KEYS = {"file", "quant", "inputs", "outputs", "ops", "edgetpu_file", "options", "runtimes"}
_OP_RE = re.compile(r"^[A-Za-z0-9_]+(\([^)]*\))?:v\d+$")


@dataclass(frozen=True)
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

    @classmethod
    def from_json(cls, d: Any, where: str) -> TensorSpec:
        if not isinstance(d, dict):
            raise err(where, "expected an object with name, shape, dtype")
        if not isinstance(d.get("name"), str):
            raise err(where, "name missing or not a string")
        shape = check_shape(d.get("shape"), where)
        dtype = check_dtype(d.get("dtype"), f"{where}: dtype")
        return cls(d["name"], shape, dtype, *quant_params(d, dtype, where))

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point}


@dataclass(frozen=True)
class ModelSpec:
    """models.<name>: one .tflite file, its quantisation and its inputs and outputs as the runtime sees them."""

    file: str
    quant: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    ops: list[str] = field(default_factory=list)  # "FULLY_CONNECTED:v9", one entry per distinct op
    edgetpu_file: str | None = None
    options: list[str] = field(default_factory=list)  # conversion options, e.g. "per-tensor-dense"
    runtimes: dict[str, str] = field(default_factory=dict)  # target runtime -> "ok" or why it cannot load
    extra: dict[str, Any] = field(default_factory=dict)  # unknown optional keys, kept on rewrite

    @classmethod
    def from_json(cls, m: Any, where: str) -> ModelSpec:
        """`where`: "<manifest>: models.<name>"."""
        if not isinstance(m, dict):
            what = "missing" if m is None else f"is {type(m).__name__}"
            raise ScenecapError(f"{where} {what}; expected an object with file, quant, inputs, outputs")
        if not isinstance(m.get("file"), str) or not m.get("file"):
            raise ScenecapError(f"{where}.file missing; expected a file name")
        file = plain_name(m["file"], f"{where}.file")
        if not isinstance(m.get("inputs"), dict) or not isinstance(m.get("outputs"), dict):
            raise err(where, "inputs and outputs must be objects")
        if not m["inputs"] or not m["outputs"]:
            raise err(where, "inputs and outputs must not be empty")
        quant = m.get("quant", "float32")
        if quant not in QUANTS:
            raise ScenecapError(f"{where}.quant {quant!r}; expected one of {QUANTS}")
        return cls(file=file, quant=quant, **_model_lists(m, where),
                   inputs={k: TensorSpec.from_json(v, key(f"{where}.inputs", k)) for k, v in m["inputs"].items()},
                   outputs={k: TensorSpec.from_json(v, key(f"{where}.outputs", k)) for k, v in m["outputs"].items()},
                   extra={k: v for k, v in m.items() if k not in _MODEL_KEYS})

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


def _model_lists(m: dict, where: str) -> dict[str, Any]:
    """A model entry's optional ops, edgetpu_file, options and runtimes, checked."""
    ops = m.get("ops", [])
    if not isinstance(ops, list) or not all(isinstance(o, str) and _OP_RE.match(o) for o in ops):
        raise ScenecapError(f"{where}.ops must be a list of 'OP_NAME:vN' strings")
    edgetpu = m.get("edgetpu_file")
    if edgetpu is not None:
        plain_name(edgetpu, f"{where}.edgetpu_file")
    options = string_list(m.get("options", []), f"{where}.options")
    runtimes = m.get("runtimes", {})
    if not isinstance(runtimes, dict) or not all(isinstance(v, str) for v in runtimes.values()):
        raise ScenecapError(f"{where}.runtimes must map runtime names to strings")
    return {"ops": list(ops), "edgetpu_file": edgetpu, "options": options, "runtimes": dict(runtimes)}


