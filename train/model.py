"""Show, Attend and Tell in Keras 3: MobileNet feature map -> Bahdanau attention -> GRU cell, one word a step.

The step is written once (`ShowAttendTell.step`) and used three ways: unrolled for teacher-forced training,
as the exported single-step decoder, and by the Keras reference caption loop the tests compare against.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from scenecap import ScenecapError
from scenecap.edge.errors import first_line
from scenecap.train.model_config import BACKBONES, FEATURE_STRIDES, ModelConfig  # noqa: F401  (re-exported)


def resolve_weights(weights: str | None) -> str | None:
    if weights in (None, "", "none", "None"):
        return None
    if weights == "imagenet":
        return "imagenet"
    if not Path(weights).is_file():
        raise ScenecapError(f"backbone weights {weights}: file not found; expected 'imagenet', 'none' or a local .h5")
    return str(weights)


def make_backbone(cfg: ModelConfig) -> keras.Model:
    shape = (cfg.image_size, cfg.image_size, 3)
    local = resolve_weights(cfg.weights)
    weights = "imagenet" if local == "imagenet" else None  # a local file is loaded below, after the cut
    try:
        if cfg.backbone == "mobilenet_v2":
            net = keras.applications.MobileNetV2(input_shape=shape, alpha=cfg.alpha, include_top=False, weights=weights)
        elif cfg.backbone in ("mobilenet_v3_small", "mobilenet_v3_large"):
            ctor = (keras.applications.MobileNetV3Small if cfg.backbone.endswith("small")
                    else keras.applications.MobileNetV3Large)
            # include_preprocessing=False: our encoder already maps pixels to [-1, 1].
            net = ctor(input_shape=shape, alpha=cfg.alpha, include_top=False, weights=weights,
                       include_preprocessing=False)
        else:
            raise ScenecapError(f"backbone {cfg.backbone!r} unknown; expected one of {BACKBONES}")
    except ValueError as e:
        raise ScenecapError(f"backbone {cfg.backbone} alpha={cfg.alpha} size={cfg.image_size}: {e}") from None
    except Exception as e:  # network failure when fetching ImageNet weights
        if weights == "imagenet":
            raise ScenecapError(
                f"could not fetch ImageNet weights for {cfg.backbone} ({type(e).__name__}); with no network, "
                "download the .h5 elsewhere and pass --weights PATH.h5, or --weights none"
            ) from None
        raise
    for layer in net.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = cfg.bn_momentum
    cut = cut_at_stride(net, cfg)
    if local not in (None, "imagenet"):
        load_local_weights(net, cut, local, cfg)
    return cut


def load_local_weights(net: keras.Model, cut: keras.Model, path: str, cfg: ModelConfig) -> None:
    """A local .h5 of the whole backbone (e.g. ImageNet weights fetched elsewhere), or of one cut at the same
    stride (a scenecap backbone saved with save_weights). The cut shares its layers with the whole net."""
    why = ""
    for target in (net, cut) if cut is not net else (net,):
        try:
            target.load_weights(path)
            return
        except (ValueError, OSError, KeyError) as e:
            why = first_line(e, limit=160)
    raise ScenecapError(f"backbone weights {path}: do not fit {cfg.backbone} alpha={cfg.alpha} at "
                        f"{cfg.image_size} px, feature_stride {cfg.feature_stride} ({why})")


def cut_at_stride(net: keras.Model, cfg: ModelConfig) -> keras.Model:
    """The backbone up to its last layer at `cfg.feature_stride` (the widest, expanded map at that scale)."""
    if cfg.feature_stride not in FEATURE_STRIDES:
        raise ScenecapError(f"feature_stride {cfg.feature_stride}: expected one of {FEATURE_STRIDES}")
    if cfg.feature_stride == 32:
        return net
    side = cfg.image_size // cfg.feature_stride
    at_stride = [layer for layer in net.layers if tuple(layer.output.shape[1:3]) == (side, side)]
    if not at_stride:
        raise ScenecapError(f"{cfg.backbone} at image_size {cfg.image_size} has no {side}x{side} feature map for "
                            f"feature_stride {cfg.feature_stride}; expected an image_size divisible by 32")
    return keras.Model(net.input, at_stride[-1].output, name=f"{net.name}_stride{cfg.feature_stride}")


def check_output_rank(rank) -> int:
    """output_rank as an int >= 0, or one line saying what it must be."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ScenecapError(f"model.output_rank {rank!r}: expected 0 (a full output layer) or a positive integer "
                            "rank r (Dense(r) then Dense(vocabulary))")
    return rank


