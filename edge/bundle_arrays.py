"""A bundle's numpy files, the word table (.npy) and the confidence statistics (.npz), read from its verified bytes.

Never unpickled, and each header is checked against the manifest before any data is read, so a header claiming a
huge array allocates nothing. The most bytes each file may hold is known from the manifest alone (`*_bound`), so
the loader refuses an oversized one before reading it.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from scenecap.edge.errors import ScenecapError

if TYPE_CHECKING:
    from scenecap.edge.bundle import Bundle
    from scenecap.edge.manifest import ConfidenceSection, EmbeddingTable

NPY_HEADER_BYTES = 64 << 10  # an .npy header is ~128 bytes; room for any numpy version's padding
ZIP_MEMBER_OVERHEAD = 1 << 10  # a zip member's local header, central entry and name


def embedding_bound(table: EmbeddingTable) -> int:
    return math.prod(table.shape) * np.dtype(table.dtype).itemsize + NPY_HEADER_BYTES


def stats_bound(conf: ConfidenceSection) -> int:
    return sum(math.prod(s) * 4 + NPY_HEADER_BYTES + ZIP_MEMBER_OVERHEAD for s in conf.array_shapes.values())


def load_embedding(bundle: Bundle) -> np.ndarray | None:
    """An embedding-input decoder's word table (quantised like its input, if that is quantised), or None."""
    spec = bundle.manifest.embedding
    if not spec:
        return None
    path = bundle.file(spec.file)
    shape, fortran, dtype, body = _npy_header(bundle.content(spec.file), path)
    if list(shape) != spec.shape or dtype.name != spec.dtype or fortran:
        raise ScenecapError(f"{path}: {dtype.name}{list(shape)}{' (Fortran order)' if fortran else ''}; the "
                            f"manifest says {spec.dtype}{spec.shape}")
    return _npy_data(body, shape, dtype, path)


def load_confidence_arrays(bundle: Bundle) -> dict[str, np.ndarray] | None:
    """The confidence section's statistics (mean, components, variances, residual, references), or None.

    A .npz (zip) whose members are exactly the expected .npy arrays, each member's stated size checked against
    the manifest's shapes before it is decompressed."""
    conf = bundle.manifest.confidence
    if not conf:
        return None
    import zipfile

    path = bundle.file(conf.file)
    shapes = conf.array_shapes
    try:
        with zipfile.ZipFile(io.BytesIO(bundle.content(conf.file))) as z:
            names = sorted(i.filename for i in z.infolist())
            if names != sorted(f"{n}.npy" for n in shapes):
                raise ScenecapError(f"{path}: holds {names}; expected {', '.join(f'{n}.npy' for n in shapes)}")
            out = {}
            for name, shape in shapes.items():
                info = z.getinfo(f"{name}.npy")
                if info.file_size > math.prod(shape) * 4 + NPY_HEADER_BYTES:
                    raise ScenecapError(f"{path}: {name}.npy is {info.file_size} bytes; float32{list(shape)} "
                                        "needs far less")
                out[name] = _npy_array(z.read(info), shape, f"{path}: {name}.npy")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, ValueError) as e:
        raise ScenecapError(f"{path}: not a readable stats file ({str(e).splitlines()[0] if str(e) else e}); "
                            "re-run 'scenecap calibrate'") from None
    return out


def _npy_header(raw: bytes, where: object) -> tuple[tuple[int, ...], bool, np.dtype, memoryview]:
    """A .npy file's (shape, fortran order, dtype, data bytes), its header read without touching the data and
    never unpickled: the caller checks them against the manifest before anything is allocated."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"format version {version[0]}.{version[1]}; expected 1.0 or 2.0")
        shape, fortran, dtype = readers[version](f, max_header_size=NPY_HEADER_BYTES)
    except (OSError, ValueError, SyntaxError, TypeError) as e:
        raise ScenecapError(f"{where}: not a readable .npy array ({str(e).splitlines()[0] if str(e) else e})") from None
    return tuple(shape), fortran, dtype, memoryview(raw)[f.tell():]


def _npy_data(body: memoryview, shape: tuple[int, ...], dtype: np.dtype, where: object) -> np.ndarray:
    """The array of a checked header: exactly the bytes it needs, copied (writable, not tied to the file's)."""
    needed = math.prod(shape) * dtype.itemsize
    if len(body) != needed:
        raise ScenecapError(f"{where}: {len(body)} bytes of data; {dtype.name}{list(shape)} needs {needed}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def _npy_array(raw: bytes, shape: tuple[int, ...], where: str) -> np.ndarray:
    """One float32 .npy array of this shape from bytes, its header checked before the data is touched."""
    got, fortran, dtype, body = _npy_header(raw, where)
    if got != tuple(shape) or dtype != np.dtype("<f4") or fortran:
        raise ScenecapError(f"{where}: {dtype.name}{list(got)}; the manifest says float32{list(shape)}")
    return _npy_data(body, shape, dtype, where)
