"""Sources: what a user can point `scenecap caption` at, live streams on loopback, lost streams, bad frames."""

from __future__ import annotations

import logging
import sys
import threading
import types

import cv2
import numpy as np
import pytest
from edge_helpers import MJPEGServer, read_stamp, scene, wait_for

from scenecap.edge.camera import Backoff, LiveSource, OpenCVReader, PicamReader
from scenecap.edge.errors import ScenecapError
from scenecap.edge.sources import FileSource, describe_source, open_source, redact


@pytest.mark.parametrize("spec, kind", [
    ("picam", "picam"), ("0", "camera"), ("2", "camera"), ("/dev/video0", "camera"),
    ("/dev/v4l/by-id/usb-cam-video-index0", "camera"), ("rtsp://10.0.0.5:8554/cam", "stream"),
    ("http://127.0.0.1:8080/stream.mjpg", "stream"), ("RTSP://cam/live", "stream"),
    ("walk.mp4", "file"), ("frames/", "file"), ("file:///tmp/a.mp4", "file"),
])
def test_what_a_source_string_names(spec, kind):
    assert describe_source(spec) == kind


def test_unknown_url_scheme_and_missing_file_are_one_line_errors(tmp_path):
    with pytest.raises(ScenecapError, match="scheme 'ftp' not supported"):
        describe_source("ftp://example.org/a.mp4")
    with pytest.raises(ScenecapError, match=r"no such file or folder.*camera index"):
        open_source(str(tmp_path / "missing.mp4"))


