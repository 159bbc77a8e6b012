"""Selective quantisation of the decoder step: which of its ops stay float, and the flatbuffer edits around it.

Measured on this project's decoder step (benchmarks/results/decoder-recipes.md): a full-integer int8 step changes
the captions through a few of its activations, not through its weights (int8 weights with float activations,
`dynamic`, keep them). A part is found by the graph's shape, not by layer names, in the calibrated float model the
quantiser starts from:

  attention  the softmax over the feature-map locations and everything from it to the GRU input: the weighted
             sum of the features (the context) and the attention output. int8 softmax outputs have a fixed step
             of 1/256 while each of 144 locations gets about 1/144.
  state      the GRU's gate arithmetic (sigmoid, tanh, the blend of the old state into the new one), back from
             `new_hidden`; with it the hidden input and new_hidden output are float32, so the state carried from
             word to word is never rounded to int8.
  head       the output layers, from new_hidden to the logits (one int8 scale over the whole vocabulary's
             logits rounds away the margin between the two best words).
  recurrent  the GRU's matmul of the previous state (the FULLY_CONNECTED layers reading `hidden` that do not
             feed the attention), with the slices of its output.

Float FULLY_CONNECTED layers then get int8 weights back (the `dynamic` kernels: float activations, int8 weights
quantised symmetrically, inputs quantised on the fly), so a selective model is as small as an int8 one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from scenecap.convert import flatbuffer as fb

PARTS = ("attention", "state", "head", "recurrent")
# The decoder recipes (quant names): int8, with these parts of the step float.
SELECTIVE: dict[str, tuple[str, ...]] = {
    "int8-fstate": ("state",),
    "int8-fattn": ("attention",),
    "int8-mixed": ("attention", "state", "head", "recurrent"),
}
_ELEMENTWISE = frozenset({"ADD", "SUB", "MUL", "LOGISTIC", "TANH"})
_STOP_ATTENTION = frozenset({"CONCATENATION", "FULLY_CONNECTED"})
_SLICES = frozenset({"STRIDED_SLICE", "SPLIT", "SPLIT_V", "SLICE", "RESHAPE"})
# As TF's dynamic-range quantiser: smaller weight tensors stay float (their int8 saving is nothing).
MIN_HYBRID_WEIGHTS = 1024
# FULLY_CONNECTED versions of a hybrid layer (float input, int8 weights, inputs quantised asymmetrically), as
# the converter writes them: one weight scale per output channel, or one per tensor (loads on tflite-runtime 2.14).
_HYBRID_FC_VERSION = {True: 12, False: 9}


def _part_ops(g: fb.Graph, part: str) -> set[int]:
    softmax = [i for i, k in enumerate(g.kinds) if k == "SOFTMAX"]
    if part == "attention":
        return g.forward(softmax, lambda i: g.kinds[i] not in _STOP_ATTENTION)
    if part == "state":
        return g.backward([g.producer[g.outputs["new_hidden"]]], lambda i: g.kinds[i] in _ELEMENTWISE)
    if part == "head":
        state_out = g.outputs["new_hidden"]
        return g.forward(g.consumers.get(state_out, []), lambda i: True)
    if part == "recurrent":
        to_attention = g.backward(softmax, lambda i: True)
        fcs = [i for i in g.consumers.get(g.inputs["hidden"], [])
               if g.kinds[i] == "FULLY_CONNECTED" and i not in to_attention]
        return g.forward(fcs, lambda i: g.kinds[i] in _SLICES)
    raise ValueError(f"part {part!r} unknown; expected one of {PARTS}")


def float_nodes(calibrated: bytes, parts: Iterable[str]) -> list[str]:
    """The output tensor names of the ops in `parts` of a calibrated decoder step: the quantiser's
    `denylisted_nodes`, which it leaves float."""
    m = fb.unpack(calibrated)
    g = fb.Graph(m)
    ops = set().union(*(_part_ops(g, p) for p in parts))
    return sorted({fb.text(g.sg.tensors[t].name) for i in ops for t in g.op_outputs(i)})


def integer_edges(model: bytes, keep_float: Iterable[str] = ()) -> bytes:
    """Inputs and outputs in the model's own integer type, except those named in `keep_float`.

    The quantiser leaves every edge float (a QUANTIZE after each input, a DEQUANTIZE before each output). Features
    and keys are set once per image, so as int8 inputs they are quantised once, not again in every step."""
    m = fb.unpack(model)
    g = fb.Graph(m)
    keep = set(keep_float)
    sig = m.signatureDefs[0]
    drop = set()
    for i, kind in enumerate(g.kinds):
        src, dst = g.op_inputs(i)[:1], g.op_outputs(i)
        if kind == "QUANTIZE" and src and src[0] in g.inputs.values() and len(g.consumers[src[0]]) == 1:
            name = next(n for n, t in g.inputs.items() if t == src[0])
            if name not in keep:
                _rewire(g.sg.inputs, sig.inputs, src[0], dst[0])
                drop.add(i)
        elif kind == "DEQUANTIZE" and dst[0] in g.outputs.values() and not g.consumers.get(dst[0]):
            name = next(n for n, t in g.outputs.items() if t == dst[0])
            if name not in keep:
                _rewire(g.sg.outputs, sig.outputs, dst[0], src[0])
                drop.add(i)
    # The float tensors left unused stay in the table: unreferenced, the interpreter allocates nothing for them.
    g.sg.operators = [op for i, op in enumerate(g.sg.operators) if i not in drop]
    return fb.pack(m)


def _rewire(edges, tensor_maps, old: int, new: int) -> None:
    """Point a subgraph's input/output list and the signature at tensor `new` instead of `old`."""
    for k, t in enumerate(edges):
        if int(t) == old:
            edges[k] = new
    for t in tensor_maps:
        if t.tensorIndex == old:
            t.tensorIndex = new


