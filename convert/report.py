"""What quantisation costs: caption a held-out set with each bundle (the edge runtime, as on the device) and
with the float SavedModel, then compare quality, agreement, size and speed.

Writes into one folder:
  report.json       every figure, per variant
  report.md         the table, and in words which variants miss the target and by how much; whether each model
                    beats trivial baselines (the best constant caption, the count of distinct captions); for
                    synthetic scenes (scenes_*.json beside the captions) objects invented and missing; several
                    held-out sets side by side
  report.png        bar charts (BLEU-4, CIDEr-D, agreement, size, encoder and decoder-step latency)
  trust.png         for bundles with a confidence gate, on sets whose scenes are known: the share of captions
                    confident and wrong against the share kept confident, as the threshold moves
  results/NAME.json captions in COCO results format ([{image_id, caption}]), for any COCO evaluation tool

This module picks the items, the reference and the held-out sets and writes the folder; the captioning is in
report_captions.py, the figures and verdicts in report_scores.py, report.md and report.png in report_render.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from scenecap import ScenecapError
from scenecap.convert.report_captions import VariantResult, evaluate_bundle, evaluate_savedmodel, progress
from scenecap.convert.report_render import chart, markdown, trust_chart
from scenecap.convert.report_scores import MAX_BLEU4_LOSS, MIN_AGREEMENT, score_set, verdicts
from scenecap.convert.report_trust import familiarity_auroc
from scenecap.edge.fileio import atomic_write_text, read_json


@dataclass
class ReportOptions:
    items: list[str]  # bundle folders and/or SavedModel export folders
    out: str
    reference: str | None = None  # float SavedModel export (default: one among items, else the bundles' export)
    # held-out captions: a file, or several ("NAME=FILE" names a set; default: the validation split recorded at
    # training). The first set is the one the top-level figures and the target verdicts describe.
    annotations: str | list[str] | None = None
    images: str | None = None
    count: int = 200
    beam: int = 1
    length_penalty: float = 0.0
    threads: int | None = None
    progress: bool | None = None
    force: bool = True


def _is_bundle(p: Path) -> bool:
    return (p / "manifest.json").is_file()


def _is_export(p: Path) -> bool:
    return (p / "saved_model.pb").is_file()


def held_out_sets(annotations: str | list[str] | None) -> list[tuple[str, str | None]]:
    """[(name, file)] from --annotations values: "NAME=FILE" or FILE (named by its folder and file)."""
    values = [annotations] if isinstance(annotations, str) else list(annotations or [])
    if not values:
        return [("held-out", None)]
    sets = []
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or Path(v).exists():  # a path that itself holds "=" is a path
            path = v
            name = f"{Path(v).parent.name}/{Path(v).stem}" if Path(v).parent.name else Path(v).stem
        sets.append((name, path))
    names = [n for n, _ in sets]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ScenecapError(f"--annotations: two held-out sets are both called {dup!r}; name them NAME=FILE")
    return sets


def _recorded_training(first: Path) -> dict:
    """What the model's training recorded (its validation split and images), from the manifest or the sidecar."""
    if _is_bundle(first):
        return read_json(first / "manifest.json", "bundle manifest").get("training", {})
    if _is_export(first):
        return read_json(first / "scenecap_export.json", "export sidecar").get("training", {})
    return {}


def _held_out(opts: ReportOptions, first: Path, annotations: str | None = None):
    """The held-out samples: the given file, else the validation split the model's training recorded."""
    from scenecap.train.datasets import load_coco

    ann, images = annotations, opts.images
    if not ann:
        training = _recorded_training(first)
        ann, images = training.get("val"), images or training.get("images")
        if not ann or not Path(ann).is_file():
            raise ScenecapError(f"{first}: records no held-out split on this machine; pass --annotations FILE")
    samples = load_coco(ann, images)
    if not samples:
        raise ScenecapError(f"{ann}: no images in the held-out set")
    samples = sorted(samples, key=lambda s: str(s.image_id))[: max(1, opts.count)]
    return ann, samples


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _language(path: Path) -> str:
    """The captions' language, from the bundle's manifest or the export's sidecar (English if unreadable)."""
    meta = path / ("manifest.json" if _is_bundle(path) else "scenecap_export.json")
    try:
        return read_json(meta).get("language") or "en"
    except ScenecapError:
        return "en"


def _scenes(ann: str, refs: dict, lang: str) -> tuple[Path | None, list[dict] | None]:
    """(file, scenes) of the held-out images: what `scenecap synth` wrote beside the captions, if there, and
    only in a language whose colour and shape words are known (else no scenes)."""
    from scenecap.train.synthetic import LEXICON, scenes_beside

    scenes_file = scenes_beside(ann)
    if not scenes_file or lang not in LEXICON:
        return scenes_file, None
    ids = set(refs)
    return scenes_file, [sc for sc in read_json(scenes_file, "scenes file") if sc["image_id"] in ids]


