"""tf.data input: decode and resize with the edge runtime's own preprocessing (one source of truth), pair each
image (or its cached feature map) with one of its captions, batch, prefetch.

Every epoch's order is a pure function of (seed, epoch): a run resumed in the middle of an epoch skips exactly
the batches it had already trained on. So is the optional augmentation (colour jitter, crop, flip): each image's
draw depends on (seed, epoch, index) only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from scenecap.edge.images import load_image
from scenecap.edge.preprocess import PreprocessSpec, prepare
from scenecap.edge.vocab import Vocab
from scenecap.train.config import AugmentConfig
from scenecap.train.datasets import Sample
from scenecap.train.text import TextOptions, tokenize

log = logging.getLogger("scenecap.train")
MEMORY_CACHE_LIMIT = 1 << 30  # decoded images kept in RAM when they take less than this ("auto")

# Words a horizontal flip swaps, per language (as tokenised: lower case, Arabic with its article). A caption in
# a language missing here is never flipped: mirroring its image would make its left/right words false.
FLIP_WORDS = {
    "en": {"left": "right", "right": "left"},
    "ar": {"اليسار": "اليمين", "اليمين": "اليسار", "يسار": "يمين", "يمين": "يسار"},
}
HUE_DELTA = 0.02  # of the colour circle (~7 degrees); the named colours are 40+ degrees apart
BRIGHTNESS_DELTA, SATURATION_RANGE, MIN_CROP = 0.1, (0.85, 1.15), 0.85


def flip_words(words: list[str], lang: str) -> list[str]:
    """A caption's words as they read for the mirrored image (left and right swapped)."""
    swap = FLIP_WORDS[lang]
    return [swap.get(w, w) for w in words]


def can_flip(lang: str | None) -> bool:
    return lang in FLIP_WORDS


@dataclass
class EncodedCaptions:
    tokens: np.ndarray  # [N images, K captions, T] int32, padded with the pad id
    counts: np.ndarray  # [N] how many of the K rows are real captions
    truncated: int  # captions cut to fit max_length


def encode_captions(samples: list[Sample], vocab: Vocab, max_length: int, opts: TextOptions,
                    flip_lang: str | None = None) -> EncodedCaptions:
    """Token ids of every caption; with flip_lang, of the captions as they read for the mirrored images."""
    k = max(1, max(len(s.captions) for s in samples))
    out = np.full((len(samples), k, max_length), vocab.pad, np.int32)
    counts = np.zeros(len(samples), np.int32)
    truncated = 0
    for i, s in enumerate(samples):
        for j, cap in enumerate(s.captions):
            words = tokenize(cap, opts)
            ids = vocab.encode(flip_words(words, flip_lang) if flip_lang else words)
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


def _distribution_options() -> tf.data.Options:
    opts = tf.data.Options()
    # Shard by element: our sources are index ranges and numpy_function decoders, not one file per worker.
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    opts.deterministic = True
    return opts


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**31 - 1)


