"""`scenecap synth`, `scenecap train`, `scenecap export`. TensorFlow is imported only when a command runs."""

from __future__ import annotations

import argparse
import textwrap

TRAIN_EPILOG = textwrap.dedent("""\
    examples:
      scenecap train data/synth/captions_train.json --val data/synth/captions_val.json --out runs/synth
      scenecap train dataset_flickr8k.json --images Flicker8k_Dataset --mode cached --weights imagenet \\
          --image-size 224 --backbone mobilenet_v3_large --alpha 1.0 --out runs/flickr8k
      scenecap train captions.txt --val val.csv --lang ar --config train.toml --set model.units=256
      scenecap train --resume --out runs/flickr8k            # continue after an interruption
      tensorboard --logdir runs/                             # loss, BLEU/CIDEr, sample captions

    settings come from (later wins): defaults, --config FILE (TOML or YAML, same keys as the
    run's config.json, e.g. epochs = 30 and a [model] table), the run's own config.json with
    --resume, then these options and --set KEY=VALUE.

    dataset formats (detected from the file): COCO captions JSON, Karpathy split JSON
    ('restval' joins train; its 'val' split validates when --val is not given), Flickr8k/30k
    *.token.txt (IMAGE#N<TAB>caption), CSV/TSV with image and caption columns (Flickr8k's
    captions.txt), JSON lines ({"image": ..., "caption": ...}).

    several GPUs are used automatically (MirroredStrategy). Several machines: start the same
    command on each with TF_CONFIG set, worker 0 is the chief and writes the run folder:
      TF_CONFIG='{"cluster": {"worker": ["hostA:12345", "hostB:12345"]},
                  "task": {"type": "worker", "index": 0}}' scenecap train --config train.toml
      (index 1 on hostB). --batch-size is per replica.""")

