"""Edge-runtime latency per stage, in a worker process that never imports TensorFlow (as on a Raspberry Pi).

Stages, each timed after warm-up over N rounds; the variants take turns within each round, so a burst of load
from elsewhere on the machine hits every variant alike:
  preprocess   camera frame (640x480 RGB) -> model input (`scenecap.edge.preprocess.prepare`)
  encoder      model input -> features and attention keys (set, invoke, get)
  step         one decoder step: one word for one hypothesis (set, invoke, get, (de)quantise)
  greedy       a whole caption, greedy: `Captioner.caption(frame)` from the frame to the text
  beam         a whole caption, beam search (width 3)
For each whole caption the interpreter's own invokes are timed too; what is left is the edge runtime's Python
overhead (resizing, (de)quantising, each word's log-probability: its logit minus the graph's log_norm, or a
log-sum-exp per row in numpy for decoders without it; top-k, search bookkeeping).

    python -m scenecap.benchmarks.latency SPEC.json OUT.json    (what `scenecap bench` runs)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from scenecap.edge.export_contract import LOG_NORM

STAGES = ("preprocess", "encoder", "step", "greedy", "beam")
# "step": a decoder step as it runs inside a greedy caption (median over its words, weights warm in cache);
# "step_lone" (edge only): one step timed alone after the other models ran, i.e. with cold caches.
STAGE_TITLES = {"preprocess": "preprocess", "encoder": "encoder", "step": "decoder step (in a caption)",
                "greedy": "greedy caption", "beam": "beam-3 caption", "step_lone": "lone decoder step (cold)"}


def summarize(samples_ms: list[float]) -> dict:
    """p50/p90/p99/mean/min/max of millisecond samples (numpy's linear percentiles), and how many."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(a.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()),
            "min": float(a.min()), "max": float(a.max())}


class Progress:
    """A tqdm bar on a terminal (when tqdm is installed), else a line every tenth of the way (logs stay readable)."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done, self.bar = total, desc, 0, None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="round", leave=False, file=sys.stderr)
            except ImportError:
                pass

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        elif self.done == self.total or self.done % max(1, self.total // 10) == 0:
            print(f"{self.desc}: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def block_tensorflow() -> None:
    """Make `import tensorflow` (and keras) fail in this process: the edge side must not need it."""
    import importlib.abc

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                raise ImportError(f"{name} is blocked: the edge benchmark runs without TensorFlow")
            return None

    sys.meta_path.insert(0, Blocker())


def file_sizes(bundle: Path) -> dict[str, int]:
    """Bytes of each file in the bundle (models, vocab, manifest) and their total."""
    sizes = {p.name: p.stat().st_size for p in sorted(Path(bundle).iterdir()) if p.is_file()}
    sizes["total"] = sum(sizes.values())
    return sizes


def python_costs_us(cap, width: int = 3, calls: int = 200) -> dict[str, float]:
    """Median microseconds of the per-word numpy work around an invoke, as the edge loop does it (measured apart,
    with warm caches): what the overhead is made of. Every word needs its log-probability (each caption's
    confidence): with the decoder's log_norm output that is its logit minus log_norm (`log_prob`); without, a
    log-sum-exp of the row (`log_sum_exp`). Beam search also takes the next words per beam (`top_k`): on the
    logits themselves with log_norm, else on the shifted rows."""
    from scenecap.edge.decode import Logits, RowScorer

    dec = cap.decoder
    spec = dec.output_spec("logits")
    raw = dec.read("logits")
    norm = dec.read(LOG_NORM) if LOG_NORM in dec.spec.outputs else None
    lg = Logits(raw, spec.scale if spec.quantized else None, spec.zero_point, log_norm=norm)  # not scratch
    hidden = dec.read("new_hidden").astype(dec.input_spec("hidden").dtype)
    token = "token" if "token" in dec.spec.inputs else "embedding"
    value = np.zeros(dec.input_spec(token).shape, dec.input_spec(token).dtype)

    def write_inputs() -> None:
        dec.write(token, value)
        dec.write("hidden", hidden)

    def read_outputs() -> None:  # as the greedy loop does: the logits viewed, the state copied (no attention kept)
        view = dec.view("logits")
        dec.read("new_hidden")
        if norm is not None:
            dec.read(LOG_NORM)
        del view

    costs = {"read_outputs": _median_us(read_outputs, calls), "write_inputs": _median_us(write_inputs, calls),
             "argmax": _median_us(lambda: raw.argmax(axis=1), calls)}  # on the raw (e.g. int8) logits
    return {**costs, **_word_costs(lg, RowScorer(), width, calls)}


def _word_costs(lg, scorer, width: int, calls: int) -> dict[str, float]:
    """The log-probability of the chosen word and (beam search) the next words per beam, as decode.py takes them."""
    from scenecap.edge.decode import top_words

    best = lg.raw.argmax(axis=1)
    if lg.log_norm is not None:
        rows = lg.floats().copy()  # its own: top_words masks and restores it
        b0 = int(best[0])
        return {"log_prob": _median_us(lambda: lg.logit(0, b0) - float(lg.log_norm[0]), calls),
                "top_k": _median_us(lambda: top_words(rows, best, width), calls)}
    z = scorer.shifted(lg, best).copy()  # its own: log_sum_exp overwrites the scorer's buffer
    return {"log_sum_exp": _median_us(lambda: scorer.log_norms(scorer.shifted(lg, best)), calls),
            "top_k": _median_us(lambda: top_words(z, best, width), calls)}


def _median_us(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


# Per variant and round: what each stage's list of samples holds (summarised at the end).
SAMPLES = (*STAGES, "step_lone", "step_lone_invoke", "step_invoke", "greedy_invokes", "beam_invokes",
           "greedy_overhead", "beam_overhead", "greedy_overhead_pct", "beam_overhead_pct",
           "greedy_search_overhead", "beam_search_overhead", "greedy_search_overhead_pct", "beam_search_overhead_pct")


def _describe(cap, item: dict) -> dict:
    """What a variant's results say about it, and its empty sample lists."""
    m = cap.bundle.manifest
    return {"runtime": cap.runtime.name, "device": item.get("device", "cpu"),
            "quant": {k: v.quant for k, v in m.models.items()},
            "decoder_state": m.decoder_state, "decoder_batch": m.decoder_batch,
            "max_words": m.max_length - 1,
            "log_norm": LOG_NORM in m.models["decoder_step"].outputs,  # the log-sum-exp in the graph, not numpy
            "vocab_size": m.vocab_size, "model": m.model.to_json(),
            "sizes": file_sizes(item["path"]),
            "samples": {s: [] for s in SAMPLES}}


