"""Read image files safely: any mode (CMYK, 16-bit, palette, alpha) becomes RGB; pixel bombs are refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scenecap.edge.errors import ScenecapError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# 64 megapixels: far above any camera frame the captioner needs, far below a decompression bomb.
MAX_PIXELS = 64_000_000


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file into RGB uint8 [H, W, 3], or raise ScenecapError naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ScenecapError(f"{path}: file not found") from None
    except OSError as e:
        raise ScenecapError(f"{path}: cannot read ({e.strerror})") from None
    if size == 0:
        raise ScenecapError(f"{path}: empty file (0 bytes); expected an image")
    try:
        with warnings.catch_warnings():
            # PIL's two-line DecompressionBombWarning would precede our own one-line refusal below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size  # read from the header: nothing decoded yet
            if w * h > max_pixels:
                raise ScenecapError(f"{path}: {w}x{h} pixels is over the limit of {max_pixels}; refusing to decode")
            im = ImageOps.exif_transpose(im)
            return pil_to_rgb(im)
    except ScenecapError:
        raise
    except UnidentifiedImageError:
        raise ScenecapError(
            f"{path}: not an image file PIL can read; expected JPEG, PNG, BMP, GIF, WEBP or TIFF"
        ) from None
    except Image.DecompressionBombError:
        raise ScenecapError(f"{path}: too many pixels; refusing to decode (possible decompression bomb)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ScenecapError(f"{path}: corrupt or truncated image ({e})") from None


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
