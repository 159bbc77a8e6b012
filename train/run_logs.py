"""What a run reports while it trains: BLEU/CIDEr of greedy captions for a fixed validation subset, TensorBoard
logs (scalars, sample images with their captions) and the per-epoch progress bar or log line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("scenecap.train")


# --- validation captions ------------------------------------------------------------------------------------

class CaptionScorer:
    """Greedy captions for a fixed validation subset -> BLEU/CIDEr (pycocoevalcap), plus a few samples."""

    def __init__(self, model, vocab, inputs: np.ndarray, references: list[list[str]], from_features: bool,
                 text_opts, batch_size: int = 32):
        import tensorflow as tf

        self.vocab, self.inputs, self.references = vocab, inputs, references
        self.text_opts, self.batch_size = text_opts, batch_size
        units, steps = model.cfg.units, model.cfg.max_length - 1
        start = vocab.start

        @tf.function(reduce_retracing=True)
        def decode(x):
            features, keys = model.project(x) if from_features else model.encode(x)
            b = tf.shape(x)[0]
            hidden = tf.zeros((b, units), tf.float32)
            token = tf.fill([b], tf.constant(start, tf.int32))
            out = tf.TensorArray(tf.int32, size=steps)
            for t in tf.range(steps):
                logits, hidden, _ = model.step(token, hidden, features, keys)
                hidden = tf.cast(hidden, tf.float32)
                token = tf.cast(tf.argmax(logits, -1), tf.int32)
                out = out.write(t, token)
            return tf.transpose(out.stack())

        self._decode = decode

    def captions(self) -> list[str]:
        out = []
        for i in range(0, len(self.inputs), self.batch_size):
            ids = self._decode(self.inputs[i : i + self.batch_size]).numpy()
            out += [" ".join(self.vocab.decode(row)) for row in ids]
        return out

    def __call__(self) -> tuple[dict[str, float], list[str]]:
        from scenecap.train.metrics import caption_metrics

        hyps = self.captions()
        scores = caption_metrics(dict(enumerate(self.references)), dict(enumerate(hyps)), meteor=False,
                                 opts=self.text_opts)
        logs = {"val_bleu1": scores.get("BLEU-1", 0.0), "val_bleu4": scores.get("BLEU-4", 0.0),
                "val_rouge_l": scores.get("ROUGE-L", 0.0), "val_cider": scores.get("CIDEr-D", 0.0)}
        return logs, hyps


# --- TensorBoard --------------------------------------------------------------------------------------------

class TensorBoardLog:
    """run_dir/tensorboard/{train,validation}: loss, learning rate, BLEU/CIDEr, sample captions with images."""

    def __init__(self, run_dir: Path, enabled: bool):
        import tensorflow as tf

        self.tf = tf
        self.enabled = enabled
        if enabled:
            root = run_dir / "tensorboard"
            self.train = tf.summary.create_file_writer(str(root / "train"))
            self.val = tf.summary.create_file_writer(str(root / "validation"))

    def step(self, global_step: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        with self.train.as_default(step=global_step):
            self.tf.summary.scalar("batch_loss", loss)
            self.tf.summary.scalar("learning_rate", lr)

    def epoch(self, epoch: int, logs: dict) -> None:
        if not self.enabled:
            return
        tf = self.tf
        with self.train.as_default(step=epoch + 1):
            for k, v in logs.items():
                if not k.startswith("val_") and isinstance(v, (int, float)) and k != "epoch":
                    tf.summary.scalar(f"epoch_{k}", v)
        with self.val.as_default(step=epoch + 1):
            for k, v in logs.items():
                if k.startswith("val_") and isinstance(v, (int, float)):
                    tf.summary.scalar(f"epoch_{k[4:]}", v)
        self.train.flush()
        self.val.flush()

    def samples(self, epoch: int, images: np.ndarray | None, generated: list[str], references: list[list[str]]):
        if not self.enabled or not generated:
            return
        tf = self.tf
        with self.val.as_default(step=epoch + 1):
            if images is not None:
                tf.summary.image("samples", images, max_outputs=len(images))
            rows = ["| # | generated | a reference |", "|---|---|---|"]
            rows += [f"| {i} | {g or '(empty)'} | {r[0] if r else ''} |"
                     for i, (g, r) in enumerate(zip(generated, references, strict=False))]
            tf.summary.text("sample_captions", "\n".join(rows))
        self.val.flush()


# --- progress -----------------------------------------------------------------------------------------------

class EpochProgress:
    """A tqdm bar per epoch on a terminal; in logs, one readable line per epoch."""

    def __init__(self, epochs: int, enabled: bool, bars: bool = True):
        self.epochs, self.enabled, self.bars, self.bar = epochs, enabled, bars, None

    def start(self, epoch: int, steps: int, done: int = 0) -> None:
        if not (self.enabled and self.bars) or not sys.stderr.isatty():
            return
        from tqdm import tqdm

        self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                        dynamic_ncols=True, leave=True)

    def update(self, loss: float, acc: float) -> None:
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", word_acc=f"{acc:.3f}", refresh=False)

    def end(self, epoch: int, logs: dict, seconds: float, images: int) -> None:
        if self.bar:
            self.bar.close()
            self.bar = None
        if self.enabled:
            shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float))
            log.info("epoch %d/%d: %s (%.1f s, %.0f images/s)", epoch + 1, self.epochs, shown, seconds,
                     images / max(seconds, 1e-9))
