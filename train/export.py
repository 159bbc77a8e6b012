"""Export a trained run as a SavedModel with fixed signatures, the contract convert/ builds on.

  encode(image: uint8[1, H, W, 3]) -> {features: [1, L, E], keys: [1, L, A]}
  decode_step(token: int32[B], hidden: float32[B, U], features: [B, L, E], keys: [B, L, A])
      -> {logits: [B, V], new_hidden: [B, U], attention: [B, L]}

Pixel normalisation is inside `encode`, so the edge side only resizes. The attention keys (W1 . features)
come out of `encode`: computed once per image, never once per word. `decode_step_b{B}` signatures with a
fixed batch B are added for beam search (one invoke advances B beams).

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
from scenecap.edge.fileio import atomic_write_text, default_mode
from scenecap.train.model import ShowAttendTell

EXPORT_FORMAT = "scenecap-export"
SIDECAR = "scenecap_export.json"


def step_signature_name(batch: int, embedded: bool = False) -> str:
    base = "decode_step_embedded" if embedded else "decode_step"
    return base if batch == 1 else f"{base}_b{batch}"


def inference_models(model: ShowAttendTell, decoder_batches=(1,)) -> tuple[keras.Model, dict[int, keras.Model]]:
    """Functional Keras models sharing the trained layers: the encoder, and one decoder step per batch size."""
    cfg = model.cfg
    s = cfg.image_size
    image = keras.Input((s, s, 3), batch_size=1, dtype="uint8", name="image")
    features, keys = model.encode(image)
    encoder = keras.Model(image, {"features": features, "keys": keys}, name="encoder")
    steps = {}
    for b in decoder_batches:
        token = keras.Input((), batch_size=b, dtype="int32", name="token")
        hidden = keras.Input((cfg.units,), batch_size=b, dtype="float32", name="hidden")
        feats = keras.Input((model.locations, cfg.embed_dim), batch_size=b, name="features")
        k = keras.Input((model.locations, cfg.attention_units), batch_size=b, name="keys")
        logits, new_hidden, attention = model.step(token, hidden, feats, k)
        steps[b] = keras.Model([token, hidden, feats, k],
                               {"logits": logits, "new_hidden": new_hidden, "attention": attention},
                               name=f"decoder_step_b{b}")
    return encoder, steps


def edgetpu_models(model: ShowAttendTell, decoder_batches=(1,)) -> tuple[keras.Model, dict[int, keras.Model]]:
    """The float-pixel encoder and the decoder steps that take the embedded word instead of its id."""
    cfg = model.cfg
    s = cfg.image_size
    image = keras.Input((s, s, 3), batch_size=1, dtype="float32", name="image")
    features, keys = model.encode(image)
    encoder = keras.Model(image, {"features": features, "keys": keys}, name="encoder_pixels")
    steps = {}
    for b in decoder_batches:
        embedded = keras.Input((cfg.embed_dim,), batch_size=b, dtype="float32", name="embedding")
        hidden = keras.Input((cfg.units,), batch_size=b, dtype="float32", name="hidden")
        feats = keras.Input((model.locations, cfg.embed_dim), batch_size=b, name="features")
        k = keras.Input((model.locations, cfg.attention_units), batch_size=b, name="keys")
        logits, new_hidden, attention = model.step_embedded(embedded, hidden, feats, k)
        steps[b] = keras.Model([embedded, hidden, feats, k],
                               {"logits": logits, "new_hidden": new_hidden, "attention": attention},
                               name=f"decoder_step_embedded_b{b}")
    return encoder, steps


def model_dims(model: ShowAttendTell) -> dict:
    cfg = model.cfg
    return {
        "backbone": cfg.backbone, "alpha": cfg.alpha, "image_size": cfg.image_size,
        "locations": model.locations, "backbone_channels": model.backbone_channels,
        "feature_dim": cfg.embed_dim, "embed_dim": cfg.embed_dim, "attention_dim": cfg.attention_units,
        "units": cfg.units, "fc_units": cfg.fc_units, "vocab_size": cfg.vocab_size,
    }


def _step_fn(step: keras.Model):
    # A closure, not a default argument: every argument of an endpoint becomes a signature input.
    def decode_step(token, hidden, features, keys):
        return step([token, hidden, features, keys])

    return decode_step


def _embedded_step_fn(step: keras.Model):
    def decode_step_embedded(embedding, hidden, features, keys):
        return step([embedding, hidden, features, keys])

    return decode_step_embedded


def write_saved_model(model: ShowAttendTell, out_dir: Path, decoder_batches=(1,)) -> None:
    encoder, steps = inference_models(model, decoder_batches)
    encoder_px, steps_emb = edgetpu_models(model, decoder_batches)
    cfg = model.cfg
    s = cfg.image_size
    archive = keras.export.ExportArchive()
    for m in (encoder, encoder_px, *steps.values(), *steps_emb.values()):
        archive.track(m)

    def encode(image):
        return encoder(image)

    archive.add_endpoint("encode", encode, input_signature=[tf.TensorSpec((1, s, s, 3), tf.uint8, name="image")])

    def encode_pixels(image):
        return encoder_px(image)

    def embed(token):
        return {"embedding": model.embedding(token)}

    archive.add_endpoint("encode_pixels", encode_pixels,
                         input_signature=[tf.TensorSpec((1, s, s, 3), tf.float32, name="image")])
    archive.add_endpoint("embed", embed, input_signature=[tf.TensorSpec((None,), tf.int32, name="token")])
    for b, step in steps_emb.items():
        archive.add_endpoint(step_signature_name(b, embedded=True), _embedded_step_fn(step), input_signature=[
            tf.TensorSpec((b, cfg.embed_dim), tf.float32, name="embedding"),
            tf.TensorSpec((b, cfg.units), tf.float32, name="hidden"),
            tf.TensorSpec((b, model.locations, cfg.embed_dim), tf.float32, name="features"),
            tf.TensorSpec((b, model.locations, cfg.attention_units), tf.float32, name="keys"),
        ])
    for b, step in steps.items():
        archive.add_endpoint(step_signature_name(b), _step_fn(step), input_signature=[
            tf.TensorSpec((b,), tf.int32, name="token"),
            tf.TensorSpec((b, cfg.units), tf.float32, name="hidden"),
            tf.TensorSpec((b, model.locations, cfg.embed_dim), tf.float32, name="features"),
            tf.TensorSpec((b, model.locations, cfg.attention_units), tf.float32, name="keys"),
        ])
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
        sidecar = {
            "format": EXPORT_FORMAT, "version": 1, "scenecap_version": __version__,
            "model": model_dims(model), "max_length": model.cfg.max_length,
            "decoder_state": model.cfg.decoder_state, "tokens": vocab.ids,
            "decoder_batches": sorted(set(decoder_batches) | {1}), **info,
        }
        atomic_write_text(tmp / SIDECAR, json.dumps(sidecar, indent=2, ensure_ascii=False))
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
    from scenecap.train.callbacks import Checkpointer

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
