"""`scenecap inspect`: what a bundle or .tflite file holds. Never imports TensorFlow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("inspect", help="show a bundle's manifest, models, tensors and ops",
                       description="Print what a bundle holds: manifest facts, each model's inputs/outputs with "
                       "quantisation, and its operators with versions.")
    q.add_argument("bundle", help="bundle folder or a single .tflite file")
    q.add_argument("--json", action="store_true", help="print the manifest as JSON")
    q.set_defaults(func=run_inspect)


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
