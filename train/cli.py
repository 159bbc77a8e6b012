"""`scenecap synth`, `scenecap train`, `scenecap export`. TensorFlow is imported only when a command runs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a synthetic-scenes captioning dataset (COCO format)",
                       description="Coloured shapes on textured backgrounds with 5 captions each, written as "
                       "images/ + captions_{train,val,test}.json (COCO captions format). Deterministic by seed.",
                       epilog="example: scenecap synth data/synth --train 2000 --lang ar")
    p.add_argument("out", help="output folder")
    p.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    p.add_argument("--test", type=int, default=200, help="test images (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lang", default="en", choices=["en", "ar"], help="caption language")
    p.add_argument("--size", type=int, default=160, help="image side in pixels (default 160)")
    p.set_defaults(func=run_synth)

    t = sub.add_parser("train", help="train a Show-Attend-Tell captioner (TensorFlow)",
                       description="Train a MobileNet + Bahdanau attention + GRU captioner on a COCO-format "
                       "dataset. Writes a run folder with config.json, vocab.json and checkpoints.",
                       epilog="example: scenecap train data/synth/captions_train.json --val "
                       "data/synth/captions_val.json --out runs/synth --epochs 10")
    t.add_argument("train", help="training annotations (COCO captions JSON)")
    t.add_argument("--val", help="validation annotations")
    t.add_argument("--images", help="image folder (default: images/ beside the annotation file)")
    t.add_argument("--out", default="runs/latest", help="run folder (default runs/latest)")
    t.add_argument("--lang", default="en", help="caption language code recorded in the bundle (default en)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backbone", default="mobilenet_v2",
                   choices=["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])
    t.add_argument("--alpha", type=float, default=0.35, help="backbone width multiplier (0.35 to 1.4)")
    t.add_argument("--image-size", type=int, default=96, help="input side in pixels (96 to 224)")
    t.add_argument("--weights", default="none", help="backbone weights: none, imagenet, or a local .h5 path")
    t.add_argument("--embed-dim", type=int, default=256, help="feature and word-embedding size")
    t.add_argument("--units", type=int, default=512, help="GRU state size")
    t.add_argument("--attention-units", type=int, default=512)
    t.add_argument("--max-length", type=int, default=24, help="caption tokens including <start>/<end>")
    t.add_argument("--min-count", type=int, default=1, help="drop words seen fewer times")
    t.add_argument("--max-vocab", type=int, default=None, help="keep at most this many words")
    t.set_defaults(func=run_train)

    e = sub.add_parser("export", help="export a trained run as a SavedModel with encode/decode_step signatures",
                       description="Write a SavedModel with fixed signatures: encode(image uint8[1,H,W,3]) and "
                       "decode_step(token, hidden, features, keys), plus vocab.json and scenecap_export.json.",
                       epilog="example: scenecap export runs/synth --out exports/synth --decoder-batch 3")
    e.add_argument("run", help="training run folder")
    e.add_argument("--out", required=True, help="export folder")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--decoder-batch", type=int, action="append", default=[],
                   help="also export a decode_step with this fixed batch (beam width); repeatable")
    e.add_argument("--force", action="store_true", help="replace an existing export")
    e.set_defaults(func=run_export)


def run_synth(args: argparse.Namespace) -> int:
    from scenecap.train.synthetic import generate

    out = generate(args.out, args.train, args.val, args.test, seed=args.seed, lang=args.lang, img_size=args.size,
                   progress=True)
    print(out)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from scenecap.train.model import ModelConfig
    from scenecap.train.trainer import TrainConfig, run

    model = ModelConfig(vocab_size=0, max_length=args.max_length, backbone=args.backbone, alpha=args.alpha,
                        image_size=args.image_size, weights=args.weights, embed_dim=args.embed_dim,
                        units=args.units, attention_units=args.attention_units, fc_units=args.units)
    cfg = TrainConfig(train=args.train, val=args.val, images=args.images, out=args.out, language=args.lang,
                      epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                      min_count=args.min_count, max_vocab=args.max_vocab, model=model)
    print(run(cfg))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from scenecap.train.export import export_run

    print(export_run(args.run, args.out, tuple(args.decoder_batch) or (1,), args.checkpoint, args.force))
    return 0
