"""`scenecap convert`: export folder -> bundle."""

from __future__ import annotations

import argparse

from scenecap.edge.bundle import QUANTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert an export to a LiteRT bundle (float32/float16/dynamic/int8)",
        description="Convert the SavedModel from 'scenecap export' into encoder.tflite + decoder_step.tflite and "
        "write a bundle folder (models, vocab.json, manifest.json) atomically. Full-integer int8 is calibrated "
        "on real images (default: a sample of the training split) and on the decoder inputs recorded while the "
        "float model captions them.",
        epilog="example: scenecap convert exports/synth --out bundles/synth-int8 --quant int8",
    )
    p.add_argument("export", help="export folder from 'scenecap export'")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--quant", default="float32", choices=QUANTS, help="quantisation of both models (default float32)")
    p.add_argument("--encoder-quant", choices=QUANTS, help="override --quant for the encoder")
    p.add_argument("--decoder-quant", choices=QUANTS, help="override --quant for the decoder step")
    p.add_argument("--decoder-batch", type=int, default=1,
                   help="fixed decoder batch = beam width (needs a matching 'export --decoder-batch')")
    p.add_argument("--calibration-images", help="folder of images or an annotation file (default: training split)")
    p.add_argument("--calibration-count", type=int, default=100, help="calibration images to use (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from scenecap.convert.run import ConvertOptions, convert

    out = convert(ConvertOptions(
        export=args.export, out=args.out, encoder_quant=args.encoder_quant or args.quant,
        decoder_quant=args.decoder_quant or args.quant, decoder_batch=args.decoder_batch,
        calibration_images=args.calibration_images, calibration_count=args.calibration_count, seed=args.seed,
        force=args.force))
    print(out)
    return 0
