"""Live sources: a camera by index or device path (OpenCV/V4L2), the Pi camera (picamera2, low-resolution
stream) and network streams (RTSP/HTTP through OpenCV's FFmpeg backend).

A capture thread reads frames as fast as the source makes them and keeps only the newest one, so the caption
loop always describes what is in front of the camera now, never a frame from a queue seconds old. A camera or
stream that is lost (unplugged, network drop, server restart) is closed and reopened with exponential backoff;
each loss and each reopen is logged, and the run goes on.

A source that has never opened is a different case: a camera index that does not exist, a wrong URL, a Pi
camera that is not connected. It is tried START_ATTEMPTS times (about half a minute with the default backoff,
long enough for a USB camera or Wi-Fi to come up at boot) and then the run ends with one error line and a
non-zero exit, so a service manager (systemd's Restart=on-failure) sees the failure. What retrying cannot fix
(picamera2 not installed) ends the run at once. Frames over the pixel limit are skipped one by one, each as a
Frame with .error.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np

from scenecap.edge.errors import ScenecapError, first_line
from scenecap.edge.frames import Frame, FrameSource, array_frame
from scenecap.edge.images import os_reason, over_limit
from scenecap.edge.urls import redact, redact_text
from scenecap.edge.video import quiet_opencv

__all__ = ["Backoff", "LiveSource", "OpenCVReader", "PicamReader", "SourceUnavailable", "quiet_opencv",
           "require_picamera2"]

log = logging.getLogger("scenecap.edge.camera")

# Long enough for a Pi on Wi-Fi to reach an RTSP camera, short enough that a dead stream is noticed quickly.
STREAM_TIMEOUT_S = 5.0
PICAM_SIZE = (320, 240)  # the low-resolution stream: plenty for a 96-224 px model, cheap to convert
# Opening attempts before a source that never opened ends the run: 0.5+1+2+4+8+10 s of backoff between 7 tries.
START_ATTEMPTS = 7
PICAMERA2_HINT = ("on Raspberry Pi OS run 'sudo apt install python3-picamera2' and create the venv with "
                  "--system-site-packages (see docs/raspberry-pi.md)")


class SourceUnavailable(ScenecapError):
    """A source that retrying cannot bring back (a missing library): the run ends at once."""


class Backoff:
    """Delays between reopen attempts: first, first*factor, ... up to `cap` seconds."""

    def __init__(self, first: float = 0.5, factor: float = 2.0, cap: float = 10.0):
        self.first, self.factor, self.cap = first, factor, cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.first


def require_picamera2() -> None:
    """SourceUnavailable, with the install hint, if picamera2 cannot be imported."""
    try:
        import picamera2  # noqa: F401 - only whether it imports
    except ImportError:
        raise SourceUnavailable(f"picam: picamera2 is not importable; {PICAMERA2_HINT}") from None


class OpenCVReader:
    """A camera (index or /dev/videoN) or a network stream (rtsp://, http://) through cv2.VideoCapture."""

    def __init__(self, target: int | str, size: tuple[int, int] | None = None,
                 timeout_s: float = STREAM_TIMEOUT_S):
        self.target = target
        self.size = size
        self.timeout_s = timeout_s
        self.stream = isinstance(target, str) and "://" in target
        if isinstance(target, int):
            self.name = f"camera:{target}"
        else:
            self.name = redact(target)
        self.fps: float | None = None
        self._cap = None

    def open(self) -> None:
        import cv2

        quiet_opencv()
        try:
            cap = self._capture(cv2)
        except cv2.error as e:  # its text may hold the URL: redacted, and a retry, never a dead capture thread
            raise ScenecapError(f"{self.name}: cannot open ({redact_text(str(e).strip().splitlines()[-1])})") from None
        if not cap.isOpened():
            cap.release()
            what = "stream" if self.stream else "camera"
            raise ScenecapError(f"{self.name}: cannot open the {what}{self._why_not()}")
        if not self.stream:
            # One buffered frame: the driver must not hold a queue of old frames for us.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0 < fps <= 240 else None
        self._cap = cap

    def _capture(self, cv2):
        ms = int(self.timeout_s * 1000)
        if self.stream:
            # FFmpeg is the backend that reads RTSP/HTTP; the timeouts stop a dead server hanging the thread.
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        if sys.platform.startswith("linux"):
            return cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        return cv2.VideoCapture(self.target)

    def _why_not(self) -> str:
        """Why a camera device would not open, when the system can tell: no such device, permission denied."""
        if self.stream:
            return ""
        device = f"/dev/video{self.target}" if isinstance(self.target, int) else str(self.target)
        if not sys.platform.startswith("linux"):
            return ""
        try:
            os.stat(device)
        except FileNotFoundError:
            return f" (no {device})"
        except OSError as e:
            return f" ({device}: {os_reason(e)})"
        if not os.access(device, os.R_OK | os.W_OK):
            return f" ({device}: permission denied; add the user to the 'video' group)"
        return ""

    def read(self) -> np.ndarray | None:
        """The next frame (RGB if it has 3 channels, else as the driver gave it), or None if the source is lost.
        A frame over the pixel limit is handed on unconverted, for LiveSource to refuse."""
        import cv2

        ok, img = self._cap.read()
        if not ok or img is None:
            return None
        if img.ndim >= 2 and over_limit(img.shape[1], img.shape[0]):
            return img  # no RGB copy of a frame that is refused anyway
        if img.ndim == 3 and img.shape[2] == 3:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return img  # odd shapes are the caption loop's to judge (it skips them with one line)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class PicamReader:
    """The Raspberry Pi camera through picamera2 (from Raspberry Pi OS: apt install python3-picamera2).

    Frames come from the low-resolution ("lores") stream in YUV420, the format every Pi can produce there, and
    are converted to RGB by OpenCV; the ISP does the downscaling, not the CPU.
    """

    def __init__(self, size: tuple[int, int] | None = None):
        self.size = size or PICAM_SIZE
        self.name = "picam"
        self.fps: float | None = None
        self._cam = None
        self._width = self.size[0]

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceUnavailable(f"picam: picamera2 is not importable; {PICAMERA2_HINT}") from None
        try:
            cam = Picamera2()
        except (IndexError, RuntimeError, OSError) as e:
            raise ScenecapError(f"picam: no camera found or it is busy ({e})") from None
        try:
            w, h = self.size
            # lores must not exceed main and must be YUV; main at twice the size keeps the full field of view.
            config = cam.create_video_configuration(
                main={"size": (w * 2, h * 2), "format": "YUV420"},
                lores={"size": (w, h), "format": "YUV420"},
                buffer_count=4,
            )
            cam.configure(config)
            cam.start()
            self._width = int(cam.stream_configuration("lores")["size"][0])
            self.fps = None
        except Exception as e:  # libcamera raises many kinds; all mean "not now"
            self._cam = cam
            self.close()
            raise ScenecapError(f"picam: cannot start the camera ({e})") from None
        self._cam = cam

    def read(self) -> np.ndarray | None:
        import cv2

        try:
            yuv = self._cam.capture_array("lores")
        except Exception as e:  # a camera that fails mid-run is treated as lost, then reopened
            log.warning("picam: capture failed (%s)", first_line(e))
            return None
        # The array is (h * 3/2, stride) I420 with any row padding kept: convert, then crop the padding.
        rgb = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
        return np.ascontiguousarray(rgb[:, : self._width])

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception as e:  # closing a camera that already vanished
                log.debug("picam: close failed (%s)", e)
            self._cam = None


class LiveSource(FrameSource):
    """A capture thread around a reader: latest frame wins; loss -> reopen with backoff; stop() releases it."""

    def __init__(self, reader, backoff: Backoff | None = None, start_attempts: int | None = START_ATTEMPTS):
        """`start_attempts`: how many times a source that has never opened is tried before the run ends (None:
        until stopped). Once it has opened, a lost source is retried until stopped."""
        super().__init__(name=redact(reader.name), live=True)
        self.reader = reader
        self.backoff = backoff or Backoff()
        self.start_attempts = start_attempts
        self.failure: str | None = None  # why the capture thread gave up; frames() raises it
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._halt = threading.Event()
        self._stop: threading.Event | None = None  # the caller's stop event, seen by the capture thread too
        self._thread: threading.Thread | None = None
        self._ended = False
        self._index = 0

    # -- capture thread ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"capture {self.name}", daemon=True)
            self._thread.start()

    def _stopping(self) -> bool:
        return self._halt.is_set() or (self._stop is not None and self._stop.is_set())

    def _run(self) -> None:
        opened_before = False
        attempts = 0
        try:
            while not self._stopping():
                attempts += 1
                try:
                    self.reader.open()
                except SourceUnavailable as e:
                    self.failure = str(e)
                    break
                except ScenecapError as e:
                    if self._stopping():  # stopped while the open was timing out: nothing more to say
                        break
                    if not opened_before and self.start_attempts is not None and attempts >= self.start_attempts:
                        self.failure = f"{e}; gave up after {attempts} attempts (it never opened)"
                        break
                    delay = self.backoff.next()
                    log.warning("%s; retrying in %.1f s", redact_text(str(e)), delay)
                    self._halt.wait(delay)  # close() sets _halt: the wait ends at once
                    continue
                if opened_before:
                    self.stats.reconnects += 1
                    log.warning("%s: reopened", self.name)
                else:
                    log.info("%s: opened", self.name)
                opened_before = True
                self.fps = self.reader.fps
                got = self._pump()
                self.reader.close()
                if self._stopping():
                    break
                if got:
                    self.backoff.reset()
                delay = self.backoff.next()
                log.warning("%s: lost (no frame from the %s); reopening in %.1f s", self.name,
                            "stream" if getattr(self.reader, "stream", False) else "camera", delay)
                self._halt.wait(delay)
        finally:
            self.reader.close()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _pump(self) -> int:
        """Read until the source fails or we are told to stop; returns how many frames came."""
        got = 0
        while not self._stopping():
            try:
                image = self.reader.read()
            except Exception as e:  # a driver error is a lost source, never a dead thread
                text = redact_text(first_line(e))
                log.warning("%s: read failed (%s)", self.name, text)
                image = None
            if image is None:
                return got
            got += 1
            # Over the pixel limit (or an unusable dtype): a Frame with .error, skipped by the loop in one line.
            frame = array_frame(f"{self.name}#frame={self._index}", self._index, image, time_s=time.monotonic())
            self._index += 1
            with self._cond:
                self.stats.count(frame)
                if self._latest is not None:
                    self.stats.dropped += 1
                self._latest = frame
                self._cond.notify_all()
        return got

    # -- consumer side ----------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Whether the capture thread is running (it stops on close() or when it gives up)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def ended(self) -> bool:
        """Whether the capture thread has finished: stopped, or given up (then `failure` says why)."""
        with self._cond:
            return self._ended

    def wait_frames(self, n: int, timeout: float | None = None) -> bool:
        """Wait until the capture thread has read `n` more frames (False: it ended or `timeout` passed first).
        The thread notifies at every frame, so this waits on the event, never on a sleep."""
        self.start()
        with self._cond:
            target = self.stats.frames_read + n
            return self._cond.wait_for(lambda: self.stats.frames_read >= target or self._ended, timeout=timeout) \
                and self.stats.frames_read >= target

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout` seconds for one (None: none came)."""
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._latest is None and not self._ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(0.25 if remaining is None else min(0.25, remaining))
            frame, self._latest = self._latest, None
            return frame

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Frames until `stop` is set or the capture thread gives up; a source that never opened (or cannot be
        opened at all) raises ScenecapError with the reason, so the run ends non-zero."""
        self._stop = stop
        self.start()
        while not (stop is not None and stop.is_set()):
            frame = self.take(timeout=0.25)
            if frame is not None:
                yield frame
            elif self._ended:
                if self.failure:
                    raise ScenecapError(self.failure)
                return

    def close(self, timeout: float = STREAM_TIMEOUT_S + 1.0) -> None:
        """Stop the capture thread and release the device (the thread releases it, between reads)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: capture thread still blocked in a read after %.0f s; leaving it", self.name, timeout)
        else:
            self.reader.close()
