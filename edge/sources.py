"""Where frames come from: image files, folders, globs and video files (edge/video.py); cameras, the Pi camera and
network streams (edge/camera.py). `open_source` takes what a user types and returns the right one, and
`is_live` says whether it runs in real time.

Each source yields Frames (edge/frames.py); a frame that cannot be read is yielded with an error instead of pixels,
so one bad file never ends a run. Whatever cannot be read is named, one line each: a missing or unreadable file, a
folder that cannot be listed, an image format with no codec here, a video with no frames or cut short, a frame over
the pixel limit. Stream URLs are redacted where the Frame is made (edge/urls.py), so no consumer ever sees a
credential.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scenecap.edge.errors import ScenecapError
from scenecap.edge.frames import ArraySource, Frame, FrameSource, SourceStats, array_frame
from scenecap.edge.images import IMAGE_SUFFIXES, load_image, os_reason, unsupported_reason
from scenecap.edge.urls import STREAM_SCHEMES, is_url, redact, redact_text, url_scheme
from scenecap.edge.video import VIDEO_SUFFIXES, is_video, open_video, quiet_opencv, video_fps, video_frames

# The names this module has always offered, wherever they now live.
__all__ = ["STREAM_SCHEMES", "VIDEO_SUFFIXES", "ArraySource", "FileSource", "Frame", "FrameSource", "Skipped",
           "SourceStats", "array_frame", "describe_source", "entry_frames", "expand", "file_frames", "image_frames",
           "is_live", "is_url", "open_source", "open_video", "quiet_opencv", "redact", "redact_text", "scan",
           "scan_folder", "video_fps", "video_frames"]

log = logging.getLogger("scenecap.edge.sources")


@dataclass
class Skipped:
    """A scanned entry that will not be read: its name and the one line that says why."""

    path: str
    message: str


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[") and not Path(s).exists()


def scan(sources: list[str]) -> list[Path | Skipped]:
    """Files, folders (sorted, recursive) and globs -> files to read, and a Skipped for everything that will not
    be: a folder that cannot be listed, an image format with no codec here, a folder with nothing to read, a
    stream URL given as a file. A missing path is kept, to be reported when it is read."""
    out: list[Path | Skipped] = []
    for s in sources:
        if s == "-":  # not read: a pipe has no size to check before reading, and no name to report
            out.append(Skipped("-", "-: reading a frame from standard input is not supported; give a file name"))
            continue
        if is_url(s):
            out.append(Skipped(redact(s), f"{redact(s)}: a stream URL, not a file; give it as the live source "
                                          "(--source URL)"))
            continue
        p = Path(s)
        if p.is_dir():
            out += scan_folder(p)
        elif _is_glob(s):
            # A glob that matches nothing is kept as is, to be reported like a missing file.
            matches = sorted(Path(g) for g in glob.glob(s, recursive=True)) or [p]
            for m in matches:
                out += scan_folder(m) if m.is_dir() else [m]
        else:
            out.append(p)
    return out


def expand(sources: list[str]) -> list[Path]:
    """The files `scan` would read, without the entries it skips."""
    return [e for e in scan(sources) if isinstance(e, Path)]


def _sort_key(entry: Path | Skipped) -> Path:
    return Path(entry.path) if isinstance(entry, Skipped) else entry


def scan_folder(root: Path) -> list[Path | Skipped]:
    """Images and videos under `root`, sorted; a Skipped for each subfolder that cannot be listed and each image
    this reader has no codec for. Other files (notes, sidecars) are ignored with one log line for the folder.
    Symbolic links to folders are followed, each real folder once (a link loop ends)."""
    found: list[Path | Skipped] = []
    ignored: list[str] = []
    seen: set[tuple[int, int]] = set()

    def unlistable(e: OSError) -> None:
        found.append(Skipped(str(e.filename), f"{e.filename}: {os_reason(e)}; folder not read"))

    for folder, subfolders, names in os.walk(root, onerror=unlistable, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in names:
            q = Path(folder) / name
            why = unsupported_reason(q)
            if q.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                found.append(q)
            elif why:
                found.append(Skipped(str(q), f"{q}: {why}"))
            else:
                ignored.append(name)
    found.sort(key=_sort_key)
    if ignored:
        log.info("%s: %d file%s ignored, not images or videos (e.g. %s)", root, len(ignored),
                 "" if len(ignored) == 1 else "s", ", ".join(sorted(ignored)[:3]))
    if not found:
        other = f" ({len(ignored)} other file{'' if len(ignored) == 1 else 's'} ignored)" if ignored else ""
        found.append(Skipped(str(root), f"{root}: no images or videos found in this folder{other}"))
    return found


def image_frames(path: Path) -> Iterator[Frame]:
    try:
        yield Frame(str(path), 0, load_image(path))
    except ScenecapError as e:
        yield Frame(str(path), 0, None, error=str(e))


def entry_frames(entries: list[Path | Skipped], every_s: float = 1.0,
                 stop: threading.Event | None = None) -> Iterator[Frame]:
    for entry in entries:
        if stop is not None and stop.is_set():
            return
        if isinstance(entry, Skipped):
            yield Frame(entry.path, 0, None, error=entry.message)
        elif is_video(entry):
            yield from video_frames(entry, every_s, stop)
        else:
            yield from image_frames(entry)


def file_frames(sources: list[str], every_s: float = 1.0, stop: threading.Event | None = None) -> Iterator[Frame]:
    yield from entry_frames(scan(sources), every_s, stop)


class FileSource(FrameSource):
    """Image files, folders, globs and video files, read in order as fast as the loop takes them. Folders are
    listed once, when the source is made."""

    def __init__(self, paths: list[str], every_s: float = 1.0):
        names = [redact(str(p)) for p in paths]
        super().__init__(name=", ".join(names) if len(names) <= 3 else f"{names[0]} and {len(names) - 1} more")
        self.paths = list(paths)
        self.every_s = every_s
        self.entries = scan(self.paths)
        files = [e for e in self.entries if isinstance(e, Path)]
        if len(self.entries) == 1 and files and is_video(files[0]):
            try:
                cap = open_video(files[0])
            except ScenecapError:  # said when the frames are read
                return
            self.fps = video_fps(cap)
            cap.release()

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        for frame in entry_frames(self.entries, self.every_s, stop):
            self.stats.count(frame)
            yield frame


def describe_source(spec: str | int) -> str:
    """What kind of source a user's --source value names: picam, camera, stream or file."""
    s = str(spec).strip()
    if s.lower() in ("picam", "picamera", "picamera2"):
        return "picam"
    if s.isdigit() or s.startswith("/dev/video") or s.startswith("/dev/v4l/"):
        return "camera"
    if is_url(s):
        return "stream"
    scheme = url_scheme(s)
    if scheme and scheme.lower() != "file":
        raise ScenecapError(
            f"source {redact(s)!r}: URL scheme {scheme!r} not supported; "
            f"expected one of {', '.join(STREAM_SCHEMES)}"
        )
    return "file"


