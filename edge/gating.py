"""Deciding when to caption: a blind user wants to hear about a new scene, not the same sentence every second.

Modes:
- ``change``: caption the first frame, then whenever the scene has changed. The change score is PySceneDetect's
  ContentDetector score (mean absolute difference of hue, saturation and value, averaged over the three
  channels, on small HSV frames; default threshold 27), taken against the frame last captioned rather than the
  previous frame: a live loop skips frames while it captions, and a slow walk past things adds up to a new
  scene even when no two neighbouring frames differ much. ``min_interval`` seconds must pass between captions
  (a change seen sooner is kept and captioned when the interval is up); ``every`` > 0 re-captions after that
  many seconds even without a change, to catch what the score misses.
- ``every``: one caption every ``every`` seconds (0: every frame).
- ``all``: every frame offered (image files; a video already sampled by its reader).

`is_repeat` then drops a caption identical to the last one given, so the same sentence is not said twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenecap.edge.errors import ScenecapError

# The gate's defaults, here only: `scenecap caption` reads them while registering its options, which must import
# nothing heavy, so OpenCV is imported when the first frame is gated, not with this module.
WHEN = ("change", "every", "all")
THRESHOLD = 27.0  # ContentDetector's default; scores run 0 (same frame) to 255
MIN_INTERVAL = 2.0  # seconds between captions, at least (change mode)
EVERY = 1.0  # seconds between captions with --when every and no --every
SMALL_WIDTH = 64  # pixels: enough to see a new scene, ~0.1 ms per frame on a Pi


@dataclass(frozen=True)
class GateConfig:
    when: str = "change"
    threshold: float = THRESHOLD
    min_interval: float = MIN_INTERVAL
    every: float = 0.0  # change: re-caption after this many seconds anyway (0 = never); every: the period

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise ScenecapError(f"--when {self.when!r}: expected one of {', '.join(WHEN)}")
        for name in ("threshold", "min_interval", "every"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ScenecapError(f"{name.replace('_', '-')} {value!r}: expected a number >= 0")


@dataclass(frozen=True)
class Decision:
    caption: bool
    reason: str  # first | change | every | all | "" (no caption)
    score: float  # change score against the last captioned frame (0 when not computed)


def stride_and_gate(live: bool, when: str | None, every: float | None, min_interval: float = MIN_INTERVAL,
         threshold: float = THRESHOLD) -> tuple[float, GateConfig]:
    """(stride in seconds for video files, gate) from the user's options.

    Defaults: a live source (camera, stream) captions on scene changes; files caption one frame per second of
    video and every image, as before. A video read with --when every is sampled by its reader (cheap grab
    without decoding), so its gate lets every sampled frame through.
    """
    when = when or ("change" if live else "every")
    if when == "every":
        period = EVERY if every is None else every
        if live:
            return 0.0, GateConfig("every", threshold, min_interval, period)
        return period, GateConfig("all", threshold, min_interval, 0.0)
    if when == "all":
        return 0.0, GateConfig("all", threshold, min_interval, 0.0)
    return 0.0, GateConfig("change", threshold, min_interval, 0.0 if every is None else every)


def hsv_small(frame: np.ndarray, width: int = SMALL_WIDTH) -> np.ndarray:
    """Any frame -> small HSV image (int16, so differences do not wrap). Raises ScenecapError on a bad frame."""
    import cv2

    from scenecap.edge.preprocess import to_rgb_uint8

    rgb = to_rgb_uint8(frame)
    h, w = rgb.shape[:2]
    if w > width:
        small = cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    else:
        small = rgb
    return cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.int16)


def content_score(a: np.ndarray, b: np.ndarray) -> float:
    """ContentDetector's frame score: the mean of the per-channel mean absolute H, S, V differences."""
    import cv2

    if a.shape != b.shape:  # a camera that changed resolution: compare at the first one's size
        b = cv2.resize(b.astype(np.uint8), (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA).astype(np.int16)
    return float(np.abs(a - b).reshape(-1, 3).mean(axis=0).mean())


class SceneGate:
    """Feed it every frame the loop sees with its time; it says which ones to caption."""

    def __init__(self, config: GateConfig | None = None):
        self.config = config or GateConfig()
        self._key: np.ndarray | None = None  # small HSV of the last captioned frame
        self._last_t: float | None = None
        self._last_text: str | None = None
        self.repeats = 0

    def check(self, frame: np.ndarray, t: float | None) -> Decision:
        """Should this frame be captioned? If yes, it becomes the reference for the next change.

        `t` is the frame's time in seconds (video position or capture time); None for stills, which have no
        interval between them.
        """
        cfg = self.config
        since = np.inf if (t is None or self._last_t is None) else t - self._last_t
        if cfg.when == "all":
            return self._take(None, t, "all", 0.0)
        if cfg.when == "every":
            if self._last_t is None or since >= cfg.every - 1e-6:
                return self._take(None, t, "every", 0.0)
            return Decision(False, "", 0.0)
        small = hsv_small(frame)
        if self._key is None:
            return self._take(small, t, "first", 0.0)
        score = content_score(self._key, small)
        if score >= cfg.threshold and since >= cfg.min_interval - 1e-6:
            return self._take(small, t, "change", score)
        if cfg.every > 0 and since >= cfg.every - 1e-6:
            return self._take(small, t, "every", score)
        return Decision(False, "", score)

    def _take(self, small: np.ndarray | None, t: float | None, reason: str, score: float) -> Decision:
        self._key = small
        if t is not None:
            self._last_t = t
        return Decision(True, reason, score)

    def is_repeat(self, text: str) -> bool:
        """True if `text` is what was given last (so it should be dropped); otherwise remember it."""
        if text == self._last_text:
            self.repeats += 1
            return True
        self._last_text = text
        return False
