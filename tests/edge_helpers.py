"""Helpers for the edge tests: a real MJPEG-over-HTTP camera served on loopback, and videos with known cuts."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from scenecap.train.synthetic import make_scene


def scene(seed: int, size: int = 160) -> np.ndarray:
    """One synthetic scene (RGB uint8), the kind the tiny model was trained on (the classic style, see conftest)."""
    return np.asarray(make_scene(np.random.default_rng(seed), size, style="classic")[0])


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hand-held camera: a pixel or two of shake and sensor noise, so no two frames of a scene are equal."""
    dx, dy = rng.integers(-2, 3, size=2)
    f = np.roll(img, (int(dy), int(dx)), axis=(0, 1)).astype(np.float32) + rng.normal(0, 4, img.shape)
    return np.clip(f, 0, 255).astype(np.uint8)


def write_cut_video(path: Path, scene_seeds: list[int], frames_per_scene: int, fps: float = 10.0,
                    size: int = 160, shake: bool = True) -> list[int]:
    """A video (.mp4: mp4v, .avi: MJPEG) of scenes with hard cuts between them, hand-held unless shake=False;
    returns the index of each scene's first frame."""
    rng = np.random.default_rng(0)
    codec = "MJPG" if Path(path).suffix == ".avi" else "mp4v"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (size, size))
    assert w.isOpened()
    cuts = []
    for k, seed in enumerate(scene_seeds):
        cuts.append(k * frames_per_scene)
        img = scene(seed, size)
        for _ in range(frames_per_scene):
            w.write(np.ascontiguousarray((jitter(img, rng) if shake else img)[:, :, ::-1]))
    w.release()
    return cuts


def stamp(img: np.ndarray, number: int) -> np.ndarray:
    """Write `number` into the top rows as 12 black/white 8x8 blocks (survives JPEG), to know which frame came."""
    out = img.copy()
    for bit in range(12):
        out[0:8, bit * 8:(bit + 1) * 8] = 255 if (number >> bit) & 1 else 0
    return out


def read_stamp(img: np.ndarray) -> int:
    return sum(1 << bit for bit in range(12) if img[1:7, bit * 8 + 1:bit * 8 + 7].mean() > 127)


class MJPEGServer:
    """A camera on 127.0.0.1 speaking multipart/x-mixed-replace JPEG, as IP cameras and ESP32-CAMs do.

    `stop()` drops every client and closes the port (the camera goes away); `start()` brings it back on the same
    port, serving `image` from then on. Frames are numbered with `stamp`; `sent` counts them.
    """

    def __init__(self, image: np.ndarray, fps: float = 20.0, port: int = 0):
        self.image = image
        self.fps = fps
        self.port = port
        self.sent = 0
        self.clients = 0
        self._server: ThreadingHTTPServer | None = None
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MJPEGServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.clients += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                t0 = time.monotonic()
                k = 0
                while not owner._closing.is_set():
                    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(stamp(owner.image, owner.sent)[:, :, ::-1]))
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(buf))
                        self.wfile.write(buf.tobytes() + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    owner.sent += 1
                    k += 1
                    # Paced like a camera; bounded by the server's life, which the test controls.
                    delay = t0 + k / owner.fps - time.monotonic()
                    if delay > 0:
                        owner._closing.wait(delay)
                try:  # drop the connection hard, as a camera losing power would
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        self._closing.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def running(cmd: list[str], server: MJPEGServer, stderr: Path, **popen) -> Iterator[subprocess.Popen]:
    """`cmd` started with its stderr written to the file `stderr`; on leaving, killed if it is still running (a
    failed wait must not leave it behind), and the camera `server` stopped."""
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(cmd, stderr=err, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass (a bound on waiting, not a speed requirement)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def pick_scenes(bundle, n: int, start: int = 100, min_score: float = 35.0) -> list[int]:
    """Seeds of `n` scenes in which each is clearly a new scene after the one before (change score >= min_score)
    and gets a different caption from the tiny model, so a gating test is about gating, not about how well a
    two-minute model tells two random scenes apart."""
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.gating import content_score, hsv_small

    cap = Captioner.load(bundle)
    seeds = [start]
    text = cap.caption(scene(start)).text
    for s in range(start + 1, start + 400):
        if len(seeds) == n:
            break
        t = cap.caption(scene(s)).text
        if t != text and content_score(hsv_small(scene(seeds[-1])), hsv_small(scene(s))) >= min_score:
            seeds.append(s)
            text = t
    assert len(seeds) == n, "the tiny model gives (nearly) every scene the same caption; is it trained?"
    return seeds

# Run the scenecap CLI in a subprocess where importing TensorFlow or Keras fails: what a Pi without them sees.
BLOCK_TF = """
import sys
class _NoTF:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'):
            raise ImportError('TensorFlow is not allowed on the edge: ' + name)
sys.meta_path.insert(0, _NoTF())
from scenecap.cli import main
rc = main(sys.argv[1:])
assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules), 'TensorFlow got imported'
sys.exit(rc)
"""
