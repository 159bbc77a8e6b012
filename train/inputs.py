"""What a run feeds its steps: the tf.data pipeline of each split (decoded images in finetune mode, backbone
feature maps from the feature cache in cached mode), and the fixed validation subset captioned every epoch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenecap.edge.vocab import Vocab
from scenecap.train.config import TrainConfig
from scenecap.train.datasets import Sample
from scenecap.train.model import ShowAttendTell
from scenecap.train.pipeline import CaptionData, encode_captions, flipped_captions, image_source, load_prepared

log = logging.getLogger("scenecap.train")
SAMPLE_IMAGES = 4  # validation images shown in TensorBoard with their generated captions


@dataclass
class RunInputs:
    train: CaptionData
    val: CaptionData | None
    scored: np.ndarray | None  # what the caption scorer decodes: the subset's feature maps (cached) or images
    references: list[list[str]]  # the captions of that subset
    sample_images: np.ndarray | None  # its first few images, for TensorBoard

    @property
    def has_val_loss(self) -> bool:
        return self.val is not None and self.val.steps > 0


def prepare_inputs(cfg: TrainConfig, model: ShowAttendTell, vocab: Vocab, train: list[Sample], val: list[Sample],
                   global_batch: int, drop_remainder: bool, out: Path, progress: bool) -> RunInputs:
    """Both splits' pipelines (extracting the feature cache first in cached mode) and the scored subset."""
    if cfg.mode == "cached" and (not cfg.model.weights or cfg.model.weights in ("none", "None")):
        log.warning("cached mode freezes the backbone, and --weights none leaves it random: its feature maps "
                    "carry almost nothing of the image. Use --weights imagenet or a .h5 file, or --mode finetune")
    split = dict(cfg=cfg, model=model, vocab=vocab, global_batch=global_batch, drop_remainder=drop_remainder,
                 out=out, progress=progress)
    train_data = _split_data(train, "train", **split)
    val_data = _split_data(val, "val", **split) if val else None
    if val_data is not None and val_data.steps == 0:
        log.warning("validation split smaller than one global batch (%d): no validation loss", global_batch)
    n_show = min(cfg.val_caption_images, len(val))
    if not n_show:
        return RunInputs(train_data, val_data, None, [], None)

    def images(count: int) -> np.ndarray:
        return np.stack([load_prepared(str(val[i].image), cfg.preprocess) for i in range(count)])

    k = min(SAMPLE_IMAGES, n_show)
    if cfg.mode == "cached":
        scored, sample_images = val_data.features.read(list(range(n_show))), images(k)
    else:
        scored = images(n_show)
        sample_images = scored[:k]
    return RunInputs(train_data, val_data, scored, [s.captions for s in val[:n_show]], sample_images)


def _split_data(samples: list[Sample], name: str, cfg: TrainConfig, model, vocab: Vocab, global_batch: int,
                drop_remainder: bool, out: Path, progress: bool) -> CaptionData:
    """One split's CaptionData; the training split is shuffled and, in finetune mode, may be augmented."""
    training = name == "train"
    enc = encode_captions(samples, vocab, cfg.model.max_length, cfg.text)
    common = dict(n=len(samples), enc=enc, batch_size=global_batch, seed=cfg.seed, shuffle=training,
                  drop_remainder=drop_remainder)
    spec = cfg.preprocess
    if cfg.mode == "cached":
        from scenecap.train.feature_cache import extract

        root = Path(cfg.feature_cache) if cfg.feature_cache else out / "features"
        features = extract(model, [str(s.image) for s in samples], spec, root, name, max(8, cfg.batch_size),
                           progress=progress)
        return CaptionData(**common, features=features)
    images, paths = image_source(samples, spec, cfg.cache_images)
    if not training:
        return CaptionData(**common, images=images, paths=paths, spec=spec)
    # Augmentation (off by default) draws on the training images only; a mirrored image gets the captions with
    # left and right swapped, where the language's lexicon says how.
    flipped = flipped_captions(samples, vocab, cfg.model.max_length, cfg.text, cfg.augment, cfg.language)
    return CaptionData(**common, images=images, paths=paths, spec=spec, augment=cfg.augment, flipped=flipped)
