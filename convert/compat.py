"""Which operator versions each target runtime has, and what to convert instead when a model needs more.

A .tflite file names each operator with a version; a runtime loads it only if its kernel table has that
(op, version). The converter's own `min_runtime_version` metadata is not a reliable guide (TF 2.21 writes 2.21.0
for every model), so we keep measured tables:

  litert               the LiteRT that comes with the converter (ai-edge-litert): everything it writes loads
  tflite-runtime-2.14  the last tflite-runtime wheel (Python <= 3.11, numpy < 2), common on Pi images. Table
                       measured by `probe_runtime` (one tiny model per op and version, loaded by the real
                       runtime); tests/test_runtime_compat.py re-measures it and loads every claimed variant.
  edgetpu-compiler-16  Coral's edgetpu_compiler 16.0, whose TFLite parser is from the TF 2.5 era. Table: the op
                       versions TF's runtime-version table dates at 2.5.0 or earlier, which agrees with the
                       failures Coral users report (CONV_2D v6, EXP v2, TRANSPOSE_CONV v4); it lives in
                       edge/edgetpu_plan.py, which predicts the TPU mapping from it. It cannot be measured here
                       (x86-64 Debian package from Coral's own apt repository); run edgetpu_compiler to be sure.

Variant choice: for each requested quantisation the converter tries `candidates()` in order and keeps the first
whose ops the target has. Measured with this project's model: TF >= 2.18 writes dynamic-range dense layers
with per-channel weight scales as FULLY_CONNECTED v12 (tflite-runtime 2.14 stops at v10); the same weights with
one scale per tensor give FULLY_CONNECTED v9, which loads, at the same size. The selective decoder recipes
(int8-fstate, int8-fattn, int8-mixed) try the same two weight layouts, then fall back to `dynamic` (which keeps the
float model's captions as well), then float16 and float32; the conversion says what it gave up and why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scenecap import ScenecapError
from scenecap.convert.selective import SELECTIVE
from scenecap.edge.edgetpu_plan import COMPILER_16_VERSIONS
from scenecap.edge.modelinfo import OP_CODES, OpInfo

# Highest version of each builtin op that tflite-runtime 2.14.0 registers (measured with probe_runtime).
# Every op registers versions 1..max, except BROADCAST_TO (2..3: its v1 was withdrawn).
_TFLITE_214 = """ADD 5 AVERAGE_POOL_2D 3 CONCATENATION 4 CONV_2D 7 DEPTHWISE_CONV_2D 7 DEPTH_TO_SPACE 2 DEQUANTIZE 5
EMBEDDING_LOOKUP 3 FLOOR 1 FULLY_CONNECTED 10 HASHTABLE_LOOKUP 1 L2_NORMALIZATION 2 L2_POOL_2D 1
LOCAL_RESPONSE_NORMALIZATION 1 LOGISTIC 3 LSH_PROJECTION 1 LSTM 4 MAX_POOL_2D 3 MUL 7 RELU 3 RELU_N1_TO_1 1 RELU6 3
RESHAPE 1 RESIZE_BILINEAR 4 RNN 3 SOFTMAX 3 SPACE_TO_DEPTH 2 SVDF 4 TANH 3 SKIP_GRAM 1 EMBEDDING_LOOKUP_SPARSE 1
PAD 4 UNIDIRECTIONAL_SEQUENCE_RNN 3 GATHER 6 BATCH_TO_SPACE_ND 4 SPACE_TO_BATCH_ND 4 TRANSPOSE 6 MEAN 3 SUB 5 DIV 2
SQUEEZE 2 UNIDIRECTIONAL_SEQUENCE_LSTM 4 STRIDED_SLICE 8 BIDIRECTIONAL_SEQUENCE_RNN 3 EXP 2 TOPK_V2 3 SPLIT 4
LOG_SOFTMAX 2 BIDIRECTIONAL_SEQUENCE_LSTM 3 CAST 5 PRELU 1 MAXIMUM 4 ARG_MAX 3 MINIMUM 4 LESS 3 NEG 1 PADV2 4
GREATER 2 GREATER_EQUAL 3 LESS_EQUAL 2 SELECT 4 SLICE 6 SIN 1 TRANSPOSE_CONV 4 SPARSE_TO_DENSE 3 TILE 3
EXPAND_DIMS 1 EQUAL 4 NOT_EQUAL 3 LOG 1 SUM 2 SQRT 1 RSQRT 2 SHAPE 1 POW 1 ARG_MIN 3 FAKE_QUANT 2 REDUCE_PROD 2
REDUCE_MAX 3 PACK 4 LOGICAL_OR 1 ONE_HOT 1 LOGICAL_AND 1 LOGICAL_NOT 1 UNPACK 4 REDUCE_MIN 3 FLOOR_DIV 3
REDUCE_ANY 1 SQUARE 1 ZEROS_LIKE 1 FILL 4 FLOOR_MOD 2 RANGE 2 RESIZE_NEAREST_NEIGHBOR 4 LEAKY_RELU 2
SQUARED_DIFFERENCE 2 MIRROR_PAD 3 ABS 5 SPLIT_V 2 UNIQUE 1 CEIL 1 REVERSE_V2 3 ADD_N 1 GATHER_ND 4 COS 1 WHERE 2
RANK 1 ELU 1 REVERSE_SEQUENCE 1 MATRIX_DIAG 1 QUANTIZE 3 MATRIX_SET_DIAG 1 ROUND 1 HARD_SWISH 1 IF 1 WHILE 1
NON_MAX_SUPPRESSION_V4 1 NON_MAX_SUPPRESSION_V5 1 SCATTER_ND 1 SELECT_V2 2 DENSIFY 1 SEGMENT_SUM 1 BATCH_MATMUL 4
CUMSUM 1 CALL_ONCE 1 BROADCAST_TO 3 RFFT2D 1 CONV_3D 1 IMAG 1 REAL 1 COMPLEX_ABS 1 HASHTABLE 1 HASHTABLE_FIND 1
HASHTABLE_IMPORT 1 HASHTABLE_SIZE 1 REDUCE_ALL 1 CONV_3D_TRANSPOSE 1 VAR_HANDLE 1 READ_VARIABLE 1 ASSIGN_VARIABLE 1
BROADCAST_ARGS 1 RANDOM_STANDARD_NORMAL 1 BUCKETIZE 1 RANDOM_UNIFORM 1 MULTINOMIAL 1 GELU 2 DYNAMIC_UPDATE_SLICE 1
RELU_0_TO_1 1 UNSORTED_SEGMENT_PROD 1 UNSORTED_SEGMENT_MAX 1 UNSORTED_SEGMENT_SUM 1 ATAN2 1 UNSORTED_SEGMENT_MIN 1
SIGN 2 BITCAST 1 BITWISE_XOR 1 RIGHT_SHIFT 1"""

def _table(text: str) -> dict[str, int]:
    parts = text.split()
    return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    max_versions: dict[str, int] | None  # None: every op this converter writes
    full_integer_only: bool = False  # the Edge TPU compiler takes only full-integer models

    def problems(self, ops: list[OpInfo]) -> list[str]:
        """Why a model with these ops cannot load on this target ([] = it can)."""
        if self.max_versions is None:
            return []
        out = []
        for op in ops:
            if op.name.startswith("CUSTOM("):
                out.append(f"{op.name} is a custom op")
                continue
            top = self.max_versions.get(op.name)
            if top is None:
                out.append(f"{op.name} is not in {self.name}")
            elif op.version > top or (op.name == "BROADCAST_TO" and op.version < 2):
                out.append(f"{op.name} v{op.version} is newer than {self.name} has (v{top})")
        return out


TARGETS: dict[str, Target] = {
    "litert": Target("litert", "ai-edge-litert, as new as this converter", None),
    "tflite-runtime-2.14": Target("tflite-runtime-2.14", "tflite-runtime 2.14 (measured kernel table)",
                                  _table(_TFLITE_214)),
    "edgetpu-compiler-16": Target("edgetpu-compiler-16", "Coral edgetpu_compiler 16.0 (TF 2.5-era op versions)",
                                  dict(COMPILER_16_VERSIONS), full_integer_only=True),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ScenecapError(f"--target-runtime {name!r} unknown; expected one of {', '.join(TARGETS)}")
    return TARGETS[name]


def runtime_claims(ops: list[OpInfo], quant: str | None = None) -> dict[str, str]:
    """For the manifest: each known target -> 'ok' or the first reason it cannot load the model."""
    out = {}
    for name, target in TARGETS.items():
        problems = target.problems(ops)
        if target.full_integer_only and quant is not None and quant != "edgetpu":
            # Op versions alone would pass an int16x8 or float model; the compiler takes only edgetpu's int8.
            problems = [f"the Edge TPU compiler takes the edgetpu variant only, not {quant}", *problems]
        out[name] = "ok" if not problems else problems[0]
    return out


@dataclass(frozen=True)
class Variant:
    """One way to convert a model: a quantisation and the options that change its op versions."""

    quant: str
    per_tensor_dense: bool = False  # one weight scale per dense layer instead of one per output channel

    @property
    def options(self) -> list[str]:
        return ["per-tensor-dense"] if self.per_tensor_dense else []

    def __str__(self) -> str:
        return self.quant + (" with per-tensor dense weights" if self.per_tensor_dense else "")


def candidates(quant: str, target: Target) -> tuple[list[Variant], str]:
    """Variants to try in order for a requested quantisation, and why the first differs from it (or '')."""
    note = ""
    if target.full_integer_only and quant != "edgetpu":
        note = f"{target.name} compiles only full-integer models with Edge TPU-mappable ops, so {quant} -> edgetpu"
        quant = "edgetpu"
    chain = [Variant(quant)]
    if quant in ("dynamic", "int8", "edgetpu", *SELECTIVE):
        chain.append(Variant(quant, per_tensor_dense=True))
    if quant in SELECTIVE:
        # Their float layers' hybrid kernels (FULLY_CONNECTED v9+) and float/int8 boundaries may be newer than a
        # runtime has; `dynamic` keeps the float captions as well (benchmarks/results/decoder-recipes.md).
        quant = "dynamic"
        chain.append(Variant(quant))
        chain.append(Variant(quant, per_tensor_dense=True))
    if quant == "dynamic":
        chain += [Variant("float16"), Variant("float32")]
    elif quant == "float16":
        chain.append(Variant("float32"))
    return chain, note


# --- measuring a runtime's kernel table --------------------------------------------------------------------

_PROBE_SCRIPT = r"""
import json, sys
from {module} import Interpreter
found = {{}}
for name, version, path in json.load(sys.stdin):
    try:
        Interpreter(model_path=path)
    except Exception:
        continue
    found.setdefault(name, []).append(version)
