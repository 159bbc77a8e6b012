"""`scenecap synth`, `scenecap train`, `scenecap export`. TensorFlow is imported only when a command runs.

`scenecap train`'s options are the training settings, read from the config dataclasses (config_fields.py): each
is typed, defaulted and given its choices there; this file names, groups and explains them."""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import MISSING

from scenecap.train.config_fields import CHOICES, Setting, settings
from scenecap.train.scene_captions import LEXICON
from scenecap.train.scene_drawing import DEFAULT_STYLE, STYLES
from scenecap.train.text import MAX_LENGTH_CAP, MAX_LENGTH_PERCENTILE

TRAIN_EPILOG = textwrap.dedent("""\
    examples:
      scenecap train data/synth/captions_train.json --val data/synth/captions_val.json --out runs/synth
      scenecap train dataset_flickr8k.json --images Flicker8k_Dataset --mode cached --weights imagenet \\
          --image-size 224 --backbone mobilenet_v3_large --alpha 1.0 --out runs/flickr8k
      scenecap train captions.txt --val val.csv --lang ar --config train.toml --set model.units=256
      scenecap train --resume --out runs/flickr8k            # continue after an interruption
      scenecap train --resume --out runs/flickr8k --epochs 40 --lr 5e-4   # train on, at a lower rate
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

S = argparse.SUPPRESS  # an option not given does not override the config file
DATA, MODEL, AUGMENT, TRAINING = "data", "model", "augmentation (off by default; finetune mode only)", "training"

# Each option's help, by the setting it sets, per group in the order --help lists them. The type, the default and
# the choices come from the setting. A setting missing here is still an option, listed in its table's group.
HELP = {
    DATA: {
        "val": "validation annotations",
        "images": "image folder",
        "dataset_format": "annotation format; auto: detected from the file",
        "train_list": "only these images (a file of names, e.g. Flickr_8k.trainImages.txt)",
        "val_list": "only these validation images",
        "skip_missing": "train without missing or unreadable images instead of stopping",
        "check_images": "skip decoding every image before training (faster start, later failures)",
        "cache_images": "keep decoded images in RAM; auto: when under 1 GiB",
        "language": "caption language code recorded in the bundle; it picks the speech voice",
        "text.normalization": "Unicode normalisation of captions",
        "text.lowercase": "do not lower-case (only scripts with case are affected anyway)",
        "text.strip_arabic_diacritics": "keep Arabic diacritics (harakat); by default they are removed",
        "text.strip_tatweel": "keep Arabic tatweel (kashida); by default it is removed",
        "model.max_length": f"caption tokens incl. <start>/<end>; 0: what {MAX_LENGTH_PERCENTILE}%% of the training "
                            f"captions need, at most {MAX_LENGTH_CAP}, logged; longer captions are cut and counted",
        "min_count": "drop words seen fewer times",
        "max_vocab": "keep at most this many tokens",
    },
    MODEL: {
        "model.backbone": "the image encoder, a MobileNet",
        "model.alpha": "backbone width multiplier, 0.35 to 1.4",
        "model.image_size": "input side in pixels: a multiple of 32; 96 to 224 recommended for photos, 64 is enough "
                            "for the synthetic scenes, with ImageNet weights 96, 128, 160, 192 or 224",
        "model.weights": "backbone weights: none, imagenet, or a local .h5 path",
        "model.feature_stride": "attend over the backbone's feature map at this stride: 32 is its last layer, 8 and "
                                "16 earlier, finer ones; from scratch on small images 8 learns shapes much faster",
        "model.embed_dim": "feature and word-embedding size",
        "model.units": "GRU state and output layer size",
        "model.attention_units": "attention layer size",
        "model.output_rank": "factor the output layer through this rank: Dense(r) then Dense(vocabulary), far "
                             "fewer weights with a large vocabulary; 0: one full layer",
    },
    AUGMENT: {
        "augment.colour": "jitter hue by at most 0.02 of the colour circle (about 7 degrees: small enough that no "
                          "colour word becomes wrong), brightness by 0.1, saturation by 15%%",
        "augment.crop": "random crop of 85-100%% of each side, resized back (objects shift a little)",
        "augment.flip": "mirror half the images and swap left/right in their captions (en: left/right, ar: "
                        "اليسار/اليمين); a language without such a lexicon is not flipped (logged). Not for "
                        "captions that name objects in reading order, as synth's do: mirrored, each row's order "
                        "reverses (the demo model resumed for one epoch on fresh scenes: loss 0.24 with flips, "
                        "0.10 without)",
    },
    TRAINING: {
        "out": "run folder",
        "epochs": "passes over the training data",
        "batch_size": "images a step, per replica",
        "learning_rate": "Adam learning rate",
        "seed": "random seed: initial weights and the order of the data",
        "mode": "finetune: the backbone trains; cached: backbone frozen, its feature maps extracted once to disk "
                "(resumable) and streamed: much faster epochs",
        "freeze_epochs": "finetune: backbone frozen for the first N epochs",
        "finetune_learning_rate": "learning rate once the backbone unfreezes",
        "feature_cache": "cached mode: feature folder, shareable between runs",
        "strategy": "tf.distribute strategy; auto: TF_CONFIG workers, else all GPUs",
        "mixed_precision": "float16 compute with float32 variables and loss scaling (for GPUs)",
        "jit_compile": "XLA-compile the training step",
        "monitor": "metric for the best checkpoint and early stopping; auto: val_cider with --val, else loss",
        "early_stopping": "stop after N epochs without improvement; 0: never",
        "val_caption_images": "validation images captioned each epoch for BLEU/CIDEr",
        "checkpoint_every_steps": "also save a resumable state every N steps; 0: each epoch only",
        "tensorboard": "do not write TensorBoard logs",
    },
}
# What an unset (None) setting means, shown as its default.
UNSET = {
    "images": "images/, Images/ ... beside the annotations",
    "language": "from the captions' script: Arabic ar, Latin en, Hebrew he ...; asked for when several languages "
                "share the script, refused when it contradicts the captions",
    "max_vocab": "no limit",
    "model.weights": "none",
    "finetune_learning_rate": "the same as --lr",
    "feature_cache": "OUT/features",
}
# Settings a config file or --set changes, but no option.
NOT_OPTIONS = {
    "train",  # the positional argument
    "model.vocab_size",  # counted from the captions
    "model.fc_units",  # --units sets it with model.units
    "resize", "clipnorm", "log_every_steps", "model.decoder_state", "model.bn_momentum", "text.keep_apostrophes",
}
ALSO_SETS = {"model.units": ("model.fc_units",)}  # one --units sizes the GRU and the layer before the words
# Options not named after their setting's last part (--no-NAME for a setting that is on by default).
FLAGS = {"language": "--lang", "learning_rate": "--lr", "finetune_learning_rate": "--finetune-lr",
         "text.lowercase": "--keep-case", "text.strip_arabic_diacritics": "--keep-diacritics",
         "text.strip_tatweel": "--keep-tatweel"}
PREFIXED_TABLES = ("augment",)  # --augment-flip: 'flip' alone would not say what is flipped
TABLE_GROUPS = {"": TRAINING, "model": MODEL, "text": DATA, "augment": AUGMENT}  # for settings missing from HELP
METAVARS = {"early_stopping": "N", "checkpoint_every_steps": "N"}


def register(sub: argparse._SubParsersAction) -> None:
    _add_synth(sub)
    _add_train(sub)
    _add_export(sub)


def _add_synth(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--train", type=int, default=2000, help="training images (default %(default)s)")
    p.add_argument("--val", type=int, default=200, help="validation images (default %(default)s)")
    p.add_argument("--test", type=int, default=200, help="test images (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the same seed draws the same scenes (default %(default)s)")
    p.add_argument("--lang", default="en", choices=list(LEXICON), help="caption language")
    p.add_argument("--size", type=int, default=160, help="image side in pixels (default %(default)s)")
    p.add_argument("--style", default=DEFAULT_STYLE, choices=STYLES,
                   help="how scenes are drawn (default %(default)s; see below)")
    p.set_defaults(func=run_synth)


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a Show-Attend-Tell captioner (TensorFlow)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a MobileNet + Bahdanau attention + GRU captioner on your captioned "
                       "images, in any language. Checks the data first, then writes a run folder with config.json, "
                       "vocab.json, checkpoints (last, best, resumable state), history.csv and TensorBoard logs.",
                       epilog=TRAIN_EPILOG)
    t.add_argument("train", nargs="?", default=S, help="training annotations (any supported format)")
    groups = {title: t.add_argument_group(title) for title in HELP}
    run = groups[TRAINING]
    for title, options in train_options().items():  # group by group: the usage line keeps the order added
        if title == TRAINING:
            run.add_argument("--config", help="TOML or YAML file of settings (keys as in the run's config.json)")
            run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                             help="override any setting, e.g. --set model.units=256 --set text.lowercase=false")
        for setting, text in options:
            _add_option(groups[title], setting, text)
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state")
    run.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    t.set_defaults(func=run_train)


def train_options() -> dict[str, list[tuple[Setting, str]]]:
    """Group -> (setting, help) of each `scenecap train` option in it, in the order --help lists them."""
    left = {s.key: s for s in settings() if s.key not in NOT_OPTIONS}
    options: dict[str, list[tuple[Setting, str]]] = {group: [] for group in HELP}
    for group, helps in HELP.items():
        for key in [key for key in helps if key in left]:
            options[group].append((left.pop(key), helps[key]))
    for setting in left.values():  # a setting added to a dataclass but not yet worded here
        options[TABLE_GROUPS[setting.key.rpartition(".")[0]]].append((setting, f"sets {setting.key}"))
    return options


def _add_option(group: argparse._ArgumentGroup, setting: Setting, text: str) -> None:
    flag = _flag(setting)
    if setting.type is bool:  # the option turns the default over
        action = "store_false" if setting.default else "store_true"
        group.add_argument(flag, dest=setting.key, action=action, default=S, help=text)
        return
    choices = CHOICES.get(setting.key)
    metavar = None if choices else METAVARS.get(setting.key, flag[2:].upper().replace("-", "_"))
    group.add_argument(flag, dest=setting.key, type=setting.type, choices=choices, metavar=metavar, default=S,
                       help=text + _default_text(setting))


def _flag(setting: Setting) -> str:
    if setting.key in FLAGS:
        return FLAGS[setting.key]
    table, _, name = setting.key.rpartition(".")
    if table in PREFIXED_TABLES:
        name = f"{table}_{name}"
    if setting.type is bool and setting.default is True:
        name = f"no_{name}"
    return "--" + name.replace("_", "-")


def _default_text(setting: Setting) -> str:
    shown = UNSET.get(setting.key) if setting.default is None else setting.default
    if shown is None or shown is MISSING:
        return ""
    return f" (default: {shown})".replace("%", "%%")  # help text is a %-format


def _add_export(sub: argparse._SubParsersAction) -> None:
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
    given = vars(args)  # options and the positional argument: each dest is its setting's key
    for setting in settings():
        if setting.key in given:
            for key in (setting.key, *ALSO_SETS.get(setting.key, ())):
                _put(d, key, given[setting.key])
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