def is_live(source) -> bool:
    """Whether a source runs in real time (a camera, the Pi camera, a stream): it then captions on scene changes
    by default, drops repeated captions and frames gone stale, and a bad frame is routine. Decided here only."""
    if isinstance(source, FrameSource):
        return source.live
    if isinstance(source, (str, int)):
        return describe_source(source) != "file"
    return False  # an app's own frames, or a list of files


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
        _check_file_source(s)
        return FileSource([s], every_s)
    from scenecap.edge import camera

    if kind == "picam":
        camera.require_picamera2()  # missing, it never comes back by retrying: say so now
        return camera.LiveSource(camera.PicamReader(camera_size))
    if kind == "camera":
        target: int | str = int(spec) if str(spec).isdigit() else str(spec)
        return camera.LiveSource(camera.OpenCVReader(target, size=camera_size))
    return camera.LiveSource(camera.OpenCVReader(str(spec), size=camera_size))


def _check_file_source(s: str) -> None:
    """A --source that names a file, folder or glob must name something."""
    expected = "expected an image, a folder, a video, a camera index, /dev/videoN, 'picam' or an rtsp:// or http:// URL"
    if _is_glob(s):
        if not glob.glob(s, recursive=True):
            raise ScenecapError(f"source {s!r}: no file matches; {expected}")
        return
    try:
        os.stat(s)
    except FileNotFoundError:
        raise ScenecapError(f"source {s!r}: no such file or folder; {expected}") from None
    except OSError as e:
        raise ScenecapError(f"source {s!r}: {os_reason(e)}") from None