def _load_variants(spec: dict, threads: int) -> tuple[dict, dict, dict]:
    """(captioners, their result entries, their (encoder, decoder) invoke timers), by variant name."""
    from scenecap.edge.captioner import Captioner

    caps, out, invokes = {}, {}, {}
    for name, item in spec["bundles"].items():
        cap = Captioner.load(item["path"], threads=threads, device=item.get("device", "cpu"))
        caps[name] = cap
        invokes[name] = (cap.encoder.record_invokes(), cap.decoder.record_invokes())
        out[name] = _describe(cap, item)
    return caps, out, invokes


def _time_stages(cap, frame: np.ndarray, dec_inv: list[float]) -> tuple[float, float, float]:
    """Milliseconds of preprocessing, the encoder and one lone decoder step (after the encoder: caches cold)."""
    from scenecap.edge.preprocess import prepare

    m = cap.bundle.manifest
    t0 = time.perf_counter()
    image = prepare(frame, m.preprocess)
    t1 = time.perf_counter()
    feats = cap.encode(image)
    t2 = time.perf_counter()
    with cap.start(feats) as session:  # binding the features is once per image, not part of a step
        dec_inv.clear()
        t3 = time.perf_counter()
        session.raw_step(np.array([m.tokens["start"]], np.int32), session.hidden0())
        t4 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t4 - t3) * 1e3


def _time_caption(cap, frame: np.ndarray, width: int, enc_inv: list[float], dec_inv: list[float]):
    """(caption, whole ms, ms in the interpreter's invokes) of one caption from the frame at beam `width`."""
    cap.beam = width
    enc_inv.clear()
    dec_inv.clear()
    t0 = time.perf_counter()
    c = cap.caption(frame)
    whole = (time.perf_counter() - t0) * 1e3
    return c, whole, sum(enc_inv) + sum(dec_inv)


def _record_caption(s: dict, stage: str, c, whole: float, inv: float, dec_inv: list[float]) -> None:
    if stage == "greedy":  # the step as it runs inside a caption: median over its words
        s["step"].append(float(np.median(c.step_ms)))
        s["step_invoke"].append(float(np.median(dec_inv)))
    s[stage].append(whole)
    s[f"{stage}_invokes"].append(inv)
    s[f"{stage}_overhead"].append(whole - inv)
    s[f"{stage}_overhead_pct"].append(100.0 * (whole - inv) / whole)
    # The search's own share: the decoder stage (binding the features, then every word) minus its invokes, i.e.
    # the Python per word times the words; the rest of the overhead is per frame (resizing, the encoder's output).
    search = c.timings["decoder"] - sum(dec_inv)
    s[f"{stage}_search_overhead"].append(search)
    s[f"{stage}_search_overhead_pct"].append(100.0 * search / whole)


