"""Export a trained run as a SavedModel with fixed signatures, the contract convert/ builds on.

  encode(image: uint8[1, H, W, 3]) -> {features: [1, L, E], keys: [1, L, A]}
  decode_step(token: int32[B], hidden: float32[B, U], features: [B, L, E], keys: [B, L, A])
      -> {logits: [B, V], new_hidden: [B, U], attention: [B, L]}

Pixel normalisation is inside `encode`, so the edge side only resizes. The attention keys (W1 . features)
come out of `encode`: computed once per image, never once per word. `decode_step_b{B}` signatures with a
fixed batch B are added for beam search (one invoke advances B beams).

  decode_step_norm[_b{B}](as decode_step) -> as decode_step, plus {log_norm: [B]}: log(sum(exp(logits))) per row,
      computed in the graph. Float-logit decoders (float32, float16, dynamic) are converted from these, so the
      caption loop takes a word's log-probability as logit - log_norm with no pass over the vocabulary in Python;
      integer ones from decode_step (a quantised log_norm is too coarse). The sidecar's log_norm says they exist.

For the Edge TPU (whose compiler maps neither CAST nor GATHER) three more signatures are exported:
  encode_pixels(image: float32[1, H, W, 3] in 0..255) -> as encode; converted with a quantised uint8 input
  embed(token: int32[N]) -> {embedding: [N, E]}: the word-embedding table, looked up on the CPU at run time
  decode_step_embedded[_b{B}](embedding: [B, E], hidden, features, keys) -> as decode_step
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from scenecap import ScenecapError, __version__
from scenecap.edge.export_contract import (
    EMBED,
    LOG_NORM,
    SIDECAR,
    ExportSidecar,
    decode_signature,
    encoder_signature,
)
from scenecap.edge.fileio import atomic_write_text, default_mode
from scenecap.train.model import ShowAttendTell

_STEP_OUTPUTS = ("logits", "new_hidden", "attention")


def _encoder(model: ShowAttendTell, pixels: bool) -> keras.Model:
    """The encoder on uint8 images, or (pixels=True, for the Edge TPU) on float pixel values 0..255."""
    s = model.cfg.image_size
    image = keras.Input((s, s, 3), batch_size=1, dtype="float32" if pixels else "uint8", name="image")
    features, keys = model.encode(image)
    return keras.Model(image, {"features": features, "keys": keys}, name="encoder_pixels" if pixels else "encoder")


def _step_specs(model: ShowAttendTell, batch: int, embedded: bool) -> list[tf.TensorSpec]:
    """The decoder step's inputs: the word (its id, or its embedding), hidden state, features, attention keys."""
    cfg = model.cfg
    word = (tf.TensorSpec((batch, cfg.embed_dim), tf.float32, name="embedding") if embedded
            else tf.TensorSpec((batch,), tf.int32, name="token"))
    return [word, tf.TensorSpec((batch, cfg.units), tf.float32, name="hidden"),
            tf.TensorSpec((batch, model.locations, cfg.embed_dim), tf.float32, name="features"),
            tf.TensorSpec((batch, model.locations, cfg.attention_units), tf.float32, name="keys")]


def _decoder_step(model: ShowAttendTell, batch: int, embedded: bool) -> keras.Model:
    """One decoder step at a fixed batch, sharing the trained layers; `embedded` starts after the word lookup."""
    inputs = [keras.Input(tuple(spec.shape[1:]), batch_size=batch, dtype=spec.dtype.name, name=spec.name)
              for spec in _step_specs(model, batch, embedded)]
    step = model.step_embedded if embedded else model.step
    return keras.Model(inputs, dict(zip(_STEP_OUTPUTS, step(*inputs), strict=True)),
                       name=f"decoder_step_embedded_b{batch}" if embedded else f"decoder_step_b{batch}")


def model_dims(model: ShowAttendTell) -> dict:
    cfg = model.cfg
    dims = {
        "backbone": cfg.backbone, "alpha": cfg.alpha, "image_size": cfg.image_size,
        "locations": model.locations, "backbone_channels": model.backbone_channels,
        "feature_dim": cfg.embed_dim, "embed_dim": cfg.embed_dim, "attention_dim": cfg.attention_units,
        "units": cfg.units, "fc_units": cfg.fc_units, "vocab_size": cfg.vocab_size,
    }
    if cfg.output_rank:  # only when set, so a full output layer's manifest stays as it was
        dims["output_rank"] = cfg.output_rank
    return dims


# Closures, not default arguments nor bound methods: every argument of an endpoint becomes a signature input,
# named as the argument.
def _encode_fn(encoder: keras.Model):
    def encode(image):
        return encoder(image)

    return encode


def _step_fn(step: keras.Model):
    def decode_step(token, hidden, features, keys):
        return step([token, hidden, features, keys])

    return decode_step


