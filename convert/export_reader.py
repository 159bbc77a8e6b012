"""Read what `scenecap export` wrote: the SavedModel's signatures, the vocabulary and the sidecar facts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scenecap import ScenecapError
from scenecap.edge.vocab import Vocab

SIDECAR = "scenecap_export.json"


@dataclass
class ExportInfo:
    path: Path
    info: dict
    vocab: Vocab

    def decoder_signature(self, batch: int) -> str:
        name = "decode_step" if batch == 1 else f"decode_step_b{batch}"
        if batch not in self.info.get("decoder_batches", [1]):
            raise ScenecapError(
                f"{self.path}: has no decoder step for batch {batch} (has {self.info.get('decoder_batches')}); "
                f"re-export with 'scenecap export --decoder-batch {batch}'"
            )
        return name


def read_export(path: str | Path) -> ExportInfo:
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ScenecapError(f"{path}: no saved_model.pb; expected a folder written by 'scenecap export'")
    sidecar = path / SIDECAR
    if not sidecar.is_file():
        raise ScenecapError(f"{sidecar}: missing; expected a SavedModel written by 'scenecap export'")
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScenecapError(f"{sidecar}: unreadable ({e})") from None
    for key in ("model", "max_length", "tokens", "preprocess", "language"):
        if key not in info:
            raise ScenecapError(f"{sidecar}: missing key {key!r}")
    return ExportInfo(path, info, Vocab.load(path / "vocab.json"))


def check_signatures(export: ExportInfo, needed: list[str]) -> None:
    """Fail with one line if the SavedModel lacks a signature we convert."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export.path))
    missing = [s for s in needed if s not in loaded.signatures]
    if missing:
        raise ScenecapError(
            f"{export.path}: SavedModel has no signature {', '.join(missing)} (it has {sorted(loaded.signatures)}); "
            "expected a folder written by 'scenecap export' (re-export it with this scenecap version)"
        )
