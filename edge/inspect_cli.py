"""`scenecap inspect`: what a bundle or .tflite file holds. Never imports TensorFlow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scenecap.edge.export_contract import LOG_NORM
from scenecap.edge.terminal import escape

if TYPE_CHECKING:
    from scenecap.edge.bundle import Bundle
    from scenecap.edge.manifest import Manifest


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


def _items(value: Any) -> list:
    """A manifest value shown as a list: the informational keys (provenance) are free JSON, of any type."""
    return value if isinstance(value, list) else [] if value is None else [value]


def _model_report(path: Path, edgetpu: bool, all_ops: bool, indent: str = "    ",
                  content: bytes | None = None) -> None:
    """`content`: the model's verified bytes, when from a bundle (the file is not read again)."""
    from scenecap.edge.modelinfo import parse_model, read_model

    info = read_model(path) if content is None else parse_model(content, path)
    print(f"{indent}size {_kib(info.size)} (weights {_kib(info.weight_bytes)}), {len(info.operators)} ops"
          + (f", {info.subgraph_count} subgraphs" if info.subgraph_count > 1 else ""))
    # Op names come from the file (a custom op's name is any string): escaped like every string shown here.
    print(f"{indent}ops: " + ", ".join(f"{escape(o.name)} v{o.version} x{o.count}" for o in info.all_ops))
    placements = None
    if edgetpu:
        from scenecap.edge.edgetpu_plan import place_ops, summarize

        placements = place_ops(info)
        s = summarize(placements)
        print(f"{indent}Edge TPU (predicted from Coral's op rules; edgetpu_compiler -s is authoritative): "
              f"{s['tpu_ops']} ops on the TPU, {s['cpu_ops']} on the CPU")
        if s["tpu"]:
            print(f"{indent}  TPU: " + ", ".join(f"{escape(k)} x{v}" for k, v in s["tpu"].items()))
        for op, n in s["cpu"].items():
            print(f"{indent}  CPU: {escape(op)} x{n} ({escape(s['cpu_reasons'][op])})")
    if all_ops:
        for i, op in enumerate(info.operators):
            where = f" [{placements[i].device}]" if placements else ""
            outs = ", ".join(f"{info.tensor(t).dtype}{info.tensor(t).shape}" for t in op.outputs if t >= 0)
            print(f"{indent}  #{i:<3} {escape(op.name):<24} v{op.version:<3}{where} -> {outs}")


def run_inspect(args: argparse.Namespace) -> int:
    from scenecap.edge.bundle import load_bundle

    path = Path(args.bundle)
    if path.is_file():
        _model_report(path, edgetpu=True, all_ops=args.ops, indent="")
        return 0
    bundle = load_bundle(path)  # validates the manifest, shapes and every file's hash
    if args.json:
        # ASCII: a manifest string's bidi override or C1 control (which JSON leaves raw) reaches the terminal as \uXXXX.
        print(json.dumps(bundle.manifest.to_json(), indent=2, ensure_ascii=True))
        return 0
    _summary(bundle, path)
    total = sum(_models_report(bundle, args.ops))
    if bundle.manifest.embedding:
        total += _size(bundle.manifest, bundle.manifest.embedding.file)
    print(f"  total model size: {_kib(total)}")
    return 0


def _size(m: Manifest, name: str) -> int:
    entry = m.files.get(name)
    return (entry.bytes or 0) if entry else 0


def _summary(bundle: Bundle, path: Path) -> None:
    """The manifest's facts: format, language, dimensions, input, vocabulary, decoder, how it was converted."""
    m = bundle.manifest
    print(f"bundle {escape(path)} (format {escape(m.format_version)}, scenecap {escape(m.scenecap_version)}, "
          f"language {escape(m.language)}; files verified)")
    dims = ", ".join(f"{escape(k)}={escape(v)}" for k, v in m.model.to_json().items())
    print(f"  model: {dims}")
    print(f"  input: {m.preprocess.height}x{m.preprocess.width} {m.preprocess.color}, resize={m.preprocess.resize}, "
          f"keep_aspect={m.preprocess.keep_aspect}")
    tokens = ", ".join(f"{escape(k)}: {v}" for k, v in m.tokens.items())
    print(f"  vocabulary: {len(bundle.vocab)} tokens {{{tokens}}}, max_length {m.max_length}")
    # log_norm: the word log-probabilities' normaliser comes out of the graph (else numpy computes it each word).
    norm = ", log_norm in the graph" if LOG_NORM in m.models["decoder_step"].outputs else ""
    print(f"  decoder: state {m.decoder_state}, batch {m.decoder_batch} (beam width one invoke advances){norm}")
    if m.embedding:
        e = m.embedding
        print(f"  embedding table: {escape(e.file)} {e.dtype}{e.shape} scale={e.scale:.6g} "
              f"zero_point={e.zero_point} (looked up on the CPU; the Edge TPU has no GATHER)")
    print(f"  confidence: {_confidence_line(m.confidence)}")
    prov = m.provenance
    if prov.get("target_runtime"):
        calibrated = prov.get("calibration_count")
        print(f"  converted for: {escape(prov['target_runtime'])}"
              + (f"; calibrated on {escape(calibrated)} images" if calibrated else ""))
    for change in _items(prov.get("changes")):
        print(f"  changed: {escape(change)}")


def _confidence_line(c) -> str:
    """What marks a caption unsure: the calibrated threshold and what the familiarity is made of."""
    if c is None:
        return "word probabilities only (no image statistics: 'scenecap calibrate' adds them)"
    x = c.extra
    fit = f" from {escape(x['images'])} images" if "images" in x else ""
    line = (f"unsure below {c.threshold:.4g}"
            + (f" (percentile {escape(x['percentile'])} of {escape(x.get('val_images', '?'))} validation captions)"
               if "percentile" in x else "")
            + f"; image Gaussian of {c.components} components{fit}")
    if c.direction_references:
        line += f"; outlier direction from {escape(x.get('outlier_images', '?'))} outlier images"
    if c.second_look:
        line += (f"; with --second-look (the words read again zoomed in {c.second_look.zoom:g}x) unsure below "
                 f"{c.second_look.threshold:.4g}")
    return line


def _models_report(bundle: Bundle, all_ops: bool) -> list[int]:
    """Each model's file, tensors, runtimes and ops; its size in bytes, one per model."""
    m, sizes = bundle.manifest, []
    for name, spec in m.models.items():
        sizes.append(_size(m, spec.file))
        opts = f", {', '.join(map(escape, spec.options))}" if spec.options else ""
        print(f"  {escape(name)}: {escape(spec.file)} [{spec.quant}{opts}] {_kib(sizes[-1])}")
        for kind, tensors in (("in ", spec.inputs), ("out", spec.outputs)):
            for t in tensors.values():
                q = f" scale={t.scale:.6g} zero_point={t.zero_point}" if t.quantized else ""
                print(f"    {kind} {escape(t.name):<12} {t.dtype}{t.shape}{q}")
        if spec.runtimes:
            print("    loads on: " + "; ".join(f"{escape(k)}: {escape(v)}" for k, v in spec.runtimes.items()))
        _model_report(bundle.file(spec.file), edgetpu=spec.quant in ("edgetpu", "int8") and (
            spec.quant == "edgetpu" or all_ops), all_ops=all_ops, content=bundle.content(spec.file))
        if spec.edgetpu_file:
            print(f"    compiled for the Edge TPU: {escape(spec.edgetpu_file)} {_kib(_size(m, spec.edgetpu_file))}")
    return sizes
