"""Where frames come from: image files, folders, globs and video files here; cameras, the Pi camera and
network streams in edge/camera.py. `open_source` takes what a user types and returns the right one.

Each source yields Frames; a frame that cannot be read is yielded with an error instead of pixels, so one bad
file never ends a run. Whatever cannot be read is named, one line each: a missing or unreadable file, a folder
that cannot be listed, an image format with no codec here, a video with no frames or cut short, a frame over
the pixel limit. Stream URLs are redacted where the Frame is made, so no consumer ever sees a credential.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenecap.edge.errors import ScenecapError
from scenecap.edge.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    check_regular_file,
    load_image,
    os_reason,
    over_limit,
    to_uint8,
    unsupported_reason,
)

log = logging.getLogger("scenecap.edge.sources")

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
# A host (name, IPv4 or [IPv6]) with an optional port: what follows the '@' that ends a URL's userinfo.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[\w.%~-]*)(:\d*)?")
# Query (and path) parameters whose values are credentials: a name holding one of these words, so password,
# api-key, access_token, X-Amz-Signature, client_secret, sessionid and a DVR's /user=admin_password=x all match.
_SECRET_NAME = r"([\w.-]*(?:pass|pwd|token|key|auth|sig|secret|session|cred|jwt)[\w.-]*)="
_SECRET_IN_PATH = re.compile(_SECRET_NAME + r"([^&;/]+)", re.IGNORECASE)
_SECRET_IN_QUERY = re.compile(_SECRET_NAME + r"([^&;]+)", re.IGNORECASE)
_OUR_FRAGMENT = re.compile(r"frame=\d+")  # the "#frame=N" this module appends to a source's name
# A video header's frame count may be an estimate (duration x rate): this many frames short is not "truncated".
_COUNT_SLACK_FRAMES, _COUNT_SLACK_FRACTION = 2, 0.02


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
class Skipped:
    """A scanned entry that will not be read: its name and the one line that says why."""

    path: str
    message: str


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


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def entry_frames(entries: list[Path | Skipped], every_s: float = 1.0,
                 stop: threading.Event | None = None) -> Iterator[Frame]:
    for entry in entries:
        if stop is not None and stop.is_set():
            return
        if isinstance(entry, Skipped):
            yield Frame(entry.path, 0, None, error=entry.message)
        elif _is_video(entry):
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
        if len(self.entries) == 1 and files and _is_video(files[0]):
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


def is_url(spec: str) -> bool:
    m = _URL_RE.match(spec)
    return bool(m) and m.group(1).lower() in STREAM_SCHEMES


def redact(url: str) -> str:
    """A URL fit for logs, outputs and error messages, with every credential form replaced by ***:

    - userinfo, which is everything before the last '@' that is followed by a host (a password may hold '/', '@',
      '?' or '#'): rtsp://user:secret@host -> rtsp://user:***@host, rtsp://:secret@host -> rtsp://:***@host, a
      lone token (https://TOKEN@host) -> https://***@host;
    - query and path parameters named like a credential (password, token, key, auth, sig, secret, apikey,
      access_token, session...): ?password=x&res=640 -> ?password=***&res=640;
    - a fragment, except this module's own '#frame=N'.

    It errs towards hiding too much: an e-mail address in the query reads as userinfo. Idempotent; text that is
    not a URL comes back as it was. (Not urllib.parse.urlsplit: it ends the authority at the first '/', so a
    password with a '/' in it would be read as the path and kept.)
    """
    m = _URL_RE.match(url)
    if not m:
        return url
    prefix, rest = url[: m.end()], url[m.end():]
    userinfo, rest = _split_userinfo(rest)
    rest, hash_mark, fragment = rest.partition("#")
    path, question, query = rest.partition("?")
    rest = _SECRET_IN_PATH.sub(r"\1=***", path) + question + _SECRET_IN_QUERY.sub(r"\1=***", query)
    out = prefix + (_redact_userinfo(userinfo) + "@" if userinfo is not None else "") + rest
    if hash_mark:
        out += "#" + (fragment if not fragment or _OUR_FRAGMENT.fullmatch(fragment) else "***")
    return out


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """(userinfo or None, the rest from the host on). The '@' is looked for before the query first, then anywhere
    (a password with '?' or '#' in it)."""
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    for text in (head, rest):
        for at in reversed([i for i, c in enumerate(text) if c == "@"]):
            host = re.split(r"[/?#]", rest[at + 1:], maxsplit=1)[0]
            if _HOST.fullmatch(host):
                return rest[:at], rest[at + 1:]
    return None, rest


def _redact_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:***" if colon else "***"


def redact_text(text: str) -> str:
    """Every URL inside a message (an exception's text, say) redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


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