def _one_round(cap, entry: dict, invokes: tuple, frame: np.ndarray, beam: int, rec: bool) -> None:
    """Every stage of one variant once; recorded unless a warm-up round (`rec` False)."""
    s = entry["samples"]
    enc_inv, dec_inv = invokes
    pre, enc, lone = _time_stages(cap, frame, dec_inv)
    if rec:
        s["preprocess"].append(pre)
        s["encoder"].append(enc)
        s["step_lone"].append(lone)
        s["step_lone_invoke"].append(dec_inv[-1])
    for stage, width in (("greedy", 1), ("beam", beam)):
        c, whole, inv = _time_caption(cap, frame, width, enc_inv, dec_inv)
        if rec:
            _record_caption(s, stage, c, whole, inv, dec_inv)
        entry[f"{stage}_words"] = len(c.tokens)
        entry[f"{stage}_decoder_invokes"] = c.invokes
        entry[f"{stage}_caption"] = c.text
        entry[f"{stage}_tokens"] = [int(t) for t in c.tokens]
    cap.beam = 1


# A working set that stays in any CPU's cache, to compare the weights' read speed with.
CACHE_PROBE_BYTES = 1 << 20


def read_gbps(nbytes: int, passes: int = 15) -> float:
    """How fast one core reads a working set of `nbytes` again and again (GB/s, median pass after warm-up): what
    a decoder step that streams that many bytes of weights per word can at best get on this machine. On a VM the
    share of the last-level cache another tenant leaves decides whether that is cache or DRAM speed."""
    words = np.ones(max(1, nbytes // 8), np.int64)
    _median_us(words.sum, 3)  # warm-up: the first passes fault the pages in
    return words.nbytes / _median_us(words.sum, passes) / 1e3


def streamed_weight_bytes(path: Path) -> int:
    """Bytes of constant weights a step reads in full: every op's constant inputs except a lookup table's (GATHER
    reads one row of the word embedding)."""
    from scenecap.edge.modelinfo import read_model

    info = read_model(path)
    seen = set()
    for op in info.operators:
        if op.name != "GATHER":
            seen.update(i for i in op.inputs if i >= 0 and info.tensor(i).buffer_bytes)
    return sum(info.tensor(i).buffer_bytes for i in seen)


def memory_reads(cap) -> dict:
    """The decoder step's streamed weights and one core's read speed for a working set that size and for one that
    fits in cache: whether the step is bound by memory rather than by arithmetic."""
    weights = streamed_weight_bytes(cap.bundle.file(cap.bundle.manifest.models["decoder_step"].file))
    return {"step_weight_bytes": weights, "weights_gbps": read_gbps(weights),
            "cache_gbps": read_gbps(CACHE_PROBE_BYTES), "cache_probe_bytes": CACHE_PROBE_BYTES}


def measure_edge(spec: dict) -> dict:
    """Every variant of one model set at one thread count: {variant: {stage: summary, ...}}."""
    from scenecap.edge.images import load_image

    threads, runs, warmup, beam = int(spec["threads"]), int(spec["runs"]), int(spec["warmup"]), int(spec["beam"])
    frame = load_image(spec["frame"])
    caps, out, invokes = _load_variants(spec, threads)
    bar = Progress(warmup + runs, f"edge latency ({len(caps)} variants, {threads} thread{'s' * (threads > 1)})")
    for r in range(warmup + runs):
        for name, cap in caps.items():  # the variants take turns within each round
            _one_round(cap, out[name], invokes[name], frame, beam, rec=r >= warmup)
        bar.update()
    bar.close()
    for name, cap in caps.items():
        out[name]["python_costs_us"] = python_costs_us(cap, beam)
        out[name]["memory_reads"] = memory_reads(cap)
    for name in out:
        out[name]["stages"] = {k: summarize(v) for k, v in out[name].pop("samples").items()}
    return out


def worker_main(argv: list[str], module: str, key: str, measure, before=None) -> int:
    """`python -m scenecap.benchmarks.MODULE SPEC.json OUT.json`: one measurement in its own process, so each
    side (edge, TensorFlow) is measured with only its own libraries loaded."""
    if len(argv) != 2:
        print(f"usage: python -m scenecap.benchmarks.{module} SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if before is not None:
        before()
    t0 = time.perf_counter()
    result = {key: measure(spec), "seconds": time.perf_counter() - t0,
              "tensorflow_imported": "tensorflow" in sys.modules}
    Path(argv[1]).write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:], "latency", "variants", measure_edge, before=block_tensorflow))
