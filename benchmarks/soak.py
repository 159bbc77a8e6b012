"""Soak: do the live loop's memory and open files stay flat over a long run?

Makes a 10,000-frame video of synthetic scenes (a cut every 50 frames, hand-held shake and noise), runs it through
the same loop `scenecap caption` uses (scenecap.edge.live.run) with JSON-lines output, captioning every frame by
default (the heaviest case), and samples the process's resident memory (RSS) and its number of open file
descriptors every 500 frames. Writes the samples and a summary to benchmarks/results/soak.json, a plot of both
against frames to soak.png beside it, and prints the figures.

    python benchmarks/soak.py --bundle demo/bundle
    python benchmarks/soak.py --bundle demo/bundle --when change --frames 20000

Not a test: it takes a few minutes. Pass/fail: from the sample after warm-up to the last one, RSS and open file
descriptors each grow by less than 5% (a leak of a buffer per caption or a file per reconnect shows as steady
growth; the least-squares RSS slope per 1,000 frames is reported too). Exit status 1 when either fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 500  # frames: interpreter arenas, OpenCV/FFmpeg buffers and caches settle by then
MAX_GROWTH_PCT = 5.0  # after warm-up, final vs first sample, for RSS and for open file descriptors


def rss_kb() -> int:
    """Resident set size of this process in kB (Linux /proc; elsewhere the peak from getrusage)."""
    from scenecap.benchmarks.memory import status_kb

    return status_kb("VmRSS")


def open_fds() -> int | None:
    """Open file descriptors of this process (Linux /proc; None elsewhere). Includes the one listdir uses,
    the same in every sample."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


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


def growth(samples: list[tuple[int, float]], warmup: int = WARMUP) -> dict:
    """First sample at or after warm-up vs the last one: values, change and change in % of the first."""
    after = [(n, v) for n, v in samples if n >= warmup] or samples
    first, last = after[0][1], after[-1][1]
    pct = 100.0 * (last - first) / first if first else 0.0
    return {"after_warmup_frame": after[0][0], "after_warmup": first, "end": last, "growth": last - first,
            "growth_pct": round(pct, 2), "pass": pct < MAX_GROWTH_PCT}


def slope_per_1000(samples: list[tuple[int, float]], warmup: int = WARMUP) -> float:
    """Least-squares growth per 1,000 frames after warm-up (0 with fewer than two samples)."""
    after = [(n, v) for n, v in samples if n >= warmup]
    if len(after) < 2:
        return 0.0
    xs, ys = np.array(after, np.float64).T
    return float(np.polyfit(xs, ys, 1)[0] * 1000)


def plot(result: dict, path: Path) -> None:
    """RSS (MB) and open file descriptors against frames, warm-up shaded, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    frames = [n for n, _, _ in result["samples"]]
    rss = [kb / 1024 for _, kb, _ in result["samples"]]
    fds = [fd for _, _, fd in result["samples"]]
    fig, (ax_rss, ax_fd) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    ax_rss.plot(frames, rss, marker="o", color="tab:blue")
    ax_rss.set_ylabel("RSS (MB)")
    ax_rss.set_title(f"soak: {result['frames_seen']} frames, {result['captions']} captions, {result['when']} "
                     f"({', '.join(sorted(set(result['quant'].values())))}); growth after warm-up: RSS "
                     f"{result['rss_kb']['growth_pct']:+.2f}%, fds {result['open_fds']['growth_pct']:+.2f}%",
                     fontsize=9)
    if all(fd is not None for fd in fds):
        ax_fd.plot(frames, fds, marker="o", color="tab:orange", drawstyle="steps-post")
    ax_fd.set_ylabel("open file descriptors")
    ax_fd.set_xlabel("frames")
    limits = {ax_rss: result["rss_kb"].get("after_warmup", 0) / 1024, ax_fd: result["open_fds"].get("after_warmup")}
    for ax, base in limits.items():
        ax.axvspan(0, WARMUP, color="0.9", label="warm-up")
        if base:
            ax.axhline(base * (1 + MAX_GROWTH_PCT / 100), ls="--", color="tab:red", lw=1,
                       label=f"+{MAX_GROWTH_PCT:g}% of the first sample after warm-up")
        ax.grid(alpha=0.3)
    ax_rss.legend(loc="lower right")
    ax_rss.set_ylim(bottom=0, top=max([*rss, limits[ax_rss] * (1 + MAX_GROWTH_PCT / 100)]) * 1.1)
    ax_fd.set_ylim(bottom=0, top=max([fd for fd in fds if fd is not None] or [1]) * 1.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _video(args: argparse.Namespace, work: Path) -> Path:
    """--video, else a synthetic walk of --frames frames made in `work`."""
    video = Path(args.video) if args.video else work / f"soak_{args.frames}.mp4"
    if not video.exists():
        t = time.perf_counter()
        make_video(video, args.frames)
        print(f"made {video} ({args.frames} frames) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return video


def _sampling_outputs(samples: list, every: int):
    """The live loop's Outputs, also appending (frames seen, RSS kB, open fds) to `samples` every `every` frames."""
    from scenecap.edge.live import Outputs

    class Sampling(Outputs):
        seen_count = 0

        def seen(self, frame):
            super().seen(frame)
            self.seen_count += 1
            if self.seen_count % every == 0:
                samples.append((self.seen_count, rss_kb(), open_fds()))

    return Sampling


