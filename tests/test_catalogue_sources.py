"""Bad-input catalogue, frame sources: what a user points `scenecap caption` at, other than one good image.

Surfaces: stream URLs with credentials (redacted in every form, everywhere a URL is shown), folders (odd image
formats, unreadable subfolders, nothing to read), video files (no frames, cut short, frames over the pixel
limit, unreadable), special files (FIFO, /dev/zero, a piped /dev/stdin), and live sources that cannot work (no
picamera2, a camera that never opens). Each is read by the real thing — files written here, OpenCV and FFmpeg,
an MJPEG camera on loopback — and either read or named in one line; nothing hangs, nothing is silent.

Permission denied is made real as root too: the reading process runs without CAP_DAC_OVERRIDE (setpriv).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from catalogue_helpers import cli_error, one_line_error, scenecap, unprivileged, write_catalogue
from edge_helpers import MJPEGServer, scene
from PIL import Image

from scenecap.edge.camera import Backoff, LiveSource, OpenCVReader, PicamReader
from scenecap.edge.errors import ScenecapError
from scenecap.edge.images import MAX_PIXELS
from scenecap.edge.sources import FileSource, Frame, describe_source, open_source, redact

GOOD = scene(8)
BUNDLE = str(Path(__file__).resolve().parents[1] / "demo" / "bundle")  # the shipped demo bundle


def caption(*args: str, unpriv: bool = False, stdin=None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "scenecap", "caption", *args]
    return subprocess.run(unprivileged(cmd) if unpriv else cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=stdin)


def said(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("scenecap:")]


# -- credentials ----------------------------------------------------------------------------------------------
# url -> what redact() gives. The secret in each is "S3cr" (with the characters that broke the old pattern).
REDACTION: dict[str, str] = {
    "rtsp://admin:S3cr@cam.local:554/live": "rtsp://admin:***@cam.local:554/live",
    "rtsp://admin:S3cr/x@cam.local/live": "rtsp://admin:***@cam.local/live",
    "rtsp://admin:S3cr@x@cam.local/live": "rtsp://admin:***@cam.local/live",
    "rtsp://admin:S3cr?x#y@cam.local/live": "rtsp://admin:***@cam.local/live",
    "rtsp://:S3cr@cam.local/live": "rtsp://:***@cam.local/live",
    "https://S3cr@cam.local/live": "https://***@cam.local/live",
    "rtsp://u:S3cr@[fe80::1]:554/live": "rtsp://u:***@[fe80::1]:554/live",
    "http://cam/video?password=S3cr&res=640": "http://cam/video?password=***&res=640",
    "http://cam/video?user=me&pwd=S3cr": "http://cam/video?user=me&pwd=***",
    "http://cam/video?token=S3cr": "http://cam/video?token=***",
    "http://cam/video?key=S3cr;auth=S3cr": "http://cam/video?key=***;auth=***",
    "https://cam/v?X-Amz-Signature=S3cr&X-Amz-Credential=S3cr/2024": "https://cam/v?X-Amz-Signature=***&"
                                                                       "X-Amz-Credential=***",
    "http://cam/v?sig=S3cr&secret=S3cr&apikey=S3cr&access_token=S3cr": "http://cam/v?sig=***&secret=***&"
                                                                          "apikey=***&access_token=***",
    "http://cam/v?password=S3cr/x": "http://cam/v?password=***",
    "http://cam/live#access_token=S3cr": "http://cam/live#***",
    "rtsp://cam:554/user=admin_password=S3cr_channel=1": "rtsp://cam:554/user=admin_password=***",
    "RTSP://Admin:S3cr@Cam/live": "RTSP://Admin:***@Cam/live",
    "http://127.0.0.1:8080/x": "http://127.0.0.1:8080/x",  # nothing to hide: unchanged
    "http://cam/live#frame=3": "http://cam/live#frame=3",  # this module's own frame marker is kept
}


@pytest.mark.parametrize("url", sorted(REDACTION))
def test_redaction(url):
    """Every credential form is hidden by redact(), idempotently, and by everything that names a URL: the
    reader's name, the live source's name, a Frame's source, the unsupported-scheme error."""
    expected = REDACTION[url]
    assert redact(url) == expected
    assert redact(expected) == expected
    assert OpenCVReader(url).name == expected
    assert LiveSource(OpenCVReader(url)).name == expected
    assert Frame(f"{url}#frame=7" if "#" not in url else url, 7, None).source.count("S3cr") == 0
    other = "ftp" + url[url.index(":"):]
    msg = one_line_error(lambda: describe_source(other), "not supported")
    assert "S3cr" not in msg