print(json.dumps(found))
"""


def _probe_model(code: int, version: int) -> bytes:
    """A model whose only content is one operator code: loading it asks the runtime for that kernel."""
    import flatbuffers

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    m = schema.ModelT()
    m.version = 3
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    m.operatorCodes = [oc]
    sg = schema.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators = [], [], [], []
    m.subgraphs, m.buffers = [sg], [schema.BufferT()]
    b = flatbuffers.Builder(256)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def probe_runtime(python: str, module: str = "tflite_runtime.interpreter", ops: list[str] | None = None,
                  max_version: int = 16) -> dict[str, list[int]]:
    """Which (op, version) pairs the runtime importable by `python` can load: {op: [versions]}."""
    skip = {"CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}
    names = [n for n in (ops or OP_CODES) if n not in skip]
    with tempfile.TemporaryDirectory(prefix="scenecap-probe-") as tmp:
        items = []
        for name in names:
            for v in range(1, max_version + 1):
                p = Path(tmp) / f"{name}.{v}.tflite"
                p.write_bytes(_probe_model(OP_CODES[name], v))
                items.append((name, v, str(p)))
        r = subprocess.run([python, "-c", _PROBE_SCRIPT.format(module=module)], input=json.dumps(items),
                           capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise ScenecapError(f"probing {python} ({module}) failed: {r.stderr.strip().splitlines()[-1:]}")
    return {k: sorted(v) for k, v in json.loads(r.stdout).items()}


def main(argv: list[str] | None = None) -> int:
    """python -m scenecap.convert.compat PYTHON [MODULE]: print a runtime's measured table in the form above."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m scenecap.convert.compat PYTHON [MODULE]", file=sys.stderr)
        return 2
    found = probe_runtime(argv[0], *(argv[1:2] or []))
    print(" ".join(f"{k} {max(v)}" for k, v in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
