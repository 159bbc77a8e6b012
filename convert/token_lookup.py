"""The embedding lookup without its negative-index wrap: GATHER(table, SELECT(i < 0, i + n, i)) -> GATHER(table, i).

Keras's embedding lookup (ops.take) wraps negative ids, as numpy does, with three ops the converter keeps: LESS,
ADD and SELECT. XNNPACK runs none of them, so every decoder step leaves the delegate for them; without them the
demo's dynamic-range step took 1-1.7 us less (29.3-30.0 against 28.1-28.4 us, one thread, this machine). A token
id is never negative (the search feeds vocabulary ids, <start> first), so the lookup is the same for every id the
Captioner feeds; a negative id now fails in GATHER's bounds check instead of reading a row from the end.
"""

from __future__ import annotations

from scenecap.convert import flatbuffer as fb


def drop_negative_index_wrap(model: bytes) -> tuple[bytes, int]:
    """Every GATHER whose indices are SELECT(LESS(i, 0), ADD(i, n), i) reads i directly; the three ops go when
    nothing else reads them. Returns the model and how many lookups changed (the model unchanged when none)."""
    m = fb.unpack(model)
    g = fb.Graph(m)
    groups: dict[int, set[int]] = {}  # SELECT op -> its three ops
    changed = 0
    for i, kind in enumerate(g.kinds):
        if kind != "GATHER":
            continue
        wrap = _wrap(m, g, int(g.sg.operators[i].inputs[1]))
        if wrap is not None:
            raw, sel, ops = wrap
            g.sg.operators[i].inputs[1] = raw
            groups[sel] = ops
            changed += 1
    if not changed:
        return model, 0
    # A wrap goes as a whole once nothing reads its SELECT (its LESS and ADD feed only that SELECT: _wrap).
    still_read = {int(t) for op in g.sg.operators for t in op.inputs} | set(g.outputs.values())
    drop = {k for sel, ops in groups.items() if g.op_outputs(sel)[0] not in still_read for k in ops}
    g.sg.operators = [op for k, op in enumerate(g.sg.operators) if k not in drop]
    return fb.pack(m), changed


def _wrap(m, g: fb.Graph, indices: int) -> tuple[int, int, set[int]] | None:
    """(i, the SELECT, the three ops) when tensor `indices` is SELECT(LESS(i, 0), ADD(i, n), i) and its LESS and
    ADD feed nothing else, else None."""
    sel = g.producer.get(indices)
    if sel is None or g.kinds[sel] not in ("SELECT", "SELECT_V2"):
        return None
    cond, wrapped, raw = g.op_inputs(sel)
    less, add = g.producer.get(cond), g.producer.get(wrapped)
    if less is None or add is None or g.kinds[less] != "LESS" or g.kinds[add] != "ADD":
        return None
    (a, zero), (b, _) = g.op_inputs(less), g.op_inputs(add)
    if a != raw or b != raw or not _is_zero(m, g, zero):
        return None
    if g.consumers.get(cond) != [sel] or g.consumers.get(wrapped) != [sel]:
        return None
    return raw, sel, {sel, less, add}


def _is_zero(m, g: fb.Graph, t: int) -> bool:
    buf = g.sg.tensors[t].buffer
    data = m.buffers[buf].data if 0 < buf < len(m.buffers) else None
    return data is not None and len(data) > 0 and not any(data)
