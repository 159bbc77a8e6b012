"""The report in words and pictures: report.md (the table, the target verdicts, baselines, objects named,
held-out sets side by side) and report.png (bar charts), from the figures report.json holds."""

from __future__ import annotations

from pathlib import Path

from scenecap.convert.report_scores import MAX_BLEU4_LOSS, MIN_AGREEMENT


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def markdown(report: dict) -> str:
    """report.md's text."""
    lines = [
        "# What quantisation costs",
        "",
        f"Held-out set: `{report['annotations']}` ({report['images']} images), decoding: {report['decoding']}. "
        "Each bundle was run with the edge runtime (LiteRT, no TensorFlow), as on the device; agreement is the "
        "share of images whose caption is token-for-token the float SavedModel's.",
        "",
        "| variant | encoder | decoder | BLEU-4 | CIDEr-D | agreement | size KiB | encoder ms | step ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["variants"]:
        lines.append(
            f"| {r['name']} | {r['encoder']} | {r['decoder']} | {_fmt(r['BLEU-4'], '.3f')} | "
            f"{_fmt(r['CIDEr-D'], '.3f')} | {_fmt(r.get('agreement'), '.1%')} | {r['total_bytes'] / 1024:.0f} | "
            f"{_fmt(r['encoder_ms_median'], '.2f')} | {_fmt(r['decoder_step_ms_median'], '.3f')} |")
    lines += ["", "## Target", "",
              "Every quantised variant is held to the int8 target: agree with float on at least "
              f"{MIN_AGREEMENT:.0%} of images and lose at "
              f"most {MAX_BLEU4_LOSS} BLEU-4.", ""]
    lines += [f"- {v}" for v in report["verdicts"]]
    lines += _sets_lines(report)
    lines += _baseline_lines(report)
    lines += _objects_lines(report)
    lines += _trust_lines(report)
    lines += ["", "## Decoder-step cost does not grow with caption length", "",
              "The attention keys (W1 . features) are computed once per image by the encoder, so every decoder "
              "step runs the same fixed-shape graph: its multiply-accumulates are the same at every word.", ""]
    for r in report["variants"]:
        if r["kind"] != "bundle":
            continue
        ratio = r.get("decoder_step_late_vs_early")
        lines.append(f"- {r['name']}: {r['decoder_step_macs']:,} dense MACs per step; median step time at words "
                     f">= 8 is {_fmt(ratio, '.2f')}x that at words 1-2.")
    lines += ["", "Sizes are the model files (plus the Edge TPU embedding table); latency is the median on this "
              "machine, one image at a time.", ""]
    return "\n".join(lines)


def _sets_lines(report: dict) -> list[str]:
    """With several held-out sets (e.g. the training style and a shifted one): BLEU-4 and CIDEr-D side by side."""
    sets = report["sets"]
    if len(sets) < 2:
        return []
    lines = ["", "## Held-out sets side by side", "",
             ", ".join(f"{hs['name']}: `{hs['annotations']}` ({hs['images']} images)" for hs in sets) + ".", "",
             "| variant | " + " | ".join(f"{hs['name']}: BLEU-4 | CIDEr-D | distinct" for hs in sets) + " |",
             "|---|" + "---:|---:|---:|" * len(sets)]
    for name in [r["name"] for r in sets[0]["variants"]]:
        cells = []
        for hs in sets:
            r = next((v for v in hs["variants"] if v["name"] == name), {})
            cells += [_fmt(r.get("BLEU-4"), ".3f"), _fmt(r.get("CIDEr-D"), ".3f"), str(r.get("distinct_captions"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for hs in sets[1:]:
        lines += [""] + [f"- On {hs['name']}: {v}" for v in hs["verdicts"]]
    return lines


def _baseline_lines(report: dict) -> list[str]:
    """Does each model beat a caption that ignores the image? Per held-out set, in words."""
    lines = ["", "## Does each model beat trivial baselines?", "",
             "A model that ignores the image can still score: the best constant caption (one caption for every "
             "image) is the bar, and a working captioner gives many different captions.", "",
             "| held-out set | constant caption | its BLEU-4 | its CIDEr-D |", "|---|---|---:|---:|"]
    for hs in report["sets"]:
        b = hs["baseline"]
        lines.append(f"| {hs['name']} | {b.get('caption', '-')} | {_fmt(b.get('BLEU-4'), '.3f')} | "
                     f"{_fmt(b.get('CIDEr-D'), '.3f')} |")
    lines.append("")
    for hs in report["sets"]:
        for r in hs["variants"]:
            if r["trivial"]:
                lines.append(f"- On {hs['name']}, **{r['name']}** does NOT beat trivial baselines: "
                             + "; ".join(r["trivial"]) + ".")
            else:
                lines.append(f"- On {hs['name']}, **{r['name']}** beats them: {r['distinct_captions']} different "
                             f"captions for {r['images']} images, BLEU-4 {_fmt(r['BLEU-4'], '.3f')}, CIDEr-D "
                             f"{_fmt(r['CIDEr-D'], '.3f')}.")
    return lines


def _objects_lines(report: dict) -> list[str]:
    """Objects named right, invented and missing (synthetic scenes only), every held-out set side by side."""
    sets = [hs for hs in report["sets"] if hs["variants"] and hs["variants"][0].get("objects")]
    if not sets:
        return []
    lines = ["", "## Objects named (synthetic scenes)", "",
             "Each object is a colour and a shape. Precision: share of the objects a caption names that are in the "
             "scene (the rest are invented). Recall: share of the scene's objects named (the rest are missing). "
             "Exact: share of scenes named exactly right, nothing missing and nothing invented.", "",
             "| variant | " + " | ".join(f"{hs['name']}: exact | precision | recall" for hs in sets) + " |",
             "|---|" + "---:|---:|---:|" * len(sets)]
    names = [r["name"] for r in sets[0]["variants"]]
    for name in names:
        cells = []
        for hs in sets:
            o = next((r["objects"] for r in hs["variants"] if r["name"] == name), None)
            cells += [_fmt(o and o["exact_scenes"], ".1%"), _fmt(o and o["precision"], ".1%"),
                      _fmt(o and o["recall"], ".1%")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for hs in sets:
        o = hs["baseline"].get("objects")
        if o:
            lines.append(f"| constant caption on {hs['name']} | " + " | ".join(
                (f"{o['exact_scenes']:.1%} | {o['precision']:.1%} | {o['recall']:.1%}" if h is hs else "- | - | -")
                for h in sets) + " |")
    lines.append("")
    for hs in sets:
        for r in hs["variants"]:
            o = r["objects"]
            lines.append(f"- On {hs['name']} ({o['scenes']} scenes, {o['objects']} objects), {r['name']} invents "
                         f"{o['invented']} and misses {o['missing']}.")
    return lines


def _share(x) -> str:
    return _fmt(x, ".1%")


def _trust_lines(report: dict) -> list[str]:
    """The confidence gate on every set: unsure, confidently wrong, right when confident, with the second look."""
    rows = [(hs, r) for hs in report["sets"] for r in hs["variants"] if r.get("gate")]
    if not rows:
        return []
    lines = ["", "## When the device is unsure", "",
             "Each bundle's gate as the device applies it: the share of captions marked unsure, and where the "
             "scenes are known the share said confidently and wrongly (a cane would say it aloud) and how often a "
             "confident caption is right; then the same with `--second-look` (bundles calibrated with it); and, "
             "for every set after the first, how well the image familiarity alone tells its images from the "
             "first set's (AUROC; 0.5 is chance). trust.png draws the trade-off as the threshold moves.", "",
             "| set | variant | unsure | confidently wrong | right when confident | second look: unsure | "
             "confidently wrong | familiarity AUROC vs first set |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for hs, r in rows:
        g, look = r["gate"], r["gate"].get("second_look") or {}
        lines.append(f"| {hs['name']} | {r['name']} | {_share(g['unsure'])} | {_share(g.get('confidently_wrong'))} | "
                     f"{_share(g.get('right_when_confident'))} | {_share(look.get('unsure'))} | "
                     f"{_share(look.get('confidently_wrong'))} | {_fmt(g.get('familiarity_auroc_vs_first'), '.3f')} |")
    return lines


def trust_chart(report: dict, path: Path) -> bool:
    """trust.png: per set whose scenes are known, each gated bundle's confidently-wrong share against the share
    it keeps confident (solid: one look, dashed: the second look), its threshold's point marked. False (and no
    file) when no set has such a curve."""
    sets = [(hs, [r for r in hs["variants"] if (r.get("gate") or {}).get("curve")]) for hs in report["sets"]]
    sets = [(hs, rows) for hs, rows in sets if rows]
    if not sets:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.2), squeeze=False)
    for ax, (hs, rows) in zip(axes[0], sets, strict=True):
        for k, r in enumerate(rows):
            colour = f"C{k}"
            for g, style, label in ((r["gate"], "-", r["name"]), (r["gate"].get("second_look"), "--",
                                                                   f"{r['name']}, second look")):
                if not g or not g.get("curve"):
                    continue
                x, y = zip(*g["curve"], strict=True)
                ax.plot([100 * v for v in x], [100 * v for v in y], style, color=colour, label=label)
                ax.plot(100 * (1 - g["unsure"]), 100 * g["confidently_wrong"], "o", color=colour)
        ax.set_title(f"{hs['name']} ({hs['images']} images)", fontsize=10)
        ax.set_xlabel("captions kept confident (%)")
        ax.set_ylabel("confident and wrong (% of all)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("What the confidence gate trades: dots at each bundle's threshold")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return True


def _label(v: float) -> str:
    """A bar's value as a person reads it: 18,432 rather than 1.84e+04."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _meets(row: dict, float_bleu: float | None) -> bool:
    agree, bleu = row.get("agreement"), row.get("BLEU-4")
    return ((agree is None or agree >= MIN_AGREEMENT)
            and (bleu is None or float_bleu is None or float_bleu - bleu <= MAX_BLEU4_LOSS))


def chart(report: dict, path: Path) -> None:
    """report.png: one bar chart per figure, a bar per variant (the float SavedModel in grey; a bundle that
    misses the target in red), with the target drawn where it has one."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]
    names = [r["name"] for r in rows]
    float_bleu = next((r["BLEU-4"] for r in rows if r["kind"] != "bundle"), None)
    panels = [("BLEU-4", [r["BLEU-4"] or 0 for r in rows]), ("CIDEr-D", [r["CIDEr-D"] or 0 for r in rows]),
              ("agreement with float (%)", [100 * (r.get("agreement") or 0) for r in rows]),
              ("size (KiB)", [r["total_bytes"] / 1024 for r in rows]),
              ("encoder median (ms)", [r["encoder_ms_median"] or 0 for r in rows]),
              ("decoder step median (ms)", [r["decoder_step_ms_median"] or 0 for r in rows])]
    targets = {"agreement with float (%)": 100 * MIN_AGREEMENT,
               "BLEU-4": None if float_bleu is None else float_bleu - MAX_BLEU4_LOSS}
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    colours = ["#999999" if r["kind"] != "bundle" else "#4c72b0" if _meets(r, float_bleu) else "#c44e52"
               for r in rows]
    for ax, (title, values) in zip(axes.flat, panels, strict=True):
        ax.bar(range(len(values)), values, color=colours)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        if targets.get(title) is not None:
            ax.axhline(targets[title], color="#c44e52", linestyle="--", linewidth=1, label="target")
            ax.legend(fontsize=7, loc="lower right")
        for i, v in enumerate(values):
            ax.text(i, v, _label(v), ha="center", va="bottom", fontsize=7)
    fig.suptitle(f"What quantisation costs ({report['images']} held-out images, {report['decoding']})")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
