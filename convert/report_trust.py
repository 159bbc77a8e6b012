"""The report's trust figures: what a bundle's confidence gate makes of a held-out set.

For each bundle with a confidence section: the share of captions marked unsure and, where the scenes are known
(synthetic sets), the share said confidently and wrongly (what a cane would say aloud, wrongly), how often a
confident caption is right, and the risk-coverage curve (the share kept confident against the share confident
and wrong, as the threshold moves); the same with the second look when the bundle calibrated one; and how well
the image familiarity alone tells each other set from the first (AUROC)."""

from __future__ import annotations

import numpy as np

from scenecap.convert.report_captions import VariantResult

CURVE_POINTS = 21  # coverage 0%, 5%, ..., 100%


def gate_figures(unsure: list[bool], right: list[bool] | None = None) -> dict:
    """The share of captions marked unsure and, where the truth is known, the share that is confident and wrong
    (what the cane would say aloud, wrongly) and how often a confident caption is right."""
    u = np.asarray(unsure, bool)
    out = {"images": int(u.size), "unsure": round(float(u.mean()), 4) if u.size else 0.0}
    if right is not None:
        r = np.asarray(right, bool)
        out["confidently_wrong"] = round(float((~u & ~r).mean()), 4) if u.size else 0.0
        out["right_when_confident"] = round(float(r[~u].mean()), 4) if (~u).any() else None
    return out


def auroc(familiar: list[float], novel: list[float]) -> float:
    """P(a novel image looks less familiar than an in-distribution one), ties counted half."""
    a, b = np.asarray(familiar)[:, None], np.asarray(novel)[None, :]
    return float((a > b).mean() + 0.5 * (a == b).mean())


def risk_coverage(confidence: list[float], right: list[bool], points: int = CURVE_POINTS) -> list[list[float]]:
    """[[coverage, confidently wrong]]: the most confident share `coverage` of the captions kept, and the share
    of all captions that are then confident and wrong (ties in confidence broken by image order)."""
    order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    wrong = np.cumsum(~np.asarray(right, bool)[order])
    n = len(order)
    curve = []
    for cov in np.linspace(0.0, 1.0, points):
        k = int(round(cov * n))
        curve.append([round(float(cov), 4), round(float(wrong[k - 1]) / n, 4) if k else 0.0])
    return curve


def gate_row(r: VariantResult, right: dict | None) -> dict | None:
    """The gate's figures for one variant on one set (None for a variant without a gate)."""
    if not r.confidence:
        return None
    ids = list(r.confidence)
    truth = [right[i] for i in ids] if right is not None else None
    out = {"threshold": r.threshold, **gate_figures([r.unsure[i] for i in ids], truth)}
    if truth is not None:
        out["curve"] = risk_coverage([r.confidence[i] for i in ids], truth)
    if r.looked:
        looked = [r.looked[i] for i in ids]
        out["second_look"] = {"threshold": r.look_threshold,
                              **gate_figures([c < r.look_threshold for c in looked], truth)}
        if truth is not None:
            out["second_look"]["curve"] = risk_coverage(looked, truth)
    return out


def familiarity_auroc(own: VariantResult, other: VariantResult) -> float | None:
    """How well familiarity alone tells `other`'s images from `own`'s (None without scores)."""
    a = [f for f in own.familiarity.values() if f is not None]
    b = [f for f in other.familiarity.values() if f is not None]
    return round(auroc(a, b), 4) if a and b else None
