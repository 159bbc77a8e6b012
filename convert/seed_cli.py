"""`scenecap import-seed`: bring the replaced system's trained model and tokenizer over as a bundle."""

from __future__ import annotations

import argparse
import sys
import textwrap

from scenecap.edge.bundle import QUANTS

NONE_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: --backbone-weights none: the MobileNetV2 backbone gets RANDOM weights.                      !!
!! The original's backbone was ImageNet-trained and is not among its files; without it every caption   !!
!! this bundle writes is MEANINGLESS. Use 'none' only for tests; for real use pass --backbone-weights  !!
!! imagenet (downloads once) or a local mobilenet_v2 alpha 1.4 224 no-top .h5.                          !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def _paragraphs(*paras: str) -> str:
    """argparse's raw formatter keeps the example's line breaks; wrap the prose ourselves."""
    return "\n\n".join(textwrap.fill(p, 100, subsequent_indent="  " if p.startswith("-") else "",
                                       break_on_hyphens=False) for p in paras)


def _parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser(
        "import-seed",
        help="import the replaced system's model (per-layer .npy or .h5) and tokenizer.pickle as a bundle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_paragraphs(
            "Import the Show-Attend-Tell model of the system scenecap replaces (MobileNetV2 alpha 1.4 at 224 px, "
            "GRU 512, vocabulary from its tokenizer) and write a bundle that gives its captions.",
            "- Weights: the original's weights/ folder (encoder_layer_weights/ and decoder_layer_weights/ with "
            "layer_{i}_{name}_weights_{j}.npy), or a folder with encoder_weights_100k_ar.h5 and "
            "decoder_weights_100k_ar.h5. Every array's name and shape is checked before anything is built.",
            "- Tokenizer: the pickled keras_preprocessing Tokenizer, read WITHOUT executing it (only the classes a "
            "tokenizer contains are admitted; anything else is refused). Its ids become vocab.json.",
            "- The original's GRU restarted from zeros at every step; the bundle records decoder.state "
            "legacy-zero and reproduces that exactly. Newly trained scenecap models carry the state.",
            "- The ImageNet backbone weights were never part of the original files: see --backbone-weights.",
        ),
        epilog="examples:\n"
        "  scenecap import-seed --weights canesee/weights --tokenizer canesee/tokenizer.pickle \\\n"
        "      --out bundles/seed-f32 --backbone-weights imagenet\n"
        "  scenecap import-seed --weights canesee/weights --tokenizer canesee/tokenizer.pickle \\\n"
        "      --out bundles/seed-int8 --quant int8 --calibration-images photos/ \\\n"
        "      --backbone-weights ~/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224_no_top.h5\n"
        "  scenecap import-seed --weights canesee/weights --tokenizer canesee/tokenizer.pickle \\\n"
        "      --out bundles/seed-4000 --vocab-limit 4000     # a cheaper output layer: the 4,000 commonest ids\n"
        "  scenecap caption street.jpg --bundle bundles/seed-f32 --jsonl captions.jsonl",
    )


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, metavar="DIR",
                   help="the original's weights folder (.npy per layer) or a folder with its two .h5 files")
    p.add_argument("--tokenizer", required=True, metavar="PICKLE", help="the original's tokenizer.pickle")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to write")
    p.add_argument("--quant", default="float32", choices=QUANTS,
                   help="quantisation of both models (default float32, identical captions to the original)")
    p.add_argument("--encoder-quant", choices=QUANTS, help="override --quant for the encoder")
    p.add_argument("--decoder-quant", choices=QUANTS, help="override --quant for the decoder step")
    p.add_argument("--backbone-weights", default="imagenet", metavar="imagenet|none|PATH.h5",
                   help="MobileNetV2 alpha 1.4 weights: 'imagenet' (default; Keras downloads them once), a local "
                   "no-top .h5, or 'none' (random, tests only: captions are meaningless)")
    p.add_argument("--calibration-images", metavar="DIR",
                   help="photos for int8 calibration (required for int8: the seed ships no training data)")
    p.add_argument("--calibration-count", type=int, default=100, help="calibration images to use (default 100)")
    p.add_argument("--decoder-batch", type=int, default=1,
                   help="fixed decoder batch = beam width of 'scenecap caption --beam' (default 1)")
    p.add_argument("--language", default="ar", help="caption language recorded in the bundle (default ar)")
    p.add_argument("--vocab-limit", type=int, metavar="N",
                   help="keep only the N most frequent word ids (the special tokens always): the embedding rows and "
                   "the output layer's columns are cut to them, a word outside reads as <unk>; the output layer is "
                   "most of a decoder step's cost at 26,556 words (default: every id; recorded in the manifest)")
    p.add_argument("--keep-export", metavar="DIR",
                   help="also keep the SavedModel here, to convert other variants later with 'scenecap convert'")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed")
    p.add_argument("--force", action="store_true", help="replace an existing bundle (and --keep-export folder)")


def register(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub)
    _add_options(p)
    p.set_defaults(func=run_import_seed)


def run_import_seed(args: argparse.Namespace) -> int:
    if args.backbone_weights in ("none", "None"):
        print(NONE_WARNING, file=sys.stderr, flush=True)
    from scenecap.convert.seed_import import SeedImportOptions, import_seed

    out = import_seed(SeedImportOptions(
        weights=args.weights, tokenizer=args.tokenizer, out=args.out,
        encoder_quant=args.encoder_quant or args.quant, decoder_quant=args.decoder_quant or args.quant,
        backbone_weights=args.backbone_weights, calibration_images=args.calibration_images,
        calibration_count=args.calibration_count, decoder_batch=args.decoder_batch, language=args.language,
        keep_export=args.keep_export, seed=args.seed, force=args.force, vocab_limit=args.vocab_limit))
    if args.backbone_weights in ("none", "None"):
        print("WARNING: this bundle's backbone is RANDOM (--backbone-weights none); its captions are meaningless",
              file=sys.stderr)
    print(out)
    return 0
