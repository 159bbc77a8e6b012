"""Which ops of a model the Coral Edge TPU compiler would map to the TPU, predicted from the model file alone.

The prediction follows Coral's documented rules: only full-integer (u)int8 tensors, static shapes, the ops in the
supported list with their known limits, op versions the compiler-16 parser knows, and ONE Edge TPU subgraph: from
the first op that cannot map, every later op runs on the CPU. The compiler's own log (`edgetpu_compiler -s`) is
the authority; this needs no TensorFlow, so `scenecap inspect` uses it on a Pi, and convert/ for its targets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from scenecap.edge.modelinfo import ModelInfo

# Op versions dated TF 2.5.0 or earlier (edgetpu_compiler 16's parser), for the ops a captioner can contain.
_COMPILER_16 = """ADD 3 AVERAGE_POOL_2D 3 CONCATENATION 3 CONV_2D 5 DEPTHWISE_CONV_2D 6 DEQUANTIZE 4 FULLY_CONNECTED 9
L2_NORMALIZATION 2 LOGISTIC 3 MAX_POOL_2D 3 MUL 4 RELU 3 RELU_N1_TO_1 1 RELU6 3 RESHAPE 1 RESIZE_BILINEAR 4
RESIZE_NEAREST_NEIGHBOR 4 SOFTMAX 3 SPACE_TO_DEPTH 2 TANH 3 PAD 3 PADV2 3 GATHER 5 TRANSPOSE 5 MEAN 3 SUB 5 SQUEEZE 2
STRIDED_SLICE 5 EXP 1 SPLIT 4 SPLIT_V 2 CAST 1 PRELU 1 MAXIMUM 4 MINIMUM 4 ARG_MAX 2 LESS 2 SELECT 2 SLICE 5
TRANSPOSE_CONV 3 EXPAND_DIMS 1 SUM 2 RSQRT 2 SHAPE 1 REDUCE_MAX 3 REDUCE_MIN 3 PACK 3 UNPACK 4 FILL 3 LEAKY_RELU 2
SQUARED_DIFFERENCE 2 QUANTIZE 2 HARD_SWISH 1 BATCH_MATMUL 4 LSTM 4 UNIDIRECTIONAL_SEQUENCE_LSTM 3"""
_WORDS = _COMPILER_16.split()
COMPILER_16_VERSIONS: dict[str, int] = {_WORDS[i]: int(_WORDS[i + 1]) for i in range(0, len(_WORDS), 2)}

EDGETPU_OP = "CUSTOM(edgetpu-custom-op)"
# Coral's list of operations the Edge TPU runs (TFLite names).
TPU_OPS = frozenset("""ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D EXPAND_DIMS FULLY_CONNECTED
HARD_SWISH L2_NORMALIZATION LOGISTIC LSTM MAXIMUM MAX_POOL_2D MEAN MINIMUM MUL PACK PAD PRELU QUANTIZE REDUCE_MAX
REDUCE_MIN RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SLICE SOFTMAX
SPACE_TO_DEPTH SPLIT SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM TANH TRANSPOSE TRANSPOSE_CONV""".split())
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"}
_SOFTMAX_MAX = 16000


@dataclass
class Placement:
    index: int
    op: str
    version: int
    device: str  # "tpu" or "cpu"
    reason: str = ""  # why it runs on the CPU


def _why_not(info: ModelInfo, i: int) -> str:
    """Why op i cannot map to the TPU by itself ('' = it can)."""
    op = info.operators[i]
    if op.name not in TPU_OPS:
        return f"{op.name} is not an Edge TPU operation"
    top = COMPILER_16_VERSIONS.get(op.name, 0)
    if op.version > top:
        return f"version {op.version} is newer than compiler 16 knows (v{top})"
    tensors = [info.tensor(t) for t in op.inputs + op.outputs if t >= 0]
    activations = [t for t in tensors if not t.buffer_bytes]
    for t in activations:
        if t.dynamic:
            return f"tensor {t.name} has a dynamic shape"
        if t.dtype not in ("int8", "uint8") and not (t.dtype == "int32" and t.values is not None):
            return f"tensor {t.name} is {t.dtype}, not 8-bit quantised"
        if sum(1 for d in t.shape if d > 1) > 3:
            return f"tensor {t.name} {t.shape} has more than 3 dimensions larger than 1"
    x = info.tensor(op.inputs[0]) if op.inputs and op.inputs[0] >= 0 else None
    if op.name == "SOFTMAX" and x is not None:
        if sum(1 for d in x.shape if d > 1) > 1 or max(x.shape or [1]) > _SOFTMAX_MAX:
            return f"softmax input {x.shape} is not 1-D (at most {_SOFTMAX_MAX} elements)"
    if op.name in _REDUCTIONS and x is not None and len(op.inputs) > 1:
        axes = info.tensor(op.inputs[1]).values or []
        if any(a % max(len(x.shape), 1) == 0 for a in axes) and x.shape and x.shape[0] > 1:
            return "reduces over the batch dimension"
    if op.name == "FULLY_CONNECTED" and len(op.inputs) > 1 and not info.tensor(op.inputs[1]).buffer_bytes:
        return "weights are not constant"
    return ""


def place_ops(info: ModelInfo) -> list[Placement]:
    """Each op of the main subgraph, in execution order, with the device the compiler would give it."""
    out, split = [], None
    for i, op in enumerate(info.operators):
        reason = _why_not(info, i)
        if reason and split is None:
            split = i
        elif not reason and split is not None:
            reason = f"after the first CPU op (#{split} {info.operators[split].name}): one Edge TPU subgraph only"
        out.append(Placement(i, op.name, op.version, "cpu" if reason else "tpu", reason))
    return out


def summarize(placements: list[Placement]) -> dict:
    """Counts by device and op, and the distinct reasons for the CPU ops."""
    tpu = Counter(p.op for p in placements if p.device == "tpu")
    cpu = Counter(p.op for p in placements if p.device == "cpu")
    reasons: dict[str, str] = {}
    for p in placements:
        if p.device == "cpu":
            reasons.setdefault(p.op, p.reason)
    return {"tpu_ops": sum(tpu.values()), "cpu_ops": sum(cpu.values()), "tpu": dict(sorted(tpu.items())),
            "cpu": dict(sorted(cpu.items())), "cpu_reasons": reasons}
