"""Where frames come from: image files, folders, globs and video files (more sources: see edge/camera.py).

Each source yields Frames; a frame that cannot be read is yielded with an error instead of pixels, so one bad
file never ends a run.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenecap.edge.errors import ScenecapError
from scenecap.edge.images import IMAGE_SUFFIXES, load_image

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Frame:
    source: str  # file path, or "video.mp4#frame=120"
    index: int  # frame number within its source
    image: np.ndarray | None  # RGB uint8 [H, W, 3]
    time_s: float = 0.0  # position in the source (video) or capture time
    error: str | None = None


def expand(sources: list[str]) -> list[Path]:
    """Files, folders (sorted, recursive) and globs -> a list of files; a missing path is kept to be reported."""
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        elif any(ch in s for ch in "*?[") and not p.exists():
            out += sorted(Path(g) for g in glob.glob(s, recursive=True))
        else:
            out.append(p)
    return out


def image_frames(path: Path) -> Iterator[Frame]:
    try:
        yield Frame(str(path), 0, load_image(path))
    except ScenecapError as e:
        yield Frame(str(path), 0, None, error=str(e))


def video_frames(path: Path, every_s: float = 1.0) -> Iterator[Frame]:
    """Every `every_s` seconds of a video file (0 = every frame), decoded by OpenCV."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        yield Frame(str(path), 0, None, error=f"{path}: cannot open as a video (OpenCV/FFmpeg could not decode it)")
        return
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        stride = max(1, round(every_s * fps)) if every_s > 0 else 1
        index = 0
        while True:
            ok = cap.grab()
            if not ok:
                break
            if index % stride == 0:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    yield Frame(f"{path}#frame={index}", index, bgr[:, :, ::-1], time_s=index / fps)
            index += 1
    finally:
        cap.release()


def file_frames(sources: list[str], every_s: float = 1.0) -> Iterator[Frame]:
    for path in expand(sources):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            yield from video_frames(path, every_s)
        else:
            yield from image_frames(path)
