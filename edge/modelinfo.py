"""What is inside a .tflite file: its operators with their versions, read from the flatbuffer itself.

Op versions decide whether an older runtime can load a model (FULLY_CONNECTED v12 needs TF >= 2.18's kernels);
the converter's own `min_runtime_version` metadata cannot be trusted for this, so we list the ops.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scenecap.edge.errors import ScenecapError


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError:
            raise ScenecapError("reading op lists needs ai-edge-litert (pip install ai-edge-litert)") from None
    return schema


@dataclass(frozen=True)
class OpInfo:
    name: str
    version: int
    count: int

    def __str__(self) -> str:
        return f"{self.name}:v{self.version}"


def read_ops(path: str | Path) -> list[OpInfo]:
    """Every distinct (op, version) in the model's subgraphs, with how often it is used."""
    schema = _schema()
    buf = Path(path).read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ScenecapError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = schema.Model.GetRootAs(buf, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = names.get(code, f"BUILTIN_{code}")
            if name == "CUSTOM":
                name = f"CUSTOM({(oc.CustomCode() or b'?').decode('utf-8', 'replace')})"
            codes.append((name, oc.Version()))
        counts: Counter = Counter()
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            for o in range(sg.OperatorsLength()):
                counts[codes[sg.Operators(o).OpcodeIndex()]] += 1
    except Exception as e:  # a truncated flatbuffer fails anywhere inside the generated reader
        raise ScenecapError(f"{path}: truncated or corrupt TFLite flatbuffer ({type(e).__name__})") from None
    return [OpInfo(n, v, c) for (n, v), c in sorted(counts.items())]