class CaptionData:
    """((inputs, input tokens), target tokens) batches for one split; `epoch(e)` builds epoch e's pipeline.

    inputs are uint8 images (fine-tune) or float32 feature maps read from the feature cache (cached mode)."""

    def __init__(self, n: int, enc: EncodedCaptions, batch_size: int, seed: int, shuffle: bool,
                 drop_remainder: bool, images: tf.data.Dataset | None = None, paths: list[str] | None = None,
                 spec: PreprocessSpec | None = None, features=None, augment: AugmentConfig | None = None,
                 flipped: EncodedCaptions | None = None):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.drop_remainder = drop_remainder
        self.tokens = tf.constant(enc.tokens)
        self.counts = tf.constant(enc.counts)
        self.cached_images = images  # decoded once into RAM (tf.data cache), shared by every epoch
        self.paths, self.spec, self.features = paths, spec, features
        self.augment = augment if augment and (augment.colour or augment.crop or augment.flip) else None
        if self.augment and features is not None:
            log.info("augmentation skipped: cached features are computed once per image (use mode=finetune)")
            self.augment = None
        # flipped: the captions' tokens for mirrored images; without them (no lexicon) nothing is flipped
        self.flipped = tf.constant(flipped.tokens) if self.augment and self.augment.flip and flipped else None

    @property
    def steps(self) -> int:
        return self.n // self.batch_size if self.drop_remainder else -(-self.n // self.batch_size)

    def _attach_caption(self, epoch: int):
        seed = _epoch_seed(self.seed, epoch)

        def attach(index, x):
            count = tf.maximum(self.counts[index], 1)
            j = tf.random.stateless_uniform((), seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)]),
                                            minval=0, maxval=count, dtype=tf.int32)
            seq = self.tokens[index][j]
            if self.flipped is not None:  # mirror the image and read its caption the mirrored way, together
                flip = _draw(seed, index, 3) < 0.5
                x = tf.cond(flip, lambda: tf.image.flip_left_right(x), lambda: x)
                seq = tf.cond(flip, lambda: self.flipped[index][j], lambda: seq)
            return (x, seq[:-1]), seq[1:]

        return attach

    def epoch(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        seed = _epoch_seed(self.seed, epoch)
        if self.features is not None:
            ds = self.features.dataset(seed if self.shuffle else None)
        elif self.cached_images is not None:
            ds = tf.data.Dataset.zip(tf.data.Dataset.range(self.n), self.cached_images)
            if self.shuffle:
                ds = ds.shuffle(self.n, seed=seed, reshuffle_each_iteration=False)
        else:  # shuffle indices (cheap), then decode in parallel: nothing but the prefetch buffer in RAM
            ds = tf.data.Dataset.range(self.n)
            if self.shuffle:
                ds = ds.shuffle(self.n, seed=seed, reshuffle_each_iteration=False)
            paths = tf.constant(self.paths)
            spec = self.spec

            def load(i):
                image = tf.numpy_function(lambda p: load_prepared(p.decode("utf-8"), spec), [paths[i]], tf.uint8,
                                          stateful=False)
                return i, tf.ensure_shape(image, (spec.height, spec.width, 3))

            ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.augment and (self.augment.colour or self.augment.crop):
            ds = ds.map(_jitter(self.augment, seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.map(self._attach_caption(epoch), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(self.batch_size, drop_remainder=self.drop_remainder)
        if skip_batches:
            ds = ds.skip(skip_batches)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(_distribution_options())


def _draw(seed: int, index, stream: int):
    """A uniform draw in [0, 1) that depends only on (epoch seed, image index, which draw)."""
    return tf.random.stateless_uniform((), seed=_seed_pair(seed, index, stream))


def _seed_pair(seed: int, index, stream: int):
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64) * 8 + stream + 1])


def _jitter(augment: AugmentConfig, seed: int):
    """(index, uint8 image) -> the same, colour-jittered and/or cropped and resized back."""

    def jitter(index, x):
        shape = tf.shape(x)
        img = tf.image.convert_image_dtype(x, tf.float32)
        if augment.crop:
            frac = MIN_CROP + (1 - MIN_CROP) * _draw(seed, index, 0)
            size = tf.stack([tf.cast(tf.cast(shape[0], tf.float32) * frac, tf.int32),
                             tf.cast(tf.cast(shape[1], tf.float32) * frac, tf.int32), 3])
            img = tf.image.stateless_random_crop(img, size, seed=_seed_pair(seed, index, 1))
            img = tf.image.resize(img, shape[:2], method="area")
        if augment.colour:
            img = tf.image.stateless_random_hue(img, HUE_DELTA, seed=_seed_pair(seed, index, 2))
            img = tf.image.stateless_random_brightness(img, BRIGHTNESS_DELTA, seed=_seed_pair(seed, index, 4))
            img = tf.image.stateless_random_saturation(img, *SATURATION_RANGE, seed=_seed_pair(seed, index, 5))
        out = tf.image.convert_image_dtype(tf.clip_by_value(img, 0.0, 1.0), tf.uint8, saturate=True)
        return index, tf.ensure_shape(out, x.shape)

    return jitter


def flipped_captions(samples: list[Sample], vocab: Vocab, max_length: int, opts: TextOptions,
                     augment: AugmentConfig | None, lang: str | None) -> EncodedCaptions | None:
    """The captions for mirrored images when flipping is asked for and the language says how, else None."""
    if not (augment and augment.flip):
        return None
    if not can_flip(lang):
        log.info("augment.flip skipped: no left/right lexicon for language %r (known: %s)", lang,
                 ", ".join(sorted(FLIP_WORDS)))
        return None
    return encode_captions(samples, vocab, max_length, opts, flip_lang=lang)


def image_source(samples: list[Sample], spec: PreprocessSpec, cache: str) -> tuple[tf.data.Dataset | None, list]:
    """(the decoded-image dataset to cache in RAM, or None to decode every epoch; the paths)."""
    paths = [str(s.image) for s in samples]
    size = len(paths) * spec.height * spec.width * 3
    use_memory = cache == "memory" or (cache == "auto" and size <= MEMORY_CACHE_LIMIT)
    if cache == "auto" and not use_memory:
        log.info("decoded images would take %.1f GiB: decoding them every epoch (cache_images=memory to force)",
                 size / 2**30)
    return (image_dataset(paths, spec).cache() if use_memory else None), paths


def caption_dataset(samples: list[Sample], enc: EncodedCaptions, spec: PreprocessSpec, batch_size: int,
                    shuffle: bool, seed: int, cache: bool | str = True,
                    drop_remainder: bool = False) -> tf.data.Dataset:
    """Epoch 0's ((images, input tokens), target tokens) batches, for a quick look or a plain Keras fit."""
    images, paths = image_source(samples, spec, "memory" if cache else "none")
    data = CaptionData(len(samples), enc, batch_size, seed, shuffle, drop_remainder, images=images, paths=paths,
                       spec=spec)
    return data.epoch(0)
