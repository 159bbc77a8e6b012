"""Read image files safely: any mode (CMYK, 16-bit, palette, alpha) becomes RGB; pixel bombs are refused."""

from __future__ import annotations

import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from scenecap.edge.errors import ScenecapError, first_line

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jfif", ".jpe", ".jif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                  ".ppm", ".pgm"}
# Image formats a folder may hold that need an optional codec: read when this Pillow has it, else each file is
# named with what to install (never passed over in silence).
OPTIONAL_FORMATS = {
    ".avif": ("AVIF", "a Pillow built with AVIF (pip install -U pillow, 11.3 or later)"),
    ".heic": ("HEIC", "pillow-heif (pip install pillow-heif)"),
    ".heif": ("HEIF", "pillow-heif (pip install pillow-heif)"),
}
# Image formats this reader never decodes: named, with the way out.
UNSUPPORTED_FORMATS = {
    ".jxl": "JPEG XL", ".svg": "SVG", ".dng": "camera raw (DNG)", ".cr2": "camera raw (CR2)",
    ".cr3": "camera raw (CR3)", ".nef": "camera raw (NEF)", ".arw": "camera raw (ARW)", ".raf": "camera raw (RAF)",
    ".orf": "camera raw (ORF)", ".rw2": "camera raw (RW2)",
}
# 64 megapixels: far above any camera frame the captioner needs, far below a decompression bomb.
MAX_PIXELS = 64_000_000
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
# Bit depths a sensor or scanner writes into 16-bit (and wider) containers, for scaling by the data's range.
_DEPTHS = (8, 10, 12, 14, 16, 24, 32)
_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _optional_codec_present(suffix: str) -> bool:
    if suffix == ".avif":
        return bool(features.check("avif"))
    try:  # HEIC/HEIF: the pillow-heif plugin registers itself with Pillow
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


IMAGE_SUFFIXES |= {s for s in OPTIONAL_FORMATS if _optional_codec_present(s)}


def unsupported_reason(path: str | Path) -> str | None:
    """Why a file with this suffix cannot be read here (and what would read it), or None if it can be tried."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return None
    if suffix in OPTIONAL_FORMATS:
        name, needs = OPTIONAL_FORMATS[suffix]
        return f"{name} images need {needs}; or convert it to JPEG or PNG"
    if suffix in UNSUPPORTED_FORMATS:
        return f"{UNSUPPORTED_FORMATS[suffix]} images are not supported; convert it to JPEG or PNG"
    return None


def os_reason(e: OSError) -> str:
    """An OSError as the few words a user acts on: 'permission denied', 'no such file', ..."""
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    return (e.strerror or type(e).__name__).lower()


def special_file_kind(mode: int) -> str | None:
    """'a FIFO (named pipe)', 'a character device', ... for a st_mode that is not a regular file or folder."""
    for test, kind in _SPECIAL_FILES:
        if test(mode):
            return kind
    return None


def check_regular_file(path: Path, what: str = "an image file") -> int:
    """The file's size in bytes, or ScenecapError if it is missing, unreadable, a folder, a FIFO, a device (a
    /dev/zero would be read forever, a FIFO or a piped /dev/stdin would block) or empty. Reads nothing."""
    try:
        st = path.stat()
    except OSError as e:
        raise ScenecapError(f"{path}: {os_reason(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenecapError(f"{path}: is a folder; expected {what}")
    kind = special_file_kind(st.st_mode)
    if kind:
        raise ScenecapError(f"{path}: is {kind}, not a regular file; expected {what}")
    if st.st_size == 0:
        raise ScenecapError(f"{path}: empty file (0 bytes); expected {what}")
    return st.st_size


@contextmanager
def quiet_pil_warnings() -> Iterator[None]:
    """Keep Pillow's multi-line warnings about a user's file off the terminal: its DecompressionBombWarning would
    precede our own one-line refusal, and 'Corrupt EXIF data' concerns a file that decodes anyway. Narrow filters
    only: catch_warnings is not thread-safe and images are read from several threads, so a filter may outlive
    the block; these two are harmless if it does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file reading only its header, or raise ScenecapError naming the file. An image whose header
    claims more than `max_pixels` is refused here, before a single pixel is decoded. The caller closes it."""
    path = Path(path)
    check_regular_file(path, "an image file")
    try:
        with quiet_pil_warnings():
            im = Image.open(path)
    except UnidentifiedImageError:
        why = unsupported_reason(path)
        raise ScenecapError(f"{path}: {why}" if why else (
            f"{path}: not an image file PIL can read; expected JPEG, PNG, BMP, GIF, WEBP or TIFF")) from None
    except Image.DecompressionBombError as e:
        # Far past Pillow's own limit it refuses inside Image.open, before we can see the size; its message
        # carries the pixel count. Our limit is the lower one unless a caller raised it past Pillow's.
        m = _BOMB_PIXELS.search(str(e))
        claimed = f"{int(m[1])} pixels" if m else "too many pixels"
        limit = min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else max_pixels
        raise ScenecapError(f"{path}: header claims {claimed}, over the limit of {limit}; refusing to decode "
                            "(possible decompression bomb)") from None
    except (OSError, ValueError, SyntaxError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the system's (permission denied), not the decoder's
            raise ScenecapError(f"{path}: {os_reason(e)}") from None
        raise ScenecapError(f"{path}: corrupt or truncated image ({first_line(e)})") from None
    too_big = over_limit(*im.size, max_pixels)  # the size is read from the header: nothing decoded yet
    if too_big:
        im.close()
        raise ScenecapError(f"{path}: {too_big}; refusing to decode")
    return im


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file into RGB uint8 [H, W, 3], or raise ScenecapError naming the file."""
    with quiet_pil_warnings():
        im = open_image(path, max_pixels)
        try:
            with im:
                return pil_to_rgb(ImageOps.exif_transpose(im), path)
        except (OSError, ValueError, SyntaxError) as e:
            raise ScenecapError(f"{path}: corrupt or truncated image ({first_line(e)})") from None