class ShowAttendTell(keras.Model):
    def __init__(self, cfg: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        rank = check_output_rank(cfg.output_rank)  # before the backbone: a bad value answers at once
        self.cfg = cfg
        self.backbone = make_backbone(cfg)
        fmap = self.backbone.output_shape  # (None, h, w, c)
        self.locations = int(fmap[1] * fmap[2])
        self.backbone_channels = int(fmap[3])
        self.encoder_fc = layers.Dense(cfg.embed_dim, activation="relu", name="encoder_fc")
        self.W1 = layers.Dense(cfg.attention_units, name="attention_W1")
        self.W2 = layers.Dense(cfg.attention_units, name="attention_W2")
        self.V = layers.Dense(1, name="attention_V")
        self.embedding = layers.Embedding(cfg.vocab_size, cfg.embed_dim, name="embedding")
        self.gru = layers.GRUCell(cfg.units, recurrent_initializer="glorot_uniform", name="gru")
        self.fc1 = layers.Dense(cfg.fc_units, name="fc1")
        self.fc_rank = layers.Dense(rank, use_bias=False, name="fc_rank") if rank else None
        self.fc2 = layers.Dense(cfg.vocab_size, name="fc2")

    # --- per image -------------------------------------------------------------------------------------
    def feature_map(self, images, training=False):
        """uint8 pixels [B, H, W, 3] -> backbone feature map [B, L, C]. Normalisation is part of the graph."""
        x = ops.cast(images, "float32") / 127.5 - 1.0
        fmap = self.backbone(x, training=training)
        return ops.reshape(fmap, (-1, self.locations, self.backbone_channels))

    def project(self, fmap):
        """Feature map -> (features [B, L, E], attention keys [B, L, A]); keys are computed once per image."""
        features = self.encoder_fc(fmap)
        return features, self.W1(features)

    def encode(self, images, training=False):
        return self.project(self.feature_map(images, training=training))

    # --- per word --------------------------------------------------------------------------------------
    def step(self, token, hidden, features, keys):
        """(token [B], hidden [B, U], features, keys) -> (logits [B, V], new hidden [B, U], attention [B, L])."""
        return self.step_embedded(self.embedding(token), hidden, features, keys)

    def step_embedded(self, embedded, hidden, features, keys):
        """`step` after the word-embedding lookup (embedded [B, E]); the Edge TPU decoder is this part, since
        its GATHER cannot map to the TPU and the lookup is done on the CPU from a table in the bundle."""
        context, attention = self.attend(hidden, features, keys)
        logits, new_hidden = self.advance(context, embedded, hidden)
        return logits, new_hidden, attention

    def attend(self, hidden, features, keys):
        """Bahdanau attention: (hidden [B, U], features, keys) -> (context [B, E], attention [B, L])."""
        query = ops.expand_dims(self.W2(hidden), 1)
        score = self.V(ops.tanh(keys + query))  # [B, L, 1]
        attention = ops.softmax(score, axis=1)
        return ops.sum(attention * features, axis=1), ops.squeeze(attention, -1)

    def advance(self, context, embedded, hidden):
        """The GRU and the output layers: (context, embedded word, hidden) -> (logits [B, V], new hidden [B, U])."""
        x = ops.concatenate([context, embedded], axis=-1)
        state = ops.zeros_like(hidden) if self.cfg.decoder_state == "legacy-zero" else hidden
        new_hidden, _ = self.gru(x, [state])
        out = self.fc1(new_hidden)
        if self.fc_rank is not None:  # the low-rank output projection: units -> r -> vocab
            out = self.fc_rank(out)
        return self.fc2(out), new_hidden

    def call(self, inputs, training=False):
        """Teacher forcing: (images, input tokens [B, T]) -> logits [B, T, V]."""
        images, tokens = inputs
        features, keys = self.encode(images, training=training)
        return self.unroll(tokens, features, keys)

    def unroll(self, tokens, features, keys):
        """Run `step` over every position with a symbolic loop (tf.scan): tracing cost does not grow with T."""
        import tensorflow as tf  # the training side is TensorFlow; the loop must be graph-level, not unrolled

        hidden0 = tf.zeros((tf.shape(tokens)[0], self.cfg.units), dtype="float32")

        def body(carry, token):
            _, hidden = carry
            logits, hidden, _ = self.step(token, hidden, features, keys)
            # float32 carry under mixed precision (float16 compute): the scan's dtypes must not change.
            return ops.cast(logits, "float32"), ops.cast(hidden, "float32")

        logits0 = tf.zeros((tf.shape(tokens)[0], self.cfg.vocab_size), dtype="float32")
        logits, _ = tf.scan(body, tf.transpose(tokens), initializer=(logits0, hidden0))
        return tf.transpose(logits, (1, 0, 2))

    # --- reference inference (Keras, eager): what the exported and converted models must reproduce ----
    def greedy_caption(self, image: np.ndarray, start: int, end: int) -> list[int]:
        features, keys = self.encode(image[None])
        hidden = ops.zeros((1, self.cfg.units))
        token = ops.convert_to_tensor(np.array([start], np.int32))
        out = []
        for _ in range(self.cfg.max_length - 1):
            logits, hidden, _ = self.step(token, hidden, features, keys)
            best = int(ops.argmax(logits[0]))
            out.append(best)
            if best == end:
                break
            token = ops.convert_to_tensor(np.array([best], np.int32))
        return out


def build(cfg: ModelConfig) -> ShowAttendTell:
    model = ShowAttendTell(cfg)
    s = cfg.image_size
    model((np.zeros((1, s, s, 3), np.uint8), np.zeros((1, 2), np.int32)))  # create every weight
    return model