def log_norm(logits: tf.Tensor) -> tf.Tensor:
    """log(sum(exp(logits))) over the vocabulary, [B] float32, shifted by each row's maximum so exp cannot
    overflow. Written out, not tf.reduce_logsumexp, so it lowers to cheap builtins (REDUCE_MAX, SUB, EXP, SUM, LOG,
    ADD, RESHAPE: about 12 us a row at 26,556 words; reduce_logsumexp lowers to more)."""
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    total = tf.reduce_sum(tf.exp(logits - top), axis=-1, keepdims=True)
    return tf.reshape(tf.math.log(total) + top, [-1])


def _norm_step_fn(step: keras.Model):
    def decode_step_norm(token, hidden, features, keys):
        out = step([token, hidden, features, keys])
        return {**out, LOG_NORM: log_norm(out["logits"])}

    return decode_step_norm


def _embedded_step_fn(step: keras.Model):
    def decode_step_embedded(embedding, hidden, features, keys):
        return step([embedding, hidden, features, keys])

    return decode_step_embedded


def write_saved_model(model: ShowAttendTell, out_dir: Path, decoder_batches=(1,)) -> None:
    """The SavedModel with every signature of the export contract (edge/export_contract.py)."""
    s = model.cfg.image_size
    encoders = {pixels: _encoder(model, pixels) for pixels in (False, True)}
    steps = {(b, embedded): _decoder_step(model, b, embedded) for embedded in (True, False) for b in decoder_batches}
    archive = keras.export.ExportArchive()
    for m in (*encoders.values(), *steps.values()):  # every variable tracked before any endpoint is traced
        archive.track(m)
    for pixels, encoder in encoders.items():
        archive.add_endpoint(encoder_signature(pixels), _encode_fn(encoder), input_signature=[
            tf.TensorSpec((1, s, s, 3), tf.float32 if pixels else tf.uint8, name="image")])

    def embed(token):
        return {"embedding": model.embedding(token)}

    archive.add_endpoint(EMBED, embed, input_signature=[tf.TensorSpec((None,), tf.int32, name="token")])
    for (b, embedded), step in steps.items():
        fn = _embedded_step_fn(step) if embedded else _step_fn(step)
        archive.add_endpoint(decode_signature(b, embedded), fn, input_signature=_step_specs(model, b, embedded))
    for b in decoder_batches:  # the same step with log_norm, for the float-logit decoders (token input only)
        archive.add_endpoint(decode_signature(b, log_norm=True), _norm_step_fn(steps[(b, False)]),
                             input_signature=_step_specs(model, b, False))
    archive.write_out(str(out_dir), verbose=False)


def export_model(model: ShowAttendTell, vocab, out: str | Path, info: dict, decoder_batches=(1,),
                 force: bool = False) -> Path:
    """Write SavedModel + vocab.json + scenecap_export.json into `out`, atomically."""
    from scenecap.train.quiet import quiet_tensorflow_logger

    quiet_tensorflow_logger()  # 'INFO tensorflow: Assets written to ...' names a temporary folder: only noise
    out = Path(out)
    if out.exists() and not force:
        raise ScenecapError(f"{out}: already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(default_mode(directory=True))  # mkdtemp makes it 0700
    try:
        write_saved_model(model, tmp, tuple(sorted(set(decoder_batches) | {1})))
        vocab.save(tmp / "vocab.json")
        sidecar = ExportSidecar(
            model=model_dims(model), max_length=model.cfg.max_length, decoder_state=model.cfg.decoder_state,
            tokens=vocab.ids, decoder_batches=sorted(set(decoder_batches) | {1}), log_norm=True,
            scenecap_version=__version__, **info)
        atomic_write_text(tmp / SIDECAR, json.dumps(sidecar.to_json(), indent=2, ensure_ascii=False))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def epochs_trained(run_dir: str | Path, planned: int) -> int:
    """The epochs the run really trained (a run stopped early or by hand trains fewer than it planned); the
    bundle records these, so its training section repeats the run."""
    from scenecap.train.run_state import Checkpointer

    state = Checkpointer(Path(run_dir), chief=False).load_state()
    return state.epoch if state is not None else planned


def export_run(run_dir: str | Path, out: str | Path, decoder_batches=(1,), checkpoint: str = "best",
               force: bool = False) -> Path:
    from scenecap.train.trainer import load_trained

    model, cfg, vocab = load_trained(run_dir, checkpoint)
    info = {
        "language": cfg.language,
        "preprocess": cfg.preprocess.to_json(),
        "training": {**cfg.to_dict(), "epochs": epochs_trained(run_dir, cfg.epochs)},
        "calibration": {"annotations": cfg.train, "images": cfg.images},
    }
    return export_model(model, vocab, out, info, decoder_batches, force)
