"""Where frames come from: image files, folders, globs and video files here; cameras, the Pi camera and
network streams in edge/camera.py. `open_source` takes what a user types and returns the right one.

Each source yields Frames; a frame that cannot be read is yielded with an error instead of pixels, so one bad
file never ends a run.
"""

from __future__ import annotations

import glob
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenecap.edge.errors import ScenecapError
from scenecap.edge.images import IMAGE_SUFFIXES, load_image

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass
class Frame:
    source: str  # file path, "video.mp4#frame=120" or "camera:0#frame=17"
    index: int  # frame number within its source
    image: np.ndarray | None  # RGB uint8 [H, W, 3] (a live source may hand over anything; the loop checks)
    time_s: float | None = None  # position in a video, capture time (time.monotonic) if live, None for a still
    error: str | None = None


@dataclass
class SourceStats:
    frames_read: int = 0  # frames the source produced (a live source reads more than the loop takes)
    reconnects: int = 0
    errors: int = 0
    dropped: int = 0  # live: frames replaced by a newer one before the loop took them


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


def expand(sources: list[str]) -> list[Path]:
    """Files, folders (sorted, recursive) and globs -> a list of files; a missing path is kept to be reported."""
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        elif any(ch in s for ch in "*?[") and not p.exists():
            # A glob that matches nothing is kept as is, to be reported like a missing file.
            out += sorted(Path(g) for g in glob.glob(s, recursive=True)) or [p]
        else:
            out.append(p)
    return out


def image_frames(path: Path) -> Iterator[Frame]:
    try:
        yield Frame(str(path), 0, load_image(path))
    except ScenecapError as e:
        yield Frame(str(path), 0, None, error=str(e))


def video_fps(cap) -> float:
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    # Some containers report 0 or absurd rates (1000 for a few webm files): fall back to a common rate.
    return float(fps) if 0 < fps <= 240 else 25.0


def video_frames(path: Path, every_s: float = 1.0, stop: threading.Event | None = None) -> Iterator[Frame]:
    """Every `every_s` seconds of a video file (0 = every frame), decoded by OpenCV."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        yield Frame(str(path), 0, None, error=f"{path}: cannot open as a video (OpenCV/FFmpeg could not decode it)")
        return
    try:
        fps = video_fps(cap)
        stride = max(1, round(every_s * fps)) if every_s > 0 else 1
        index = 0
        while stop is None or not stop.is_set():
            if not cap.grab():  # end of file (or a broken tail): the run ends cleanly
                break
            if index % stride == 0:
                # grab() then retrieve() only for the frames we keep: decoding is the expensive part.
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    yield Frame(f"{path}#frame={index}", index, bgr[:, :, ::-1], time_s=index / fps)
                else:
                    yield Frame(f"{path}#frame={index}", index, None, error=f"{path}: frame {index} cannot be decoded")
            index += 1
    finally:
        cap.release()


def file_frames(sources: list[str], every_s: float = 1.0, stop: threading.Event | None = None) -> Iterator[Frame]:
    for path in expand(sources):
        if stop is not None and stop.is_set():
            return
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            yield from video_frames(path, every_s, stop)
        else:
            yield from image_frames(path)


class FileSource(FrameSource):
    """Image files, folders, globs and video files, read in order as fast as the loop takes them."""

    def __init__(self, paths: list[str], every_s: float = 1.0):
        super().__init__(name=", ".join(paths) if len(paths) <= 3 else f"{paths[0]} and {len(paths) - 1} more")
        self.paths = list(paths)
        self.every_s = every_s
        files = expand(self.paths)
        if len(files) == 1 and files[0].suffix.lower() in VIDEO_SUFFIXES and files[0].is_file():
            import cv2

            cap = cv2.VideoCapture(str(files[0]))
            self.fps = video_fps(cap) if cap.isOpened() else None
            cap.release()

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        for frame in file_frames(self.paths, self.every_s, stop):
            self.stats.frames_read += 1
            if frame.error:
                self.stats.errors += 1
            yield frame


class ArraySource(FrameSource):
    """Frames an app already has (numpy arrays or Frames from any iterable): the Python API's own camera."""

    def __init__(self, items: Iterable, name: str = "frames"):
        super().__init__(name=name)
        self.items = items

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        for i, item in enumerate(self.items):
            if stop is not None and stop.is_set():
                return
            self.stats.frames_read += 1
            if isinstance(item, Frame):
                yield item
            else:
                yield Frame(f"{self.name}#frame={i}", i, item)


def is_url(spec: str) -> bool:
    m = _URL_RE.match(spec)
    return bool(m) and m.group(1).lower() in STREAM_SCHEMES


def redact(url: str) -> str:
    """A URL fit for logs: rtsp://user:secret@host/... -> rtsp://user:***@host/..."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/:@]+):[^/@]*@", r"\1:***@", url)


def describe_source(spec: str | int) -> str:
    """What kind of source a user's --source value names: picam, camera, stream or file."""
    s = str(spec).strip()
    if s.lower() in ("picam", "picamera", "picamera2"):
        return "picam"
    if s.isdigit() or s.startswith("/dev/video") or s.startswith("/dev/v4l/"):
        return "camera"
    if is_url(s):
        return "stream"
    m = _URL_RE.match(s)
    if m and m.group(1).lower() != "file":
        raise ScenecapError(
            f"source {redact(s)!r}: URL scheme {m.group(1)!r} not supported; "
            f"expected one of {', '.join(STREAM_SCHEMES)}"
        )
    return "file"


def open_source(spec: str | int | Iterable, every_s: float = 0.0,
                camera_size: tuple[int, int] | None = None) -> FrameSource:
    """A user's source -> FrameSource: 'picam', a camera index or /dev/videoN, an rtsp/http URL, image or video
    files/folders/globs, or (from Python) any iterable of numpy frames.

    `every_s` is the stride for video files (0 = every frame); live sources always hand over their newest frame.
    """
    if isinstance(spec, (list, tuple)) and all(isinstance(s, (str, Path)) for s in spec):
        return FileSource([str(s) for s in spec], every_s)
    if not isinstance(spec, (str, int, Path)):
        return ArraySource(spec)
    kind = describe_source(spec)
    if kind == "file":
        s = str(spec)
        if s.startswith("file://"):
            s = s[len("file://"):]
        if not expand([s]) or (not any(ch in s for ch in "*?[") and not Path(s).exists()):
            raise ScenecapError(f"source {s!r}: no such file or folder; expected an image, a folder, a video, "
                                "a camera index, /dev/videoN, 'picam' or an rtsp:// or http:// URL")
        return FileSource([s], every_s)
    from scenecap.edge import camera

    if kind == "picam":
        return camera.LiveSource(camera.PicamReader(camera_size))
    if kind == "camera":
        target: int | str = int(spec) if str(spec).isdigit() else str(spec)
        return camera.LiveSource(camera.OpenCVReader(target, size=camera_size))
    return camera.LiveSource(camera.OpenCVReader(str(spec), size=camera_size))
