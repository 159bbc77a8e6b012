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
epoch with the optimizer's state.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from scenecap import ScenecapError
from scenecap.edge.fileio import atomic_write_text
from scenecap.edge.vocab import Vocab
from scenecap.train.config import TrainConfig, check_values
from scenecap.train.datasets import Sample, detect_format, karpathy_splits, load_dataset
from scenecap.train.language import caption_language
from scenecap.train.model import ModelConfig  # noqa: F401  (re-exported: callers build TrainConfig with it)
from scenecap.train.text import (
    MAX_LENGTH_CAP,
    MAX_LENGTH_PERCENTILE,
    build_vocab,
    coverage,
    fitting_max_length,
    tokenize,
)

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
    from scenecap.train.callbacks import Checkpointer

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


def _train(cfg: TrainConfig, strategy, chief: bool, out: Path, resume: bool, progress: bool) -> Path:
    import keras
    import numpy as np
    import tensorflow as tf

    from scenecap.train.callbacks import (
        CaptionScorer,
        Checkpointer,
        EpochProgress,
        RunState,
        TensorBoardLog,
        improved,
        resolve_monitor,
        write_history,
    )
    from scenecap.train.model import build
    from scenecap.train.pipeline import CaptionData, encode_captions, flipped_captions, image_source, load_prepared

    ckpt = Checkpointer(out, chief)
    state = ckpt.load_state() if resume else None
    if resume and state is None:
        log.info("%s: no saved state to resume from; starting at epoch 1", out)
    keras.utils.set_random_seed(cfg.seed)

    train_samples, val_samples = _load_data(cfg, progress and chief)
    vocab_path = out / "vocab.json"
    train_words = [tokenize(c, cfg.text) for s in train_samples for c in s.captions]
    _decide_max_length(cfg, [len(words) + 2 for words in train_words])  # + <start> and <end>
    if state and vocab_path.is_file():
        vocab = Vocab.load(vocab_path)  # a resumed run keeps its vocabulary: the embedding rows depend on it
    else:
        vocab = build_vocab(train_words, cfg.min_count, cfg.max_vocab)
    cfg.model.vocab_size = len(vocab)
    if chief:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        vocab.save(vocab_path)
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False))
    log.info("%d training images, %d validation images; vocabulary %d tokens covering %.1f%% of training words",
             len(train_samples), len(val_samples), len(vocab), 100 * coverage(train_words, vocab))

    enc = encode_captions(train_samples, vocab, cfg.model.max_length, cfg.text)
    venc = encode_captions(val_samples, vocab, cfg.model.max_length, cfg.text) if val_samples else None

    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size * replicas
    drop = replicas > 1  # equal steps on every replica and worker
    if drop and len(train_samples) < global_batch:
        raise ScenecapError(f"{len(train_samples)} training images is fewer than one global batch of {global_batch}")
    with strategy.scope():
        model = build(cfg.model)
    if state:
        ckpt.restore_model(model)
    spec = cfg.preprocess
    cached = cfg.mode == "cached"

    # --- data -----------------------------------------------------------------------------------------------
    n_show = min(cfg.val_caption_images, len(val_samples))
    show_idx = list(range(n_show))
    if cached:
        from scenecap.train.feature_cache import extract

        if not cfg.model.weights or cfg.model.weights in ("none", "None"):
            log.warning("cached mode freezes the backbone, and --weights none leaves it random: its feature maps "
                        "carry almost nothing of the image. Use --weights imagenet or a .h5 file, or --mode finetune")

        root = Path(cfg.feature_cache) if cfg.feature_cache else out / "features"
        bs = max(8, cfg.batch_size)
        tr_feats = extract(model, [str(s.image) for s in train_samples], spec, root, "train", bs,
                           progress=progress)
        train_data = CaptionData(len(train_samples), enc, global_batch, cfg.seed, True, drop, features=tr_feats)
        val_data = None
        if val_samples:
            va_feats = extract(model, [str(s.image) for s in val_samples], spec, root, "val", bs,
                               progress=progress)
            val_data = CaptionData(len(val_samples), venc, global_batch, cfg.seed, False, drop, features=va_feats)
        score_inputs = va_feats.read(show_idx) if n_show else None
    else:
        images, paths = image_source(train_samples, spec, cfg.cache_images)
        # Augmentation (off by default) draws on the training images only; a mirrored image gets the captions
        # with left and right swapped, where the language's lexicon says how.
        flipped = flipped_captions(train_samples, vocab, cfg.model.max_length, cfg.text, cfg.augment, cfg.language)
        train_data = CaptionData(len(train_samples), enc, global_batch, cfg.seed, True, drop, images=images,
                                 paths=paths, spec=spec, augment=cfg.augment, flipped=flipped)
        val_data = None
        if val_samples:
            vimages, vpaths = image_source(val_samples, spec, cfg.cache_images)
            val_data = CaptionData(len(val_samples), venc, global_batch, cfg.seed, False, drop, images=vimages,
                                   paths=vpaths, spec=spec)
        score_inputs = np.stack([load_prepared(str(val_samples[i].image), spec) for i in show_idx]) if n_show else None
    if val_data is not None and val_data.steps == 0:
        log.warning("validation split smaller than one global batch (%d): no validation loss", global_batch)
    refs = [val_samples[i].captions for i in show_idx]
    scorer = CaptionScorer(model, vocab, score_inputs, refs, cached, cfg.text) if n_show else None
    sample_images = None
    if n_show:
        k = min(4, n_show)
        sample_images = (np.stack([load_prepared(str(val_samples[i].image), spec) for i in range(k)]) if cached
                         else score_inputs[:k])
    monitor = resolve_monitor(cfg.monitor, val_data is not None and val_data.steps > 0, scorer is not None)
    log.info("mode %s, global batch %d (%d per replica x %d), %d steps per epoch, monitoring %s", cfg.mode,
             global_batch, cfg.batch_size, replicas, train_data.steps, monitor)

    # --- steps ------------------------------------------------------------------------------------------------
    pad = vocab.pad

    def loss_and_acc(target, logits):
        logits = tf.cast(logits, tf.float32)
        ce = keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True)
        mask = tf.cast(tf.not_equal(target, pad), tf.float32)
        denom = tf.maximum(tf.reduce_sum(mask), 1.0)
        hit = tf.cast(tf.equal(target, tf.cast(tf.argmax(logits, -1), target.dtype)), tf.float32)
        return tf.reduce_sum(ce * mask) / denom, tf.reduce_sum(hit * mask) / denom

    def forward(x, tokens, training):
        if cached:
            features, keys = model.project(x)
            return model.unroll(tokens, features, keys)
        return model((x, tokens), training=training)

    def make_steps(optimizer):
        variables = model.trainable_variables

        def train_fn(batch):
            (x, tokens), target = batch
            with tf.GradientTape() as tape:
                loss, acc = loss_and_acc(target, forward(x, tokens, True))
                scaled = optimizer.scale_loss(loss / replicas)
            grads = tape.gradient(scaled, variables)
            optimizer.apply(grads, variables)
            return loss, acc

        def val_fn(batch):
            (x, tokens), target = batch
            return loss_and_acc(target, forward(x, tokens, False))

        if cfg.jit_compile:
            train_fn = tf.function(train_fn, jit_compile=True)
            val_fn = tf.function(val_fn, jit_compile=True)

        def reduced(fn):
            @tf.function
            def step(iterator):
                loss, acc = strategy.run(fn, args=(next(iterator),))
                return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                        strategy.reduce(tf.distribute.ReduceOp.MEAN, acc, axis=None))

            return step

        return reduced(train_fn), reduced(val_fn)

    def new_optimizer(lr):
        with strategy.scope():
            opt = keras.optimizers.Adam(lr, clipnorm=cfg.clipnorm)
            if cfg.mixed_precision:
                opt = keras.optimizers.LossScaleOptimizer(opt)
            opt.build(model.trainable_variables)
        return opt

    def set_phase(epoch):
        frozen = cached or epoch < cfg.freeze_epochs
        model.backbone.trainable = not frozen
        lr = cfg.learning_rate if frozen or cfg.freeze_epochs == 0 else (cfg.finetune_learning_rate or
                                                                          cfg.learning_rate)
        return ("frozen" if frozen else "trainable"), lr

    # --- the loop -------------------------------------------------------------------------------------------
    state = state or RunState()
    phase, lr = set_phase(state.epoch)
    optimizer = new_optimizer(lr)
    if state.global_step and state.phase == phase:
        with strategy.scope():
            ckpt.restore_optimizer(optimizer, model.trainable_variables)
        log.info("resumed at epoch %d step %d (optimizer at iteration %d)", state.epoch + 1, state.step,
                 int(optimizer.iterations.numpy()))
    train_step, val_step = make_steps(optimizer)
    tb = TensorBoardLog(out, cfg.tensorboard and chief)
    bar = EpochProgress(cfg.epochs, chief, bars=progress)
    if state.history and chief:
        write_history(out, state.history)

    def save_state():
        state.phase = phase
        state.optimizer_iterations = int(optimizer.iterations.numpy())
        ckpt.save_state(model, optimizer, state)

    while state.epoch < cfg.epochs and not state.stopped_early:
        epoch = state.epoch
        new_phase, lr = set_phase(epoch)
        if new_phase != phase:
            log.info("epoch %d: unfreezing the backbone (learning rate %g)", epoch + 1, lr)
            phase = new_phase
            optimizer = new_optimizer(lr)
            train_step, val_step = make_steps(optimizer)
        skip = state.step
        steps = train_data.steps - skip
        iterator = iter(strategy.experimental_distribute_dataset(train_data.epoch(epoch, skip)))
        bar.start(epoch, train_data.steps, skip)
        t0 = time.perf_counter()
        tot_loss = tot_acc = 0.0
        for i in range(steps):
            loss, acc = train_step(iterator)
            loss, acc = float(loss), float(acc)
            if not np.isfinite(loss) and not cfg.mixed_precision:
                raise ScenecapError(f"epoch {epoch + 1} step {skip + i + 1}: loss is {loss}; lower the learning rate")
            tot_loss += loss
            tot_acc += acc
            state.step += 1
            state.global_step += 1
            bar.update(tot_loss / (i + 1), tot_acc / (i + 1))
            if state.global_step % cfg.log_every_steps == 0:
                tb.step(state.global_step, loss, float(optimizer.learning_rate.numpy()))
            if cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0 and i + 1 < steps:
                save_state()
        seconds = time.perf_counter() - t0
        logs = {"epoch": epoch + 1, "loss": tot_loss / max(steps, 1), "word_acc": tot_acc / max(steps, 1),
                "learning_rate": float(optimizer.learning_rate.numpy())}
        if val_data is not None and val_data.steps:
            vit = iter(strategy.experimental_distribute_dataset(val_data.epoch(0)))
            vals = [tuple(map(float, val_step(vit))) for _ in range(val_data.steps)]
            logs["val_loss"] = float(np.mean([v[0] for v in vals]))
            logs["val_word_acc"] = float(np.mean([v[1] for v in vals]))
        generated = []
        if scorer is not None:
            caption_logs, generated = scorer()
            logs.update(caption_logs)
        logs["images_per_second"] = steps * global_batch / max(seconds, 1e-9)
        bar.end(epoch, {k: v for k, v in logs.items() if k not in ("epoch", "learning_rate")}, seconds,
                steps * global_batch)
        tb.epoch(epoch, logs)
        if generated and chief:
            tb.samples(epoch, sample_images, generated[: len(sample_images)], refs[: len(sample_images)])
            log.info("sample caption: %s", generated[0])

        value = logs.get(monitor)
        ckpt.save_weights(model, "last")
        if improved(value, state.best, monitor):
            state.best, state.best_epoch, state.wait = value, epoch, 0
            ckpt.save_weights(model, "best")
        else:
            state.wait += 1
            if cfg.early_stopping and state.wait >= cfg.early_stopping:
                state.stopped_early = True
                log.info("early stopping: %s has not improved for %d epochs (best %.4g at epoch %d)", monitor,
                         state.wait, state.best, state.best_epoch + 1)
        state.history.append(logs)
        state.epoch, state.step = epoch + 1, 0
        state.finished = state.epoch >= cfg.epochs or state.stopped_early
        save_state()
        if chief:
            write_history(out, state.history)
    if chief and not (out / "checkpoints" / "best.weights.h5").exists():
        ckpt.save_weights(model, "best")  # e.g. every monitored value was NaN: best = last
    return out


def load_trained(run_dir: str | Path, checkpoint: str = "best"):
    """(model, TrainConfig, Vocab) from a run folder."""
    from scenecap.train.model import build

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ScenecapError(f"{run_dir}: no config.json; expected a training run folder from 'scenecap train'")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ScenecapError(f"{cfg_path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    cfg = TrainConfig.from_dict(data, str(cfg_path))
    vocab = Vocab.load(run_dir / "vocab.json")
    ckpt = run_dir / "checkpoints" / f"{checkpoint}.weights.h5"
    if not ckpt.is_file():
        ckpt = run_dir / "checkpoints" / "last.weights.h5"
    if not ckpt.is_file():
        raise ScenecapError(f"{run_dir / 'checkpoints'}: no {checkpoint}.weights.h5 or last.weights.h5")
    model = build(cfg.model)
    model.load_weights(str(ckpt))
    return model, cfg, vocab
