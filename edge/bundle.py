"""The bundle format (v1): a folder of .tflite models, vocab.json and manifest.json, loaded and verified here.

The manifest's schema and its checks are edge/manifest.py's; the word table and confidence statistics are read by
edge/bundle_arrays.py. Loading reads every listed file once: a regular file inside the bundle (no link), of the
recorded size, bounded by what the manifest and the models say before it is read, and of the recorded sha256;
the models, vocabulary and tables are made from those same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from scenecap.edge.bundle_arrays import embedding_bound, load_confidence_arrays, load_embedding, stats_bound
from scenecap.edge.errors import ScenecapError
from scenecap.edge.fileio import read_regular
from scenecap.edge.manifest import DECODER_STATES, FORMAT_VERSION, MANIFEST, MAX_LENGTH, Manifest, parse_manifest
from scenecap.edge.manifest_models import QUANTS, ModelSpec, TensorSpec
from scenecap.edge.modelinfo import MAX_MODEL_BYTES
from scenecap.edge.vocab import Vocab

# Re-exported: the schema's names, and the array loaders, as callers have long imported them from here.
__all__ = ["DECODER_STATES", "FORMAT_VERSION", "MANIFEST", "MAX_LENGTH", "QUANTS", "Bundle", "Manifest",
           "ModelSpec", "TensorSpec", "load_bundle", "load_confidence_arrays", "load_embedding", "parse_manifest",
           "read_files", "read_manifest", "verify_files"]

MAX_MANIFEST_BYTES = 4 << 20  # a manifest is a few kB; its op lists are the bulk
# A vocab.json holds one JSON string per logit: 1 kB per token is far more than any word needs (escaped or not).
VOCAB_BYTES_PER_TOKEN = 1024
VOCAB_BYTES_OVERHEAD = 64 << 10


@dataclass
class Bundle:
    """A loaded bundle. `data` holds each listed file's bytes as read once and verified: the models, vocabulary and
    word table are made from these bytes, never by opening the files again (a file swapped or rewritten after the
    check is never used, and no model is memory-mapped from a file that can change under it)."""

    path: Path
    manifest: Manifest
    vocab: Vocab
    data: dict[str, bytes] = field(default_factory=dict, repr=False)

    def file(self, name: str) -> Path:
        return self.path / name

    def content(self, name: str) -> bytes:
        """A listed file's verified bytes."""
        return self.data[name]


def _size_bound(manifest: Manifest, name: str) -> tuple[int, str]:
    """The most bytes a listed file can need, from what the models already say, and why: checked before the file
    is read, whatever its recorded size (which whoever wrote the file also wrote)."""
    if name == manifest.vocab:
        n = manifest.vocab_size
        return n * VOCAB_BYTES_PER_TOKEN + VOCAB_BYTES_OVERHEAD, f"a vocabulary of {n} tokens (the decoder's logits)"
    conf = manifest.confidence
    if conf and name == conf.file:
        return stats_bound(conf), f"confidence statistics of {conf.components} components and " \
            f"{conf.references} references"
    table = manifest.embedding
    if table and name == table.file:
        return embedding_bound(table), f"a {table.dtype}{table.shape} word table"
    return MAX_MODEL_BYTES, "a model (a flatbuffer addresses 2 GiB at most)"


def read_manifest(bundle_dir: str | Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if bundle_dir.is_file():
        raise ScenecapError(f"{bundle_dir}: is a file; expected a bundle folder (with manifest.json and models)")
    if not bundle_dir.is_dir():
        raise ScenecapError(f"{bundle_dir}: not a bundle folder (no such directory)")
    if not os.path.lexists(path) or path.is_dir() and not path.is_symlink():
        raise ScenecapError(f"{path}: missing; a bundle folder needs a manifest.json (is this a bundle?)")
    raw = read_regular(path, MAX_MANIFEST_BYTES, "manifest file")  # no link, FIFO or device; bounded
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ScenecapError(f"{path}: not UTF-8 text; expected JSON") from None
    except json.JSONDecodeError as e:
        raise ScenecapError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except ValueError as e:  # not a JSONDecodeError: an integer past Python's 4300-digit limit
        raise ScenecapError(f"{path}: invalid JSON: {str(e).split(':')[0]}") from None
    except RecursionError:  # json gives up on deeply nested arrays this way, not with a JSONDecodeError
        raise ScenecapError(f"{path}: JSON nested too deeply; expected a bundle manifest object") from None
    return parse_manifest(data, str(path))


def read_files(bundle_dir: Path, manifest: Manifest, verify: bool = True) -> dict[str, bytes]:
    """Every file the manifest lists, read once: a regular file inside the bundle (no link), of the recorded size,
    and (verify) of the recorded sha256. The bytes returned are the bytes checked."""
    out = {}
    for name, info in sorted(manifest.files.items()):
        p = bundle_dir / name
        raw = _read_listed(p, info.bytes, _size_bound(manifest, name))
        digest = hashlib.sha256(raw).hexdigest()
        if verify and digest != info.sha256:
            raise ScenecapError(
                f"{p}: sha256 {digest[:12]}... does not match the manifest's {info.sha256[:12]}...; "
                "the file was changed or corrupted"
            )
        out[name] = raw
    return out


def _read_listed(p: Path, recorded: int | None, bound: tuple[int, str]) -> bytes:
    """One listed file's bytes: refused unread if larger than `bound` (bytes, why) or than its recorded size."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise ScenecapError(f"{p}: missing from the bundle (listed in manifest.json)") from None
    except OSError as e:
        raise ScenecapError(f"{p}: cannot read the bundle file ({e.strerror})") from None
    most, why = bound
    size = st.st_size if stat.S_ISREG(st.st_mode) else None  # a link or FIFO: read_regular says what it is
    if size is not None and size > most:
        raise ScenecapError(f"{p}: {size} bytes; expected at most {most} for {why}")
    raw = b""
    if size is None or recorded is None or size == recorded:
        raw = read_regular(p, most if recorded is None else min(most, recorded), "bundle file")
        size = len(raw)  # it may have changed since the lstat
    if recorded is not None and size != recorded:
        raise ScenecapError(f"{p}: {size} bytes; the manifest says {recorded} (the file was changed or truncated)")
    return raw


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Every file the manifest lists exists, has the recorded size and the recorded sha256."""
    read_files(bundle_dir, manifest)


def load_bundle(bundle_dir: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle: manifest valid, files present with matching hashes, vocab consistent.

    Each file is read once; the Bundle keeps the verified bytes, from which everything else is made."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    data = read_files(bundle_dir, manifest, verify)
    vocab_path = bundle_dir / manifest.vocab
    vocab = Vocab.parse(data[manifest.vocab], vocab_path)
    if vocab.ids != {k: manifest.tokens[k] for k in vocab.ids}:
        raise ScenecapError(
            f"{vocab_path}: special token ids {vocab.ids} differ from the manifest's {manifest.tokens}"
        )
    n = manifest.vocab_size  # a word per logit (model.vocab_size, if recorded, was checked equal to it)
    if len(vocab) != n:
        said = f"the manifest says {n}" if manifest.model.vocab_size is not None else \
            f"the decoder's logits score {n} (one token per logit expected)"
        raise ScenecapError(f"{vocab_path}: {len(vocab)} tokens; {said}")
    return Bundle(bundle_dir, manifest, vocab, data)
