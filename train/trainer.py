"""A training run: data -> validation -> vocabulary -> tf.data -> distributed training loop, in one run folder.

run_dir/config.json     the resolved configuration (travels into the bundle manifest)
run_dir/vocab.json      the vocabulary
run_dir/checkpoints/    last.weights.h5 (every epoch), best.weights.h5 (best by the monitored metric),
                        resume/ (weights + optimizer state + epoch/step, for --resume)
run_dir/history.csv     per-epoch metrics
run_dir/tensorboard/    TensorBoard logs
run_dir/features/       cached mode: backbone feature shards (unless feature_cache points elsewhere)

The loop is a plain `strategy.run` loop rather than Keras `fit`: the same code runs on one CPU, several GPUs
(MirroredStrategy) and several machines (MultiWorkerMirroredStrategy), and it can resume in the middle of an
epoch with the optimizer's state. Here: the setup (`_train`) and the epoch loop (`_epochs`); what the steps are
fed is in inputs.py, the loss and the steps in steps.py, checkpoints, early stopping and history in
run_state.py, scored captions, TensorBoard and progress in run_logs.py.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scenecap import ScenecapError
from scenecap.edge.fileio import atomic_write_text, read_json
from scenecap.edge.vocab import Vocab
from scenecap.train.config import TrainConfig, check_values
from scenecap.train.datasets import Sample, detect_format, karpathy_splits, load_dataset
from scenecap.train.language import caption_language
from scenecap.train.model import ModelConfig  # noqa: F401  (re-exported: callers build TrainConfig with it)
from scenecap.train.run_state import Checkpointer, RunState, record_epoch, resolve_monitor, write_history
from scenecap.train.text import (
    MAX_LENGTH_CAP,
    MAX_LENGTH_PERCENTILE,
    build_vocab,
    coverage,
    fitting_max_length,
    tokenize,
)

if TYPE_CHECKING:
    import tensorflow as tf

    from scenecap.train.inputs import RunInputs
    from scenecap.train.model import ShowAttendTell
    from scenecap.train.run_logs import CaptionScorer, EpochProgress, TensorBoardLog
    from scenecap.train.steps import Steps

log = logging.getLogger("scenecap.train")

__all__ = ["TrainConfig", "run", "load_trained", "load_split"]


def load_split(path: str | None, images: str | None, split: str, fmt: str = "auto",
               image_list: str | None = None) -> list[Sample]:
    if not path:
        return []
    return load_dataset(path, images, split, fmt, image_list)


def _load_data(cfg: TrainConfig, progress: bool):
    from scenecap.train.validate import validate

    train = load_split(cfg.train, cfg.images, "train", cfg.dataset_format, cfg.train_list)
    val_path = cfg.val
    if not val_path and cfg.dataset_format in ("auto", "karpathy") and detect_format(cfg.train) == "karpathy":
        if "val" in karpathy_splits(cfg.train):  # a Karpathy file holds every split: validate on its 'val'
            val_path = cfg.train
    val = load_split(val_path, cfg.images, "val", cfg.dataset_format, cfg.val_list)
    if not train:
        raise ScenecapError(f"{cfg.train}: no training images")
    _decide_language(cfg, train)  # before the images are decoded: a refusal should not wait for that
    train, _ = validate(train, cfg.train, cfg.text, cfg.skip_missing, cfg.check_images, progress)
    if val:
        val, _ = validate(val, val_path, cfg.text, cfg.skip_missing, cfg.check_images, progress)
    return train, val


def _decide_language(cfg: TrainConfig, train: list[Sample]) -> None:
    """cfg.language from --lang, checked against the captions' script, or detected from it (it picks the voice)."""
    language, how = caption_language((c for s in train for c in s.captions), cfg.language, cfg.train)
    cfg.language = language
    log.info("caption language %s (%s)", language, how)


def _decide_max_length(cfg: TrainConfig, lengths: list[int]) -> None:
    """cfg.model.max_length from the captions when not given; either way, say how many captions get cut."""
    cut_at = fitting_max_length(lengths)
    given = bool(cfg.model.max_length)
    if not given:
        cfg.model.max_length = cut_at
    n = cfg.model.max_length
    cut = sum(length > n for length in lengths)
    share = 100 * cut / max(len(lengths), 1)
    if not given:
        log.info("max_length %d tokens (incl. <start> and <end>): the %dth percentile of the training captions' "
                 "lengths, at most %d; %d of %d captions (%.1f%%) are longer and are cut", n, MAX_LENGTH_PERCENTILE,
                 MAX_LENGTH_CAP, cut, len(lengths), share)
    elif cut:
        log.warning("%d of %d training captions (%.1f%%) are longer than --max-length %d tokens and are cut; "
                    "--max-length %d keeps %d%% whole, --max-length %d all of them", cut, len(lengths), share, n,
                    cut_at, MAX_LENGTH_PERCENTILE, max(lengths))


