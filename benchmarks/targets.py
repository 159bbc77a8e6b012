"""The issue's targets, as ratios from one run's figures, each with what it measured and, when missed, by how much
and where the time (or the bytes) went.

  speedup    int8 bundle's whole greedy caption >= 60x faster than the naive eager Keras loop (original dims)
  overhead   edge runtime's Python overhead (whole caption minus its interpreter invokes) <= 10% (original dims)
  size       int8 bundle <= 30% of the float32 bundle
  memory     edge captioning process peak RSS <= 150 MB
The targets are defined at the original system's dimensions; a run without them (--quick) evaluates them at the
synthetic-scenes dimensions and says so.
"""

from __future__ import annotations

SPEEDUP_MIN = 60.0
OVERHEAD_MAX_PCT = 10.0
SIZE_MAX_RATIO = 0.30
RSS_MAX_MB = 150.0


def _p50(row: dict, stage: str) -> float | None:
    s = row.get("stages", {}).get(stage, {})
    return s.get("p50")


def _speedup(dims: str, t: str, row: dict) -> dict | None:
    int8, eager = row.get("int8"), row.get("eager")
    if not int8 or not eager:
        return None
    q, e = _p50(int8, "greedy"), _p50(eager, "greedy")
    ratio = e / q
    res = {"target": "speedup", "title": "int8 greedy caption vs naive eager", "dims": dims, "threads": int(t),
           "measured": ratio, "limit": SPEEDUP_MIN, "unit": "x", "met": ratio >= SPEEDUP_MIN,
           "figures": {"int8_greedy_ms": q, "eager_greedy_ms": e, "int8_words": int8.get("greedy_words"),
                       "eager_words": eager.get("greedy_words")}}
    enc_q, enc_e = _p50(int8, "encoder"), _p50(eager, "encoder")
    step_q, step_e = _p50(int8, "step"), _p50(eager, "step")
    words = int8.get("greedy_words", 0) + 1  # steps run: the words and the <end> (or the length limit)
    res["detail"] = (f"eager {e:.1f} ms vs int8 {q:.1f} ms per caption ({eager.get('greedy_words')} vs "
                     f"{int8.get('greedy_words')} words); encoder {enc_e:.1f} vs {enc_q:.1f} ms "
                     f"({enc_e / enc_q:.1f}x), one decoder step {step_e:.2f} vs {step_q:.2f} ms "
                     f"({step_e / step_q:.1f}x)")
    if int8.get("greedy_words") != eager.get("greedy_words"):
        per_word = (e / max(1, eager.get("greedy_words", 0) + 1)) / (q / max(1, words))
        res["detail"] += f"; the captions differ in length, per decoder step the ratio is {per_word:.1f}x"
    if not res["met"]:
        enc_share = 100.0 * enc_q / q
        res["missed_by"] = f"{SPEEDUP_MIN / ratio:.1f}x short (int8 would need {e / SPEEDUP_MIN:.1f} ms)"
        res["why"] = (f"the naive loop's cost here is mostly arithmetic, not Python: the eager step is only "
                      f"{step_e / step_q:.1f}x the int8 step and the eager encoder {enc_e / enc_q:.1f}x the int8 "
                      f"one, so no per-stage ratio comes near {SPEEDUP_MIN:.0f}x; the int8 caption spends "
                      f"{enc_share:.0f}% in the encoder and the rest in {words} decoder steps, each dominated by the "
                      "vocabulary projection (fc2)")
    return res


def _overhead(dims: str, t: str, row: dict, variant: str = "int8") -> dict | None:
    v = row.get(variant)
    if not v or "greedy_overhead_pct" not in v.get("stages", {}):
        return None
    pct = _p50(v, "greedy_overhead_pct")
    res = {"target": "overhead", "title": f"edge Python overhead, {variant} greedy caption", "dims": dims,
           "threads": int(t), "measured": pct, "limit": OVERHEAD_MAX_PCT, "unit": "%", "met": pct <= OVERHEAD_MAX_PCT,
           "figures": {"overhead_ms": _p50(v, "greedy_overhead"), "invokes_ms": _p50(v, "greedy_invokes"),
                       "whole_ms": _p50(v, "greedy"), "preprocess_ms": _p50(v, "preprocess"),
                       "step_ms": _p50(v, "step"), "step_invoke_ms": _p50(v, "step_invoke"),
                       "decoder_invokes": v.get("greedy_decoder_invokes")}}
    f = res["figures"]
    per_step = (f["step_ms"] or 0) - (f["step_invoke_ms"] or 0)
    res["detail"] = (f"{f['overhead_ms']:.2f} ms of {f['whole_ms']:.2f} ms outside the interpreter: preprocessing "
                     f"{f['preprocess_ms']:.2f} ms and about {per_step * 1e3:.0f} us per decoder step "
                     f"({f['decoder_invokes']} steps; a step takes {f['step_ms'] * 1e3:.0f} us, its invoke "
                     f"{f['step_invoke_ms'] * 1e3:.0f} us)")
    costs = v.get("python_costs_us")
    if costs:
        res["figures"]["python_costs_us"] = costs
        res["detail"] += (f"; per word, log-softmax over the {v.get('vocab_size', 'whole')}-word vocabulary takes "
                          f"{costs['log_softmax']:.0f} us, fetching and dequantising the logits "
                          f"{costs['get_logits']:.0f} us, argmax {costs['argmax']:.0f} us, setting the hidden state "
                          f"{costs['set_hidden']:.0f} us")
    if dims != "original":
        res["note"] = "reported only: at these dimensions the invokes take microseconds (the target is for original)"
    if not res["met"]:
        res["missed_by"] = f"{pct - OVERHEAD_MAX_PCT:.1f} points over"
        words = max(1, f["decoder_invokes"] or 1)
        outside = f["overhead_ms"] - (f["preprocess_ms"] or 0)
        res["why"] = (f"about {outside / words * 1e3:.0f} us per word runs in Python against a "
                      f"{f['step_invoke_ms'] * 1e3:.0f} us invoke: the runtime fetches and dequantises the logits "
                      "and takes a log-softmax over the whole vocabulary in numpy (for the caption's "
                      "log-probability) besides the argmax")
    return res


