"""`scenecap calibrate`: store image statistics and the unsure threshold in a bundle. Never imports TensorFlow.

It runs the bundle's own encoder and decoder on in-distribution images: the encoder features of --images fit the
image Gaussian (edge/confidence.py); --val-images (else the last quarter of --images, held out from the fit) place
the familiarity scale and, captioned, choose the threshold that keeps (100 - percentile)% of them confident.
With --outlier-images (photographs and other pictures the bundle must not describe confidently, never the ones
you test it on), the statistics also get an outlier direction (edge/confidence.py): familiarity then falls for
images that look more like those than like the scenes, which a Gaussian of the scenes alone can miss.
With --second-look, each validation caption is also read along its image zoomed in (edge/confidence.py), and a
second threshold is stored for captions that take that look ('scenecap caption --second-look').
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
from scenecap.edge.confidence import MAX_COMPONENTS, SECOND_LOOK_ZOOM

log = logging.getLogger("scenecap.edge.calibrate")

DEFAULT_PERCENTILE = 2.0  # 98% of validation captions confident: room for held-out images to land lower
MIN_IMAGES = 20
SECTION_VERSION = "1.2"  # the format that first read the section
DIRECTION_VERSION = "1.3"  # ... and its outlier direction
SECOND_LOOK_VERSION = "1.4"  # ... and the second look's threshold

EXAMPLES = """examples:
  scenecap synth data/calib --train 600 --val 200 --test 0 --seed 11 --style classic --size 96
  scenecap calibrate demo/bundle --images data/calib/images/train --val-images data/calib/images/val
  scenecap calibrate demo/bundle --images data/calib/images/train --val-images data/calib/images/val \\
      --outlier-images photos/   # pictures it must be unsure of: familiarity also falls towards them
  scenecap calibrate demo/bundle ... --second-look   # and a threshold for 'scenecap caption --second-look'

The statistics describe the images the bundle was trained on: calibrate with fresh images of the same kind
(never the test images you judge it on; the same for outlier images). Captions of images unlike them, or whose
words the decoder is unsure of, fall below the threshold and are marked unsure ('scenecap caption --help':
--min-confidence, --unsure)."""


@dataclass
class Measured:
    """One image through the bundle: its pooled encoder features and its caption's word confidence."""

    pooled: np.ndarray
    word: float
    look: float | None = None  # the second look, when calibrating one


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
    p.add_argument("--outlier-images", metavar="DIR",
                   help="pictures the bundle must mark unsure (photographs, textures, anything but its scenes; "
                   f"at least {MIN_IMAGES}): adds an outlier direction to the statistics (bundle format 1.3)")
    p.add_argument("--components", type=int_in(1, MAX_COMPONENTS, "the most the bundle format holds"),
                   default=MAX_COMPONENTS, metavar="K",
                   help="PCA dimensions of the image Gaussian, 1-16 (default 16)")
    p.add_argument("--percentile", type=float_in(0, 5, ">= 95% of in-distribution captions stay confident"),
                   default=DEFAULT_PERCENTILE, metavar="P",
                   help=f"threshold at this percentile of validation confidences: P%% of in-distribution "
                   f"captions are marked unsure (default {DEFAULT_PERCENTILE:g}, at most 5)")
    p.add_argument("--second-look", action="store_true",
                   help="also read each validation caption along its image zoomed in and store the threshold "
                   "for captions that take that look ('scenecap caption --second-look'; about twice the "
                   "calibration time)")
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


def measure(captioner, path: Path, look: bool = False) -> Measured:
    """Encode and caption one image with the bundle's own models (and take the second look, if asked)."""
    from scenecap.edge import confidence as conf
    from scenecap.edge.images import load_image
    from scenecap.edge.preprocess import prepare

    image = prepare(load_image(path), captioner.bundle.manifest.preprocess)
    feats = captioner.encode(image)
    cap = captioner.decode(feats, image=image)
    second = None
    if look:
        second = captioner.look_again(image, cap.hypothesis.tokens, SECOND_LOOK_ZOOM) if cap.tokens else 1.0
    return Measured(conf.pooled_features(feats["features"]), cap.word_confidence, second)


