"""Frames and the sources that yield them: what the caption loop reads, whatever the source is.

A frame that cannot be read is yielded with an error instead of pixels, so one bad file never ends a run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from scenecap.edge.errors import ScenecapError
from scenecap.edge.images import over_limit, to_uint8
from scenecap.edge.urls import is_url, redact


@dataclass
class Frame:
    source: str  # file path, "video.mp4#frame=120" or "camera:0#frame=17"; a URL is redacted (see redact)
    index: int  # frame number within its source
    image: np.ndarray | None  # RGB uint8 [H, W, 3] (a live source may hand over anything; the loop checks)
    time_s: float | None = None  # position in a video, capture time (time.monotonic) if live, None for a still
    error: str | None = None

    def __post_init__(self) -> None:
        # At the origin, so stdout, JSONL, logs and annotated frames all get the redacted name.
        if is_url(self.source):
            self.source = redact(self.source)


@dataclass
class SourceStats:
    frames_read: int = 0  # frames with pixels the source produced (a live source reads more than the loop takes)
    reconnects: int = 0
    errors: int = 0  # files, folders and frames that could not be read (each also yielded as a Frame with .error)
    dropped: int = 0  # live: frames replaced by a newer one before the loop took them

    def count(self, frame: Frame) -> None:
        if frame.error or frame.image is None:
            self.errors += 1
        else:
            self.frames_read += 1


@dataclass
class FrameSource:
    """What the live loop reads from: frames(), then close(). `live` sources run in real time (camera, stream)."""

    name: str
    live: bool = False
    fps: float | None = None
    stats: SourceStats = field(default_factory=SourceStats)

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class ArraySource(FrameSource):
    """Frames an app already has (numpy arrays or Frames from any iterable): the Python API's own camera."""

    def __init__(self, items: Iterable, name: str = "frames"):
        super().__init__(name=name)
        self.items = items

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        for i, item in enumerate(self.items):
            if stop is not None and stop.is_set():
                return
            frame = item if isinstance(item, Frame) else array_frame(f"{self.name}#frame={i}", i, item)
            self.stats.count(frame)
            yield frame


def array_frame(source: str, index: int, image, time_s: float | None = None) -> Frame:
    """An app's or a camera's array as a Frame: numeric pixels of any type become uint8 by their range
    (images.to_uint8: float 0-1 or 0-255, 10/12/16-bit); a frame over the pixel limit or an unusable range is
    a Frame with .error. Other odd arrays (wrong shape, strings) are passed on for the caption loop to judge."""
    a = image
    if isinstance(a, np.ndarray) and a.ndim >= 2:
        too_big = over_limit(a.shape[1], a.shape[0])
        if too_big:
            return Frame(source, index, None, time_s, error=f"{source}: frame of {too_big}; skipped")
        if a.dtype != np.uint8 and (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            try:
                a = to_uint8(a, source)
            except ScenecapError as e:
                return Frame(source, index, None, time_s, error=str(e))
    return Frame(source, index, a, time_s)
