"""Write a benchmark run as NAME.json (every figure, the machine), NAME.md (tables) and NAME.png (chart)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from scenecap.benchmarks.artefacts import vocab_limited_parts
from scenecap.benchmarks.bench import INT8_DOT_FEATURES
from scenecap.benchmarks.latency import STAGE_TITLES, STAGES
from scenecap.edge.fileio import atomic_write_bytes, atomic_write_text

log = logging.getLogger("scenecap.bench")

DIM_TITLES = {"synth": "synthetic-scenes model", "original": "original system's dimensions (random weights)"}
ORDER = ("float32", "float16", "dynamic", "int8", "int8-dynamic", "int8-int16x8", "edgetpu", "function", "eager")
LABELS = {"eager": "naive eager Keras", "function": "Keras + tf.function"}


def chart_colour(index: int) -> int:
    """A tab20 slot: the ten strong hues first (even slots), then their light twins."""
    return (2 * index) % 20 + (index // 10) % 2


def colour_index(variant: str, names: list[str]) -> int:
    """A colour of its own per variant: its place in ORDER, and variants not in ORDER after all of those."""
    if variant in ORDER:
        return ORDER.index(variant)
    others = sorted(n for n in names if n not in ORDER)
    return len(ORDER) + others.index(variant)


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e6:.2f}" if b < 1e7 else f"{b / 1e6:.1f}"


def _by_order(names) -> list[str]:
    """ORDER's variants in its order, each --vocab-limit one (int8-vocab4000) after its full one, then the rest."""
    def key(name: str) -> tuple[int, int]:
        limited = vocab_limited_parts(name)
        if limited and limited[0] in ORDER:
            return ORDER.index(limited[0]), limited[1]
        return (ORDER.index(name), 0) if name in ORDER else (len(ORDER), 0)

    return sorted(names, key=key)


def _rows(latency: dict):
    for t, row in latency.items():
        for v in _by_order(row):
            yield t, v, row[v]


def _p(row: dict, stage: str, key: str = "p50") -> float | None:
    return row.get("stages", {}).get(stage, {}).get(key)


def _same_model_check(first: dict) -> str:
    """Whether the float32 bundle and the eager baseline, on the same model input, say the same tokens."""
    ref = first["eager"].get("greedy_tokens_edge_input")
    same = first["float32"].get("greedy_tokens") == ref
    agree = sum(a == b for a, b in zip(first["float32"].get("greedy_tokens", []), ref or [], strict=False))
    return ("Same model check: on the same model input, the float32 bundle's greedy caption "
            + (f"is the naive eager Keras model's, token for token ({len(ref)} tokens)." if same else
               f"agrees with the naive eager Keras model's on {agree} of {len(ref or [])} tokens (float "
               "rounding flips near-ties; see greedy_tokens in the JSON).")
            + " (Each baseline resizes with tf.image.resize, as the original did, so its own captions may "
            "differ slightly.)")


def _dims_header(name: str, d: dict) -> list[str]:
    lines = [f"## {DIM_TITLES.get(name, name)}", ""]
    ref = next((r for r in d["latency"].values() for v, r in r.items() if v == "float32"), None)
    if ref:
        lines.append(f"Bundles from `{d['models']['folder']}`; decoder state {ref.get('decoder_state')}, at most "
                     f"{ref.get('max_words')} words; runtime {ref.get('runtime')}.")
    for s in d.get("skipped", []):
        lines.append(f"- not measured: {s}")
    first = next(iter(d["latency"].values()), {})
    if "float32" in first and "eager" in first:  # the bundles and the baselines run the same model
        lines.append(_same_model_check(first))
    return lines


def _overhead_cell(row: dict, stage: str) -> str:
    """The whole caption's overhead, and the search loop's share of the caption beside it (when recorded)."""
    over = _p(row, f"{stage}_overhead")
    if over is None:
        return "-"
    search = _p(row, f"{stage}_search_overhead_pct")
    return f"{_ms(over)} ({_p(row, f'{stage}_overhead_pct'):.0f}%" + \
        (f"; search {search:.1f}%)" if search is not None else ")")


