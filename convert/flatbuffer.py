"""A .tflite flatbuffer as objects to edit (TF's generated schema): unpack, change, pack; the one subgraph's
operators by kind with who produces and who consumes each tensor, for the converter's graph edits."""

from __future__ import annotations

from collections.abc import Iterable


def schema():
    """TFLite's generated flatbuffer schema (operator codes, tensor types, the object API)."""
    try:
        from tensorflow.lite.python import schema_py_generated
    except ImportError:  # pragma: no cover - the converter always has TensorFlow
        from ai_edge_litert import schema_py_generated
    return schema_py_generated


def unpack(model: bytes):
    """A .tflite flatbuffer -> its editable ModelT."""
    s = schema()
    return s.ModelT.InitFromObj(s.Model.GetRootAsModel(bytearray(model), 0))


def pack(m) -> bytes:
    """An edited ModelT -> .tflite bytes."""
    import flatbuffers

    b = flatbuffers.Builder(1024)  # grows as needed
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def text(name) -> str:
    """A tensor's or signature's name as str (the schema gives bytes or None)."""
    return name.decode() if isinstance(name, bytes) else (name or "")


class Graph:
    """The single subgraph's operators by type, who produces and who consumes each tensor, signature names
    (none without a signature)."""

    def __init__(self, m):
        names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
        self.sg = m.subgraphs[0]
        self.kinds = [names.get(max(m.operatorCodes[op.opcodeIndex].builtinCode,
                                    m.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode), "")
                      for op in self.sg.operators]
        self.producer, self.consumers = {}, {}
        for i, op in enumerate(self.sg.operators):
            for t in op.outputs:
                self.producer[int(t)] = i
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(int(t), []).append(i)
        sig = m.signatureDefs[0] if m.signatureDefs else None  # a model from concrete functions has none
        self.inputs = {text(t.name): int(t.tensorIndex) for t in sig.inputs} if sig else {}
        self.outputs = {text(t.name): int(t.tensorIndex) for t in sig.outputs} if sig else {}

    def op_inputs(self, i: int) -> list[int]:
        return [int(t) for t in self.sg.operators[i].inputs if t >= 0]

    def op_outputs(self, i: int) -> list[int]:
        return [int(t) for t in self.sg.operators[i].outputs]

    def forward(self, starts: Iterable[int], through) -> set[int]:
        """Ops reachable from ops `starts` through consumers while `through(op)` holds (starts included)."""
        return walk(starts, lambda i: [c for t in self.op_outputs(i) for c in self.consumers.get(t, [])
                                       if through(c)])

    def backward(self, starts: Iterable[int], through) -> set[int]:
        """Ops reaching ops `starts` through producers while `through(op)` holds (starts included)."""
        return walk(starts, lambda i: [self.producer[t] for t in self.op_inputs(i)
                                       if t in self.producer and through(self.producer[t])])


def opcode(m, builtin: int, version: int) -> int:
    """The index of the operator code (builtin, version), added if the model has none."""
    for i, c in enumerate(m.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin and c.version == version:
            return i
    c = schema().OperatorCodeT()
    c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), version
    m.operatorCodes.append(c)
    return len(m.operatorCodes) - 1


def walk(starts: Iterable[int], neighbours) -> set[int]:
    """Every op reachable from `starts` (included) by repeatedly taking `neighbours(op)`."""
    seen, todo = set(), list(starts)
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo += neighbours(i)
    return seen
