"""The report's figures from captions: quality, agreement with the float model, latency and size per variant;
trivial baselines and objects named; and, in words, which variants meet the quantisation target."""

from __future__ import annotations

import statistics

import numpy as np

from scenecap.convert.report_captions import VariantResult
from scenecap.convert.report_trust import gate_row

# The target for full-integer variants on the synthetic held-out set.
MIN_AGREEMENT = 0.95
MAX_BLEU4_LOSS = 0.01


def _median(xs) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _step_figures(r: VariantResult) -> dict:
    """Decoder-step latency: the median, by word position, and late words against early ones (constant cost)."""
    all_steps = [t for ts in r.step_ms_by_position.values() for t in ts]
    early = [t for p, ts in r.step_ms_by_position.items() if p <= 2 for t in ts]
    late = [t for p, ts in r.step_ms_by_position.items() if p >= 8 for t in ts]
    return {
        "decoder_step_ms_median": _median(all_steps),
        "decoder_step_ms_by_position": {p: _median(ts) for p, ts in sorted(r.step_ms_by_position.items())
                                        if len(ts) >= 5},
        "decoder_step_late_vs_early": (_median(late) / _median(early)) if early and late else None,
    }


def summarize(r: VariantResult, refs: dict, reference: VariantResult | None) -> dict:
    """One variant's row: its metrics against the references, sizes, latencies and agreement with `reference`."""
    from scenecap.train.metrics import caption_metrics, distinct_captions

    scores = caption_metrics(refs, r.captions, meteor=False)
    out = {
        "name": r.name, "kind": r.kind, "path": r.path, "encoder": r.encoder, "decoder": r.decoder,
        "runtime": r.runtime, "images": len(r.tokens),
        "BLEU-4": scores.get("BLEU-4"), "CIDEr-D": scores.get("CIDEr-D"), "metrics": scores,
        "sizes": r.sizes, "total_bytes": sum(r.sizes.values()),
        "encoder_ms_median": _median(r.encoder_ms), **_step_figures(r),
        "decoder_step_macs": r.decoder_step_macs,
        "mean_caption_words": float(np.mean([len(t) for t in r.tokens.values()])) if r.tokens else 0.0,
        "distinct_captions": distinct_captions(r.captions),
    }
    if reference is not None and reference is not r:
        same = [r.tokens[k] == reference.tokens.get(k) for k in r.tokens]
        out["agreement"] = float(np.mean(same)) if same else None
    elif reference is r:
        out["agreement"] = 1.0
    return out


def _object_reasons(o: dict, b: dict) -> list[str]:
    """Invents objects as often as a caption that ignores the image. (Recall alone is no such sign: a cautious
    model that names less is what a blind user wants over a confidently wrong one.)"""
    if o["precision"] > b["precision"]:
        return []
    return [f"its object precision {o['precision']:.1%} is no better than the constant caption's "
            f"{b['precision']:.1%} (recall {o['recall']:.1%} against {b['recall']:.1%})"]


def score_set(results: list[VariantResult], refs: dict, reference: VariantResult | None,
              scenes: list[dict] | None, lang: str) -> tuple[list[dict], dict]:
    """(rows, baseline) for one held-out set: each variant's row with why it looks trivial, if it does, and with
    the objects it names when the scenes are known; the best constant caption as the baseline."""
    from scenecap.train.metrics import constant_baseline, trivial_reasons
    from scenecap.train.synthetic import object_scores

    rows = [summarize(r, refs, reference) for r in results]
    baseline = constant_baseline(refs)
    if scenes is not None:
        baseline["objects"] = object_scores({i: baseline["caption"] for i in set(refs)}, scenes, lang)
    for r, row in zip(results, rows, strict=True):
        row["trivial"] = trivial_reasons(row["metrics"], row["distinct_captions"], row["images"], baseline)
        right = None
        if scenes is not None:
            row["objects"] = object_scores(r.captions, scenes, lang)
            row["trivial"] += _object_reasons(row["objects"], baseline["objects"])
            right = {sc["image_id"]: object_scores({sc["image_id"]: r.captions[sc["image_id"]]}, [sc], lang)
                     ["exact_scenes"] == 1 for sc in scenes if sc["image_id"] in r.captions}
        gate = gate_row(r, right if right and set(right) == set(r.confidence) else None)
        if gate is not None:
            row["gate"] = gate
    return rows, baseline


def _misses(row: dict, reference: dict) -> list[str]:
    """How a variant misses the target, in words (empty when it meets it)."""
    agree, loss = row.get("agreement"), (reference["BLEU-4"] or 0.0) - (row["BLEU-4"] or 0.0)
    bits = []
    if agree is not None and agree < MIN_AGREEMENT:
        bits.append(f"its captions match the float model's token for token on only {agree:.1%} of images "
                    f"(target {MIN_AGREEMENT:.0%})")
    if loss > MAX_BLEU4_LOSS:
        bits.append(f"it loses {loss:.3f} BLEU-4 (target: at most {MAX_BLEU4_LOSS})")
    return bits


def _verdict(row: dict, reference: dict) -> str:
    quantised = not (row["encoder"].startswith("float32") and row["decoder"].startswith("float32"))
    what = "quantised variant" if quantised else "float variant"
    if row.get("trivial") or reference.get("trivial"):
        whose = "it" if row.get("trivial") else "the float model it is compared with"
        return (f"**{row['name']}** ({what}) is NOT a working captioner: {whose} does not beat trivial "
                f"baselines ({'; '.join(row.get('trivial') or reference['trivial'])}), so agreement "
                f"with float means nothing here.")
    bits = _misses(row, reference)
    if bits:
        return f"**{row['name']}** ({what}) MISSES the target: " + "; ".join(bits) + "."
    loss = (reference["BLEU-4"] or 0.0) - (row["BLEU-4"] or 0.0)
    return (f"**{row['name']}** ({what}) meets the target: {row.get('agreement'):.1%} identical captions, "
            f"BLEU-4 change {-loss:+.3f}.")


def verdicts(rows: list[dict], reference: dict | None) -> list[str]:
    """In words: which quantised variants meet the target (agreement and BLEU-4 loss vs the float model). A
    variant that does not beat the trivial baselines, or whose float model does not, never meets it: agreeing
    with a model that ignores the image says nothing."""
    if reference is None:
        return ["No float SavedModel to compare with (pass --reference EXPORT): agreement and BLEU-4 loss were "
                "not measured."]
    return [_verdict(row, reference) for row in rows if row is not reference and row["kind"] == "bundle"]