@dataclass
class _Start:
    """The process before the run: at start, and once the bundle is loaded."""

    rss_kb: int
    fds: int | None
    rss_loaded_kb: int


def _summary(args: argparse.Namespace, captioner, stats, wall: float, samples: list, start: _Start) -> dict:
    rss = [(n, kb) for n, kb, _ in samples]
    fds = [(n, fd) for n, _, fd in samples if fd is not None]
    return {
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
        "criterion": f"growth after warm-up ({WARMUP} frames) < {MAX_GROWTH_PCT:g}% for RSS and for open fds",
        "rss_kb": {"python_start": start.rss_kb, "bundle_loaded": start.rss_loaded_kb,
                   "max": max(kb for _, kb in rss), **growth(rss),
                   "slope_per_1000_frames": round(slope_per_1000(rss), 1)},
        "open_fds": {"python_start": start.fds, "max": max((fd for _, fd in fds), default=None),
                     **(growth(fds) if fds else {"pass": None})},
        "samples": samples,
    }


def run_soak(args: argparse.Namespace) -> dict:
    """Caption the video through the live loop, sampling RSS and open fds; the figures as a dict."""
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.live import run

    work = Path(tempfile.mkdtemp(prefix="scenecap_soak_"))
    video = _video(args, work)
    samples: list[tuple[int, int, int | None]] = []  # (frames seen, RSS kB, open fds)
    sampling = _sampling_outputs(samples, args.every_samples)
    rss_start, fds_start = rss_kb(), open_fds()
    captioner = Captioner.load(args.bundle, threads=args.threads)
    start = _Start(rss_start, fds_start, rss_kb())
    t0 = time.perf_counter()
    with open(work / "soak.jsonl", "w", encoding="utf-8") as jsonl:
        stats = run(captioner, str(video), sampling(jsonl=jsonl), when=args.when,
                    every=0.0 if args.when == "every" else None, min_interval=0.0, threshold=27.0)
    wall = time.perf_counter() - t0
    if not samples or samples[-1][0] != stats.frames_seen:
        samples.append((stats.frames_seen, rss_kb(), open_fds()))
    return _summary(args, captioner, stats, wall, samples, start)


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
    ap.add_argument("--every-samples", type=int, default=500, help="sample RSS and open fds every N frames")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak.json"),
                    help="JSON results; the plot goes beside it as .png")
    args = ap.parse_args(argv)

    result = run_soak(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(result, out.with_suffix(".png"))
    r, f = result["rss_kb"], result["open_fds"]
    verdict = "PASS" if r["pass"] and f["pass"] is not False else "FAIL"
    fd_text = (f"open fds {f['after_warmup']} -> {f['end']} ({f['growth_pct']:+.2f}%)" if f["pass"] is not None
               else "open fds not measurable here")
    print(f"{result['frames_seen']} frames, {result['captions']} captions in {result['wall_s']:.0f} s; RSS after "
          f"{r['after_warmup_frame']} frames {r['after_warmup'] / 1024:.1f} MB -> end {r['end'] / 1024:.1f} MB "
          f"({r['growth_pct']:+.2f}%, slope {r['slope_per_1000_frames']:.0f} kB per 1000 frames), {fd_text}: "
          f"{verdict} (< {MAX_GROWTH_PCT:g}%) -> {out}, {out.with_suffix('.png')}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