def _caption_all(items: list[Path], reference_path: Path | None, samples, frames: dict, opts: ReportOptions,
                 show: bool) -> tuple[list[VariantResult], VariantResult | None]:
    """(results, the reference's): the float reference first, then every item (the reference only once)."""
    results: list[VariantResult] = []
    reference = None
    if reference_path is not None:
        reference = evaluate_savedmodel(reference_path, samples, frames, opts, show)
        results.append(reference)
    for p in items:
        if _is_bundle(p):
            results.append(evaluate_bundle(p, samples, frames, opts, show))
        elif reference_path is None or p.resolve() != reference_path.resolve():
            results.append(evaluate_savedmodel(p, samples, frames, opts, show))
    names = [r.name for r in results]
    for r in results:  # two bundles both called "bundle": name them by their parent folder too
        if names.count(r.name) > 1:
            r.name = f"{Path(r.path).parent.name}/{r.name}"
    return results, reference


def _evaluate_set(name: str, annotations: str | None, items: list[Path], reference_path: Path | None,
                  opts: ReportOptions, show: bool) -> tuple[dict, list[VariantResult]]:
    """Caption one held-out set with every item; its rows, trivial baselines, object figures and verdicts."""
    from scenecap.edge.images import load_image

    ann, samples = _held_out(opts, items[0], annotations)
    frames = {s.image_id: load_image(s.image) for s in progress(samples, f"reading {name} images", show)}
    refs = {s.image_id: s.captions for s in samples}
    results, reference = _caption_all(items, reference_path, samples, frames, opts, show)
    lang = _language(items[0])
    scenes_file, scenes = _scenes(ann, refs, lang)
    rows, baseline = score_set(results, refs, reference, scenes, lang)
    ref_row = rows[0] if reference is not None else None
    hs = {"name": name, "annotations": str(ann), "scenes": str(scenes_file) if scenes is not None else None,
          "images": len(samples), "baseline": baseline, "variants": rows, "verdicts": verdicts(rows, ref_row)}
    return hs, results


def _items(opts: ReportOptions) -> list[Path]:
    items = [Path(p) for p in opts.items]
    if not items:
        raise ScenecapError("nothing to evaluate; pass bundle folders or a SavedModel export")
    for p in items:
        if not (_is_bundle(p) or _is_export(p)):
            raise ScenecapError(f"{p}: neither a bundle (manifest.json) nor a SavedModel export (saved_model.pb)")
    return items


def _reference(opts: ReportOptions, items: list[Path]) -> Path | None:
    """The float SavedModel to compare with: --reference, else an export among the items, else the export the
    first bundle was converted from, if it is still there."""
    reference_path = Path(opts.reference) if opts.reference else next((p for p in items if _is_export(p)), None)
    if reference_path is None:
        prov = read_json(items[0] / "manifest.json", "bundle manifest").get("provenance", {})
        if prov.get("export") and _is_export(Path(prov["export"])):
            reference_path = Path(prov["export"])
    if reference_path is not None and not _is_export(reference_path):
        raise ScenecapError(f"--reference {reference_path}: not a SavedModel export (no saved_model.pb)")
    return reference_path


def _write_results(out: Path, sets: list[tuple[dict, list[VariantResult]]]) -> None:
    """Each variant's captions in COCO results format: the first set's in results/, the others' in results/SET/."""
    for k, (hs, results) in enumerate(sets):
        folder = out / "results" / (_safe(hs["name"]) if k else "")
        folder.mkdir(parents=True, exist_ok=True)
        for r in results:
            coco = [{"image_id": i, "caption": v} for i, v in r.captions.items()]
            atomic_write_text(folder / f"{_safe(r.name)}.json", json.dumps(coco, ensure_ascii=False, indent=0))


def write_report(opts: ReportOptions) -> dict[str, Path]:
    """Evaluate every item on every held-out set and write the report folder. Returns the paths written."""
    items = _items(opts)
    reference_path = _reference(opts, items)
    show = sys.stderr.isatty() if opts.progress is None else opts.progress
    sets = [_evaluate_set(name, ann, items, reference_path, opts, show)
            for name, ann in held_out_sets(opts.annotations)]
    _familiarity_against_first(sets)
    first = sets[0][0]
    decoding = "greedy" if opts.beam <= 1 else f"beam {opts.beam}"
    # The top level describes the first set (as before several sets could be given); "sets" holds them all.
    report = {"annotations": first["annotations"], "images": first["images"], "decoding": decoding,
              "reference": str(reference_path) if reference_path else None,
              "target": {"min_agreement": MIN_AGREEMENT, "max_bleu4_loss": MAX_BLEU4_LOSS},
              "variants": first["variants"], "verdicts": first["verdicts"], "sets": [hs for hs, _ in sets]}
    out = Path(opts.out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
    _write_results(out, sets)
    atomic_write_text(paths["json"], json.dumps(report, indent=2, ensure_ascii=False))
    atomic_write_text(paths["md"], markdown(report))
    chart(report, paths["png"])
    if trust_chart(report, out / "trust.png"):
        paths["trust_png"] = out / "trust.png"
    return paths


def _familiarity_against_first(sets: list[tuple[dict, list[VariantResult]]]) -> None:
    """Each later set's gate: how well familiarity alone tells its images from the first set's (AUROC)."""
    own = {r.name: r for r in sets[0][1]}
    for hs, results in sets[1:]:
        for row, r in zip(hs["variants"], results, strict=True):
            if "gate" in row and r.name in own:
                row["gate"]["familiarity_auroc_vs_first"] = familiarity_auroc(own[r.name], r)
