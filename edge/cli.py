"""`scenecap caption` and `scenecap inspect`: the edge side's commands. Never imports TensorFlow."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scenecap.edge.errors import ScenecapError


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

    q = sub.add_parser("inspect", help="show a bundle's manifest, models, tensors and ops",
                       description="Print what a bundle holds: manifest facts, each model's inputs/outputs with "
                       "quantisation, and its operators with versions.")
    q.add_argument("bundle", help="bundle folder or a single .tflite file")
    q.add_argument("--json", action="store_true", help="print the manifest as JSON")
    q.set_defaults(func=run_inspect)


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


def run_inspect(args: argparse.Namespace) -> int:
    from scenecap.edge.bundle import read_manifest
    from scenecap.edge.modelinfo import read_ops

    path = Path(args.bundle)
    if path.is_file():
        for op in read_ops(path):
            print(f"  {op.name:<28} v{op.version:<3} x{op.count}")
        return 0
    m = read_manifest(path)
    if args.json:
        print(json.dumps(m.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(f"bundle {path} (format {m.format_version}, scenecap {m.scenecap_version}, language {m.language})")
    dims = ", ".join(f"{k}={v}" for k, v in m.model.items())
    print(f"  model: {dims}")
    print(f"  input: {m.preprocess.height}x{m.preprocess.width} {m.preprocess.color}, resize={m.preprocess.resize}")
    print(f"  tokens: {m.tokens}, max_length {m.max_length}, decoder state {m.decoder_state}, "
          f"batch {m.decoder_batch}")
    for name, spec in m.models.items():
        size = m.files.get(spec.file, {}).get("bytes", 0)
        print(f"  {name}: {spec.file} [{spec.quant}] {size / 1024:.1f} KiB")
        for kind, tensors in (("in ", spec.inputs), ("out", spec.outputs)):
            for t in tensors.values():
                q = f" scale={t.scale:.6g} zero_point={t.zero_point}" if t.quantized else ""
                print(f"    {kind} {t.name:<12} {t.dtype}{t.shape}{q}")
        ops = read_ops(path / spec.file) if (path / spec.file).is_file() else []
        print("    ops: " + ", ".join(f"{o.name} v{o.version} x{o.count}" for o in ops))
    return 0


__all__ = ["register", "ScenecapError"]
