"""What is inside a .tflite file, read from the flatbuffer itself with no runtime and no TensorFlow.

Op versions decide whether an older runtime can load a model (FULLY_CONNECTED v12 needs TF >= 2.18's kernels);
the converter's own `min_runtime_version` metadata cannot be trusted for this, so we list the ops. This is a
small reader for the few tables we need (operator codes, subgraphs, tensors, buffers, signatures), so it works
on a Pi with only tflite-runtime installed.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scenecap.edge.errors import ScenecapError
from scenecap.edge.fileio import read_regular

MAX_MODEL_BYTES = 2 << 30  # a flatbuffer's 32-bit offsets cannot address more than 2 GiB

# BuiltinOperator enum of the TFLite schema, by code (a public file-format fact).
_OPS = """ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR
FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION
LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH
CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER
BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE
BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM
ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE
EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR
ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE
RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND
COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE
HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE
BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1
UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR
RIGHT_SHIFT""".split()
OP_CODES = {name: code for code, name in enumerate(_OPS)}

# TensorType enum of the TFLite schema.
_TYPES = ("float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16", "complex64", "int8", "float64",
          "complex128", "uint64", "resource", "variant", "uint32", "uint16", "int4", "bfloat16")


def op_name(code: int) -> str:
    return _OPS[code] if 0 <= code < len(_OPS) else f"BUILTIN_{code}"


class _Corrupt(ValueError):
    """A structural fault this reader found itself; its message says which."""


class _Budget:
    """How many bytes of vectors and strings a parse may still decode. In a well-formed file they do not overlap,
    so together they fit in the file; a crafted one can point many tables at one long vector (20,000 operators
    naming one 20,000-entry list: memory growing with the square of the file size), which this stops."""

    def __init__(self, size: int):
        self.left = 4 * size + (1 << 20)  # slack for shared strings and tiny files

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _Corrupt("its tables overlap far beyond the file's size")


class _Table:
    """A flatbuffer table: fields are found through the vtable; absent fields read as their default."""

    def __init__(self, buf: bytes, pos: int, budget: _Budget | None = None):
        self.buf, self.pos = buf, pos
        self.budget = budget or _Budget(len(buf))
        self.vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, self.vt)[0]

    def _off(self, i: int) -> int:
        o = 4 + 2 * i
        return struct.unpack_from("<H", self.buf, self.vt + o)[0] if o < self.vt_len else 0

    def scalar(self, i: int, fmt: str, default=0):
        o = self._off(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0] if o else default

    def _ref(self, i: int) -> int | None:
        o = self._off(i)
        if not o:
            return None
        p = self.pos + o
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, i: int) -> _Table | None:
        p = self._ref(i)
        return _Table(self.buf, p, self.budget) if p is not None else None

    def _length(self, p: int, item: int) -> int:
        """A vector's length, charged to the budget and checked to fit in the file before anything is read."""
        n = struct.unpack_from("<I", self.buf, p)[0]
        if p + 4 + n * item > len(self.buf):
            raise _Corrupt("a vector runs past the end of the file")
        self.budget.spend(n * item + 4)
        return n

    def string(self, i: int) -> str | None:
        p = self._ref(i)
        if p is None:
            return None
        n = self._length(p, 1)
        return self.buf[p + 4 : p + 4 + n].decode("utf-8", "replace")

    def vector(self, i: int, fmt: str) -> list:
        p = self._ref(i)
        if p is None:
            return []
        n = self._length(p, struct.calcsize("<" + fmt))
        return list(struct.unpack_from(f"<{n}{fmt}", self.buf, p + 4))

    def vector_len(self, i: int) -> int:
        p = self._ref(i)
        return 0 if p is None else struct.unpack_from("<I", self.buf, p)[0]

    def tables(self, i: int) -> list[_Table]:
        p = self._ref(i)
        if p is None:
            return []
        n = self._length(p, 4)
        out = []
        for k in range(n):
            q = p + 4 + 4 * k
            out.append(_Table(self.buf, q + struct.unpack_from("<I", self.buf, q)[0], self.budget))
        return out


@dataclass(frozen=True)
class OpInfo:
    name: str
    version: int
    count: int

    def __str__(self) -> str:
        return f"{self.name}:v{self.version}"


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    shape_signature: list[int]  # -1 marks a dynamic dimension
    dtype: str
    scales: list[float]
    zero_points: list[int]
    buffer_bytes: int  # constant data (weights); 0 for activations
    values: list[int] | None = None  # a small int32 constant's values (axes, shapes); None otherwise

    @property
    def quantized(self) -> bool:
        return bool(self.scales) and self.dtype in ("int8", "uint8", "int16", "int32", "int4")

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)


@dataclass
class Operator:
    name: str  # "FULLY_CONNECTED", or "CUSTOM(edgetpu-custom-op)"
    version: int
    inputs: list[int]
    outputs: list[int]


@dataclass
class ModelInfo:
    path: Path
    size: int
    operators: list[Operator]  # the main subgraph, in execution order
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    signatures: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # key -> inputs/outputs -> idx
    subgraph_count: int = 1
    all_ops: list[OpInfo] = field(default_factory=list)  # every subgraph, with counts

    @property
    def weight_bytes(self) -> int:
        return sum(t.buffer_bytes for t in self.tensors)

    def tensor(self, i: int) -> TensorInfo:
        if not 0 <= i < len(self.tensors):  # -1 marks an omitted optional input: there is no tensor to read
            raise ScenecapError(f"{self.path}: an operator reads tensor {i}, which the model does not have")
        return self.tensors[i]