def _already_finished(out: Path, cfg: TrainConfig) -> str | None:
    """The one line for --resume on a run with nothing left to train, or None if there is."""
    state = Checkpointer(out, chief=False).load_state()
    if state is None:
        return None
    if state.stopped_early:
        return (f"{out}: already finished: early stopping ended it after {state.epoch} of {cfg.epochs} epochs "
                "(no improvement); nothing to resume")
    if state.epoch >= cfg.epochs:
        return (f"{out}: already finished ({state.epoch} of {cfg.epochs} epochs); to train more, resume with a "
                f"larger --epochs (e.g. --resume --epochs {state.epoch + 5})")
    return None


def _prepare_run_dir(out: Path, resume: bool, force: bool, chief: bool) -> None:
    ckpt = out / "checkpoints"
    has_run = (ckpt / "last.weights.h5").exists() or (ckpt / "resume").exists()
    if has_run and not resume and not force:
        raise ScenecapError(f"{out}: already holds a training run; pass --resume to continue it or --force to "
                            "start over")
    if chief and force and not resume:
        for name in ("checkpoints", "tensorboard", "history.csv"):
            p = out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _op_error(e: Exception) -> ScenecapError:
    """A TensorFlow runtime error from inside the input pipeline -> the one line that matters."""
    msg = getattr(e, "message", str(e))
    marker = "ScenecapError: "
    if marker in msg:
        line = msg.split(marker, 1)[1].splitlines()[0]
        return ScenecapError(line)
    return ScenecapError(f"training failed: {msg.strip().splitlines()[0][:300]}")