def stats_bytes(stats) -> bytes:
    """The stats file: an uncompressed .npz of float32 arrays (read back with allow_pickle=False)."""
    buf = io.BytesIO()
    np.savez(buf, **stats.arrays())
    return buf.getvalue()


def pooled_only(captioner, path: Path) -> np.ndarray:
    """One image's pooled encoder features (an outlier image: no caption needed)."""
    from scenecap.edge import confidence as conf
    from scenecap.edge.images import load_image
    from scenecap.edge.preprocess import prepare

    feats = captioner.encode(prepare(load_image(path), captioner.bundle.manifest.preprocess))
    return conf.pooled_features(feats["features"])


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
    needed = SECOND_LOOK_VERSION if "second_look" in section else \
        DIRECTION_VERSION if stats.direction is not None else SECTION_VERSION
    if tuple(map(int, data["format_version"].split("."))) < tuple(map(int, needed.split("."))):
        data["format_version"] = needed
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
    val = [measure(captioner, p, args.second_look) for p in val_paths]
    outliers = [pooled_only(captioner, p) for p in image_files(args.outlier_images)] if args.outlier_images else []
    stats = conf.fit_stats(np.stack([m.pooled for m in fit]), args.components)
    stats = conf.with_references(stats, np.array([conf.distance(stats, m.pooled) for m in val]))
    if outliers:
        direction = conf.fit_direction(np.stack([m.pooled for m in fit]), np.stack(outliers))
        stats = conf.with_direction(stats, direction, np.stack([m.pooled for m in val]))
    confidences = np.array([conf.combine(m.word, conf.image_familiarity(stats, m.pooled)) for m in val])
    threshold = conf.threshold_at(confidences, args.percentile)
    kept = float((confidences >= threshold).mean())
    section = {"components": int(stats.components.shape[0]), "pooled_dim": int(stats.mean.shape[0]),
               "references": int(stats.references.size), "threshold": round(threshold, 6),
               "percentile": args.percentile, "pooling": "mean+std of sqrt(features) over locations",
               "images": len(fit), "val_images": len(val), "val_confident": round(kept, 4)}
    if outliers:
        section.update(direction_references=int(stats.direction_references.size), outlier_images=len(outliers),
                       direction="Fisher discriminant towards the outlier images")
    looked = ""
    if args.second_look:
        both = np.array([conf.combine(m.word, conf.image_familiarity(stats, m.pooled), m.look) for m in val])
        t2 = conf.threshold_at(both, args.percentile)
        section["second_look"] = {"zoom": SECOND_LOOK_ZOOM, "threshold": round(t2, 6),
                                  "val_confident": round(float((both >= t2).mean()), 4)}
        looked = f"; with the second look threshold {t2:.4f}"
    name = write_section(Path(args.bundle), bundle.manifest, stats, section)
    load_bundle(args.bundle)  # what was written reads back, hashes and all
    print(escape(f"{args.bundle}: {name}: {len(fit)} images fit, {len(val)} validation"
                 f"{f', {len(outliers)} outlier' if outliers else ''}; distance q50 {stats.q50:.2f} q95 "
                 f"{stats.q95:.2f}; threshold {threshold:.4f} (percentile {args.percentile:g}): "
                 f"{kept:.1%} of validation captions confident{_outliers_unsure(stats, outliers, threshold)}"
                 f"{looked}"),
          file=sys.stdout)
    return 0


def _outliers_unsure(stats, outliers: list[np.ndarray], threshold: float) -> str:
    """How many of the outlier images themselves fall below the threshold on familiarity alone (an upper bound on
    their confidence: word confidence is at most 1). In-sample: judge the gate on other images."""
    if not outliers:
        return ""
    from scenecap.edge import confidence as conf

    below = np.mean([conf.image_familiarity(stats, p) < threshold for p in outliers])
    return f"; {below:.1%} of the outlier images unsure on familiarity alone"
