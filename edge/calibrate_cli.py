"""`scenecap calibrate`: store image statistics and the unsure threshold in a bundle. Never imports TensorFlow.

It runs the bundle's own encoder and decoder on in-distribution images: the encoder features of --images fit the
image Gaussian (edge/confidence.py); --val-images (else the last quarter of --images, held out from the fit) place
the familiarity scale and, captioned, choose the threshold that keeps (100 - percentile)% of them confident.
The stats file is named by its hash and written before the manifest (both atomically), so a crash leaves the
bundle as it was or as it is meant to be, never a manifest naming a file that is not there.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenecap.edge.arg_types import add_command, float_in, int_in
from scenecap.edge.confidence import MAX_COMPONENTS

log = logging.getLogger("scenecap.edge.calibrate")

DEFAULT_PERCENTILE = 2.0  # 98% of validation captions confident: room for held-out images to land lower
MIN_IMAGES = 20
SECTION_VERSION = "1.2"

EXAMPLES = """examples:
  scenecap synth data/calib --train 600 --val 200 --test 0 --seed 11 --style classic --size 96
  scenecap calibrate demo/bundle --images data/calib/images/train --val-images data/calib/images/val

The statistics describe the images the bundle was trained on: calibrate with fresh images of the same kind
(never the test images you judge it on). Captions of images unlike them, or whose words the decoder is unsure
of, fall below the threshold and are marked unsure ('scenecap caption --help': --min-confidence, --unsure)."""


@dataclass
class Measured:
    """One image through the bundle: its pooled encoder features and its caption's word confidence."""

    pooled: np.ndarray
    word: float


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "calibrate",
        help="store image statistics and the unsure threshold in a bundle (edge runtime, no TensorFlow)",
        description="Fit the image-familiarity statistics of a bundle from in-distribution images and choose "
        "the confidence below which a caption is marked unsure; writes a 'confidence' section and a hashed "
        "stats file into the bundle (format 1.2). Prints what it chose.",
        examples=EXAMPLES,
    )
    p.add_argument("bundle", help="bundle folder (rewritten in place: manifest.json and a confidence-*.npz)")
    p.add_argument("--images", required=True, metavar="DIR", help="in-distribution images to fit the statistics on")
    p.add_argument("--val-images", metavar="DIR",
                   help="other in-distribution images to set the scale and threshold on (default: the last "
                   "quarter of --images, held out from the fit)")
    p.add_argument("--components", type=int_in(1, MAX_COMPONENTS, "the most the bundle format holds"),
                   default=MAX_COMPONENTS, metavar="K",
                   help="PCA dimensions of the image Gaussian, 1-16 (default 16)")
    p.add_argument("--percentile", type=float_in(0, 5, ">= 95% of in-distribution captions stay confident"),
                   default=DEFAULT_PERCENTILE, metavar="P",
                   help=f"threshold at this percentile of validation confidences: P%% of in-distribution "
                   f"captions are marked unsure (default {DEFAULT_PERCENTILE:g}, at most 5)")
    p.set_defaults(func=run_calibrate)


def image_files(folder: str) -> list[Path]:
    """The images in a folder (recursive, sorted), or one ScenecapError line."""
    from scenecap.edge.errors import ScenecapError
    from scenecap.edge.sources import expand
    from scenecap.edge.video import VIDEO_SUFFIXES

    if not Path(folder).is_dir():
        raise ScenecapError(f"{folder}: not a folder of images")
    files = [p for p in expand([folder]) if p.suffix.lower() not in VIDEO_SUFFIXES]
    if len(files) < MIN_IMAGES:
        raise ScenecapError(f"{folder}: {len(files)} images; calibration needs at least {MIN_IMAGES}")
    return files


def measure(captioner, path: Path) -> Measured:
    """Encode and caption one image with the bundle's own models."""
    from scenecap.edge import confidence as conf
    from scenecap.edge.images import load_image
    from scenecap.edge.preprocess import prepare

    frame = load_image(path)
    feats = captioner.encode(prepare(frame, captioner.bundle.manifest.preprocess))
    cap = captioner.caption(frame)
    return Measured(conf.pooled_features(feats["features"]), cap.word_confidence)


def stats_bytes(stats) -> bytes:
    """The stats file: an uncompressed .npz of float32 arrays (read back with allow_pickle=False)."""
    buf = io.BytesIO()
    np.savez(buf, **stats.arrays())
    return buf.getvalue()


def write_section(bundle_dir: Path, manifest, stats, section: dict) -> str:
    """The stats file (named by its hash), then the manifest naming it; the previous stats file is removed."""
    from scenecap.edge.bundle import MANIFEST
    from scenecap.edge.fileio import atomic_write_bytes, atomic_write_text

    raw = stats_bytes(stats)
    digest = hashlib.sha256(raw).hexdigest()
    name = f"confidence-{digest[:12]}.npz"
    atomic_write_bytes(bundle_dir / name, raw)
    old = manifest.confidence.file if manifest.confidence else None
    data = manifest.to_json()
    if old and old != name:
        data["files"].pop(old, None)
    data["files"][name] = {"sha256": digest, "bytes": len(raw)}
    data["confidence"] = {"file": name, **section}
    if tuple(map(int, data["format_version"].split("."))) < tuple(map(int, SECTION_VERSION.split("."))):
        data["format_version"] = SECTION_VERSION
    atomic_write_text(bundle_dir / MANIFEST, json.dumps(data, indent=2, ensure_ascii=False))
    if old and old != name:
        (bundle_dir / old).unlink(missing_ok=True)
    return name


def run_calibrate(args: argparse.Namespace) -> int:
    from scenecap.edge import confidence as conf
    from scenecap.edge.bundle import load_bundle
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.terminal import escape

    bundle = load_bundle(args.bundle)
    fit_paths = image_files(args.images)
    val_paths = image_files(args.val_images) if args.val_images else fit_paths[len(fit_paths) * 3 // 4:]
    if not args.val_images:
        fit_paths = fit_paths[: len(fit_paths) * 3 // 4]
    captioner = Captioner(bundle, threads=1)
    fit = [measure(captioner, p) for p in fit_paths]
    val = [measure(captioner, p) for p in val_paths]
    stats = conf.fit_stats(np.stack([m.pooled for m in fit]), args.components)
    stats = conf.with_references(stats, np.array([conf.distance(stats, m.pooled) for m in val]))
    confidences = np.array([conf.combine(m.word, conf.familiarity(stats, conf.distance(stats, m.pooled)))
                            for m in val])
    threshold = conf.threshold_at(confidences, args.percentile)
    kept = float((confidences >= threshold).mean())
    section = {"components": int(stats.components.shape[0]), "pooled_dim": int(stats.mean.shape[0]),
               "references": int(stats.references.size), "threshold": round(threshold, 6),
               "percentile": args.percentile, "pooling": "mean+std of sqrt(features) over locations",
               "images": len(fit), "val_images": len(val), "val_confident": round(kept, 4)}
    name = write_section(Path(args.bundle), bundle.manifest, stats, section)
    load_bundle(args.bundle)  # what was written reads back, hashes and all
    print(escape(f"{args.bundle}: {name}: {len(fit)} images fit, {len(val)} validation; distance q50 "
                 f"{stats.q50:.2f} q95 {stats.q95:.2f}; threshold {threshold:.4f} (percentile {args.percentile:g}): "
                 f"{kept:.1%} of validation captions confident"), file=sys.stdout)
    return 0