def read_model(path: str | Path) -> ModelInfo:
    """Parse a .tflite file: operators (with versions), tensors (shape, dtype, quantisation), signatures."""
    path = Path(path)
    return parse_model(read_regular(path, MAX_MODEL_BYTES, "model file", follow_symlinks=True), path)


def parse_model(buf: bytes, path: str | Path = "<bytes>") -> ModelInfo:
    """Parse a .tflite flatbuffer held in memory (see read_model)."""
    path = Path(path)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ScenecapError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        return _parse(path, buf)
    except _Corrupt as e:
        raise ScenecapError(f"{path}: corrupt TFLite flatbuffer ({e})") from None
    except (struct.error, IndexError, UnicodeDecodeError, ValueError):  # truncated or corrupt
        raise ScenecapError(f"{path}: truncated or corrupt TFLite flatbuffer") from None


def _parse(path: Path, buf: bytes) -> ModelInfo:
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    codes = _op_codes(model)
    buffers = model.tables(4)
    counts: Counter = Counter()
    subgraphs = model.tables(2)
    main_ops, tensors, ins, outs = [], [], [], []
    for si, sg in enumerate(subgraphs):
        ops = []
        for op in sg.tables(3):
            name, version = codes[op.scalar(0, "I", 0)]
            counts[(name, version)] += 1
            ops.append(Operator(name, version, op.vector(1, "i"), op.vector(2, "i")))
        if si == 0:
            main_ops, ins, outs = ops, sg.vector(1, "i"), sg.vector(2, "i")
            tensors = [_tensor_info(t, buffers) for t in sg.tables(0)]
    signatures = _signatures(model)
    _check_indices(main_ops, ins, outs, len(tensors))
    all_ops = [OpInfo(n, v, c) for (n, v), c in sorted(counts.items())]
    return ModelInfo(path, len(buf), main_ops, tensors, ins, outs, signatures, len(subgraphs), all_ops)


def _op_codes(model: _Table) -> list[tuple[str, int]]:
    """(name, version) of each operator code: "CUSTOM(name)" for a custom op."""
    codes = []
    for oc in model.tables(1):
        code = max(oc.scalar(0, "b", 0), oc.scalar(3, "i", 0))  # deprecated_builtin_code, or builtin_code
        name = op_name(code)
        if name == "CUSTOM":
            name = f"CUSTOM({oc.string(1) or '?'})"
        codes.append((name, oc.scalar(2, "i", 1)))
    return codes


def _tensor_info(t: _Table, buffers: list[_Table]) -> TensorInfo:
    q = t.table(4)
    shape = t.vector(0, "i")
    code = t.scalar(1, "b", 0)
    dtype = _TYPES[code] if 0 <= code < len(_TYPES) else "?"
    return TensorInfo(
        name=t.string(3) or "",
        shape=shape,
        shape_signature=t.vector(7, "i") or shape,
        dtype=dtype,
        scales=[float(s) for s in q.vector(2, "f")] if q else [],
        zero_points=[int(z) for z in q.vector(3, "q")] if q else [],
        buffer_bytes=_buffer_bytes(buffers, t.scalar(2, "I", 0)),
        values=_small_ints(buffers, t.scalar(2, "I", 0), dtype),
    )


def _buffer_bytes(buffers: list[_Table], idx: int) -> int:
    if not 0 < idx < len(buffers):
        return 0
    b = buffers[idx]
    return b.vector_len(0) or b.scalar(2, "Q", 0)  # inline data, or size of data stored after the flatbuffer


def _small_ints(buffers: list[_Table], idx: int, dtype: str) -> list[int] | None:
    if dtype != "int32" or not 0 < idx < len(buffers) or not 0 < buffers[idx].vector_len(0) <= 64:
        return None
    return list(struct.unpack("<" + "i" * (buffers[idx].vector_len(0) // 4), bytes(buffers[idx].vector(0, "B"))))


def _signatures(model: _Table) -> dict[str, dict[str, dict[str, int]]]:
    signatures = {}
    for sd in model.tables(7):
        key = sd.string(2) or "serving_default"
        signatures[key] = {
            "inputs": {m.string(0) or "": m.scalar(1, "I", 0) for m in sd.tables(0)},
            "outputs": {m.string(0) or "": m.scalar(1, "I", 0) for m in sd.tables(1)},
        }
    return signatures


def _check_indices(ops: list[Operator], ins: list[int], outs: list[int], n: int) -> None:
    """Every tensor index the main subgraph names is one of its tensors (-1: an omitted optional input), so the
    readers of ModelInfo can index `tensors` with them."""
    if any(not -1 <= i < n for op in ops for i in (*op.inputs, *op.outputs)):
        raise _Corrupt("an operator names a tensor the subgraph does not have")
    # Signatures are not checked here: theirs may index another subgraph (ModelInfo.tensor refuses a bad one).
    if any(not 0 <= i < n for i in ins + outs):
        raise _Corrupt("a subgraph input or output names a tensor it does not have")


def read_ops(path: str | Path) -> list[OpInfo]:
    """Every distinct (op, version) in the model's subgraphs, with how often it is used."""
    return read_model(path).all_ops


def fc_macs(info: ModelInfo) -> int:
    """Multiply-accumulates of the FULLY_CONNECTED ops per invoke (rows x weight size): the decoder's main cost."""
    total = 0
    for op in info.operators:
        if op.name != "FULLY_CONNECTED" or len(op.inputs) < 2:
            continue
        if op.inputs[0] < 0 or op.inputs[1] < 0:  # an omitted input
            continue
        x, w = info.tensor(op.inputs[0]), info.tensor(op.inputs[1])
        if len(w.shape) != 2:
            continue
        rows = 1
        for d in x.shape[:-1]:
            rows *= max(d, 1)
        total += rows * w.shape[0] * w.shape[1]
    return total
