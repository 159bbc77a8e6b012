"""The model's settings, apart from the model: importing them needs no Keras, so `scenecap train --help`, the
config checks and the settings table (config_fields.py) work on a machine without TensorFlow."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from scenecap import ScenecapError

BACKBONES = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
FEATURE_STRIDES = (8, 16, 32)


@dataclass
class ModelConfig:
    vocab_size: int
    max_length: int = 0  # tokens including <start> and <end>; 0: training picks what the captions need
    backbone: str = "mobilenet_v2"
    alpha: float = 0.35
    image_size: int = 96
    weights: str | None = None  # None (from scratch), "imagenet", or a local .h5 path
    embed_dim: int = 256  # encoder feature size and word embedding size
    units: int = 512  # GRU hidden state
    attention_units: int = 512
    fc_units: int = 512
    decoder_state: str = "carry"  # "legacy-zero": GRU restarts from zeros each step (the replaced system)
    bn_momentum: float = 0.9  # Keras fixes 0.999, which lags badly in short from-scratch training
    # Which feature map the decoder attends over: the backbone's last (stride 32, as with ImageNet weights) or
    # an earlier one. From scratch on small images, stride 8 learns shapes several times faster (measured on the
    # synthetic scenes: colour+shape 20% vs 6% after 200 steps at 64 px) and gives finer attention locations.
    feature_stride: int = 32
    # The output layer at a large vocabulary is most of a decoder step's weights (26,556 words x 512: 13.6 MB int8,
    # memory-bound). r > 0 factors it as Dense(r, no bias) then Dense(vocab): fc_units*r + r*vocab weights.
    output_rank: int = 0  # 0: the usual Dense(vocab)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ScenecapError(f"model config: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
