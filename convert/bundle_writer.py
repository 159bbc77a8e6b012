"""Write a bundle folder atomically: models, vocab.json and a manifest describing exactly what is inside."""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from scenecap import ScenecapError, __version__
from scenecap.convert import janitor
from scenecap.convert.compat import runtime_claims
from scenecap.convert.janitor import DONE, recover
from scenecap.edge.bundle import load_bundle
from scenecap.edge.fileio import atomic_write_text, default_mode, sha256_file
from scenecap.edge.interpreter import find_runtime
from scenecap.edge.manifest import FORMAT_VERSION, MANIFEST, DecoderSpec, FileEntry, Manifest, ModelDims
from scenecap.edge.manifest_models import ModelSpec, TensorSpec
from scenecap.edge.modelinfo import read_ops
from scenecap.edge.preprocess import PreprocessSpec
from scenecap.edge.vocab import Vocab

PARTIAL, OLD = ".partial", ".old"  # suffixes of a bundle being built, and of a previous one moved aside
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from <fcntl.h> and <linux/fs.h>


def describe_model(path: Path, quant: str, options: list[str] | None = None) -> ModelSpec:
    """Inputs/outputs (shape, dtype, quantisation) as the runtime sees them, the op list, and which target
    runtimes have every op's kernel (compat.py's tables)."""
    interp = find_runtime().interpreter_cls(model_path=str(path))
    runner = interp.get_signature_runner()

    def specs(details: dict) -> dict[str, TensorSpec]:
        out = {}
        for name, d in details.items():
            scale, zp = d["quantization"]
            out[name] = TensorSpec(name, [int(x) for x in d["shape"]], np.dtype(d["dtype"]).name, float(scale),
                                   int(zp))
        return out

    ops = read_ops(path)
    return ModelSpec(file=path.name, quant=quant, inputs=specs(runner.get_input_details()),
                     outputs=specs(runner.get_output_details()), ops=[str(o) for o in ops],
                     options=list(options or []), runtimes=runtime_claims(ops, quant))


def write_bundle(out: str | Path, models: dict[str, tuple], vocab: Vocab, export_info: dict,
                 provenance: dict, decoder_batch: int = 1, extra_files: dict[str, bytes] | None = None,
                 force: bool = False, decoder_extra: dict | None = None) -> Path:
    """models: {"encoder": (tflite bytes, quant[, options]), "decoder_step": (...)}. Returns the bundle folder.

    decoder_extra: more decoder facts for the manifest (the Edge TPU decoder's embedding table).

    Atomic, even against SIGKILL: the bundle is built in a hidden folder beside `out` and swapped in at the
    end; a janitor process (convert/janitor.py) removes that folder, or puts the previous bundle back, if this
    process dies before it is done. `out` is always the previous bundle or the new one, complete."""
    out = Path(out)
    if out.exists() and not force:
        raise ScenecapError(f"{out}: already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out)
    with guarded_folder(out) as (tmp, old):
        try:
            _fill(tmp, models, vocab, export_info, provenance, decoder_batch, extra_files, decoder_extra)
            load_bundle(tmp)  # what we wrote must read back
            replace_dir(tmp, out, old)
        except BaseException:
            recover(out, tmp, old)
            raise
    return out


def _fill(tmp: Path, models: dict[str, tuple], vocab: Vocab, export_info: dict, provenance: dict,
          decoder_batch: int, extra_files: dict[str, bytes] | None, decoder_extra: dict | None) -> None:
    """Every file of the bundle into `tmp`, synced to disk (the swap must not publish files still in cache)."""
    specs = {}
    for name, (data, quant, *options) in models.items():
        _write_synced(tmp / f"{name}.tflite", data)
        specs[name] = describe_model(tmp / f"{name}.tflite", quant, options[0] if options else None)
    vocab.save(tmp / "vocab.json")
    for name, data in (extra_files or {}).items():
        _write_synced(tmp / name, data)
    files = {p.name: FileEntry(sha256_file(p), p.stat().st_size) for p in sorted(tmp.iterdir()) if p.is_file()}
    where = str(tmp / MANIFEST)  # the export's model and decoder facts, checked as they will be read back
    decoder = {"state": export_info.get("decoder_state", "carry"), "batch": decoder_batch, **(decoder_extra or {})}
    manifest = Manifest(
        language=export_info["language"],
        preprocess=PreprocessSpec(**export_info["preprocess"]),
        tokens=vocab.ids,
        max_length=int(export_info["max_length"]),
        model=ModelDims.from_json(dict(export_info["model"]), f"{where}: model"),
        decoder=DecoderSpec.from_json(decoder, f"{where}: decoder"),
        models=specs,
        files=files,
        scenecap_version=__version__,
        format_version=FORMAT_VERSION,
        training=export_info.get("training", {}),
        provenance=provenance,
    )
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest.to_json(), indent=2, ensure_ascii=False))


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def guarded_folder(target: Path, tag: str = "", parent: Path | None = None) -> Iterator[tuple[Path, Path]]:
    """(tmp, old): a new hidden folder beside `target` (or in `parent`) to build in, and the name a previous
    `target` takes while being swapped out where folders cannot be exchanged atomically.

    The janitor starts before the folder exists, so a SIGKILL at any moment leaves nothing behind. The pid in
    the name lets a later run tell a dead writer's leftovers from a live writer's folder (sweep_leftovers)."""
    parent = parent or target.parent
    stem = f".{target.name}.{os.getpid()}.{tag}{secrets.token_hex(4)}"
    tmp, old = parent / (stem + PARTIAL), parent / (stem + OLD)
    with janitor_watching(target, tmp, old):
        tmp.mkdir()
        tmp.chmod(default_mode(directory=True))  # the bundle's folder mode, whatever the umask
        yield tmp, old


