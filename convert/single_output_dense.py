"""Float dense layers with one output unit rewritten as an element-wise multiply and a sum over the last axis.

The attention's score layer (V in train/model.py) maps each of the L locations' A tanh values to one number. As a
FULLY_CONNECTED it runs through XNNPACK's matrix kernels, which work on blocks of output columns, so one column
wastes most of each block: at the demo's 256 locations x 128 units it took 10.1 us a step against 6.0 us as
MUL+SUM (one thread, this machine), and the whole float decoder step 50.5 against 44.7 us, the dynamic one 33.1
against 27.5 us, with the same captions on 200 held-out scenes. Same arithmetic, summed in another order: the
outputs agree to float rounding. Integer layers (int8, int16x8, Edge TPU) keep their FULLY_CONNECTED: their
kernels and scales are another matter, and the Edge TPU compiler maps it.
"""

from __future__ import annotations

from scenecap.convert import flatbuffer as fb


def reduce_single_output_dense(model: bytes) -> tuple[bytes, int]:
    """Every float FULLY_CONNECTED with one output unit, no fused activation and an output of its input's shape
    but the last axis (1) -> MUL by the weight row, SUM over the last axis, ADD of the bias. Returns the model and
    how many layers were rewritten (the model unchanged, not repacked, when none)."""
    m = fb.unpack(model)
    g = fb.Graph(m)
    found = [i for i, kind in enumerate(g.kinds) if kind == "FULLY_CONNECTED" and _single_output(g, i)]
    if not found:
        return model, 0
    ops = []
    for i, op in enumerate(g.sg.operators):
        ops += _as_reduction(m, g, op) if i in found else [op]
    g.sg.operators = ops
    return fb.pack(m), len(found)


def _single_output(g: fb.Graph, i: int) -> bool:
    op, f32 = g.sg.operators[i], fb.schema().TensorType.FLOAT32
    x, w, y = (g.sg.tensors[int(op.inputs[0])], g.sg.tensors[int(op.inputs[1])],
               g.sg.tensors[int(op.outputs[0])])
    same_rows = list(y.shape) == [*list(x.shape)[:-1], 1]  # keep_num_dims, or a 2-D input
    return (x.type == f32 and w.type == f32 and y.type == f32 and len(w.shape) == 2 and int(w.shape[0]) == 1
            and same_rows and op.builtinOptions.fusedActivationFunction == 0)


def _as_reduction(m, g: fb.Graph, op) -> list:
    """MUL(x, w [1, K]: broadcast over the rows), SUM(axis -1, kept), then ADD(bias) when the layer has one."""
    s = fb.schema()
    x, w = int(op.inputs[0]), int(op.inputs[1])
    bias = int(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    y = int(op.outputs[0])
    name = fb.text(g.sg.tensors[y].name)
    products = _tensor(m, f"{name}/products", list(g.sg.tensors[x].shape), s.TensorType.FLOAT32)
    axis = _tensor(m, f"{name}/axis", [1], s.TensorType.INT32, data=(-1).to_bytes(4, "little", signed=True))
    summed = _tensor(m, f"{name}/sum", list(g.sg.tensors[y].shape), s.TensorType.FLOAT32) if bias is not None else y
    reducer = s.ReducerOptionsT()
    reducer.keepDims = True
    out = [_op(m, s.BuiltinOperator.MUL, [x, w], [products], s.BuiltinOptions.MulOptions, s.MulOptionsT()),
           _op(m, s.BuiltinOperator.SUM, [products, axis], [summed], s.BuiltinOptions.ReducerOptions, reducer)]
    if bias is not None:
        out.append(_op(m, s.BuiltinOperator.ADD, [summed, bias], [y], s.BuiltinOptions.AddOptions, s.AddOptionsT()))
    return out


def _tensor(m, name: str, shape: list[int], dtype: int, data: bytes | None = None) -> int:
    """A new tensor of the subgraph (a constant when `data` is given); its index."""
    s = fb.schema()
    t = s.TensorT()
    t.name, t.shape, t.type, t.buffer = name.encode(), [int(d) for d in shape], dtype, 0  # buffer 0: none
    if data is not None:
        b = s.BufferT()
        b.data = list(data)
        m.buffers.append(b)
        t.buffer = len(m.buffers) - 1
    m.subgraphs[0].tensors.append(t)
    return len(m.subgraphs[0].tensors) - 1


def _op(m, builtin: int, inputs: list[int], outputs: list[int], options_type: int, options) -> object:
    s = fb.schema()
    op = s.OperatorT()
    op.opcodeIndex = fb.opcode(m, builtin, 1)
    op.inputs, op.outputs = inputs, outputs
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op
