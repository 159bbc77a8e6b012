"""Which decoder step to ship: each candidate quantisation of the demo model's decoder, beside the int8 encoder,
measured against the all-float32 reference on the same held-out scenes in one run.

For each: the share of greedy captions identical to float32's, the share identical to the same int8 encoder's
with the float32 decoder step (what the decoder's quantisation alone changes: the int8 encoder's share is common
to every candidate, and it is what picks the one to ship), BLEU-4 (pycocoevalcap, 5 references), the share
of objects whose colour and shape are both named, scenes named exactly right, distinct captions, and the
decoder's median milliseconds per caption (one thread, this machine).

    python demo/decoder_candidates.py build/demo/export demo/bundle-float32 --quants int8,dynamic,int16x8
    python demo/decoder_candidates.py --bundle demo/bundle demo/bundle-float32     # bundles already made, no export
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from build_bundle import STYLE  # the style the shipped demo/bundle was trained on

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QUANTS = ("float32", "float16", "dynamic", "int8", "int8-fstate", "int8-fattn", "int8-mixed", "int16x8")


def caption_all(bundle: Path, images: dict) -> dict:
    from scenecap.edge.captioner import Captioner

    cap = Captioner.load(bundle, threads=1)
    caps = {i: cap.caption(im) for i, im in images.items()}
    return {"text": {i: c.text for i, c in caps.items()},
            "decoder_ms": float(np.median([c.timings["decoder"] for c in caps.values()]))}


def identical_share(texts: dict, reference: dict) -> float:
    """The share of captions token-for-token the reference's, by image id."""
    return round(float(np.mean([texts[i] == reference[i] for i in texts])), 4)


def scores(texts: dict, reference: dict, refs: dict, scenes: list[dict]) -> dict:
    from scenecap.train.metrics import caption_metrics
    from scenecap.train.synthetic import colour_shape_accuracy, object_scores

    m = caption_metrics(refs, texts, meteor=False)
    return {"identical_to_float32": identical_share(texts, reference),
            "BLEU-4": round(m["BLEU-4"], 4), "colour_shape_accuracy": round(colour_shape_accuracy(texts, scenes), 4),
            "exact_scenes": round(object_scores(texts, scenes)["exact_scenes"], 4),
            "distinct_captions": len(set(texts.values()))}


def held_out_scenes(folder: Path, style: str, seed: int, count: int) -> tuple[dict, dict, list[dict]]:
    from demo_quality import held_out

    from scenecap.edge.images import load_image
    from scenecap.train.datasets import load_coco

    data = held_out(folder, style, seed, count)
    samples = load_coco(data / "captions_test.json")
    scenes = json.loads((data / "scenes_test.json").read_text(encoding="utf-8"))
    return ({s.image_id: load_image(s.image) for s in samples}, {s.image_id: s.captions for s in samples}, scenes)


def compare(export: Path, reference_bundle: Path, quants: list[str], style: str, seed: int = 33,
            count: int = 200, calibration_count: int = 200) -> list[dict]:
    """One row per decoder quantisation (int8 encoder), the float32 reference first."""
    from scenecap.convert.run import ConvertOptions, convert

    with tempfile.TemporaryDirectory() as tmp:
        images, refs, scenes = held_out_scenes(Path(tmp), style, seed, count)
        ref = caption_all(reference_bundle, images)
        rows = [{"encoder": "float32", "decoder": "float32", "decoder_ms": round(ref["decoder_ms"], 3),
                 **scores(ref["text"], ref["text"], refs, scenes)}]
        texts = {}
        for q in quants:
            out = Path(tmp) / f"bundle-{q}"
            convert(ConvertOptions(export=str(export), out=str(out), encoder_quant="int8", decoder_quant=q,
                                   calibration_count=calibration_count, seed=1, force=True))
            got = caption_all(out, images)
            texts[q] = got["text"]
            rows.append({"encoder": "int8", "decoder": q, "decoder_ms": round(got["decoder_ms"], 3),
                         **scores(got["text"], ref["text"], refs, scenes)})
    if "float32" in texts:  # the decoder's own share: against the same int8 encoder with the float32 step
        for r in rows[1:]:
            r["identical_to_float_decoder"] = identical_share(texts[r["decoder"]], texts["float32"])
    return rows


def compare_bundles(bundles: list[Path], reference_bundle: Path, style: str, seed: int = 33,
                    count: int = 200) -> list[dict]:
    """compare() for bundles already converted (the shipped one, say): one row each, the reference first."""
    from scenecap.edge.bundle import read_manifest

    def quants(bundle: Path) -> dict:
        models = read_manifest(bundle).models
        return {"encoder": models["encoder"].quant, "decoder": models["decoder_step"].quant}

    with tempfile.TemporaryDirectory() as tmp:
        images, refs, scenes = held_out_scenes(Path(tmp), style, seed, count)
        ref = caption_all(reference_bundle, images)
        rows = [{**quants(reference_bundle), "decoder_ms": round(ref["decoder_ms"], 3),
                 **scores(ref["text"], ref["text"], refs, scenes)}]
        for b in bundles:
            got = caption_all(b, images)
            rows.append({**quants(b), "decoder_ms": round(got["decoder_ms"], 3),
                         **scores(got["text"], ref["text"], refs, scenes)})
    return rows


def _share(r: dict, key: str) -> str:
    return f"{r[key]:.1%}" if key in r else "-"


def markdown(rows: list[dict]) -> str:
    head = ("| encoder | decoder step | identical to float32 | to the float32 step (int8 encoder) | BLEU-4 | "
            "colour+shape | exact scenes | distinct | decoder ms/caption |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {r['encoder']} | {r['decoder']} | {r['identical_to_float32']:.1%} | "
        f"{_share(r, 'identical_to_float_decoder')} | {r['BLEU-4']:.3f} | "
        f"{r['colour_shape_accuracy']:.1%} | {r['exact_scenes']:.1%} | {r['distinct_captions']} | "
        f"{r['decoder_ms']:.2f} |\n" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", nargs="?", help="the demo model's export folder (build/demo/export after make "
                    "demo-bundle); not with --bundle")
    ap.add_argument("reference", help="its all-float32 bundle (demo/bundle-float32)")
    ap.add_argument("--bundle", action="append", default=[], metavar="DIR",
                    help="compare this converted bundle instead of converting from the export (repeatable)")
    ap.add_argument("--quants", default=",".join(DEFAULT_QUANTS), help="decoder quantisations to compare")
    ap.add_argument("--style", default=STYLE, help=f"style of the held-out scenes (default {STYLE}, the shipped "
                    "bundle's training style)")
    ap.add_argument("--count", type=int, default=200, help="held-out scenes (default 200)")
    args = ap.parse_args()
    if args.bundle and args.export:
        ap.error("give the export or --bundle, not both")
    if not args.bundle and not args.export:
        ap.error("give the export (to convert the --quants) or --bundle DIR")
    if args.bundle:
        rows = compare_bundles([Path(b) for b in args.bundle], Path(args.reference), args.style, count=args.count)
    else:
        rows = compare(Path(args.export), Path(args.reference), args.quants.split(","), args.style,
                       count=args.count)
    print(markdown(rows))


if __name__ == "__main__":
    main()
