"""A run's state between epochs and on disk: where it is (epoch, step), its best monitored value and patience,
its history, and the checkpoints that let `--resume` continue it.

checkpoints/last.weights.h5   after every epoch          checkpoints/best.weights.h5  best by the monitor
checkpoints/resume/           weights + optimizer state + state.json (epoch, step, best, patience), swapped
                              in atomically every epoch (and every N steps): `--resume` continues from it
history.csv                   one row of metrics per epoch
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
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
        lr = optimizer.learning_rate.numpy() if hasattr(optimizer.learning_rate, "assign") else None
        for v, a in zip(optimizer.variables, arrays, strict=True):
            v.assign(a)
        if lr is not None:  # the saved state holds the old rate: `--resume --learning-rate X` must mean X
            optimizer.learning_rate.assign(lr)


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


def record_epoch(state: RunState, epoch: int, logs: dict, monitor: str, patience: int, epochs: int) -> bool:
    """Move `state` past `epoch` with its logs; True if the monitored value improved (a new best checkpoint).
    After `patience` epochs without improvement (0: never) the run stops early."""
    value = logs.get(monitor)
    best = improved(value, state.best, monitor)
    if best:
        state.best, state.best_epoch, state.wait = value, epoch, 0
    else:
        state.wait += 1
        if patience and state.wait >= patience:
            state.stopped_early = True
            log.info("early stopping: %s has not improved for %d epochs (best %.4g at epoch %d)", monitor,
                     state.wait, state.best, state.best_epoch + 1)
    state.history.append(logs)
    state.epoch, state.step = epoch + 1, 0
    state.finished = state.epoch >= epochs or state.stopped_early
    return best
