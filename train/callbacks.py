"""What happens around the training steps: resumable checkpoints, the best checkpoint and early stopping on a
validation metric, validation captioning (BLEU/CIDEr), TensorBoard logs and the per-epoch progress bar.

checkpoints/last.weights.h5   after every epoch          checkpoints/best.weights.h5  best by the monitor
checkpoints/resume/           weights + optimizer state + state.json (epoch, step, best, patience), swapped
                              in atomically every epoch (and every N steps): `--resume` continues from it
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scenecap import ScenecapError
from scenecap.edge.errors import first_line
from scenecap.edge.fileio import atomic_write_text, read_json

log = logging.getLogger("scenecap.train")


# --- run state and checkpoints ------------------------------------------------------------------------------

@dataclass
class RunState:
    epoch: int = 0  # the epoch to run next (0-based)
    step: int = 0  # batches of that epoch already trained
    global_step: int = 0
    optimizer_iterations: int = 0
    phase: str = "frozen"  # backbone frozen or trainable: which optimizer the saved state belongs to
    best: float | None = None
    best_epoch: int = -1
    wait: int = 0  # epochs since the monitor last improved
    finished: bool = False
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


class Checkpointer:
    """Writes only on the chief; every write is atomic, so a kill at any moment leaves a loadable state."""

    def __init__(self, run_dir: Path, chief: bool):
        self.dir = run_dir / "checkpoints"
        self.chief = chief
        self.resume_dir = self.dir / "resume"

    def save_weights(self, model, name: str) -> None:
        if not self.chief:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".weights.h5", dir=self.dir)
        os.close(fd)
        try:
            model.save_weights(tmp, overwrite=True)
            os.replace(tmp, self.dir / f"{name}.weights.h5")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_state(self, model, optimizer, state: RunState) -> None:
        if not self.chief:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".resume.", dir=self.dir))
        try:
            model.save_weights(str(tmp / "model.weights.h5"))
            arrays = {f"v{i:04d}": np.asarray(v) for i, v in enumerate(optimizer.variables)}
            with open(tmp / "optimizer.npz", "wb") as f:
                np.savez(f, **arrays)
            names = [v.path for v in optimizer.variables]
            (tmp / "optimizer.json").write_text(json.dumps(names), encoding="utf-8")
            (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")
            old = self.dir / "resume.old"
            shutil.rmtree(old, ignore_errors=True)
            if self.resume_dir.exists():
                self.resume_dir.rename(old)
            tmp.rename(self.resume_dir)  # a kill between the renames leaves resume.old, which load_state reads
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _state_dir(self) -> Path | None:
        for d in (self.resume_dir, self.dir / "resume.old"):
            if (d / "state.json").is_file():
                return d
        return None

    def load_state(self) -> RunState | None:
        d = self._state_dir()
        if d is None:
            return None
        path = d / "state.json"
        try:
            return RunState(**read_json(path, "resume state"))
        except ScenecapError as e:
            raise ScenecapError(f"{e}; start over with --force") from None
        except TypeError as e:  # not the keys RunState has
            raise ScenecapError(f"{path}: unreadable resume state ({first_line(e)}); start over with --force") from None

    def restore_model(self, model) -> None:
        model.load_weights(str(self._state_dir() / "model.weights.h5"))

    def restore_optimizer(self, optimizer, variables) -> None:
        d = self._state_dir()
        if not getattr(optimizer, "built", False):
            optimizer.build(variables)
        with np.load(d / "optimizer.npz", allow_pickle=False) as z:
            arrays = [z[k] for k in sorted(z.files)]
        if len(arrays) != len(optimizer.variables) or any(
            tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, optimizer.variables, strict=False)
        ):
            raise ScenecapError(f"{d}: optimizer state does not fit this model ({len(arrays)} arrays for "
                                f"{len(optimizer.variables)} variables); was the config changed? start over with "
                                "--force")
        for v, a in zip(optimizer.variables, arrays, strict=True):
            v.assign(a)


def write_history(run_dir: Path, history: list[dict]) -> None:
    keys = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(run_dir / "history.csv", buf.getvalue())


# --- the monitored metric -----------------------------------------------------------------------------------

def resolve_monitor(monitor: str, has_val_loss: bool, has_captions: bool) -> str:
    if monitor == "auto":
        return "val_cider" if has_captions else "val_loss" if has_val_loss else "loss"
    if monitor == "val_loss" and not has_val_loss:
        raise ScenecapError("monitor val_loss needs validation data (--val) of at least one global batch")
    if monitor in ("val_cider", "val_bleu4") and not has_captions:
        raise ScenecapError(f"monitor {monitor} needs validation data (--val) and val_caption_images > 0")
    return monitor


def improved(value: float, best: float | None, monitor: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if monitor.endswith("loss") else value > best


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
