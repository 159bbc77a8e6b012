"""The export contract: what `scenecap export` (train/) writes and `scenecap convert` (convert/) reads.

The SavedModel's signature names and the sidecar file beside it (scenecap_export.json: model dimensions,
vocabulary ids, preprocessing, training facts) with its format and version. Both sides import this module; it
needs no TensorFlow, so it lives in the shared core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scenecap.edge.errors import ScenecapError

EXPORT_FORMAT = "scenecap-export"
# A newer major version is refused; older ones are read (their missing optional keys take the defaults below).
EXPORT_VERSION = 1
SIDECAR = "scenecap_export.json"

ENCODE = "encode"  # uint8 image -> features, keys
ENCODE_PIXELS = "encode_pixels"  # float pixels 0..255 -> as encode (the Edge TPU encoder, uint8-quantised input)
EMBED = "embed"  # token ids -> word embeddings (looked up on the CPU for the embedded decoders)
# The decoder step's extra output in the decode_step_norm signatures: log(sum(exp(logits))) per row, float32 [B].
# Computed in the graph so the caption loop needs no pass over the vocabulary for a word's log-probability.
LOG_NORM = "log_norm"
# Bumped whenever export adds signatures (1: encode, decode_step; 2: the Edge TPU ones; 3: decode_step_norm), so a
# cache of exports (the tests') can key on it and never hand out an export without what the code now converts.
SIGNATURES_REVISION = 3


def encoder_signature(pixels: bool = False) -> str:
    return ENCODE_PIXELS if pixels else ENCODE


def decode_signature(batch: int = 1, embedded: bool = False, log_norm: bool = False) -> str:
    """The decoder step for a fixed batch (beam width); `embedded` takes the word's embedding, not its id;
    `log_norm` also outputs LOG_NORM (only with token input: the embedded steps are for integer decoders, whose
    quantised log_norm would be too coarse and would run on the CPU beside an Edge TPU)."""
    if embedded and log_norm:
        raise ValueError("no embedded decoder step outputs log_norm (they are for integer-quantised decoders)")
    base = "decode_step_embedded" if embedded else "decode_step_norm" if log_norm else "decode_step"
    return base if batch == 1 else f"{base}_b{batch}"


_REQUIRED = ("model", "max_length", "tokens", "preprocess", "language")


@dataclass
class ExportSidecar:
    """scenecap_export.json. `extra`: keys this version does not know, kept so a round trip loses nothing."""

    model: dict
    max_length: int
    tokens: dict
    preprocess: dict
    language: str
    decoder_state: str = "carry"
    decoder_batches: list[int] = field(default_factory=lambda: [1])
    # decode_step_norm[_bB] beside each decode_step[_bB]; False: an export from before them (convert then uses
    # decode_step for every decoder, and its bundles compute log-probabilities in numpy, as they always did).
    log_norm: bool = False
    training: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    scenecap_version: str = ""
    version: int | str = EXPORT_VERSION  # as written: export writes an int
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        # Key order as export has always written it; log_norm only when true, so an older sidecar reads back as
        # it was written.
        norm = {"log_norm": True} if self.log_norm else {}
        return {
            "format": EXPORT_FORMAT, "version": self.version, "scenecap_version": self.scenecap_version,
            "model": self.model, "max_length": self.max_length, "decoder_state": self.decoder_state,
            "tokens": self.tokens, "decoder_batches": self.decoder_batches, **norm, "language": self.language,
            "preprocess": self.preprocess, "training": self.training, "calibration": self.calibration,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = SIDECAR) -> ExportSidecar:
        """The sidecar from its JSON value, or one ScenecapError line: not ours, too new, a key missing."""
        if not isinstance(data, dict):
            raise ScenecapError(f"{where}: a JSON {type(data).__name__}; expected the object 'scenecap export' "
                                "writes")
        if data.get("format") != EXPORT_FORMAT:
            raise ScenecapError(f"{where}: format {data.get('format')!r}; expected {EXPORT_FORMAT!r} (a folder "
                                "written by 'scenecap export')")
        version = _major(data.get("version"), where)
        for key in _REQUIRED:
            if key not in data:
                raise ScenecapError(f"{where}: missing key {key!r}")
        if not isinstance(data.get("log_norm", False), bool):
            raise ScenecapError(f"{where}: log_norm is {data['log_norm']!r}; expected true or false")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "extra"}
        extra = {k: v for k, v in data.items() if k not in cls.__dataclass_fields__ and k != "format"}
        return cls(**{**known, "version": version}, extra=extra)


def _major(version: Any, where: str) -> int | str:
    """The major version of an int (what export writes) or a 'MAJOR.MINOR' string; newer than ours is refused."""
    text = str(version)
    major = text.split(".")[0]
    if isinstance(version, bool) or not major.isdigit() or int(major) < 1:
        raise ScenecapError(f"{where}: version {version!r}; expected a positive integer such as {EXPORT_VERSION}")
    if int(major) > EXPORT_VERSION:
        raise ScenecapError(f"{where}: export version {text} is newer than this scenecap reads ({EXPORT_VERSION}); "
                            "upgrade scenecap, or export again with this one")
    return version
