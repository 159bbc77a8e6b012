"""Atomic file writes, whole-line appends and hashing: a crash or a full disk never leaves a half-written file
where a good one was, nor half a line at the end of a log."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from scenecap.edge.errors import ScenecapError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give: mkstemp/mkdtemp use 0600/0700, too tight for a bundle that a
    service user must read."""
    return (0o777 if directory else 0o666) & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_regular(path: str | Path, limit: int, what: str = "file", follow_symlinks: bool = False) -> bytes:
    """The bytes of a regular file, read once, at most `limit` of them, or one ScenecapError line.

    Read once so a caller can verify and then use the very same bytes (a file swapped between a hash check and a
    second open is never used). O_NOFOLLOW refuses a symbolic link (one pointing out of a bundle); O_NONBLOCK keeps
    a FIFO from hanging the open, and the fstat check refuses it and any other non-regular file. Reading stops at
    `limit` + 1 bytes, so a huge file is refused without being held in memory.
    """
    path = Path(path)
    if "\0" in str(path):  # os.open would raise ValueError "embedded null byte"
        raise ScenecapError(f"{str(path)!r}: not a usable path (it contains a NUL byte)")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ScenecapError(f"{path}: {what} not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise ScenecapError(f"{path}: is a symbolic link; expected a regular {what}, not a link (which may "
                                "point anywhere)") from None
        raise ScenecapError(f"{path}: cannot read the {what} ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
            raise ScenecapError(f"{path}: is {kind}; expected a regular {what}")
        if st.st_size > limit:
            raise ScenecapError(f"{path}: {st.st_size} bytes; expected at most {limit} for a {what}")
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # it grew while being read
            raise ScenecapError(f"{path}: more than {limit} bytes; expected at most {limit} for a {what}")
        return b"".join(chunks)
    except OSError as e:
        raise ScenecapError(f"{path}: cannot read the {what} ({e.strerror})") from None
    finally:
        os.close(fd)


MAX_JSON_BYTES = 64 << 20  # a sidecar, state or config file; far larger is not one


def parse_json(raw: bytes, path: str | Path, what: str = "file") -> Any:
    """The JSON value of bytes already read from `path`, or one ScenecapError line naming the file and the fault."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ScenecapError(f"{path}: not UTF-8 text (byte {e.start}); expected a JSON {what}") from None
    except json.JSONDecodeError as e:
        raise ScenecapError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:  # json gives up on deeply nested arrays this way, not with a JSONDecodeError
        raise ScenecapError(f"{path}: JSON nested too deeply; expected a JSON {what}") from None
    except ValueError as e:  # not a JSONDecodeError: an integer past Python's 4300-digit limit
        raise ScenecapError(f"{path}: invalid JSON: {str(e).split(':')[0]}") from None


def read_json(path: str | Path, what: str = "file", limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file's value (links followed), or one ScenecapError line: missing, not a regular file, too large,
    not UTF-8, not JSON."""
    return parse_json(read_regular(path, limit, what, follow_symlinks=True), path, what)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# What a failed write means, in the words a user searches for.
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (the filesystem's or the process's file size limit, ulimit -f)",
}


class OutputError(ScenecapError):
    """An output file could not be written (disk full, quota, size limit, I/O error); the message is one line."""


class LineFile:
    """Appends whole lines to a file (JSON lines): each line is in the file entirely or not at all.

    Written straight to the file descriptor, unbuffered, one write per line in append mode, so a reader (tail -f,
    the tests) sees every line as soon as it is written. When a write fails part-way (the disk fills), the part
    of the line that made it is cut off again, so the lines already written stay a valid JSON-lines file.
    """

    def __init__(self, path: str | Path, what: str = "--jsonl"):
        self.path, self.what, self.lines = Path(path), what, 0
        try:
            self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as e:
            raise ScenecapError(f"{what} {self.path}: cannot open for writing ({e.strerror})") from None

    def write_line(self, text: str) -> None:
        if self.fd is None:
            raise OutputError(f"{self.what} {self.path}: already closed")
        data = memoryview((text.rstrip("\n") + "\n").encode("utf-8"))
        start = os.fstat(self.fd).st_size
        try:
            while data:  # a write may take only part of the line (the last free blocks of a disk)
                data = data[os.write(self.fd, data):]
        except OSError as e:
            self._cut_back(start)
            what = _WRITE_ERRORS.get(e.errno, e.strerror or type(e).__name__)
            n = self.lines
            raise OutputError(f"{self.what} {self.path}: {what}; stopped after {n} line{'s' if n != 1 else ''}, "
                              f"which {'are' if n != 1 else 'is'} kept complete") from None
        self.lines += 1

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)  # shrinking needs no free space
        except OSError:
            pass  # nothing more to do: the next reader sees a partial last line, as it would have anyway

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
