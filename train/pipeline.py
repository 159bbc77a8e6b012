"""tf.data input: decode and resize with the edge runtime's own preprocessing, then pair images with captions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from scenecap.edge.images import load_image
from scenecap.edge.preprocess import PreprocessSpec, prepare
from scenecap.edge.vocab import Vocab
from scenecap.train.datasets import Sample
from scenecap.train.text import TextOptions, tokenize


@dataclass
class EncodedCaptions:
    tokens: np.ndarray  # [N images, K captions, T] int32, padded with the pad id
    counts: np.ndarray  # [N] how many of the K rows are real captions
    truncated: int  # captions cut to fit max_length


def encode_captions(samples: list[Sample], vocab: Vocab, max_length: int, opts: TextOptions) -> EncodedCaptions:
    k = max(1, max(len(s.captions) for s in samples))
    out = np.full((len(samples), k, max_length), vocab.pad, np.int32)
    counts = np.zeros(len(samples), np.int32)
    truncated = 0
    for i, s in enumerate(samples):
        for j, cap in enumerate(s.captions):
            ids = vocab.encode(tokenize(cap, opts))
            if len(ids) > max_length:
                ids = ids[: max_length - 1] + [vocab.end]
                truncated += 1
            out[i, j, : len(ids)] = ids
        counts[i] = len(s.captions)
    return EncodedCaptions(out, counts, truncated)


def load_prepared(path: str, spec: PreprocessSpec) -> np.ndarray:
    return prepare(load_image(path), spec)


def image_dataset(paths: list[str], spec: PreprocessSpec) -> tf.data.Dataset:
    """Paths -> uint8 [H, W, 3] images, decoded in parallel by the same code the edge runtime uses."""

    def _load(p):
        return load_prepared(p.decode("utf-8"), spec)

    ds = tf.data.Dataset.from_tensor_slices(paths)
    ds = ds.map(lambda p: tf.numpy_function(_load, [p], tf.uint8, stateful=False),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.map(lambda x: tf.ensure_shape(x, (spec.height, spec.width, 3)))


def caption_dataset(samples: list[Sample], enc: EncodedCaptions, spec: PreprocessSpec, batch_size: int,
                    shuffle: bool, seed: int, cache: bool | str = True,
                    drop_remainder: bool = False) -> tf.data.Dataset:
    """((images, input tokens), target tokens): one random reference caption per image per epoch."""
    images = image_dataset([str(s.image) for s in samples], spec)
    if cache:
        images = images.cache(cache if isinstance(cache, str) else "")
    caps = tf.data.Dataset.from_tensor_slices((enc.tokens, enc.counts))
    ds = tf.data.Dataset.zip((images, caps))
    if shuffle:
        ds = ds.shuffle(min(len(samples), 10_000), seed=seed, reshuffle_each_iteration=True)
    rng = tf.random.Generator.from_seed(seed)

    def pick(image, cap):
        tokens, count = cap
        j = rng.uniform((), 0, tf.maximum(count, 1), dtype=tf.int32)
        seq = tokens[j]
        return (image, seq[:-1]), seq[1:]

    ds = ds.map(pick, num_parallel_calls=1)  # the Generator is stateful: keep it on one thread
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
