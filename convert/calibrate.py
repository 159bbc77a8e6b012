"""Calibration data from real inputs: the user's images for the encoder, and for the decoder step the
(token, hidden, features, keys) it really sees while the float model captions those images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from scenecap import ScenecapError
from scenecap.convert.export_reader import ExportInfo
from scenecap.edge.images import IMAGE_SUFFIXES, load_image
from scenecap.edge.preprocess import PreprocessSpec, prepare

log = logging.getLogger("scenecap.convert")


def calibration_paths(source: str | Path | None, export: ExportInfo, limit: int, seed: int = 0) -> list[Path]:
    """Image paths from a folder, a COCO/any annotation file, or (default) the training split of the export."""
    if source is None:
        cal = export.info.get("calibration", {})
        source = cal.get("annotations")
        if not source:
            raise ScenecapError(f"{export.path}: records no training data; pass --calibration-images DIR")
        images_dir = cal.get("images")
    else:
        images_dir = None
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        from scenecap.train.datasets import load_coco

        paths = [s.image for s in load_coco(source, images_dir)]
    else:
        raise ScenecapError(f"calibration images {source}: no such file or folder")
    if not paths:
        raise ScenecapError(f"calibration images {source}: no images found; expected JPEG/PNG files")
    rng = np.random.default_rng(seed)
    if len(paths) > limit:
        paths = [paths[i] for i in sorted(rng.choice(len(paths), limit, replace=False))]
    return paths


def load_calibration_images(paths: list[Path], spec: PreprocessSpec) -> list[np.ndarray]:
    images, bad = [], []
    for p in paths:
        try:
            images.append(prepare(load_image(p), spec))
        except ScenecapError as e:
            bad.append(str(e))
    if bad:
        log.warning("skipped %d unreadable calibration images, e.g. %s", len(bad), bad[0])
    if not images:
        raise ScenecapError(f"none of the {len(paths)} calibration images could be read (e.g. {bad[0]})")
    return images


def record_decoder_inputs(export: ExportInfo, images: list[np.ndarray], max_rows: int = 600,
                          seed: int = 0, progress: bool = True) -> list[dict[str, np.ndarray]]:
    """Caption each image greedily with the float SavedModel; keep the decoder's inputs at every step."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export.path))
    encode, step = loaded.signatures["encode"], loaded.signatures["decode_step"]
    tokens, units = export.info["tokens"], export.info["model"]["units"]
    rows = []
    it = images
    if progress:
        from tqdm import tqdm

        it = tqdm(images, desc="recording decoder inputs", unit="img", leave=False)
    for img in it:
        enc = encode(image=tf.constant(img[None]))
        hidden = np.zeros((1, units), np.float32)
        token = np.array([tokens["start"]], np.int32)
        for _ in range(export.info["max_length"] - 1):
            rows.append({"token": token, "hidden": hidden, "features": enc["features"].numpy(),
                         "keys": enc["keys"].numpy()})
            out = step(token=tf.constant(token), hidden=tf.constant(hidden), features=enc["features"],
                       keys=enc["keys"])
            hidden = out["new_hidden"].numpy()
            token = np.argmax(out["logits"].numpy(), axis=-1).astype(np.int32)
            if int(token[0]) == tokens["end"]:
                break
    rng = np.random.default_rng(seed)
    if len(rows) > max_rows:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), max_rows, replace=False))]
    return rows


def batch_rows(rows: list[dict[str, np.ndarray]], batch: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Group single-row decoder inputs into batches of `batch` rows (for beam-width decoders)."""
    if batch == 1:
        return rows
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    out = []
    for s in range(0, len(order) - batch + 1, batch):
        group = [rows[i] for i in order[s : s + batch]]
        out.append({k: np.concatenate([g[k] for g in group]) for k in group[0]})
    return out
