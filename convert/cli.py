"""`scenecap convert`: export folder -> bundle(s); `--report` measures what each quantisation costs;
`--add-edgetpu` adds edgetpu_compiler output to a bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scenecap import ScenecapError
from scenecap.edge.bundle import QUANTS

TARGET_RUNTIMES = ("litert", "tflite-runtime-2.14", "edgetpu-compiler-16")

_DESCRIPTION = (
    "Convert the SavedModel from 'scenecap export' into encoder.tflite + decoder_step.tflite and "
    "write a bundle folder (models, vocab.json, manifest.json) atomically.\n\n"
    "Quantisation, for both models or each separately (any combination):\n"
    "  float32   no change               float16  half-size weights, float compute\n"
    "  dynamic   int8 weights, float activations (small, no calibration)\n"
    "  int8      full-integer, calibrated on real images and on the decoder inputs recorded while the float\n"
    "            model captions them (default: a sample of the training split)\n"
    "  int16x8   decoder step only: int16 activations, int8 weights (reference kernels: slow)\n"
    "  edgetpu   full-integer with static shapes and only Edge TPU ops; the word embedding is looked up on\n"
    "            the CPU from a table in the bundle; runs edgetpu_compiler if installed, else prints the\n"
    "            command (then: scenecap convert --add-edgetpu FILES --out BUNDLE); its decoder step's\n"
    "            hidden state has one symmetric range in and out, and its logits resolve 0 and up\n"
    "decoder-step recipes (int8 with parts kept float, int8 weights throughout; for the decoder only, e.g.\n"
    "int8:int8-mixed; measured in benchmarks/results/decoder-recipes.md):\n"
    "  int8-fstate  the carried state float: hidden in/out float32, the GRU's gate arithmetic float\n"
    "  int8-fattn   the attention softmax and weighted sum of the features float\n"
    "  int8-mixed   int8 attention scores and GRU input matmul; the attention softmax and context, the GRU's\n"
    "               recurrent matmul and gates and the output layers with float activations\n\n"
    "--target-runtime picks variants whose kernels that runtime has and says what it changed and why.\n"
    "--report captions a held-out set with each bundle (edge runtime) and writes report.md/.json/.png."
)
_EXAMPLES = (
    "examples:\n"
    "  scenecap convert exports/synth --out bundles/synth-int8 --quant int8\n"
    "  scenecap convert exports/synth --out bundles/synth --quant all --report\n"
    "  scenecap convert exports/synth --out bundles/pi --quant int8:dynamic --target-runtime tflite-runtime-2.14\n"
    "  scenecap convert exports/synth --out bundles/pi-fast --quant int8:int8-mixed\n"
    "  scenecap convert exports/synth --out bundles/coral --quant edgetpu --decoder-batch 3\n"
    "  scenecap convert --add-edgetpu bundles/coral/encoder_edgetpu.tflite "
    "bundles/coral/decoder_step_edgetpu.tflite --out bundles/coral"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert an export to LiteRT bundles (float32/float16/dynamic/int8/edgetpu)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
    )
    p.add_argument("export", nargs="?", help="export folder from 'scenecap export'")
    p.add_argument("--out", required=True,
                   help="bundle folder to write (with several variants: a folder with one bundle per variant)")
    p.add_argument("--quant", default="float32", metavar="Q[,Q...]",
                   help=f"quantisation: one of {', '.join(QUANTS)}, ENC:DEC for different encoder and decoder "
                   "quantisation (e.g. int8:int16x8, all-integer with the decoder's precision kept: int16 "
                   "activations, int8 weights; int16x8 is for the decoder step only), a comma list of these, or "
                   "'all' (default float32)")
    p.add_argument("--encoder-quant", choices=QUANTS, help="override --quant for the encoder")
    p.add_argument("--decoder-quant", choices=QUANTS, help="override --quant for the decoder step")
    p.add_argument("--decoder-batch", type=int, default=1,
                   help="fixed decoder batch = beam width, so one invoke advances every beam (needs a matching "
                   "'scenecap export --decoder-batch')")
    p.add_argument("--target-runtime", default="litert", choices=TARGET_RUNTIMES,
                   help="runtime the bundle must load on (default litert)")
    p.add_argument("--calibration-images", help="folder of images or an annotation file (default: training split)")
    p.add_argument("--calibration-count", type=int, default=100, help="calibration images to use (default 100)")
    p.add_argument("--calibration-steps", type=int, default=600,
                   help="decoder-step inputs kept for calibration, sampled from the float model's captions of "
                   "the calibration images (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace existing bundles")
    p.add_argument("--report", nargs="?", const="", default=None, metavar="DIR",
                   help="also caption a held-out set with every bundle and write report.md/json/png to DIR "
                   "(default: OUT/report for several variants, OUT-report for one)")
    p.add_argument("--eval-annotations", help="held-out set for --report (COCO captions JSON; default: the "
                   "validation split recorded at training)")
    p.add_argument("--eval-count", type=int, default=200, help="held-out images for --report (default 200)")
    p.add_argument("--beam", type=int, default=1, help="beam width for --report (1 = greedy)")
    p.add_argument("--add-edgetpu", nargs="+", metavar="FILE",
                   help="add edgetpu_compiler output (*_edgetpu.tflite) to the bundle --out, re-hashing the manifest")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    if args.add_edgetpu:
        from scenecap.convert.edgetpu import add_edgetpu

        print(add_edgetpu(args.out, args.add_edgetpu))
        return 0
    if not args.export:
        raise ScenecapError("convert: missing the export folder (scenecap convert EXPORT --out BUNDLE)")
    from scenecap.convert.run import ConvertOptions, convert_variants, parse_quant_list

    pairs = parse_quant_list(args.quant)
    if args.encoder_quant or args.decoder_quant:
        pairs = [(args.encoder_quant or e, args.decoder_quant or d) for e, d in pairs]
        pairs = list(dict.fromkeys(pairs))
    opts = ConvertOptions(
        export=args.export, out=args.out, decoder_batch=args.decoder_batch,
        calibration_images=args.calibration_images, calibration_count=args.calibration_count,
        calibration_steps=args.calibration_steps, seed=args.seed,
        force=args.force, target_runtime=args.target_runtime)
    results = convert_variants(opts, pairs)
    for r in results:
        for c in r.changes:
            print(f"changed: {c}", file=sys.stderr)
        if r.edgetpu:
            print(r.edgetpu, file=sys.stderr)
        print(r.path)
    if args.report is not None:
        from scenecap.convert.report import ReportOptions, write_report

        out = Path(args.out)
        report_dir = Path(args.report) if args.report else (
            out / "report" if len(results) > 1 else out.with_name(out.name + "-report"))
        paths = write_report(ReportOptions(
            items=[str(r.path) for r in results], reference=args.export, out=str(report_dir),
            annotations=args.eval_annotations, count=args.eval_count, beam=args.beam, force=True))
        print(paths["md"])
    return 0
