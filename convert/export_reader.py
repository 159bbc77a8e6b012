"""Read what `scenecap export` wrote: the SavedModel's signatures, the vocabulary and the sidecar facts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scenecap import ScenecapError
from scenecap.edge.export_contract import SIDECAR, ExportSidecar, decode_signature
from scenecap.edge.fileio import read_json
from scenecap.edge.vocab import Vocab


@dataclass
class ExportInfo:
    path: Path
    sidecar: ExportSidecar
    vocab: Vocab

    @property
    def info(self) -> dict:
        """The sidecar as JSON (what the readers of `info` before ExportSidecar expect)."""
        return self.sidecar.to_json()

    def decoder_signature(self, batch: int) -> str:
        batches = self.sidecar.decoder_batches
        if batch not in batches:
            raise ScenecapError(
                f"{self.path}: has no decoder step for batch {batch} (has {batches}); "
                f"re-export with 'scenecap export --decoder-batch {batch}'"
            )
        return decode_signature(batch)


def read_export(path: str | Path) -> ExportInfo:
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ScenecapError(f"{path}: no saved_model.pb; expected a folder written by 'scenecap export'")
    sidecar = path / SIDECAR
    if not sidecar.is_file():
        raise ScenecapError(f"{sidecar}: missing; expected a SavedModel written by 'scenecap export'")
    info = ExportSidecar.from_json(read_json(sidecar, "export sidecar"), str(sidecar))
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
