"""A training run: data -> vocabulary -> tf.data -> Keras fit with checkpoints, all saved in one run folder.

run_dir/config.json   the resolved configuration (travels into the bundle manifest)
run_dir/vocab.json    the vocabulary
run_dir/checkpoints/  last.weights.h5 (every epoch), best.weights.h5 (best validation loss)
run_dir/history.csv   per-epoch metrics
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from scenecap import ScenecapError, __version__
from scenecap.edge.fileio import atomic_write_text
from scenecap.edge.preprocess import PreprocessSpec
from scenecap.edge.vocab import Vocab
from scenecap.train.datasets import Sample, load_coco
from scenecap.train.model import ModelConfig
from scenecap.train.text import TextOptions, build_vocab, tokenize

log = logging.getLogger("scenecap.train")


@dataclass
class TrainConfig:
    train: str  # annotation file of the training split
    val: str | None = None  # annotation file of the validation split
    images: str | None = None  # image folder (default: images/ beside the annotation file)
    out: str = "runs/latest"
    language: str = "en"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    min_count: int = 1
    max_vocab: int | None = None
    resize: str = "area"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(vocab_size=0))
    text: TextOptions = field(default_factory=TextOptions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scenecap_version"] = __version__
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d.pop("scenecap_version", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ScenecapError(f"train config: unknown keys {unknown}; expected some of {sorted(known)}")
        model = ModelConfig.from_dict(d.pop("model", {}) or {"vocab_size": 0})
        text = TextOptions(**(d.pop("text", {}) or {}))
        return cls(model=model, text=text, **d)

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec(self.model.image_size, self.model.image_size, self.resize)


def load_split(path: str | None, images: str | None, split: str) -> list[Sample]:
    if not path:
        return []
    return load_coco(path, images, split)


def run(cfg: TrainConfig) -> Path:
    """Train and return the run folder. Imports TensorFlow here, not at module import."""
    import keras
    import tensorflow as tf

    from scenecap.train.model import build, masked_accuracy, masked_loss
    from scenecap.train.pipeline import caption_dataset, encode_captions

    out = Path(cfg.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)

    train_samples = load_split(cfg.train, cfg.images, "train")
    val_samples = load_split(cfg.val, cfg.images, "val")
    if not train_samples:
        raise ScenecapError(f"{cfg.train}: no training images")
    vocab = build_vocab((tokenize(c, cfg.text) for s in train_samples for c in s.captions), cfg.min_count,
                        cfg.max_vocab)
    cfg.model.vocab_size = len(vocab)
    vocab.save(out / "vocab.json")
    atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False))
    log.info("%d training images, %d validation images, vocabulary %d words", len(train_samples),
             len(val_samples), len(vocab))

    enc = encode_captions(train_samples, vocab, cfg.model.max_length, cfg.text)
    if enc.truncated:
        log.warning("%d training captions were longer than max_length=%d and were truncated", enc.truncated,
                    cfg.model.max_length)
    spec = cfg.preprocess
    train_ds = caption_dataset(train_samples, enc, spec, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_ds = None
    if val_samples:
        venc = encode_captions(val_samples, vocab, cfg.model.max_length, cfg.text)
        val_ds = caption_dataset(val_samples, venc, spec, cfg.batch_size, shuffle=False, seed=cfg.seed)

    model = build(cfg.model)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=5.0),
                  loss=masked_loss(vocab.pad), metrics=[masked_accuracy(vocab.pad)])
    monitor = "val_loss" if val_ds is not None else "loss"
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(out / "checkpoints" / "last.weights.h5"), save_weights_only=True),
        keras.callbacks.ModelCheckpoint(str(out / "checkpoints" / "best.weights.h5"), save_weights_only=True,
                                        save_best_only=True, monitor=monitor),
        keras.callbacks.CSVLogger(str(out / "history.csv")),
    ]
    verbose = 1 if os.isatty(1) else 2  # a bar on a terminal, one line per epoch in logs
    tf.get_logger().setLevel("ERROR")
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks, verbose=verbose)
    return out


def load_trained(run_dir: str | Path, checkpoint: str = "best"):
    """(model, TrainConfig, Vocab) from a run folder."""
    from scenecap.train.model import build

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ScenecapError(f"{run_dir}: no config.json; expected a training run folder from 'scenecap train'")
    cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    vocab = Vocab.load(run_dir / "vocab.json")
    ckpt = run_dir / "checkpoints" / f"{checkpoint}.weights.h5"
    if not ckpt.is_file():
        ckpt = run_dir / "checkpoints" / "last.weights.h5"
    if not ckpt.is_file():
        raise ScenecapError(f"{run_dir / 'checkpoints'}: no {checkpoint}.weights.h5 or last.weights.h5")
    model = build(cfg.model)
    model.load_weights(str(ckpt))
    return model, cfg, vocab
