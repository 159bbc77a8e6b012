"""Backbone feature maps extracted once into sharded TFRecord files, streamed back during training.

cache_root/<key>/meta.json           what the features are of (count, shape, backbone, preprocessing)
cache_root/<key>/shard-00000.tfrecord  `shard_size` images each: {index: int64, fmap: float16 bytes [L, C]}

The key hashes the backbone's actual weights, the preprocessing and the image list, so a cache is reused
exactly when it is still right, and runs with different backbones can share one cache_root. Each shard is
written to a temporary file and renamed when complete: an interrupted extraction resumes at the first
missing shard. Training streams shards (interleaved, shuffled within a buffer), never all in RAM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from scenecap import ScenecapError
from scenecap.edge.fileio import atomic_write_text, read_json
from scenecap.edge.preprocess import PreprocessSpec

log = logging.getLogger("scenecap.train")
CACHE_FORMAT = "scenecap-feature-cache"
SHUFFLE_BUFFER = 2048  # feature maps held for shuffling while streaming


def cache_key(backbone, spec: PreprocessSpec, paths: list[str], dtype: str) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_FORMAT}/1 {json.dumps(spec.to_json(), sort_keys=True)} {dtype}\n".encode())
    for w in backbone.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    for p in paths:
        h.update(p.encode("utf-8") + b"\n")
    return h.hexdigest()[:20]


@dataclass
class FeatureCache:
    folder: Path
    count: int
    shape: tuple[int, int]  # (locations, channels)
    shard_size: int

    @property
    def shards(self) -> list[Path]:
        n = -(-self.count // self.shard_size)
        return [self.folder / f"shard-{i:05d}.tfrecord" for i in range(n)]

    def dataset(self, shuffle_seed: int | None = None) -> tf.data.Dataset:
        """(index, fmap float32 [L, C]) elements; shuffled by shard order and within a buffer when seeded."""
        files = [str(p) for p in self.shards]
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(files))
            files = [files[i] for i in order]
        ds = tf.data.Dataset.from_tensor_slices(files)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.apply(tf.data.experimental.assert_cardinality(self.count))
        if shuffle_seed is not None:
            ds = ds.shuffle(min(self.count, SHUFFLE_BUFFER), seed=shuffle_seed, reshuffle_each_iteration=False)
        shape = self.shape
        return ds.map(lambda r: _parse(r, shape), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def read(self, indices: list[int]) -> np.ndarray:
        """Feature maps of a few images (validation captioning), in the order asked."""
        want = {i: k for k, i in enumerate(indices)}
        out = np.zeros((len(indices), *self.shape), np.float32)
        for shard in sorted({i // self.shard_size for i in indices}):
            for index, fmap in self._shard_dataset(shard).as_numpy_iterator():
                if int(index) in want:
                    out[want[int(index)]] = fmap
        return out

    def _shard_dataset(self, shard: int) -> tf.data.Dataset:
        shape = self.shape
        return tf.data.TFRecordDataset(str(self.shards[shard])).map(lambda r: _parse(r, shape))


_SPEC = {"index": tf.io.FixedLenFeature([], tf.int64), "fmap": tf.io.FixedLenFeature([], tf.string)}


def _parse(record, shape):
    ex = tf.io.parse_single_example(record, _SPEC)
    return ex["index"], tf.cast(tf.reshape(tf.io.decode_raw(ex["fmap"], tf.float16), shape), tf.float32)


def _example(index: int, fmap: np.ndarray) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
        "fmap": tf.train.Feature(bytes_list=tf.train.BytesList(value=[fmap.astype(np.float16).tobytes()])),
    })).SerializeToString()


def extract(model, paths: list[str], spec: PreprocessSpec, cache_root: str | Path, name: str,
            batch_size: int = 32, shard_size: int = 1024, progress: bool = True) -> FeatureCache:
    """Feature maps of `paths` through `model.feature_map` (the frozen backbone), cached under cache_root."""
    cache = _open(model, paths, spec, Path(cache_root), name, shard_size)
    missing = [i for i, p in enumerate(cache.shards) if not p.is_file()]
    done = len(paths) - sum(min(shard_size, len(paths) - i * shard_size) for i in missing)
    if not missing:
        log.info("%s features: reusing %s (%d images)", name, cache.folder, len(paths))
        return cache
    log.info("%s features: extracting %d images into %s%s", name, len(paths) - done, cache.folder,
             f" (resuming: {done} already done)" if done else "")

    @tf.function(reduce_retracing=True)
    def features(images):
        return model.feature_map(images, training=False)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), initial=done, desc=f"{name} features", unit="img", disable=None)
    for shard in missing:
        _write_shard(cache, shard, paths, spec, batch_size, features, bar)
    if bar:
        bar.close()
    return cache


def _open(model, paths: list[str], spec: PreprocessSpec, cache_root: Path, name: str, shard_size: int) -> FeatureCache:
    """The cache folder of these images through this backbone: its meta.json checked, or written when new."""
    key = cache_key(model.backbone, spec, paths, model.backbone.compute_dtype)
    folder = cache_root / key
    folder.mkdir(parents=True, exist_ok=True)
    shape = (model.locations, model.backbone_channels)
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        old = read_json(meta_path, "feature cache description")
        want = {"key": key, "shard_size": shard_size, "count": len(paths)}
        if not isinstance(old, dict) or any(old.get(k) != v for k, v in want.items()):
            raise ScenecapError(f"{folder}: feature cache of other images or shard size; delete it to rebuild")
    else:
        meta = {"format": CACHE_FORMAT, "version": 1, "key": key, "count": len(paths), "shape": list(shape),
                "shard_size": shard_size, "dtype": "float16", "split": name, "preprocess": spec.to_json(),
                "backbone": {"name": model.cfg.backbone, "alpha": model.cfg.alpha, "weights": model.cfg.weights}}
        atomic_write_text(meta_path, json.dumps(meta, indent=2, ensure_ascii=False))
    return FeatureCache(folder, len(paths), shape, shard_size)


def _write_shard(cache: FeatureCache, shard: int, paths: list[str], spec: PreprocessSpec, batch_size: int,
                 features, bar) -> None:
    """One shard's feature maps into a temporary file, renamed into place only when complete."""
    from scenecap.train.pipeline import image_dataset

    lo, hi = shard * cache.shard_size, min(len(paths), (shard + 1) * cache.shard_size)
    images = image_dataset(paths[lo:hi], spec).batch(batch_size).prefetch(2)
    target = cache.shards[shard]
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=cache.folder)
    os.close(fd)
    try:
        index = lo
        with tf.io.TFRecordWriter(tmp) as writer:
            for batch in images:
                fmaps = features(batch).numpy()
                for fmap in fmaps:
                    writer.write(_example(index, fmap))
                    index += 1
                if bar:
                    bar.update(len(fmaps))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