def test_passwords_never_reach_the_logs():
    """Every form of credential: tests/test_catalogue_sources.py."""
    assert redact("rtsp://admin:hunter2@cam.local:554/live") == "rtsp://admin:***@cam.local:554/live"
    assert redact("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080/x"
    assert OpenCVReader("rtsp://admin:hunter2@cam.local/live").name == "rtsp://admin:***@cam.local/live"


def test_a_lost_stream_is_retried_past_the_start_attempts(caplog):
    """Once a source has opened, losing it is retried until stopped: start_attempts only bounds a source that
    never opened."""
    server = MJPEGServer(scene(3), fps=20).start()
    src = LiveSource(OpenCVReader(server.url, timeout_s=1), backoff=Backoff(first=0.01, cap=0.05),
                     start_attempts=2)
    caplog.set_level(logging.INFO, logger="scenecap.edge.camera")
    try:
        it = src.frames()
        assert next(it).image is not None
        server.stop()
        assert wait_for(lambda: len([r for r in caplog.records if "retrying" in r.message]) >= 4, timeout=60)
        assert src.failure is None and not src.ended
    finally:
        src.close()
        server.stop()


def test_frames_from_an_app_are_scaled_by_their_range():
    """Float 0-255 frames (an app's own camera) are taken as they are, not clipped to white; 12-bit data in
    uint16 is scaled by 4095, not read as near black."""
    good = scene(9)
    frames = [good.astype(np.float32), good / 255.0, (good.astype(np.uint16) * 16), good.astype(np.float64) * 3]
    out = list(open_source(frames).frames())
    for f in out[:3]:
        assert f.image.dtype == np.uint8 and np.abs(f.image.astype(int) - good).max() <= 1
    assert out[3].image is None and "float pixels range from" in out[3].error


def test_backoff_doubles_up_to_a_cap_and_resets():
    b = Backoff(first=0.5, factor=2, cap=3)
    assert [b.next() for _ in range(5)] == [0.5, 1, 2, 3, 3]
    b.reset()
    assert b.next() == 0.5


def test_video_file_ends_cleanly_and_keeps_its_frame_times(tmp_path):
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(25):
        w.write(np.full((48, 64, 3), i * 10, np.uint8))
    w.release()
    src = FileSource([str(path)], every_s=0)
    frames = list(src.frames())
    assert [f.index for f in frames] == list(range(25))
    assert frames[10].time_s == pytest.approx(1.0)
    assert src.fps == pytest.approx(10.0)
    sampled = list(FileSource([str(path)], every_s=1.0).frames())
    assert [f.index for f in sampled] == [0, 10, 20]


def test_stream_on_loopback_is_read_through_opencv_ffmpeg():
    server = MJPEGServer(scene(1), fps=20).start()
    src = LiveSource(OpenCVReader(server.url, timeout_s=3))
    try:
        frames = []
        for f in src.frames():
            frames.append(f)
            if len(frames) == 5:
                break
        assert all(f.image.shape == (160, 160, 3) and f.image.dtype == np.uint8 for f in frames)
        # RGB, not OpenCV's BGR: the stream's pixels come back as served (JPEG-close).
        diff = np.abs(frames[-1].image[16:].astype(int) - scene(1)[16:].astype(int)).mean()
        assert diff < 6
        assert [f.index for f in frames] == sorted(f.index for f in frames)
        assert all(f.source.startswith(server.url) for f in frames)
    finally:
        src.close()
        server.stop()


def _busy_while_frames_come(src: LiveSource, n: int) -> None:
    """A caption loop busy while the camera delivers `n` more frames: waits on the source's own condition, which
    the capture thread notifies at every frame (the timeout only bounds a broken run)."""
    assert src.wait_frames(n, timeout=60), src.stats


class _LogWatch(logging.Handler):
    """The messages of one logger as they come, for a test to wait on (a condition), not to sleep for."""

    def __init__(self, logger: str):
        super().__init__()
        self.logger, self.messages, self.cond = logging.getLogger(logger), [], threading.Condition()

    def __enter__(self) -> _LogWatch:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        with self.cond:
            self.messages.append(record.getMessage())
            self.cond.notify_all()

    def wait_for(self, text: str, after: int = 0, timeout: float = 60) -> int | None:
        """The index of the first message from `after` on that holds `text`, waiting for it; None if none came."""
        def found() -> int | None:
            return next((i for i, m in enumerate(self.messages) if i >= after and text in m), None)

        with self.cond:
            self.cond.wait_for(lambda: found() is not None, timeout)
            return found()


def test_capture_thread_hands_over_the_newest_frame_not_a_backlog():
    """A caption loop busy for 6 frames of a 20 fps camera (0.3 s) at every take: each frame taken is (nearly)
    the latest served. A queue would fall 6 frames further behind on every take."""
    server = MJPEGServer(scene(2), fps=20).start()
    src = LiveSource(OpenCVReader(server.url, timeout_s=3))
    try:
        lags = []
        for n, f in enumerate(src.frames()):
            lags.append(server.sent - 1 - read_stamp(f.image))
            if n == 8:
                break
            _busy_while_frames_come(src, 6)
        assert src.stats.dropped >= 20, (src.stats, lags)  # frames replaced unseen while the loop was busy
        # A queue falls 6 frames further behind per take: 48 frames by the last one. Latest-frame-wins stays within
        # what the socket and the scheduler hold (a few frames; more on a machine this busy), and does not grow.
        assert lags[-1] < 24 and max(lags[4:]) < 24, lags
    finally:
        src.close()
        server.stop()


def test_lost_stream_is_reopened_with_backoff_and_logged(caplog):
    server = MJPEGServer(scene(3), fps=20).start()
    src = LiveSource(OpenCVReader(server.url, timeout_s=2), backoff=Backoff(first=0.2, cap=1.0))
    caplog.set_level(logging.INFO, logger="scenecap.edge.camera")
    with _LogWatch("scenecap.edge.camera") as watch:
        try:
            it = src.frames()
            first = next(it)
            assert first.image is not None
            server.stop()  # the camera goes away...
            lost = watch.wait_for("lost")
            assert lost is not None, watch.messages
            # ...stays away through at least one failed reopen...
            assert watch.wait_for("retrying", after=lost) is not None, watch.messages
            server.image = scene(4)
            server.start()  # ...and comes back on the same address with a new view
            for f in it:
                if np.abs(f.image[16:].astype(int) - scene(4)[16:].astype(int)).mean() < 6:
                    break
            assert src.stats.reconnects >= 1
            messages = [r.message for r in caplog.records]
            assert any("reopening in" in m for m in messages)
            assert any("reopened" in m for m in messages)
        finally:
            src.close()
            server.stop()


def test_camera_that_is_not_there_is_retried_until_stopped_when_asked_to(caplog):
    """start_attempts=None (the Python API's choice): a camera that never opens is retried until stopped. The
    default gives up after START_ATTEMPTS (tests/test_catalogue_sources.py)."""
    caplog.set_level(logging.INFO, logger="scenecap.edge.camera")
    src = LiveSource(OpenCVReader(57), backoff=Backoff(first=0.1, cap=0.2), start_attempts=None)

    def retries():
        return [r.message for r in caplog.records if "camera:57: cannot open the camera (no /dev/video57); retrying"
                in r.message]

    assert src.take(timeout=0.5) is None
    assert wait_for(lambda: len(retries()) >= 2, timeout=20)
    src.close()
    assert src.stats.frames_read == 0
    assert not src.alive  # stopping works while it waits between attempts


class _FakePicamera2:
    """Stands in for picamera2 (which only runs on a Pi): hands out the lores stream the way picamera2 does,
    as (h * 3/2, stride) I420 with the row padding left in, so the conversion and cropping are tested."""

    frames = 0

    def __init__(self):
        self.config = None

    def create_video_configuration(self, main, lores, buffer_count):
        assert lores["format"] == "YUV420" and lores["size"][0] <= main["size"][0]
        w, h = lores["size"]
        return {"lores": {"size": (w, h), "stride": (w + 63) // 64 * 64, "format": "YUV420"}}

    def configure(self, config):
        self.config = config

    def start(self):
        pass

    def stream_configuration(self, name):
        return self.config[name]

    def capture_array(self, name):
        w, h = self.config[name]["size"]
        stride = self.config[name]["stride"]
        rgb = np.zeros((h, stride, 3), np.uint8)
        rgb[:, :w] = cv2.resize(scene(5), (w, h))
        _FakePicamera2.frames += 1
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)

    def stop(self):
        pass

    def close(self):
        pass


def test_picam_low_res_yuv420_stream_becomes_rgb(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=_FakePicamera2))
    reader = PicamReader((200, 150))  # 200 px rows padded to a 256-byte stride, as the ISP does
    reader.open()
    rgb = reader.read()
    reader.close()
    assert rgb.shape == (150, 200, 3)
    expected = cv2.resize(scene(5), (200, 150))
    assert np.abs(rgb.astype(int) - expected.astype(int)).mean() < 4  # YUV 4:2:0 round trip


def test_picam_without_picamera2_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(ScenecapError, match="apt install python3-picamera2.*system-site-packages"):
        PicamReader().open()


# -- bad input (bad image files: tests/test_catalogue_images.py) ----------------------------------------------
def test_wrong_shaped_frames_from_a_camera_are_skipped_and_the_loop_goes_on(float_bundle):
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.live import RunStats

    good = scene(7)
    frames = [good, np.zeros((240, 320, 2), np.uint8), np.zeros(1000, np.uint8), np.zeros((0, 10, 3), np.uint8),
              good.astype(np.float64) / 255.0, np.full((120, 160), 90, np.uint8), (good.astype(np.uint16) * 257),
              np.zeros((48, 64, 5), np.uint8), np.array([["a", "b"]]), good[:, :, ::-1].copy()]
    skipped = []
    stats = RunStats()
    cap = Captioner.load(float_bundle)
    out = list(cap.captions(frames, when="all", on_skip=lambda src, msg: skipped.append((src, msg)), stats=stats))
    assert [c.frame.index for c in out] == [0, 4, 5, 6, 9]
    assert [s for s, _ in skipped] == ["frames#frame=1", "frames#frame=2", "frames#frame=3", "frames#frame=7",
                                      "frames#frame=8"]
    assert all("\n" not in m and ("shape" in m or "dtype" in m) for _, m in skipped)
    assert stats.frames_seen == 10 and stats.skipped == 5
