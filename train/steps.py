"""The training and validation steps: the masked loss, one distributed step each (`strategy.run`, the mean over
replicas), and the optimizer they apply in the current phase (backbone frozen, or trainable once unfrozen)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from scenecap.train.config import TrainConfig
from scenecap.train.model import ShowAttendTell


def masked_loss_and_accuracy(target: tf.Tensor, logits: tf.Tensor, pad: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean cross-entropy and word accuracy over the real tokens of `target` (pad positions count for nothing)."""
    logits = tf.cast(logits, tf.float32)
    ce = keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True)
    mask = tf.cast(tf.not_equal(target, pad), tf.float32)
    denom = tf.maximum(tf.reduce_sum(mask), 1.0)
    hit = tf.cast(tf.equal(target, tf.cast(tf.argmax(logits, -1), target.dtype)), tf.float32)
    return tf.reduce_sum(ce * mask) / denom, tf.reduce_sum(hit * mask) / denom


@dataclass
class Steps:
    """One phase's optimizer and the steps that use it; each step takes a distributed iterator and returns the
    (loss, word accuracy) of one global batch."""
    phase: str  # "frozen" or "trainable": the backbone's state, and which optimizer a saved state belongs to
    optimizer: keras.optimizers.Optimizer
    train: Callable
    validate: Callable


def phase_at(cfg: TrainConfig, epoch: int) -> tuple[str, float]:
    """(phase, learning rate) of `epoch`: cached mode and the first freeze_epochs keep the backbone frozen."""
    frozen = cfg.mode == "cached" or epoch < cfg.freeze_epochs
    lr = cfg.learning_rate if frozen or cfg.freeze_epochs == 0 else (cfg.finetune_learning_rate or cfg.learning_rate)
    return ("frozen" if frozen else "trainable"), lr


def steps_for(model: ShowAttendTell, strategy: tf.distribute.Strategy, cfg: TrainConfig, epoch: int,
              pad: int) -> Steps:
    """Set the backbone's phase for `epoch` and build a fresh optimizer and steps over what is then trainable."""
    phase, lr = phase_at(cfg, epoch)
    model.backbone.trainable = phase == "trainable"
    with strategy.scope():
        optimizer = keras.optimizers.Adam(lr, clipnorm=cfg.clipnorm)
        if cfg.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    train_fn, val_fn = _replica_steps(model, optimizer, cfg, pad, strategy.num_replicas_in_sync)
    if cfg.jit_compile:
        train_fn = tf.function(train_fn, jit_compile=True)
        val_fn = tf.function(val_fn, jit_compile=True)
    return Steps(phase, optimizer, _distributed(train_fn, strategy), _distributed(val_fn, strategy))


def _replica_steps(model, optimizer, cfg: TrainConfig, pad: int, replicas: int) -> tuple[Callable, Callable]:
    """The train and validation step on one replica's share of a batch."""
    from_features = cfg.mode == "cached"  # the inputs are cached backbone feature maps, not images
    variables = model.trainable_variables

    def forward(x, tokens, training):
        if from_features:
            features, keys = model.project(x)
            return model.unroll(tokens, features, keys)
        return model((x, tokens), training=training)

    def train_fn(batch):
        (x, tokens), target = batch
        with tf.GradientTape() as tape:
            loss, acc = masked_loss_and_accuracy(target, forward(x, tokens, True), pad)
            scaled = optimizer.scale_loss(loss / replicas)  # gradients are summed over replicas
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss, acc

    def val_fn(batch):
        (x, tokens), target = batch
        return masked_loss_and_accuracy(target, forward(x, tokens, False), pad)

    return train_fn, val_fn


def _distributed(fn: Callable, strategy) -> Callable:
    @tf.function
    def step(iterator):
        loss, acc = strategy.run(fn, args=(next(iterator),))
        return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.MEAN, acc, axis=None))

    return step