@contextmanager
def janitor_watching(target: Path, tmp: Path, old: Path) -> Iterator[None]:
    """A janitor process for this write: it recovers if we die, and exits quietly once told we are done."""
    # Run as a file in isolated mode: it needs only the standard library, so it starts fast and works however
    # scenecap was put on sys.path. Its own session: a Ctrl-C to our process group does not reach it.
    cmd = [sys.executable, "-I", "-S", janitor.__file__, str(target), str(tmp), str(old)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, start_new_session=True)
    try:
        yield
    finally:
        # Reached on success and on every error we survive (we recovered ourselves): the janitor has nothing
        # to do. Only a death that skips this (SIGKILL) leaves it an EOF without "done".
        try:
            proc.stdin.write(DONE)
            proc.stdin.close()
        except OSError:  # it died first (killed with our process group): we already recovered or finished
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def replace_dir(new: Path, target: Path, old: Path | None = None) -> None:
    """Put `new` at `target` in one step; a previous `target` ends up at `new` (swapped) and is removed.

    Where the system cannot swap two folders atomically, the previous `target` is renamed to `old` first; a
    death between the two renames is repaired by the janitor or by the next write (`sweep_leftovers`)."""
    old = old or target.with_name(f".{target.name}.{os.getpid()}{OLD}")
    parent = target.parent
    if not target.exists():
        new.rename(target)
    elif exchange_atomically(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now the previous bundle
    else:
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    _sync_dir(parent)


def exchange_atomically(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE). False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or filesystem without the flag
        return False
    raise OSError(err, os.strerror(err), str(b))


def _sync_dir(path: Path) -> None:
    """Make the renames durable: a power cut after this finds the new bundle, not the old one half-replaced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def sweep_leftovers(target: Path) -> None:
    """Remove what a writer killed together with its janitor (power cut, a whole process group killed) left
    beside `target`, and put a previous bundle back if it died between the two renames. Folders of a writer
    that is still running are left alone."""
    for p in sorted(target.parent.glob(f".{glob.escape(target.name)}.*")):
        if not (p.name.endswith(PARTIAL) or p.name.endswith(OLD)) or _alive(_writer_pid(p, target)):
            continue
        if p.name.endswith(OLD) and not target.exists():
            p.rename(target)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _writer_pid(p: Path, target: Path) -> int | None:
    middle = p.name[len(target.name) + 2:].split(".", 1)[0]
    return int(middle) if middle.isdigit() else None


def _alive(pid: int | None) -> bool:
    """Whether the writer that named a folder still runs (no pid: a name from before pids were recorded)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
