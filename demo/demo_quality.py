"""Measure a bundle on held-out synthetic scenes with the edge runtime: BLEU-4 (pycocoevalcap) against the
5 references, the share of objects whose colour and shape are both named right, and object-level truth:
precision (objects invented), recall (objects missing), the share of scenes named exactly right. Twice: on the
style the bundle was trained on (a seed it never saw) and on the shifted style it never trained on. Then the
confidence gate on each set and on two out-of-distribution sets (photographs, non-scenes: demo/trust.py): the
share of captions marked unsure, the share confident and wrong, and the AUROC of image familiarity against the
bundle's own style.

    python demo/demo_quality.py demo/bundle                 # writes demo/quality.json
    python demo/demo_quality.py runs/new/bundle --style varied --no-write
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from build_bundle import STYLE as SHIPPED_STYLE  # the style the shipped demo/bundle was trained on

ROOT = Path(__file__).resolve().parents[1]
OWN_SEED, SHIFTED_SEED, COUNT = 31, 32, 200  # seeds no demo training split uses


def measure(bundle: Path, captions_json: Path, scenes_json: Path, out: Path | None = None) -> dict:
    from tqdm import tqdm

    from scenecap.convert.report_trust import gate_figures
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.images import load_image
    from scenecap.train.datasets import load_coco
    from scenecap.train.metrics import caption_metrics, constant_baseline, distinct_captions
    from scenecap.train.synthetic import (
        attribute_accuracy,
        colour_shape_accuracy,
        object_scores,
        position_accuracy,
    )

    samples = load_coco(captions_json)
    scenes = json.loads(Path(scenes_json).read_text(encoding="utf-8"))
    cap = Captioner.load(bundle)
    images = {s.image_id: load_image(s.image) for s in samples}
    caps = {i: cap.caption(im) for i, im in tqdm(images.items(), desc="captioning", unit="img")}
    hyps = {i: c.text for i, c in caps.items()}
    right = _right(hyps, scenes)
    refs = {s.image_id: s.captions for s in samples}
    scores = caption_metrics(refs, hyps, meteor=False)
    objects = object_scores(hyps, scenes)
    baseline = constant_baseline(refs)
    result = {
        "bundle": str(bundle), "images": len(samples),
        "BLEU-4": round(scores["BLEU-4"], 4), "CIDEr-D": round(scores["CIDEr-D"], 4),
        "colour_shape_accuracy": round(colour_shape_accuracy(hyps, scenes), 4),
        "colour_accuracy": round(attribute_accuracy(hyps, scenes, "colour"), 4),
        "shape_accuracy": round(attribute_accuracy(hyps, scenes, "shape"), 4),
        "position_accuracy": round(position_accuracy(hyps, scenes), 4),
        "exact_scenes": round(objects["exact_scenes"], 4),
        "object_precision": round(objects["precision"], 4), "object_recall": round(objects["recall"], 4),
        "objects": objects, "distinct_captions": distinct_captions(hyps),
        "constant_caption": {**baseline, "objects": object_scores({i: baseline["caption"] for i in refs}, scenes)},
        "examples": [{"image": samples[i].image.name, "caption": hyps[samples[i].image_id],
                      "unsure": caps[samples[i].image_id].unsure} for i in range(5)],
        "gate": gate_figures([caps[s["image_id"]].unsure for s in scenes], right),
        "familiarity": [caps[s["image_id"]].familiarity for s in scenes],
        "decoder_ms": round(float(np.median([c.timings["decoder"] for c in caps.values()])), 3),
        "caption_ms": _median_ms(caps),
    }
    looked = second_look(bundle, images)
    if looked:  # the same captions, judged with the second look too
        result["second_look"] = {**gate_figures([looked[s["image_id"]].unsure for s in scenes], right),
                                 "caption_ms": _median_ms(looked)}
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def second_look(bundle: Path, images: dict) -> dict | None:
    """Each image's caption with the second look (`caption --second-look`), if the bundle calibrated one."""
    from scenecap.edge.bundle import load_bundle
    from scenecap.edge.captioner import Captioner

    section = load_bundle(bundle).manifest.confidence
    if section is None or section.second_look is None:
        return None
    cap = Captioner.load(bundle, second_look=True)
    return {k: cap.caption(im) for k, im in images.items()}