def test_a_url_given_as_a_file_is_named_redacted(tmp_path):
    r = caption("rtsp://admin:S3cr/x@127.0.0.1:9/live", "--bundle", BUNDLE)
    assert "S3cr" not in r.stdout + r.stderr, r.stderr
    assert any("rtsp://admin:***@127.0.0.1:9/live: a stream URL, not a file" in line for line in said(r)), r.stderr
    assert r.returncode != 0


def test_credentials_never_reach_stdout_jsonl_or_the_logs(tmp_path):
    """A real MJPEG camera on loopback, reached with a password and a token in its URL: the captions come, and
    neither secret is in stdout, the JSON lines or stderr."""
    server = MJPEGServer(GOOD, fps=10).start()
    try:
        url = server.url.replace("http://", "http://admin:S3cr@") + "?token=S3cr&res=1#key=S3cr"
        jsonl = tmp_path / "c.jsonl"
        r = caption("--source", url, "--bundle", BUNDLE, "--max-frames", "2", "--when", "all",
                    "--jsonl", str(jsonl))
    finally:
        server.stop()
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records and all(rec["source"].startswith("http://admin:***@127.0.0.1") for rec in records), records
    everything = r.stdout + r.stderr + jsonl.read_text()
    assert "S3cr" not in everything, everything[-2000:]


# -- folders ----------------------------------------------------------------------------------------------------
def _heic(path: Path) -> Path:
    """The first bytes of a HEIC file (an ISO-BMFF 'ftyp' box, brand heic): what an iPhone's photos start with."""
    box = b"ftypheic" + b"\0\0\0\0" + b"mif1heic"
    path.write_bytes(struct.pack(">I", len(box) + 4) + box + bytes(256))
    return path


def _folder(d: Path, name: str) -> Path:
    """Write the catalogue folder `name` into d; returns it."""
    f = d / name
    f.mkdir()
    img = Image.fromarray(GOOD)
    if name == "jfif_and_avif":
        img.save(f / "a.jfif", "JPEG")
        img.save(f / "b.avif", "AVIF")
    elif name == "only_heic":
        _heic(f / "IMG_0001.heic")
        _heic(f / "IMG_0002.HEIC")
    elif name == "only_notes":
        (f / "readme.txt").write_text("holiday photos")
    elif name == "empty":
        pass
    elif name == "unreadable_subfolder":
        img.save(f / "a.jpg")
        (f / "locked").mkdir()
        img.save(f / "locked" / "b.jpg")
        (f / "locked").chmod(0)
    elif name == "link_loop":
        img.save(f / "a.jpg")
        (f / "loop").symlink_to(f, target_is_directory=True)
    else:
        raise AssertionError(name)
    return f


# folder -> (files captioned, the words of each skip line, in order)
FOLDERS: dict[str, tuple[list[str], list[str]]] = {
    "jfif_and_avif": (["a.jfif", "b.avif"], []),
    "only_heic": ([], ["IMG_0001.heic: HEIC images need pillow-heif", "IMG_0002.HEIC: HEIC images need pillow-heif"]),
    "only_notes": ([], ["only_notes: no images or videos found in this folder (1 other file ignored)"]),
    "empty": ([], ["empty: no images or videos found in this folder"]),
    "unreadable_subfolder": (["a.jpg"], ["locked: permission denied; folder not read"]),
    "link_loop": (["a.jpg"], []),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return write_catalogue(tmp_path_factory, "folders", _folder, FOLDERS, mode=0o755)


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_folder_scan(folders, name):
    """`scenecap caption FOLDER`: what can be read is captioned; each thing that cannot is one line naming it;
    a run that read nothing does not exit 0."""
    good, skips = FOLDERS[name]
    r = caption(str(folders[name]), "--bundle", BUNDLE, unpriv=True)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    captioned = sorted(line.split("\t")[0].rsplit("/", 1)[-1] for line in r.stdout.splitlines())
    assert captioned == good, (captioned, r.stderr)
    lines = said(r)
    assert len(lines) == len(skips), r.stderr
    for line, words in zip(lines, skips, strict=True):
        assert words in line, (words, line)
    assert (r.returncode == 0) == (not skips), (r.returncode, r.stderr)


# -- videos -----------------------------------------------------------------------------------------------------
def _video(d: Path, name: str) -> Path:
    p = d / name
    size = (9000, 9000) if name.startswith("huge") else (64, 48)
    count = {"zero_frames.avi": 0, "huge_frames.avi": 2}.get(name, 30)
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*("mp4v" if name.endswith(".mp4") else "MJPG")), 10.0, size)
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    for i in range(count):
        frame[:] = i * 8
        w.write(frame)
    w.release()
    if name.startswith("truncated"):  # a copy that stopped halfway
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif name == "junk.mp4":
        p.write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8)))
    elif name == "unreadable.mp4":
        p.chmod(0)
    return p


