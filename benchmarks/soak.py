"""Soak: does the live loop's memory stay flat over a long run?

Makes a 10,000-frame video of synthetic scenes (a cut every 50 frames, hand-held shake and noise), runs it through
the same loop `scenecap caption` uses (scenecap.edge.live.run) with JSON-lines output, captioning every frame by
default (the heaviest case), and samples the process's resident memory (RSS) as it goes. Writes the samples and a
summary to benchmarks/results/soak.json and prints the figures.

    python benchmarks/soak.py --bundle demo/bundle
    python benchmarks/soak.py --bundle demo/bundle --when change --frames 20000

Not a test: it takes a few minutes. "Flat" here means: the RSS growth per 1,000 frames after warm-up (a least-
squares slope) is a few hundred kB at most, and the final RSS is close to the RSS after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 500  # frames: interpreter arenas, OpenCV/FFmpeg buffers and caches settle by then


def rss_kb() -> int:
    """Resident set size of this process in kB (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def make_video(path: Path, frames: int, size: tuple[int, int] = (320, 240), fps: float = 25.0,
               scene_len: int = 50) -> None:
    import cv2

    from scenecap.train.synthetic import make_scene  # synthetic scenes only need PIL and numpy

    rng = np.random.default_rng(0)
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    noise = rng.normal(0, 4, (16, h, w, 3)).astype(np.float32)  # reused: making fresh noise dominates otherwise
    img = None
    for i in range(frames):
        if i % scene_len == 0:
            img = cv2.resize(np.asarray(make_scene(rng, 160)[0]), (w, h)).astype(np.float32)
        dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
        frame = np.clip(np.roll(img, (dy, dx), axis=(0, 1)) + noise[i % 16], 0, 255).astype(np.uint8)
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_bundle = ROOT / "demo" / "bundle"
    ap.add_argument("--bundle", default=str(default_bundle) if default_bundle.is_dir() else None, required=not
                    default_bundle.is_dir(), help="bundle folder (default demo/bundle)")
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--when", choices=("all", "change", "every"), default="all",
                    help="gating, as scenecap caption --when (default all: caption every frame, the worst case)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--video", help="reuse this video instead of making one")
    ap.add_argument("--every-samples", type=int, default=250, help="sample RSS every N frames")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak.json"))
    args = ap.parse_args(argv)

    from scenecap.edge.captioner import Captioner
    from scenecap.edge.live import Outputs, run

    work = Path(tempfile.mkdtemp(prefix="scenecap_soak_"))
    video = Path(args.video) if args.video else work / f"soak_{args.frames}.mp4"
    if not video.exists():
        t = time.perf_counter()
        make_video(video, args.frames)
        print(f"made {video} ({args.frames} frames) in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    samples: list[tuple[int, int]] = []

    class Sampling(Outputs):
        seen_count = 0

        def seen(self, frame):
            super().seen(frame)
            self.seen_count += 1
            if self.seen_count % args.every_samples == 0:
                samples.append((self.seen_count, rss_kb()))

    rss_start = rss_kb()
    captioner = Captioner.load(args.bundle, threads=args.threads)
    rss_loaded = rss_kb()
    jsonl_path = work / "soak.jsonl"
    t0 = time.perf_counter()
    with open(jsonl_path, "w", encoding="utf-8") as jsonl:
        outputs = Sampling(jsonl=jsonl)
        stats = run(captioner, str(video), outputs, when=args.when, every=0.0 if args.when == "every" else None,
                    min_interval=0.0, threshold=27.0)
    wall = time.perf_counter() - t0
    samples.append((stats.frames_seen, rss_kb()))

    after = [(n, kb) for n, kb in samples if n >= WARMUP] or samples
    xs = np.array([n for n, _ in after], np.float64)
    ys = np.array([kb for _, kb in after], np.float64)
    slope = float(np.polyfit(xs, ys, 1)[0] * 1000) if len(after) >= 2 else 0.0
    result = {
        "bundle": str(args.bundle),
        "quant": {k: v.quant for k, v in captioner.bundle.manifest.models.items()},
        "runtime": captioner.runtime.name,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cpus, "
                   f"python {platform.python_version()}",
        "when": args.when,
        "frames_read": stats.frames_read,
        "frames_seen": stats.frames_seen,
        "captions": stats.captions,
        "repeats_dropped": stats.repeats,
        "wall_s": round(wall, 1),
        "frames_per_s": round(stats.frames_seen / wall, 1),
        "median_ms": {k: round(v, 2) for k, v in stats.medians().items()},
        "rss_kb": {
            "python_start": rss_start,
            "bundle_loaded": rss_loaded,
            f"after_{after[0][0]}_frames": after[0][1],
            "end": samples[-1][1],
            "max": max(kb for _, kb in samples),
            "min_after_warmup": int(ys.min()),
            "growth_after_warmup": int(samples[-1][1] - after[0][1]),
            "slope_per_1000_frames": round(slope, 1),
        },
        "samples": samples,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    r = result["rss_kb"]
    print(f"{stats.frames_seen} frames, {stats.captions} captions in {wall:.0f} s; RSS after warm-up "
          f"{after[0][1] / 1024:.1f} MB, end {r['end'] / 1024:.1f} MB, max {r['max'] / 1024:.1f} MB, "
          f"slope {slope:.0f} kB per 1000 frames -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