def run(cfg: TrainConfig, resume: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Train and return the run folder. `resume` continues an interrupted run in cfg.out from its last state.
    TensorFlow is imported here, not at module import."""
    check_values(cfg)
    finished = _already_finished(Path(cfg.out), cfg) if resume else None
    if finished:  # before TensorFlow and the data: there is nothing to do
        log.info("%s", finished)
        return Path(cfg.out)
    from scenecap.train import distribute

    strategy = distribute.make_strategy(cfg.strategy)  # first TensorFlow op: collectives need it so
    import keras
    import tensorflow as tf

    chief = distribute.is_chief()
    out = Path(cfg.out)
    _prepare_run_dir(out, resume, force, chief)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if cfg.mixed_precision:
            if not tf.config.list_physical_devices("GPU"):
                log.warning("mixed precision on CPU: float16 compute is slower than float32 without a GPU")
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            return _train(cfg, strategy, chief, out, resume, progress)
        except tf.errors.OpError as e:
            raise _op_error(e) from None
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


@dataclass
class _Run:
    """What the epoch loop works on; `steps` is rebuilt when the backbone unfreezes."""
    cfg: TrainConfig
    out: Path
    chief: bool
    strategy: tf.distribute.Strategy
    model: ShowAttendTell
    ckpt: Checkpointer
    state: RunState
    steps: Steps
    inputs: RunInputs
    scorer: CaptionScorer | None
    monitor: str
    global_batch: int
    pad: int
    tb: TensorBoardLog
    bar: EpochProgress


def _train(cfg: TrainConfig, strategy, chief: bool, out: Path, resume: bool, progress: bool) -> Path:
    """Data, vocabulary, model and inputs (in the order that keeps a seeded run reproducible), then the epochs."""
    import keras

    from scenecap.train.inputs import prepare_inputs
    from scenecap.train.model import build
    from scenecap.train.run_logs import CaptionScorer, EpochProgress, TensorBoardLog
    from scenecap.train.steps import steps_for

    ckpt = Checkpointer(out, chief)
    state = ckpt.load_state() if resume else None
    if resume and state is None:
        log.info("%s: no saved state to resume from; starting at epoch 1", out)
    keras.utils.set_random_seed(cfg.seed)
    train_samples, val_samples = _load_data(cfg, progress and chief)
    vocab = _prepare_vocab(cfg, out, chief, train_samples, len(val_samples), resumed=state is not None)
    global_batch, drop = _global_batch(cfg, strategy, len(train_samples))
    with strategy.scope():
        model = build(cfg.model)
    if state:
        ckpt.restore_model(model)
    inputs = prepare_inputs(cfg, model, vocab, train_samples, val_samples, global_batch, drop, out, progress)
    scorer = (CaptionScorer(model, vocab, inputs.scored, inputs.references, cfg.mode == "cached", cfg.text)
              if inputs.scored is not None else None)
    monitor = resolve_monitor(cfg.monitor, inputs.has_val_loss, scorer is not None)
    log.info("mode %s, global batch %d (%d per replica x %d), %d steps per epoch, monitoring %s", cfg.mode,
             global_batch, cfg.batch_size, strategy.num_replicas_in_sync, inputs.train.steps, monitor)
    state = state or RunState()
    run = _Run(cfg, out, chief, strategy, model, ckpt, state, steps_for(model, strategy, cfg, state.epoch, vocab.pad),
               inputs, scorer, monitor, global_batch, vocab.pad, tb=TensorBoardLog(out, cfg.tensorboard and chief),
               bar=EpochProgress(cfg.epochs, chief, bars=progress))
    _resume_optimizer(run)
    if state.history and chief:
        write_history(out, state.history)
    _epochs(run)
    if chief and not (out / "checkpoints" / "best.weights.h5").exists():
        ckpt.save_weights(model, "best")  # e.g. every monitored value was NaN: best = last
    return out


def _prepare_vocab(cfg: TrainConfig, out: Path, chief: bool, train: list[Sample], n_val: int, resumed: bool) -> Vocab:
    """max_length and the vocabulary (a resumed run keeps its own), written to the run folder with the config."""
    vocab_path = out / "vocab.json"
    words = [tokenize(c, cfg.text) for s in train for c in s.captions]
    _decide_max_length(cfg, [len(w) + 2 for w in words])  # + <start> and <end>
    if resumed and vocab_path.is_file():
        vocab = Vocab.load(vocab_path)  # the embedding rows depend on it
    else:
        vocab = build_vocab(words, cfg.min_count, cfg.max_vocab)
    cfg.model.vocab_size = len(vocab)
    if chief:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        vocab.save(vocab_path)
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False))
    log.info("%d training images, %d validation images; vocabulary %d tokens covering %.1f%% of training words",
             len(train), n_val, len(vocab), 100 * coverage(words, vocab))
    return vocab


def _global_batch(cfg: TrainConfig, strategy, n_train: int) -> tuple[int, bool]:
    """(the global batch, whether to drop each epoch's last partial batch: with several replicas, so that every
    replica and worker runs the same number of steps)."""
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size * replicas
    drop = replicas > 1
    if drop and n_train < global_batch:
        raise ScenecapError(f"{n_train} training images is fewer than one global batch of {global_batch}")
    return global_batch, drop


def _resume_optimizer(run: _Run) -> None:
    """A run resumed in the phase it was saved in continues with its optimizer's state (Adam's moments)."""
    state = run.state
    if state.global_step and state.phase == run.steps.phase:
        with run.strategy.scope():
            run.ckpt.restore_optimizer(run.steps.optimizer, run.model.trainable_variables)
        log.info("resumed at epoch %d step %d (optimizer at iteration %d)", state.epoch + 1, state.step,
                 int(run.steps.optimizer.iterations.numpy()))


def _epochs(run: _Run) -> None:
    """Train, validate, caption, report and checkpoint each epoch left, until the last or early stopping."""
    from scenecap.train.steps import phase_at, steps_for

    cfg, state = run.cfg, run.state
    while state.epoch < cfg.epochs and not state.stopped_early:
        epoch = state.epoch
        phase, lr = phase_at(cfg, epoch)
        if phase != run.steps.phase:
            log.info("epoch %d: unfreezing the backbone (learning rate %g)", epoch + 1, lr)
            run.steps = steps_for(run.model, run.strategy, cfg, epoch, run.pad)
        logs, seconds, images = _train_epoch(run, epoch)
        logs.update(_validate(run))
        generated = []
        if run.scorer is not None:
            caption_logs, generated = run.scorer()
            logs.update(caption_logs)
        logs["images_per_second"] = images / max(seconds, 1e-9)
        _report(run, epoch, logs, generated, seconds, images)
        _end_epoch(run, epoch, logs)


def _train_epoch(run: _Run, epoch: int) -> tuple[dict, float, int]:
    """One epoch's training steps, from state.step on when resumed mid-epoch: (logs, seconds, images seen)."""
    cfg, state, steps, data = run.cfg, run.state, run.steps, run.inputs.train
    skip = state.step
    n = data.steps - skip
    iterator = iter(run.strategy.experimental_distribute_dataset(data.epoch(epoch, skip)))
    run.bar.start(epoch, data.steps, skip)
    t0 = time.perf_counter()
    tot_loss = tot_acc = 0.0
    for i in range(n):
        loss, acc = (float(v) for v in steps.train(iterator))
        if not math.isfinite(loss) and not cfg.mixed_precision:  # loss scaling skips the step and lowers its scale
            raise ScenecapError(f"epoch {epoch + 1} step {skip + i + 1}: loss is {loss}; lower the learning rate")
        tot_loss += loss
        tot_acc += acc
        state.step += 1
        state.global_step += 1
        run.bar.update(tot_loss / (i + 1), tot_acc / (i + 1))
        if state.global_step % cfg.log_every_steps == 0:
            run.tb.step(state.global_step, loss, float(steps.optimizer.learning_rate.numpy()))
        if cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0 and i + 1 < n:
            _save_state(run)  # the epoch's end saves it anyway
    seconds = time.perf_counter() - t0
    logs = {"epoch": epoch + 1, "loss": tot_loss / max(n, 1), "word_acc": tot_acc / max(n, 1),
            "learning_rate": float(steps.optimizer.learning_rate.numpy())}
    return logs, seconds, n * run.global_batch


