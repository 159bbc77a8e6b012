"""`scenecap caption`: caption images, folders, videos with a bundle. Never imports TensorFlow."""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption",
        help="caption images, folders or videos with a bundle (edge runtime, no TensorFlow)",
        description="Caption each image (or video frame) with a bundle, using LiteRT. Prints 'source<TAB>caption' "
        "per frame, or JSON lines with --jsonl. Unreadable files are reported on stderr and skipped; the exit "
        "status is then 1.",
        epilog="example: scenecap caption demo/frames --bundle demo/bundle",
    )
    p.add_argument("sources", nargs="+", help="image files, folders, globs or video files")
    p.add_argument("--bundle", required=True, help="bundle folder (from 'scenecap convert')")
    p.add_argument("--beam", type=int, default=1, help="beam width; 1 = greedy (default)")
    p.add_argument("--length-penalty", type=float, default=0.0,
                   help="GNMT length penalty alpha for beam search (0 = raw log-probability)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (default: runtime's choice)")
    p.add_argument("--every", type=float, default=1.0, metavar="SECONDS",
                   help="for video files: caption one frame every SECONDS (0 = every frame; default 1)")
    p.add_argument("--jsonl", metavar="FILE", help="write one JSON object per frame to FILE ('-' = stdout)")
    p.set_defaults(func=run_caption)


def run_caption(args: argparse.Namespace) -> int:
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.sources import file_frames

    captioner = Captioner.load(args.bundle, threads=args.threads, beam=args.beam,
                               length_penalty=args.length_penalty)
    out = None
    if args.jsonl:
        out = sys.stdout if args.jsonl == "-" else open(args.jsonl, "a", encoding="utf-8")  # noqa: SIM115
    failures = 0
    try:
        for frame in file_frames(args.sources, every_s=args.every):
            if frame.error:
                failures += 1
                print(f"scenecap: {frame.error}", file=sys.stderr)
                continue
            cap = captioner.caption(frame.image)
            if out is not None:
                rec = {"time": time.time(), "source": frame.source, "frame": frame.index, "caption": cap.text,
                       "tokens": cap.tokens, "log_prob": round(cap.log_prob, 4),
                       "latency_ms": {k: round(v, 3) for k, v in cap.timings.items()}}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
            if out is not sys.stdout:
                print(f"{frame.source}\t{cap.text}", flush=True)
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
    return 1 if failures else 0
