"""Read image files safely: any mode (CMYK, 16-bit, palette, alpha) becomes RGB; pixel bombs are refused."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scenecap.edge.errors import ScenecapError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# 64 megapixels: far above any camera frame the captioner needs, far below a decompression bomb.
MAX_PIXELS = 64_000_000
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file reading only its header, or raise ScenecapError naming the file. An image whose header
    claims more than `max_pixels` is refused here, before a single pixel is decoded. The caller closes it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ScenecapError(f"{path}: file not found") from None
    except OSError as e:
        raise ScenecapError(f"{path}: cannot read ({e.strerror})") from None
    if path.is_dir():
        raise ScenecapError(f"{path}: is a folder; expected an image file")
    if size == 0:
        raise ScenecapError(f"{path}: empty file (0 bytes); expected an image")
    try:
        with quiet_pil_warnings():
            im = Image.open(path)
    except UnidentifiedImageError:
        raise ScenecapError(
            f"{path}: not an image file PIL can read; expected JPEG, PNG, BMP, GIF, WEBP or TIFF"
        ) from None
    except Image.DecompressionBombError as e:
        # Far past Pillow's own limit it refuses inside Image.open, before we can see the size; its message
        # carries the pixel count. Our limit is the lower one unless a caller raised it past Pillow's.
        m = _BOMB_PIXELS.search(str(e))
        claimed = f"{int(m[1])} pixels" if m else "too many pixels"
        limit = min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else max_pixels
        raise ScenecapError(f"{path}: header claims {claimed}, over the limit of {limit}; refusing to decode "
                            "(possible decompression bomb)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ScenecapError(f"{path}: corrupt or truncated image ({_first_line(e)})") from None
    w, h = im.size  # read from the header: nothing decoded yet
    if w * h > max_pixels:
        im.close()
        raise ScenecapError(f"{path}: {w}x{h} pixels is over the limit of {max_pixels}; refusing to decode")
    return im


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file into RGB uint8 [H, W, 3], or raise ScenecapError naming the file."""
    with quiet_pil_warnings():
        im = open_image(path, max_pixels)
        try:
            with im:
                return pil_to_rgb(ImageOps.exif_transpose(im))
        except (OSError, ValueError, SyntaxError) as e:
            raise ScenecapError(f"{path}: corrupt or truncated image ({_first_line(e)})") from None


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """PIL image in any mode -> RGB uint8 array. Alpha is composited on black, as a camera would see it."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if a.max() > 255 else 255.0
        a = np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if im.mode == "F":
        a = np.clip(np.asarray(im, dtype=np.float64), 0, 1) * 255.0 + 0.5
        return np.ascontiguousarray(np.repeat(a.astype(np.uint8)[:, :, None], 3, axis=2))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