def _validate(run: _Run) -> dict:
    """val_loss and val_word_acc over the whole validation split, or nothing without one global batch of it."""
    if not run.inputs.has_val_loss:
        return {}
    data = run.inputs.val
    iterator = iter(run.strategy.experimental_distribute_dataset(data.epoch(0)))
    vals = [[float(v) for v in run.steps.validate(iterator)] for _ in range(data.steps)]
    return {"val_loss": float(np.mean([v[0] for v in vals])), "val_word_acc": float(np.mean([v[1] for v in vals]))}


def _report(run: _Run, epoch: int, logs: dict, generated: list[str], seconds: float, images: int) -> None:
    run.bar.end(epoch, {k: v for k, v in logs.items() if k not in ("epoch", "learning_rate")}, seconds, images)
    run.tb.epoch(epoch, logs)
    if generated and run.chief:
        shown = run.inputs.sample_images
        run.tb.samples(epoch, shown, generated[: len(shown)], run.inputs.references[: len(shown)])
        log.info("sample caption: %s", generated[0])


def _end_epoch(run: _Run, epoch: int, logs: dict) -> None:
    """Checkpoints (last, and best when the monitor improved), early stopping, the resume state and history."""
    run.ckpt.save_weights(run.model, "last")
    if record_epoch(run.state, epoch, logs, run.monitor, run.cfg.early_stopping, run.cfg.epochs):
        run.ckpt.save_weights(run.model, "best")
    _save_state(run)
    if run.chief:
        write_history(run.out, run.state.history)


def _save_state(run: _Run) -> None:
    run.state.phase = run.steps.phase
    run.state.optimizer_iterations = int(run.steps.optimizer.iterations.numpy())
    run.ckpt.save_state(run.model, run.steps.optimizer, run.state)


def load_trained(run_dir: str | Path, checkpoint: str = "best"):
    """(model, TrainConfig, Vocab) from a run folder."""
    from scenecap.train.model import build

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ScenecapError(f"{run_dir}: no config.json; expected a training run folder from 'scenecap train'")
    cfg = TrainConfig.from_dict(read_json(cfg_path, "training configuration"), str(cfg_path))
    vocab = Vocab.load(run_dir / "vocab.json")
    ckpt = run_dir / "checkpoints" / f"{checkpoint}.weights.h5"
    if not ckpt.is_file():
        ckpt = run_dir / "checkpoints" / "last.weights.h5"
    if not ckpt.is_file():
        raise ScenecapError(f"{run_dir / 'checkpoints'}: no {checkpoint}.weights.h5 or last.weights.h5")
    model = build(cfg.model)
    model.load_weights(str(ckpt))
    return model, cfg, vocab
