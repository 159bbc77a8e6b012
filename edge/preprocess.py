"""Frame -> model input. The one resize both training and the edge runtime use, so they see the same pixels.

Pixel normalisation lives inside the encoder graph; here we only convert to RGB uint8 and resize.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from scenecap.edge.errors import ScenecapError
from scenecap.edge.images import to_uint8

RESIZE_METHODS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
# The channel order the encoder takes: prepare() always hands it RGB, so that is the only one a bundle may name.
COLORS = ("RGB",)
# A model input side: MobileNet inputs are 96..224 px; 4096 leaves room and bounds the buffers a manifest can ask for.
MAX_SIDE = 4096


@dataclass(frozen=True)
class PreprocessSpec:
    height: int
    width: int
    resize: str = "area"  # area averages pixels when shrinking: no aliasing on camera frames
    keep_aspect: bool = False  # False: stretch the whole frame, as training did
    color: str = "RGB"

    def __post_init__(self) -> None:
        # Every field checked for its type too: a manifest is JSON, and "false" (a string) would count as true.
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIDE:
                raise ScenecapError(f"{name} {value!r}; expected an integer from 1 to {MAX_SIDE}")
        if not isinstance(self.resize, str) or self.resize not in RESIZE_METHODS:
            raise ScenecapError(f"resize method {self.resize!r} unknown; expected one of {sorted(RESIZE_METHODS)}")
        if not isinstance(self.keep_aspect, bool):
            raise ScenecapError(f"keep_aspect {self.keep_aspect!r}; expected true or false")
        if not isinstance(self.color, str) or self.color not in COLORS:
            raise ScenecapError(f"color {self.color!r}; expected one of {', '.join(COLORS)}")

    def to_json(self) -> dict:
        return asdict(self)


def to_rgb_uint8(frame: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Any HxW, HxWx1/3/4 array of integer or float pixels (see images.to_uint8) -> HxWx3 RGB uint8."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ScenecapError(f"frame of shape {a.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    # Scaled by the data's own range (float 0-1 or 0-255, 12-bit in 16, ...): clipping would caption white.
    a = to_uint8(a, "frame")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    if bgr:
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


def prepare(frame: np.ndarray, spec: PreprocessSpec, bgr: bool = False) -> np.ndarray:
    """Frame -> uint8 [H, W, 3] RGB at the model's input size."""
    rgb = to_rgb_uint8(frame, bgr=bgr)
    h, w = rgb.shape[:2]
    if (h, w) == (spec.height, spec.width):
        return rgb
    interp = RESIZE_METHODS[spec.resize]
    if not spec.keep_aspect:
        return cv2.resize(rgb, (spec.width, spec.height), interpolation=interp)
    # Letterbox: scale to fit, pad with black, centred.
    scale = min(spec.width / w, spec.height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(rgb, (nw, nh), interpolation=interp)
    out = np.zeros((spec.height, spec.width, 3), np.uint8)
    y0, x0 = (spec.height - nh) // 2, (spec.width - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def zoomed(image: np.ndarray, factor: float) -> np.ndarray:
    """A model-size image [H, W, 3] zoomed in by `factor` (> 1): its centre 1/factor of each side, resized back
    to H x W (bilinear: the crop is upscaled). The confidence gate's second look (edge/confidence.py)."""
    h, w = image.shape[:2]
    ch, cw = max(1, round(h / factor)), max(1, round(w / factor))
    y, x = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(image[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