def hybrid_weights(model: bytes, per_channel: bool = True) -> bytes:
    """Float FULLY_CONNECTED layers with constant float weights -> int8 weights (symmetric, one scale per output
    channel or per tensor) run by the hybrid kernel: float activations, each input quantised on the fly."""
    schema = fb.schema()
    m = fb.unpack(model)
    g = fb.Graph(m)
    code = None
    for i, kind in enumerate(g.kinds):
        op = g.sg.operators[i]
        if kind != "FULLY_CONNECTED" or not _hybridise(m, op, per_channel, schema):
            continue
        if code is None:
            code = fb.opcode(m, schema.BuiltinOperator.FULLY_CONNECTED, _HYBRID_FC_VERSION[per_channel])
        op.opcodeIndex = code
        op.builtinOptions.asymmetricQuantizeInputs = True
    return fb.pack(m)


def _hybridise(m, op, per_channel: bool, schema) -> bool:
    """Quantise one float FULLY_CONNECTED layer's weights in place; False if it is not such a layer."""
    sg, f32 = m.subgraphs[0], schema.TensorType.FLOAT32
    x, w = sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
    data = m.buffers[w.buffer].data if w.buffer < len(m.buffers) else None
    if x.type != f32 or w.type != f32 or data is None or len(data) < 4 * MIN_HYBRID_WEIGHTS:
        return False
    weights = np.frombuffer(bytes(bytearray(data)), np.float32).reshape([int(d) for d in w.shape])
    top = np.abs(weights).max(axis=1) if per_channel else np.array([np.abs(weights).max()])
    scale = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(weights / (scale[:, None] if per_channel else scale[0])), -127, 127).astype(np.int8)
    m.buffers[w.buffer].data = np.frombuffer(q.tobytes(), np.uint8)
    w.type = schema.TensorType.INT8
    w.quantization = schema.QuantizationParametersT()
    w.quantization.scale, w.quantization.zeroPoint = scale.tolist(), [0] * len(scale)
    w.quantization.quantizedDimension = 0
    return True


def tensor_ranges(calibrated: bytes, names: Iterable[str]) -> dict[str, tuple[float, float]]:
    """The calibration range (min, max) recorded for each named signature input/output of a calibrated model."""
    m = fb.unpack(calibrated)
    g = fb.Graph(m)
    where = {**g.inputs, **g.outputs}
    out = {}
    for name in names:
        q = g.sg.tensors[where[name]].quantization
        if q is not None and q.min is not None and len(q.min):
            out[name] = (float(q.min[0]), float(q.max[0]))
    return out


def set_ranges(calibrated: bytes, ranges: dict[str, tuple[float, float]]) -> bytes:
    """Replace the calibration range of named signature inputs/outputs: the quantiser makes their scales from it."""
    schema = fb.schema()
    m = fb.unpack(calibrated)
    g = fb.Graph(m)
    where = {**g.inputs, **g.outputs}
    for name, (lo, hi) in ranges.items():
        t = g.sg.tensors[where[name]]
        if t.quantization is None:
            t.quantization = schema.QuantizationParametersT()
        t.quantization.min, t.quantization.max = [float(lo)], [float(hi)]
    return fb.pack(m)


def integer_decoder_ranges(calibrated: bytes) -> dict[str, tuple[float, float]]:
    """Ranges for an all-integer decoder step chosen for what the caption loop does with them (measured in
    benchmarks/results/decoder-recipes.md):

    hidden, new_hidden  one symmetric range over both (the largest |value| recorded), so the state goes back in
                        as it came out, with no re-quantisation from one scale to another between words;
    logits              from 0 up: greedy decoding needs only the words that can win resolved, and one int8 scale
                        over the most negative logit too is 1.6x coarser at the top. A negative logit reads as 0, so
                        the word probabilities of unlikely words (and the confidence from them) are overstated."""
    r = tensor_ranges(calibrated, ("hidden", "new_hidden", "logits"))
    out = {}
    if "hidden" in r and "new_hidden" in r:
        top = max(abs(v) for name in ("hidden", "new_hidden") for v in r[name])
        out["hidden"] = out["new_hidden"] = (-top, top)
    if "logits" in r and r["logits"][1] > 0:
        out["logits"] = (0.0, r["logits"][1])
    return out