# video -> (frames captioned, the words of the one skip line)
VIDEOS: dict[str, tuple[int, str]] = {
    "zero_frames.avi": (0, "no frames could be decoded"),
    "truncated.avi": (3, "truncated after 3 frames (its header says 30)"),
    "truncated.mp4": (0, "cannot open as a video"),
    "junk.mp4": (0, "cannot open as a video"),
    "huge_frames.avi": (0, f"video frames are 9000x9000 pixels, over the limit of {MAX_PIXELS}; refusing to decode"),
    "unreadable.mp4": (0, "permission denied"),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    return write_catalogue(tmp_path_factory, "videos", _video, VIDEOS, mode=0o755)


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_video(videos, name):
    """Each bad video: the frames it has are captioned, then one line naming it; no OpenCV [ WARN ] line;
    exit 1 (a file to fix)."""
    count, words = VIDEOS[name]
    r = caption(str(videos[name]), "--bundle", BUNDLE, "--every", "0", unpriv=True)
    assert "Traceback" not in r.stderr and "WARN" not in r.stderr and "[ERROR" not in r.stderr, r.stderr
    assert len(r.stdout.splitlines()) == count, r.stdout
    lines = said(r)
    assert len(lines) == 1 and f"{videos[name]}: {words}" in lines[0], r.stderr
    assert r.returncode == 1


def test_huge_video_frames_are_refused_without_decoding_one(videos):
    """A 1.5 MB MJPEG of 9000x9000 frames: refused from the header; the reader's peak memory stays that of
    OpenCV itself (decoding one frame would add 240 MB, the old path reached 1.15 GB)."""
    code = ("import sys; from scenecap.edge.sources import FileSource;"
            "src = FileSource([sys.argv[1]], every_s=0); frames = list(src.frames());"
            "print(frames[0].error); print(src.stats.frames_read, src.stats.errors);"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    r = subprocess.run([sys.executable, "-c", code, str(videos["huge_frames.avi"])], capture_output=True, text=True,
                       timeout=120)
    error, counts, peak_kb = r.stdout.splitlines()
    assert "9000x9000 pixels, over the limit" in error and counts == "0 1", r.stdout
    assert int(peak_kb) < 200_000, peak_kb


def test_a_missing_file_is_not_counted_as_read(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(GOOD).save(good)
    src = FileSource([str(good), str(tmp_path / "missing.jpg"), str(tmp_path)])
    frames = list(src.frames())
    assert [f.error is None for f in frames] == [True, False, True]
    assert (src.stats.frames_read, src.stats.errors) == (2, 1)


# -- special files ----------------------------------------------------------------------------------------------
def _special(d: Path, name: str) -> str:
    if name in ("fifo.jpg", "fifo.mp4"):
        os.mkfifo(d / name)
    elif name == "socket.jpg":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(d / name))
        s.close()
    elif name == "/dev/zero":
        return name
    return str(d / name)


SPECIAL: dict[str, str] = {
    "fifo.jpg": "is a FIFO (named pipe), not a regular file; expected an image file",
    "fifo.mp4": "is a FIFO (named pipe), not a regular file; expected an image file",
    "socket.jpg": "is a socket, not a regular file",
    "/dev/zero": "is a character device, not a regular file",
}


@pytest.fixture(scope="module")
def specials(tmp_path_factory) -> dict[str, str]:
    return write_catalogue(tmp_path_factory, "special", _special, SPECIAL)


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_special_file(specials, name):
    """Named for what it is, never read: a FIFO would block, /dev/zero would be read forever."""
    r = caption(specials[name], "--bundle", BUNDLE, timeout=60)
    lines = said(r)
    assert len(lines) == 1 and f"{specials[name]}: {SPECIAL[name]}" in lines[0], r.stderr
    assert r.returncode == 1 and not r.stdout


def test_piped_stdin_is_named_a_fifo():
    r = caption("/dev/stdin", "--bundle", BUNDLE, stdin=subprocess.PIPE, timeout=60)
    lines = said(r)
    assert len(lines) == 1 and "/dev/stdin: is a FIFO (named pipe), not a regular file" in lines[0], r.stderr


# -- live sources that cannot work --------------------------------------------------------------------------------
def test_picam_without_picamera2_ends_the_run_with_the_install_hint():
    """Under systemd (Restart=on-failure) a run that retried forever would never be restarted: one line, exit 2."""
    r = scenecap("caption", "--source", "picam", "--bundle", BUNDLE, timeout=60)
    cli_error(r, "picam: picamera2 is not importable", "apt install python3-picamera2")


def test_picam_reader_without_picamera2_is_not_retried(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    src = LiveSource(PicamReader(), backoff=Backoff(first=0.01, cap=0.01))
    with pytest.raises(ScenecapError, match="apt install python3-picamera2"):
        next(src.frames())
    src.close()
    assert not [r for r in caplog.records if "retrying" in r.message]
    one_line_error(lambda: open_source("picam"), "picamera2 is not importable")


def test_a_camera_that_never_opens_ends_the_run_after_its_attempts(caplog):
    src = LiveSource(OpenCVReader(57), backoff=Backoff(first=0.01, cap=0.01), start_attempts=3)
    with pytest.raises(ScenecapError) as e:
        list(src.frames())
    src.close()
    assert str(e.value) == "camera:57: cannot open the camera (no /dev/video57); gave up after 3 attempts (it never " \
                           "opened)"
    assert len([r for r in caplog.records if "retrying in" in r.message]) == 2


def test_no_retry_is_logged_once_stopping(caplog):
    """A stream whose server accepts and never answers: the open is timing out when the run is stopped; when
    it fails, nothing more is said, and the backoff wait (60 s here) never starts."""
    caplog.set_level("INFO", logger="scenecap.edge.camera")
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = threading.Event()
    held = []

    def accept():
        conn, _ = listener.accept()
        held.append(conn)
        accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    src = LiveSource(OpenCVReader(f"http://127.0.0.1:{port}/x", timeout_s=1), backoff=Backoff(first=60, cap=60))
    stop = threading.Event()
    frames = src.frames(stop)
    consumer = threading.Thread(target=lambda: list(frames), daemon=True)
    consumer.start()
    assert accepted.wait(30)
    stop.set()
    consumer.join(30)
    src.close(timeout=30)
    listener.close()
    for conn in held:
        conn.close()
    assert not src.alive
    assert not [r.message for r in caplog.records if "retrying" in r.message]


def test_huge_frames_from_a_stream_are_skipped_one_by_one():
    """An MJPEG camera serving 8100x8000 frames (64.8 megapixels, just over the limit): each is a Frame with one
    line of error, not an image passed on."""
    server = MJPEGServer(np.zeros((8000, 8100, 3), np.uint8), fps=2).start()
    src = LiveSource(OpenCVReader(server.url, timeout_s=10))
    try:
        frame = next(src.frames())
    finally:
        src.close()
        server.stop()
    assert frame.image is None and frame.error == (f"{server.url}#frame=0: frame of 8100x8000 pixels is over the "
                                                   f"limit of {MAX_PIXELS}; skipped")
    assert src.stats.frames_read == 0 and src.stats.errors >= 1


def test_catalogue_size():
    assert len(REDACTION) == 19
    assert len(FOLDERS) == 6
    assert len(VIDEOS) == 6
    assert len(SPECIAL) == 4