# CLI option -> config key (dotted for nested tables).
OPTION_KEYS = {
    "train": "train", "val": "val", "images": "images", "out": "out", "lang": "language", "epochs": "epochs",
    "batch_size": "batch_size", "lr": "learning_rate", "seed": "seed", "backbone": "model.backbone",
    "alpha": "model.alpha", "image_size": "model.image_size", "weights": "model.weights",
    "feature_stride": "model.feature_stride",
    "embed_dim": "model.embed_dim", "attention_units": "model.attention_units", "max_length": "model.max_length",
    "min_count": "min_count", "max_vocab": "max_vocab", "dataset_format": "dataset_format",
    "train_list": "train_list", "val_list": "val_list", "skip_missing": "skip_missing",
    "check_images": "check_images", "cache_images": "cache_images", "mode": "mode",
    "freeze_epochs": "freeze_epochs", "finetune_lr": "finetune_learning_rate", "feature_cache": "feature_cache",
    "strategy": "strategy", "mixed_precision": "mixed_precision", "jit_compile": "jit_compile",
    "monitor": "monitor", "early_stopping": "early_stopping", "val_caption_images": "val_caption_images",
    "checkpoint_every_steps": "checkpoint_every_steps", "tensorboard": "tensorboard",
    "normalization": "text.normalization", "lowercase": "text.lowercase",
    "strip_diacritics": "text.strip_arabic_diacritics", "strip_tatweel": "text.strip_tatweel",
    "augment_colour": "augment.colour", "augment_crop": "augment.crop", "augment_flip": "augment.flip",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a synthetic-scenes captioning dataset (COCO format)",
                       description="Coloured shapes on textured backgrounds with 5 captions each, written as "
                       "images/ + captions_{train,val,test}.json (COCO captions format) + scenes_{split}.json (what "
                       "each scene holds, for object-level evaluation). Deterministic by seed.",
                       epilog="styles:\n"
                       "  varied   (default) randomises what must not matter: plain, noise, gradient, stripe, blotch\n"
                       "           and clutter backgrounds, continuous sizes and places, hue and brightness\n"
                       "           jitter, blur, sensor noise, JPEG artefacts, 1-4 objects that may overlap\n"
                       "  shifted  held-out evidence: anti-aliased, outlined and rotated shapes on checkerboard,\n"
                       "           dot, ring, pale or dark backgrounds, another size distribution\n"
                       "  classic  the generator the shipped demo bundle was trained on\n\n"
                       "examples:\n  scenecap synth data/synth --train 2000 --lang ar\n"
                       "  scenecap synth data/shifted --train 0 --val 0 --test 200 --seed 9 --style shifted",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder")
    p.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    p.add_argument("--test", type=int, default=200, help="test images (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lang", default="en", choices=["en", "ar"], help="caption language")
    p.add_argument("--size", type=int, default=160, help="image side in pixels (default 160)")
    p.add_argument("--style", default="varied", choices=["varied", "shifted", "classic"],
                   help="how scenes are drawn (default varied; see below)")
    p.set_defaults(func=run_synth)

    S = argparse.SUPPRESS  # unset options do not override the config file
    t = sub.add_parser("train", help="train a Show-Attend-Tell captioner (TensorFlow)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a MobileNet + Bahdanau attention + GRU captioner on your captioned "
                       "images, in any language. Checks the data first, then writes a run folder with config.json, "
                       "vocab.json, checkpoints (last, best, resumable state), history.csv and TensorBoard logs.",
                       epilog=TRAIN_EPILOG)
    t.add_argument("train", nargs="?", default=S, help="training annotations (any supported format)")
    g = t.add_argument_group("data")
    g.add_argument("--val", default=S, help="validation annotations")
    g.add_argument("--images", default=S, help="image folder (default: images/, Images/ ... beside the annotations)")
    g.add_argument("--dataset-format", default=S, choices=["auto", "coco", "karpathy", "flickr", "csv", "jsonl"],
                   help="annotation format (default: detected from the file)")
    g.add_argument("--train-list", default=S,
                   help="only these images (a file of names, e.g. Flickr_8k.trainImages.txt)")
    g.add_argument("--val-list", default=S, help="only these validation images")
    g.add_argument("--skip-missing", action="store_true", default=S,
                   help="train without missing or unreadable images instead of stopping")
    g.add_argument("--no-check-images", dest="check_images", action="store_false", default=S,
                   help="skip decoding every image before training (faster start, later failures)")
    g.add_argument("--cache-images", default=S, choices=["auto", "memory", "none"],
                   help="keep decoded images in RAM (default auto: when under 1 GiB)")
    g.add_argument("--lang", default=S, help="caption language code recorded in the bundle; it picks the speech "
                   "voice (default: from the captions' script: Arabic ar, Latin en, Hebrew he ...; asked for when "
                   "several languages share the script, refused when it contradicts the captions)")
    g.add_argument("--normalization", default=S, choices=["NFKC", "NFC", "NFKD", "NFD", "none"],
                   help="Unicode normalisation of captions (default NFKC)")
    g.add_argument("--keep-case", dest="lowercase", action="store_false", default=S,
                   help="do not lower-case (only scripts with case are affected anyway)")
    g.add_argument("--keep-diacritics", dest="strip_diacritics", action="store_false", default=S,
                   help="keep Arabic diacritics (harakat); by default they are removed")
    g.add_argument("--keep-tatweel", dest="strip_tatweel", action="store_false", default=S,
                   help="keep Arabic tatweel (kashida); by default it is removed")
    g.add_argument("--max-length", type=int, default=S, help="caption tokens incl. <start>/<end> (default: what "
                   "99%% of the training captions need, at most 64, logged); longer captions are cut and counted")
    g.add_argument("--min-count", type=int, default=S, help="drop words seen fewer times (default 1)")
    g.add_argument("--max-vocab", type=int, default=S, help="keep at most this many tokens")

    m = t.add_argument_group("model")
    m.add_argument("--backbone", default=S, choices=["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])
    m.add_argument("--alpha", type=float, default=S, help="backbone width multiplier (0.35 to 1.4; default 0.35)")
    m.add_argument("--image-size", type=int, default=S,
                   help="input side in pixels: a multiple of 32 (default 96; 96 to 224 recommended for photos, 64 "
                   "is enough for the synthetic scenes; with ImageNet weights 96, 128, 160, 192 or 224)")
    m.add_argument("--weights", default=S, help="backbone weights: none (default), imagenet, or a local .h5 path")
    m.add_argument("--feature-stride", type=int, default=S, choices=[8, 16, 32],
                   help="attend over the backbone's feature map at this stride: 32 (default, its last layer) or an "
                        "earlier, finer one; from scratch on small images 8 learns shapes much faster")
    m.add_argument("--embed-dim", type=int, default=S, help="feature and word-embedding size (default 256)")
    m.add_argument("--units", type=int, default=S, help="GRU state and output layer size (default 512)")
    m.add_argument("--attention-units", type=int, default=S, help="(default 512)")

    a = t.add_argument_group("augmentation (off by default; finetune mode only)")
    a.add_argument("--augment-colour", action="store_true", default=S,
                   help="jitter hue by at most 0.02 of the colour circle (about 7 degrees: small enough that no "
                   "colour word becomes wrong), brightness by 0.1, saturation by 15%%")
    a.add_argument("--augment-crop", action="store_true", default=S,
                   help="random crop of 85-100%% of each side, resized back (objects shift a little)")
    a.add_argument("--augment-flip", action="store_true", default=S,
                   help="mirror half the images and swap left/right in their captions (en: left/right, ar: "
                   "اليسار/اليمين); a language without such a lexicon is not flipped (logged)")

    r = t.add_argument_group("training")
    r.add_argument("--config", help="TOML or YAML file of settings (keys as in the run's config.json)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set model.units=256 --set text.lowercase=false")
    r.add_argument("--out", default=S, help="run folder (default runs/latest)")
    r.add_argument("--epochs", type=int, default=S, help="(default 10)")
    r.add_argument("--batch-size", type=int, default=S, help="per replica (default 32)")
    r.add_argument("--lr", type=float, default=S, help="Adam learning rate (default 1e-3)")
    r.add_argument("--seed", type=int, default=S)
    r.add_argument("--mode", default=S, choices=["finetune", "cached"],
                   help="finetune (default): the backbone trains; cached: backbone frozen, its feature maps "
                   "extracted once to disk (resumable) and streamed: much faster epochs")
    r.add_argument("--freeze-epochs", type=int, default=S, help="finetune: backbone frozen for the first N epochs")
    r.add_argument("--finetune-lr", type=float, default=S, help="learning rate once the backbone unfreezes")
    r.add_argument("--feature-cache", default=S, help="cached mode: feature folder, shareable between runs "
                   "(default OUT/features)")
    r.add_argument("--strategy", default=S, choices=["auto", "default", "mirrored", "multi-worker"],
                   help="tf.distribute strategy (default auto: TF_CONFIG workers, else all GPUs)")
    r.add_argument("--mixed-precision", action="store_true", default=S,
                   help="float16 compute with float32 variables and loss scaling (for GPUs)")
    r.add_argument("--jit-compile", action="store_true", default=S, help="XLA-compile the training step")
    r.add_argument("--monitor", default=S, choices=["auto", "loss", "val_loss", "val_bleu4", "val_cider"],
                   help="metric for the best checkpoint and early stopping (default: val_cider with --val)")
    r.add_argument("--early-stopping", type=int, default=S, metavar="N",
                   help="stop after N epochs without improvement (default 0: never)")
    r.add_argument("--val-caption-images", type=int, default=S,
                   help="validation images captioned each epoch for BLEU/CIDEr (default 200)")
    r.add_argument("--checkpoint-every-steps", type=int, default=S, metavar="N",
                   help="also save a resumable state every N steps (default: each epoch)")
    r.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S)
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state")
    r.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
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
                   progress=True, style=args.style)
    print(out)
    return 0


def resolve_train_config(args: argparse.Namespace):
    """defaults < --config < the run's config.json (with --resume) < options < --set."""
    from pathlib import Path

    from scenecap import ScenecapError
    from scenecap.train.config import apply_override, build_config, read_config_file

    d: dict = {}
    source = "command line"
    if args.config:
        d = read_config_file(args.config)
        source = args.config
    out = getattr(args, "out", None) or d.get("out") or "runs/latest"
    if args.resume and (Path(out) / "config.json").is_file():
        saved = read_config_file(Path(out) / "config.json")
        saved.get("model", {}).pop("vocab_size", None)
        d = _merge(d, saved)
        source = str(Path(out) / "config.json")
    given = vars(args)
    for opt, key in OPTION_KEYS.items():
        if opt in given:
            _put(d, key, given[opt])
    if "units" in given:
        _put(d, "model.units", given["units"])
        _put(d, "model.fc_units", given["units"])
    for assignment in args.set:
        apply_override(d, assignment)
    if "train" not in d:
        raise ScenecapError("no training annotations: give them as the first argument, as 'train' in --config, "
                            "or --resume --out RUN")
    return build_config(d, source)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _put(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def run_train(args: argparse.Namespace) -> int:
    cfg = resolve_train_config(args)
    from scenecap.train.trainer import run

    print(run(cfg, resume=args.resume, force=args.force))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from scenecap.train.export import export_run

    print(export_run(args.run, args.out, tuple(args.decoder_batch) or (1,), args.checkpoint, args.force))
    return 0
