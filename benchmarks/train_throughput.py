"""Training throughput on this machine: images/second in cached-features mode vs fine-tune mode.

Both modes train the same model (MobileNetV2 alpha 0.35 at 96x96, the default head) on the same synthetic
scenes with the same batch; the figure is the steady-state training loop (epochs after the first, whose time
is mostly graph tracing), median over epochs. Cached mode's one-time feature extraction is reported apart.
Writes benchmarks/results/train_throughput.json and prints a table.

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --images 512 --epochs 4 --image-size 160 --jit-compile

Not a test: it takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(mode: str, data: Path, work: Path, args) -> dict:
    from scenecap.train.config import TrainConfig
    from scenecap.train.model import ModelConfig
    from scenecap.train.trainer import run

    cfg = TrainConfig(train=str(data / "captions_train.json"), out=str(work / mode), epochs=args.epochs,
                      batch_size=args.batch_size, seed=0, mode=mode, tensorboard=False, val_caption_images=0,
                      jit_compile=args.jit_compile,
                      model=ModelConfig(vocab_size=0, image_size=args.image_size, alpha=args.alpha))
    t0 = time.perf_counter()
    run(cfg, force=True, progress=False)
    total = time.perf_counter() - t0
    with open(work / mode / "history.csv", newline="") as f:
        rates = [float(r["images_per_second"]) for r in csv.DictReader(f)]
    steady = rates[1:] or rates
    return {"images_per_second": statistics.median(steady), "per_epoch": rates, "wall_seconds": total}


def _parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=384)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--alpha", type=float, default=0.35)
    p.add_argument("--jit-compile", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_throughput.json"))
    return p.parse_args(argv)


def _extraction_rate(data: Path, work: Path, args) -> float:
    """Images/second of feature extraction alone, into a fresh cache: what cached mode pays once per dataset
    and backbone."""
    from scenecap.edge.preprocess import PreprocessSpec
    from scenecap.train.feature_cache import extract
    from scenecap.train.model import ModelConfig, build

    model = build(ModelConfig(vocab_size=8, image_size=args.image_size, alpha=args.alpha))
    paths = sorted(str(x) for x in (data / "images").glob("*.jpg"))
    t0 = time.perf_counter()
    extract(model, paths, PreprocessSpec(args.image_size, args.image_size), work / "fresh_cache", "bench",
            progress=False)
    return len(paths) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from scenecap.train.synthetic import generate

    with tempfile.TemporaryDirectory(prefix="scenecap-bench-") as tmp:
        work = Path(tmp)
        data = generate(work / "data", args.images, 0, 0, seed=0, img_size=args.image_size)
        results = {}
        for mode in ("finetune", "cached"):
            results[mode] = measure(mode, data, work, args)
            print(f"{mode:9s} {results[mode]['images_per_second']:8.1f} images/s  (per epoch: "
                  + ", ".join(f"{r:.0f}" for r in results[mode]["per_epoch"]) + ")", flush=True)
        extraction = _extraction_rate(data, work, args)

    ratio = results["cached"]["images_per_second"] / results["finetune"]["images_per_second"]
    report = {
        "benchmark": "train_throughput", "unit": "images/second (median of epochs after the first)",
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "finetune": results["finetune"], "cached": results["cached"],
        "cached_vs_finetune": ratio, "feature_extraction_images_per_second": extraction,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"cached / finetune: {ratio:.1f}x; one-time feature extraction {extraction:.0f} images/s")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
