"""Video files through OpenCV (FFmpeg): opened only when they are readable regular files, refused from the header
when their frames are over the pixel limit, sampled by grabbing without decoding, and said to be empty or cut
short when they are."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from scenecap.edge.errors import ScenecapError
from scenecap.edge.frames import Frame
from scenecap.edge.images import MAX_PIXELS, check_regular_file, os_reason, over_limit

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
# A video header's frame count may be an estimate (duration x rate): this many frames short is not "truncated".
_COUNT_SLACK_FRAMES, _COUNT_SLACK_FRACTION = 2, 0.02


def quiet_opencv() -> None:
    """OpenCV's and FFmpeg's own warnings (a missing camera, a dropped stream, an unreadable video) would repeat
    our one-line messages. FFmpeg reads its level when OpenCV first starts it; a user's own setting is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # very old OpenCV builds
        pass


def open_video(path: Path):
    """cv2.VideoCapture on a readable regular file, through FFmpeg when this OpenCV has it (the default
    backend list would also try CAP_IMAGES, which reads '%d' in a name as an image sequence)."""
    import cv2

    check_regular_file(path, "a video file")
    try:
        with open(path, "rb") as f:  # permission denied is said as such, not as "cannot decode"
            f.read(1)
    except OSError as e:
        raise ScenecapError(f"{path}: {os_reason(e)}") from None
    quiet_opencv()
    ffmpeg = cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG if ffmpeg else cv2.CAP_ANY)
    if not cap.isOpened():
        cap.release()
        raise ScenecapError(f"{path}: cannot open as a video (OpenCV/FFmpeg could not decode it)")
    return cap


def _video_size_error(cap, path: Path) -> str | None:
    """Refuse a video whose frames are over the pixel limit from its header, before a frame is decoded."""
    import cv2

    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not over_limit(w, h):
        return None
    return f"{path}: video frames are {w}x{h} pixels, over the limit of {MAX_PIXELS}; refusing to decode"


def _ending_error(cap, path: Path, decoded: int) -> str | None:
    """What to say when a video ends after `decoded` frames: nothing, none decodable, or cut short."""
    import cv2

    if decoded == 0:
        return f"{path}: no frames could be decoded"
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if expected > 0 and decoded < expected - max(_COUNT_SLACK_FRAMES, expected * _COUNT_SLACK_FRACTION):
        return f"{path}: truncated after {decoded} frames (its header says {expected})"
    return None


def video_fps(cap) -> float:
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    # Some containers report 0 or absurd rates (1000 for a few webm files): fall back to a common rate.
    return float(fps) if 0 < fps <= 240 else 25.0


def video_frames(path: Path, every_s: float = 1.0, stop: threading.Event | None = None) -> Iterator[Frame]:
    """Every `every_s` seconds of a video file (0 = every frame), decoded by OpenCV. A video that cannot be
    opened, has frames over the pixel limit, has no decodable frame or ends before its header's frame count is
    reported in one Frame with .error (after the frames it did give)."""
    try:
        cap = open_video(path)
    except ScenecapError as e:
        yield Frame(str(path), 0, None, error=str(e))
        return
    try:
        too_big = _video_size_error(cap, path)
        if too_big:
            yield Frame(str(path), 0, None, error=too_big)
            return
        fps = video_fps(cap)
        stride = max(1, round(every_s * fps)) if every_s > 0 else 1
        index = 0
        while stop is None or not stop.is_set():
            if not cap.grab():  # end of file (or a broken tail): said below if it came early
                ending = _ending_error(cap, path, index)
                if ending:
                    yield Frame(f"{path}#frame={index}", index, None, error=ending)
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


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()