def _right(hyps: dict, scenes: list[dict]) -> list[bool]:
    """Per scene (in order): whether its caption names exactly its objects."""
    from scenecap.train.synthetic import object_scores

    return [object_scores({s["image_id"]: hyps[s["image_id"]]}, [s])["exact_scenes"] == 1 for s in scenes]


def _median_ms(caps: dict) -> float:
    return round(float(np.median([c.timings["total"] for c in caps.values()])), 3)


def held_out(folder: Path, style: str, seed: int, count: int = COUNT) -> Path:
    from scenecap.train.synthetic import generate

    return generate(folder / style, n_train=0, n_val=0, n_test=count, seed=seed, style=style)


def measure_ood(bundle: Path) -> dict:
    """The gate on images that are not scenes at all: the share marked unsure, and their familiarity scores."""
    from trust import photographs, procedural

    from scenecap.convert.report_trust import gate_figures
    from scenecap.edge.captioner import Captioner

    cap = Captioner.load(bundle)
    out = {}
    for name, images in (("photographs", photographs()), ("non_scenes", procedural())):
        caps = [cap.caption(im) for im in images.values()]
        out[name] = {**gate_figures([c.unsure for c in caps]), "familiarity": [c.familiarity for c in caps],
                     "examples": [{"image": k, "caption": c.text, "unsure": c.unsure}
                                  for k, c in list(zip(images, caps, strict=True))[:3]]}
        looked = second_look(bundle, images)
        if looked:
            out[name]["second_look"] = gate_figures([c.unsure for c in looked.values()])
    return out


def _auroc_against(own: list, other: list) -> float | None:
    from scenecap.convert.report_trust import auroc

    return None if None in own + other else round(auroc(own, other), 4)


def measure_styles(bundle: Path, style: str = SHIPPED_STYLE) -> dict:
    """The figures on held-out scenes of `style` (its own), with the shifted style's under "shifted" and the
    out-of-distribution sets' under "photographs" and "non_scenes" (AUROC of familiarity against its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        own_data = held_out(Path(tmp), style, OWN_SEED)
        shifted_data = held_out(Path(tmp), "shifted", SHIFTED_SEED)
        result = measure(bundle, own_data / "captions_test.json", own_data / "scenes_test.json")
        result["style"], result["seed"] = style, OWN_SEED
        if bundle.resolve().is_relative_to(ROOT):  # the same record on every machine
            result["bundle"] = str(bundle.resolve().relative_to(ROOT))
        shifted = measure(bundle, shifted_data / "captions_test.json", shifted_data / "scenes_test.json")
        result["shifted"] = {"style": "shifted", "seed": SHIFTED_SEED,
                             **{k: v for k, v in shifted.items() if k != "bundle"}}
    result.update(measure_ood(bundle))
    own = result.pop("familiarity")
    for name in ("shifted", "photographs", "non_scenes"):
        result[name]["familiarity_auroc"] = _auroc_against(own, result[name].pop("familiarity"))
    return result


def write_quality(result: dict) -> None:
    from scenecap.edge.fileio import atomic_write_text

    atomic_write_text(ROOT / "demo" / "quality.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default=str(ROOT / "demo" / "bundle"))
    ap.add_argument("--style", default=SHIPPED_STYLE, help=f"the style it was trained on (default {SHIPPED_STYLE})")
    ap.add_argument("--no-write", action="store_true", help="print only; do not rewrite demo/quality.json")
    args = ap.parse_args()
    bundle = Path(args.bundle)
    result = measure_styles(bundle, args.style)
    quality = ROOT / "demo" / "quality.json"
    if quality.is_file() and bundle.resolve() == (ROOT / "demo" / "bundle").resolve():
        previous = json.loads(quality.read_text(encoding="utf-8"))
        for key in ("decoder_candidates", "identical_to_float32"):  # measured by demo/build_bundle.py
            if key in previous:
                result[key] = previous[key]
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if not args.no_write:
        write_quality(result)


if __name__ == "__main__":
    main()