def pil_to_rgb(im: Image.Image, where: object = "image") -> np.ndarray:
    """PIL image in any mode -> RGB uint8 array. Alpha is composited on black, as a camera would see it; 16-bit,
    32-bit and float images are scaled by their data's range (`to_uint8`), or refused naming `where`."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = to_uint8(np.asarray(im), where)
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def _range(a: np.ndarray) -> str:
    return f"{a.min():g} to {a.max():g}"


def to_uint8(a: np.ndarray, where: object = "frame") -> np.ndarray:
    """Pixels of any numeric type -> uint8 of the same shape, scaled by the data's own range, or ScenecapError
    naming `where` and the range found.

    - uint8: as is. bool: False/True -> 0/255.
    - float: values in [0, 1] are scaled by 255; values in [0, 255] are taken as they are (rounded); any other
      range, or NaN/inf, is refused: guessing would caption a white or black frame. Half a level of rounding
      slack is allowed at each end. (An image whose 0-255 values all happen to be <= 1 reads as 0-1: it is
      black either way.)
    - integers: by the bit depth of the largest value, snapped to 8, 10, 12, 14, 16, 24 or 32 bits: a maximum
      <= 255 is 8-bit, <= 1023 10-bit, <= 4095 12-bit (a 12-bit sensor in a 16-bit TIFF), ... So a dark 16-bit
      image is brightened to its depth's range; negative values are refused.
    """
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.size == 0:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        return _float_to_uint8(a, where)
    if np.issubdtype(a.dtype, np.integer):
        return _int_to_uint8(a, where)
    raise ScenecapError(f"{where}: pixels of dtype {a.dtype}; expected uint8, uint16, another integer type or float")


def _float_to_uint8(a: np.ndarray, where: object) -> np.ndarray:
    if not np.isfinite(a).all():
        raise ScenecapError(f"{where}: float pixels include NaN or infinity; expected values in 0-1 or 0-255")
    lo, hi = float(a.min()), float(a.max())
    if lo >= -0.5 / 255 and hi <= 1 + 0.5 / 255:
        scale = 255.0
    elif lo >= -0.5 and hi <= 255.5:
        scale = 1.0
    else:
        raise ScenecapError(f"{where}: float pixels range from {_range(a)}; expected values in 0-1 or 0-255")
    return np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)


def _int_to_uint8(a: np.ndarray, where: object) -> np.ndarray:
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        raise ScenecapError(f"{where}: integer pixels range from {_range(a)}; expected values >= 0")
    bits = next((d for d in _DEPTHS if hi < 1 << d), None)
    if bits is None:
        raise ScenecapError(f"{where}: integer pixels range from {_range(a)}; expected at most 32 bits")
    if bits == 8:
        return a.astype(np.uint8)
    peak = float((1 << bits) - 1)
    return np.clip(a.astype(np.float64) * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)


def over_limit(width: int, height: int, max_pixels: int = MAX_PIXELS) -> str | None:
    """'WxH pixels is over the limit of N' if a frame that size must be refused, else None."""
    if width * height > max_pixels:
        return f"{width}x{height} pixels is over the limit of {max_pixels}"
    return None