def _size(dims: str, sizes: dict) -> dict | None:
    if "int8" not in sizes or "float32" not in sizes:
        return None
    ratio = sizes["int8"]["total"] / sizes["float32"]["total"]
    res = {"target": "size", "title": "int8 bundle size vs float32", "dims": dims, "threads": None,
           "measured": 100.0 * ratio, "limit": 100.0 * SIZE_MAX_RATIO, "unit": "%", "met": ratio <= SIZE_MAX_RATIO,
           "figures": {"int8_bytes": sizes["int8"]["total"], "float32_bytes": sizes["float32"]["total"]}}
    models = {k: v for k, v in sizes["int8"].items() if k.endswith(".tflite") or k.endswith(".npy")}
    other = sizes["int8"]["total"] - sum(models.values())
    res["detail"] = (f"{sizes['int8']['total'] / 1e6:.2f} MB vs {sizes['float32']['total'] / 1e6:.2f} MB; of the "
                     f"int8 bundle, models {sum(models.values()) / 1e6:.2f} MB, vocabulary and manifest "
                     f"{other / 1e6:.2f} MB")
    if not res["met"]:
        res["missed_by"] = f"{100.0 * (ratio - SIZE_MAX_RATIO):.1f} points over"
        res["why"] = ("int8 weights are a quarter of float32, plus per-channel scales, the int32 biases and the "
                      "files that do not shrink (vocabulary, manifest)")
    return res


def _memory(dims: str, mem: dict) -> dict | None:
    edge = mem.get("edge")
    if not edge:
        return None
    mb = edge["peak_rss_mb"]
    res = {"target": "memory", "title": f"edge process peak RSS ({edge.get('bundle')} bundle)", "dims": dims,
           "threads": None, "measured": mb, "limit": RSS_MAX_MB, "unit": "MB", "met": mb <= RSS_MAX_MB,
           "figures": {"edge_peak_rss_mb": mb,
                       "tensorflow_peak_rss_mb": mem.get("tensorflow", {}).get("peak_rss_mb")}}
    tf = res["figures"]["tensorflow_peak_rss_mb"]
    res["detail"] = f"edge {mb:.0f} MB" + (f" vs TensorFlow {tf:.0f} MB ({tf / mb:.1f}x)" if tf else "")
    if not res["met"]:
        res["missed_by"] = f"{mb - RSS_MAX_MB:.0f} MB over"
        res["why"] = "the interpreter arenas and the models' weights are resident, plus numpy, OpenCV and LiteRT"
    return res


def evaluate(results: dict) -> list[dict]:
    """Every target at the original dimensions (else at the synthetic ones), per thread count where it applies."""
    dims = results.get("dims", {})
    out: list[dict] = []
    main = "original" if "original" in dims else next(iter(dims), None)
    if main is None:
        return out
    d = dims[main]
    for t, row in d.get("latency", {}).items():
        for item in (_speedup(main, t, row), _overhead(main, t, row)):
            if item:
                out.append(item)
    if main != "synth" and "synth" in dims:  # reported, not chased: tiny models' invokes take microseconds
        for t, row in dims["synth"].get("latency", {}).items():
            item = _overhead("synth", t, row)
            if item:
                out.append(item)
    for name, dd in ((main, d), *((k, v) for k, v in dims.items() if k != main)):
        item = _size(name, dd.get("sizes", {}))
        if item:
            out.append(item)
    item = _memory(main, d.get("memory", {}))
    if item:
        out.append(item)
    for item in out:
        if main != "original" and item["dims"] == main:
            item["note"] = (item.get("note", "") + "; " if item.get("note") else "") + (
                "evaluated at the synthetic-scenes dimensions (this run has no original-dimension models); "
                "the target is defined at the original system's")
    return out