def _stage_row(t: str, v: str, row: dict, eager: dict | None) -> str:
    speed = (f"{_p(eager, 'greedy') / _p(row, 'greedy'):.1f}x" if eager and _p(row, "greedy") else "-")
    return (f"| {LABELS.get(v, v)} | {t} | {_ms(_p(row, 'preprocess'))} | {_ms(_p(row, 'encoder'))} | "
            f"{_ms(_p(row, 'step'))} | {_ms(_p(row, 'step_lone'))} | {_ms(_p(row, 'greedy'))} | "
            f"{_ms(_p(row, 'beam'))} | {row.get('greedy_words', '-')}/{row.get('beam_words', '-')} | "
            f"{_overhead_cell(row, 'greedy')} | {_overhead_cell(row, 'beam')} | {speed} |")


def _stage_table(latency: dict) -> list[str]:
    lines = ["", "Median (p50) milliseconds per stage; whole captions start from a 640x480 frame. *Overhead* is the "
             "greedy caption minus its interpreter invokes (*search*: the part inside the search loop, i.e. Python "
             "per word times the words, as a share of the caption; the rest is per frame: resizing, the encoder's "
             "output); *speed-up* is the naive eager greedy caption over this "
             "one's (same thread count). *Decoder step*: as it runs inside a greedy caption (median over its words; "
             "the baselines: one step alone); *lone step*: one edge step timed alone after the other models ran "
             "(caches cold).", "",
             "| variant | threads | preprocess | encoder | decoder step | lone step (cold) | greedy caption | "
             "beam-3 caption | words (greedy/beam) | overhead | beam overhead | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t, v, row in _rows(latency):
        lines.append(_stage_row(t, v, row, latency[t].get("eager")))
    return lines


def _distribution_table(latency: dict) -> list[str]:
    lines = ["", "Whole captions, distribution (ms):", "",
             "| variant | threads | greedy p50 | p90 | p99 | mean | beam-3 p50 | p90 | p99 | mean | runs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t, v, row in _rows(latency):
        g, b = row["stages"]["greedy"], row["stages"]["beam"]
        lines.append(f"| {LABELS.get(v, v)} | {t} | " + " | ".join(_ms(g.get(k)) for k in ("p50", "p90", "p99", "mean"))
                     + " | " + " | ".join(_ms(b.get(k)) for k in ("p50", "p90", "p99", "mean")) + f" | {g['n']} |")
    return lines


def _size_row(v: str, s: dict, f32: int | None) -> str:
    ratio = f"{s['total'] / f32:.2f}" if f32 else "-"
    if v == "keras":
        return f"| Keras weights (the baselines' files) | - | - | {_mb(s['total'])} | {ratio} |"
    enc = next((b for k, b in s.items() if k.startswith("encoder") and k.endswith(".tflite")), None)
    dec = next((b for k, b in s.items() if k.startswith("decoder_step") and k.endswith(".tflite")), None)
    return f"| {v} | {_mb(enc)} | {_mb(dec)} | {_mb(s['total'])} | {ratio} |"


def _sizes_table(sizes: dict) -> list[str]:
    if not sizes:
        return []
    f32 = sizes.get("float32", {}).get("total")
    lines = ["", "Sizes (MB; bundle = models + vocab.json + manifest):", "",
             "| variant | encoder.tflite | decoder_step.tflite | bundle | vs float32 |",
             "|---|---:|---:|---:|---:|"]
    return lines + [_size_row(v, sizes[v], f32) for v in _by_order(sizes)]


def _memory_table(mem: dict | None) -> list[str]:
    if not mem:
        return []
    lines = ["", "One process: import + load + first caption, then exit (median of "
             f"{mem['edge']['runs']}; page cache warm):", "",
             "| process | peak RSS MB | cold start s | import s | load s | first caption s |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, title in (("edge", f"edge ({mem['edge'].get('bundle')} bundle, {mem['edge'].get('runtime')})"),
                     ("tensorflow", "TensorFlow, eager (as the original)")):
        r = mem.get(k)
        if r:
            lines.append(f"| {title} | {r['peak_rss_mb']:.0f} | {r['cold_start_s']:.2f} | {r['import_s']:.2f} | "
                         f"{r['load_s']:.2f} | {r['first_caption_s']:.2f} |")
    return lines


def _dims_section(name: str, d: dict) -> list[str]:
    return (_dims_header(name, d) + _stage_table(d["latency"]) + _distribution_table(d["latency"])
            + _sizes_table(d.get("sizes", {})) + _memory_table(d.get("memory")) + [""])


def _fmt_measured(t: dict) -> tuple[str, str]:
    unit = t["unit"]
    if unit == "x":
        return f"{t['measured']:.1f}x", f">= {t['limit']:.0f}x"
    if unit == "%":
        return f"{t['measured']:.1f}%", f"<= {t['limit']:.0f}%"
    return f"{t['measured']:.0f} {unit}", f"<= {t['limit']:.0f} {unit}"


def _load(la: list[float] | None) -> str:
    return ', '.join(f'{x:.1f}' for x in la) if la else '-'


def _cpu_line(m: dict) -> str:
    """The caches and int8-relevant vector extensions, which decide the int8 rows (absent in older results)."""
    if "cpu_features" not in m:
        return ""
    caches = ", ".join(f"{k} {v}" for k, v in m.get("caches", {}).items())
    feats = ", ".join(m["cpu_features"]) or "none of them"
    dot = any(f in m["cpu_features"] for f in INT8_DOT_FEATURES)
    return (f" Caches: {caches or 'not reported'}. Vector extensions for int8: {feats}"
            + ("" if dot else " (no int8 dot-product instructions: int8 kernels take several instructions per "
               "multiply-add)") + ".")


def _header(results: dict) -> list[str]:
    """Title, machine, load and the run's settings."""
    m, o = results["machine"], results["options"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    board = f"{m['board']}, " if m.get("board") else ""
    mhz = f"up to {m['cpu_max_mhz']:.0f} MHz, " if m.get("cpu_max_mhz") else ""
    commit = f" ({m['git_commit']})" if m.get("git_commit") else ""
    return [f"# scenecap bench ({'quick' if o['quick'] else 'full'}), {m['started_utc']} UTC", "",
            f"Machine: {board}{m['cpu']} ({m['machine']}), {mhz}{m['cores_usable']} usable core(s) of {m['cores']}, "
            f"{(m['memory_mb'] or 0) / 1024:.0f} GB RAM; {m['os']}; Python {m['python']}; {libs}; "
            f"scenecap {m['scenecap']}{commit}." + _cpu_line(m),
            f"Load average (1/5/15 min) at start {_load(m.get('load_average_start'))}, at end "
            f"{_load(m.get('load_average_end'))}: other work on the machine slows every variant "
            "alike (they take turns within each round) but widens p90/p99."
            + (f" Throttling at the end (vcgencmd get_throttled): {m['throttled_end']}." if m.get("throttled_end")
               else ""),
            f"Each stage: {o['warmup']} warm-up round(s), then {o['runs']} measured; beam width {o['beam']}; "
            f"thread counts {', '.join(map(str, o['threads']))}. Edge TPU: "
            + ("attached." if results["edgetpu"]["attached"] else f"not attached ({results['edgetpu']['why_not']})."),
            ""]


def _target_text(t: dict) -> str:
    th = f", {t['threads']} thread{'s' * (t['threads'] > 1)}" if t["threads"] else ""
    text = f"- **{t['title']}** ({t['dims']}{th}): {t['detail']}."
    if not t["met"]:
        text += f" Missed: {t['missed_by']}; why: {t['why']}."
        if t.get("to_close"):
            text += f" What would close it: {t['to_close']}."
    if t.get("note"):
        text += f" ({t['note']})"
    return text


def _targets_section(tg: list[dict]) -> list[str]:
    """The verdict table, then one explanation per target and dims (a met one only the first time)."""
    if not tg:
        return []
    lines = ["## Targets", "", "| target | dims | threads | measured | target | met |", "|---|---|---:|---:|---:|---|"]
    for t in tg:
        meas, lim = _fmt_measured(t)
        lines.append(f"| {t['title']} | {t['dims']} | {t['threads'] or '-'} | {meas} | {lim} | "
                     f"{'yes' if t['met'] else 'NO'} |")
    lines.append("")
    seen = set()
    for t in tg:
        key = (t["target"], t["dims"])
        if key in seen and t["met"]:
            continue
        seen.add(key)
        lines.append(_target_text(t))
    return lines + [""]


def _install_section(inst: dict | None) -> list[str]:
    if not inst:
        return []
    lines = ["## Install size", "", "| environment | MB | how |", "|---|---:|---|"]
    for k, title in (("train", "training (TensorFlow)"), ("edge", "edge (no TensorFlow)")):
        if k in inst:
            lines.append(f"| {title} | {inst[k]['bytes'] / 1e6:.0f} | {inst[k]['source']} |")
    return lines + [""]


def markdown(results: dict) -> str:
    lines = _header(results) + _targets_section(results.get("targets", []))
    for name, d in results["dims"].items():
        if "latency" in d:
            lines += _dims_section(name, d)
    lines += _install_section(results.get("install"))
    o = results["options"]
    lines.append(f"Whole run: {results.get('seconds', 0) / 60:.1f} min. Figures: `{o['name']}.json`; chart: "
                 f"`{o['name']}.png`.")
    return "\n".join(lines) + "\n"


def _draw_panel(ax, row: dict, every: list[str], cmap) -> None:
    """One model set at one thread count: a bar per stage and variant, whiskers to p90."""
    import numpy as np

    names = _by_order(row)
    x = np.arange(len(STAGES))
    w = 0.8 / max(1, len(names))
    for i, v in enumerate(names):
        p50 = [(_p(row[v], s) or np.nan) for s in STAGES]
        p90 = [(_p(row[v], s, "p90") or np.nan) for s in STAGES]
        err = np.clip(np.array(p90) - np.array(p50), 0, None)
        ax.bar(x + (i - (len(names) - 1) / 2) * w, p50, w, yerr=[np.zeros_like(err), err], capsize=1.5,
               label=LABELS.get(v, v), color=cmap(chart_colour(colour_index(v, every))))
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([STAGE_TITLES[s].replace(" ", "\n", 1) for s in STAGES], fontsize=7)
    ax.set_ylabel("ms (p50, whisker p90)", fontsize=7)


def chart(results: dict, path: Path) -> None:
    """p50 latency per stage and variant (log scale), whiskers to p90; one panel per model set and thread count."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(n, t, row) for n, d in results["dims"].items() for t, row in d.get("latency", {}).items()]
    if not panels:
        return
    cols = len({t for _, t, _ in panels})
    rows = len(results["dims"])
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 5.2 * cols), 3.8 * rows + 0.4), squeeze=False)
    dims_order = list(results["dims"])
    threads_order = sorted({t for _, t, _ in panels}, key=int)
    cmap = plt.get_cmap("tab20")  # ORDER's 9 variants, then named --bundle ones: 20 colours (see chart_colour)
    every = sorted({v for _, _, row in panels for v in row})
    for n, t, row in panels:
        ax = axes[dims_order.index(n)][threads_order.index(t)]
        _draw_panel(ax, row, every, cmap)
        ax.set_title(f"{n}, {t} thread{'s' * (int(t) > 1)}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", which="both", alpha=0.25)
    axes[0][0].legend(fontsize=6, ncol=2)
    m = results["machine"]
    fig.suptitle(f"scenecap bench: latency per stage and variant\n{m['cpu']}, {m['cores_usable']} cores, "
                 f"{m['started_utc']} UTC", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(results: dict, out: str | Path, name: str) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    atomic_write_text(paths["json"], json.dumps(results, indent=1, ensure_ascii=False))
    atomic_write_text(paths["md"], markdown(results))
    try:
        chart(results, paths["png"])
    except ImportError:  # matplotlib is in the training extra; an edge-only machine still gets JSON and markdown
        log.warning("matplotlib is not installed: no chart (pip install matplotlib)")
        paths.pop("png")
    return paths
