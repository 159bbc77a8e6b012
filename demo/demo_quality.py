"""Measure a bundle on held-out synthetic scenes with the edge runtime: BLEU-4 (pycocoevalcap) against the
5 references, and the share of objects whose colour and shape are both named right.

    python demo/demo_quality.py demo/bundle   # regenerates the demo's held-out split (same seed) if needed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(bundle: Path, captions_json: Path, scenes_json: Path, out: Path | None = None) -> dict:
    from tqdm import tqdm

    from scenecap.edge.captioner import Captioner
    from scenecap.edge.images import load_image
    from scenecap.train.datasets import load_coco
    from scenecap.train.metrics import caption_metrics
    from scenecap.train.synthetic import attribute_accuracy, colour_shape_accuracy, position_accuracy

    samples = load_coco(captions_json)
    scenes = json.loads(Path(scenes_json).read_text(encoding="utf-8"))
    cap = Captioner.load(bundle)
    hyps = {s.image_id: cap.caption(load_image(s.image)).text for s in tqdm(samples, desc="captioning", unit="img")}
    refs = {s.image_id: s.captions for s in samples}
    scores = caption_metrics(refs, hyps, meteor=False)
    result = {
        "bundle": str(bundle), "images": len(samples),
        "BLEU-4": round(scores["BLEU-4"], 4), "CIDEr-D": round(scores["CIDEr-D"], 4),
        "colour_shape_accuracy": round(colour_shape_accuracy(hyps, scenes), 4),
        "colour_accuracy": round(attribute_accuracy(hyps, scenes, "colour"), 4),
        "shape_accuracy": round(attribute_accuracy(hyps, scenes, "shape"), 4),
        "position_accuracy": round(position_accuracy(hyps, scenes), 4),
        "examples": [{"image": samples[i].image.name, "caption": hyps[samples[i].image_id]} for i in range(5)],
    }
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "demo"))
    from build_bundle import DATA, SEED, WORK

    bundle = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "demo" / "bundle"
    data = WORK / "data"
    if not (data / "captions_test.json").is_file():
        from scenecap.train.synthetic import generate

        generate(data, seed=SEED, **DATA)
    measure(bundle, data / "captions_test.json", data / "scenes_test.json")
