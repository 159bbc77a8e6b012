"""`scenecap inspect`: what a bundle or .tflite file holds. Never imports TensorFlow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "inspect", help="show a bundle's manifest, models, tensors, ops and Edge TPU mapping",
        description="Print what a bundle holds: manifest facts, each model's inputs/outputs (shape, dtype, "
        "quantisation scale and zero point), its operators with versions and counts, sizes, which target runtimes "
        "have every op's kernel, and for Edge TPU models which ops would run on the TPU and which on the CPU. "
        "The bundle is validated first (manifest, shapes, file hashes).",
        epilog="examples:\n  scenecap inspect bundles/synth-int8\n  scenecap inspect bundles/coral --ops\n"
        "  scenecap inspect bundles/coral/decoder_step.tflite\n  scenecap inspect bundles/synth-int8 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("bundle", help="bundle folder or a single .tflite file")
    q.add_argument("--json", action="store_true", help="print the manifest as JSON")
    q.add_argument("--ops", action="store_true", help="list every operator in execution order (with its device "
                   "for Edge TPU models)")
    q.set_defaults(func=run_inspect)


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def _model_report(path: Path, edgetpu: bool, all_ops: bool, indent: str = "    ") -> None:
    from scenecap.edge.modelinfo import read_model

    info = read_model(path)
    print(f"{indent}size {_kib(info.size)} (weights {_kib(info.weight_bytes)}), {len(info.operators)} ops"
          + (f", {info.subgraph_count} subgraphs" if info.subgraph_count > 1 else ""))
    print(f"{indent}ops: " + ", ".join(f"{o.name} v{o.version} x{o.count}" for o in info.all_ops))
    placements = None
    if edgetpu:
        from scenecap.convert.edgetpu import plan, summarize

        placements = plan(info)
        s = summarize(placements)
        print(f"{indent}Edge TPU (predicted from Coral's op rules; edgetpu_compiler -s is authoritative): "
              f"{s['tpu_ops']} ops on the TPU, {s['cpu_ops']} on the CPU")
        if s["tpu"]:
            print(f"{indent}  TPU: " + ", ".join(f"{k} x{v}" for k, v in s["tpu"].items()))
        for op, n in s["cpu"].items():
            print(f"{indent}  CPU: {op} x{n} ({s['cpu_reasons'][op]})")
    if all_ops:
        for i, op in enumerate(info.operators):
            where = f" [{placements[i].device}]" if placements else ""
            outs = ", ".join(f"{info.tensor(t).dtype}{info.tensor(t).shape}" for t in op.outputs if t >= 0)
            print(f"{indent}  #{i:<3} {op.name:<24} v{op.version:<3}{where} -> {outs}")


def run_inspect(args: argparse.Namespace) -> int:
    from scenecap.edge.bundle import load_bundle

    path = Path(args.bundle)
    if path.is_file():
        _model_report(path, edgetpu=True, all_ops=args.ops, indent="")
        return 0
    bundle = load_bundle(path)  # validates the manifest, shapes and every file's hash
    m = bundle.manifest
    if args.json:
        print(json.dumps(m.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(f"bundle {path} (format {m.format_version}, scenecap {m.scenecap_version}, language {m.language}; "
          "files verified)")
    dims = ", ".join(f"{k}={v}" for k, v in m.model.items())
    print(f"  model: {dims}")
    print(f"  input: {m.preprocess.height}x{m.preprocess.width} {m.preprocess.color}, resize={m.preprocess.resize}, "
          f"keep_aspect={m.preprocess.keep_aspect}")
    print(f"  vocabulary: {len(bundle.vocab)} tokens {m.tokens}, max_length {m.max_length}")
    print(f"  decoder: state {m.decoder_state}, batch {m.decoder_batch} (beam width one invoke advances)")
    if m.embedding:
        e = m.embedding
        print(f"  embedding table: {e['file']} {e['dtype']}{e['shape']} scale={e['scale']:.6g} "
              f"zero_point={e['zero_point']} (looked up on the CPU; the Edge TPU has no GATHER)")
    prov = m.provenance
    if prov.get("target_runtime"):
        print(f"  converted for: {prov['target_runtime']}" + (f"; calibrated on {prov['calibration_count']} images"
                                                               if prov.get("calibration_count") else ""))
    for change in prov.get("changes", []):
        print(f"  changed: {change}")
    total = 0
    for name, spec in m.models.items():
        size = m.files.get(spec.file, {}).get("bytes", 0)
        total += size
        opts = f", {', '.join(spec.options)}" if spec.options else ""
        print(f"  {name}: {spec.file} [{spec.quant}{opts}] {_kib(size)}")
        for kind, tensors in (("in ", spec.inputs), ("out", spec.outputs)):
            for t in tensors.values():
                q = f" scale={t.scale:.6g} zero_point={t.zero_point}" if t.quantized else ""
                print(f"    {kind} {t.name:<12} {t.dtype}{t.shape}{q}")
        if spec.runtimes:
            print("    loads on: " + "; ".join(f"{k}: {v}" for k, v in spec.runtimes.items()))
        _model_report(bundle.file(spec.file), edgetpu=spec.quant in ("edgetpu", "int8") and (
            spec.quant == "edgetpu" or args.ops), all_ops=args.ops)
        if spec.edgetpu_file:
            print(f"    compiled for the Edge TPU: {spec.edgetpu_file} "
                  f"{_kib(m.files.get(spec.edgetpu_file, {}).get('bytes', 0))}")
    if m.embedding:
        total += m.files.get(m.embedding["file"], {}).get("bytes", 0)
    print(f"  total model size: {_kib(total)}")
    return 0
