"""The live loop as a cane runs it: a camera stream that drops out and comes back, stopped by a signal; the Python
API over sources; Edge TPU messages. The caption command must never import TensorFlow."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from edge_helpers import BLOCK_TF, MJPEGServer, pick_scenes, scene, wait_for, write_cut_video

from scenecap.edge.errors import ScenecapError


def _records(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("}")]


def _two_views(bundle):
    """Two clearly different scenes that the tiny model also describes differently."""
    a, b = pick_scenes(bundle, 2, start=80, min_score=40)
    return scene(a), scene(b)


class _Stderr:
    """A child's stderr as it comes, for a test to wait on (a condition), not to sleep for; all of it in `text`."""

    def __init__(self, stream):
        self.text, self.cond = "", threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.cond:
                self.text += line
                self.cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.text), timeout)

    def all(self, timeout: float = 30) -> str:
        """Everything, once the child has closed its stderr."""
        self._thread.join(timeout)
        return self.text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_live_stream_survives_a_dropout_and_stops_cleanly_on_a_signal(float_bundle, tmp_path, sig):
    view_a, view_b = _two_views(float_bundle)
    server = MJPEGServer(view_a, fps=15).start()
    jsonl, speech = tmp_path / "live.jsonl", tmp_path / "speech"
    cmd = [sys.executable, "-c", BLOCK_TF, "caption", "--source", server.url, "--bundle", str(float_bundle),
           "--jsonl", str(jsonl), "--min-interval", "0.5", "--threads", "1"]
    if shutil.which("espeak-ng"):
        cmd += ["--speak-to", str(speech)]
    with open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    err = _Stderr(proc.stderr)
    try:
        assert wait_for(lambda: len(_records(jsonl)) >= 1, timeout=90), err.text
        server.stop()  # the camera drops out...
        assert err.wait_for(lambda text: "lost" in text, timeout=30), err.text
        # ...stays away through at least one failed reopen...
        assert err.wait_for(lambda text: "retrying in" in text.split("lost", 1)[1], timeout=30), err.text
        server.image = view_b
        server.start()  # ...and comes back, now looking at something else
        assert wait_for(lambda: len(_records(jsonl)) >= 2, timeout=60), err.text
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    stderr = err.all()
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    recs = _records(jsonl)
    assert [r["reason"] for r in recs[:2]] == ["first", "change"]
    assert recs[0]["caption"] != recs[1]["caption"]
    assert all(r["source"].startswith(server.url + "#frame=") for r in recs)
    assert all("frame_age" in r["latency_ms"] for r in recs)
    assert re.search(r"reopening in [\d.]+ s", stderr) and "reopened" in stderr
    assert f"{sig.name}: stopping" in stderr
    summary = next(line for line in stderr.splitlines() if line.startswith("summary:"))
    frames_read = int(re.search(r"(\d+) frames read", summary).group(1))
    assert frames_read >= 2 and f"{len(recs)} captions" in summary  # at least 2
    assert re.search(r"\d+ reconnects?", summary) and "median ms per stage: preprocess" in summary
    assert summary.endswith("[stopped by signal]")
    stdout = (tmp_path / "stdout.txt").read_text()
    assert len(stdout.splitlines()) == len(recs)
    if shutil.which("espeak-ng"):
        assert list(speech.glob("*.wav"))  # speech kept up, and was flushed at the end


def test_camera_missing_at_boot_is_retried_until_stopped(float_bundle, tmp_path):
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "scenecap", "caption", "--source", "/dev/video57",
                                 "--bundle", str(float_bundle)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        retries = re.compile(r"cannot open the camera.*; retrying in")
        assert wait_for(lambda: len(retries.findall(err_path.read_text())) >= 2, timeout=60)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = err_path.read_text()
    assert rc == 0, stderr
    assert "summary: 0 frames read, 0 looked at, 0 captions" in stderr
    assert "Traceback" not in stderr


def test_python_api_iterates_captions_over_a_video(float_bundle, tmp_path):
    from scenecap.edge.captioner import Captioner

    path = tmp_path / "walk.mp4"
    cuts = write_cut_video(path, pick_scenes(float_bundle, 3), 20, fps=10)
    cap = Captioner.load(float_bundle, attention=True)
    got = list(cap.captions(str(path), when="change", min_interval=1.0))
    assert [c.frame.index for c in got] == cuts
    assert all(c.caption.text and c.caption.attention.shape[0] == len(c.caption.tokens) for c in got)
    # Files by default: one frame per second, as `scenecap caption walk.mp4` does.
    assert [c.frame.index for c in cap.captions(str(path))] == [0, 10, 20, 30, 40, 50]


API_OVER_STREAM = """
import sys, threading
from scenecap.edge.captioner import Captioner
from scenecap.edge.live import RunStats
stop, stats, got = threading.Event(), RunStats(), []
for item in Captioner.load(sys.argv[1]).captions(sys.argv[2], when="every", every=0.2, dedup=False,
                                                         stop=stop, stats=stats):
    got.append(item)
    if len(got) == 3:
        stop.set()
assert len(got) == 3, got
assert stats.frames_read >= 3 and stats.frames_seen >= 3
# The capture thread is gone and the stream released.
assert not any(t.name.startswith("capture ") for t in threading.enumerate())
print("ok", len(got))
"""


# In its own process, as an app would be. dedup=False: a live source drops a caption identical to the last one,
# and this stream shows one scene throughout; with dedup on, the loop waited for a third *different* caption that
# only some trainings of the tiny model produced (the stall once seen on a fresh clone).
def test_python_api_over_a_live_stream_stops_when_told(float_bundle):
    server = MJPEGServer(scene(90), fps=15).start()
    try:
        r = subprocess.run([sys.executable, "-c", API_OVER_STREAM, str(float_bundle), server.url],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip().endswith("ok 3")
    finally:
        server.stop()


def test_caption_of_an_image_file_and_an_array_agree(float_bundle, tmp_path):
    from PIL import Image

    from scenecap.edge.captioner import Captioner

    img = scene(91)
    Image.fromarray(img).save(tmp_path / "v.png")
    cap = Captioner.load(float_bundle)
    assert cap.caption(tmp_path / "v.png").tokens == cap.caption(img).tokens
    with pytest.raises(ScenecapError, match="file not found"):
        cap.caption(tmp_path / "nope.png")


def test_edge_tpu_without_compiled_models_says_so(float_bundle):
    r = subprocess.run([sys.executable, "-m", "scenecap", "caption", str(float_bundle / "vocab.json"),
                        "--bundle", str(float_bundle), "--device", "edgetpu"], capture_output=True, text=True)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("scenecap: error:") and "no Edge TPU-compiled model for encoder, decoder_step" in last


def test_edge_tpu_without_the_delegate_library_says_so(float_bundle, tmp_path):
    b = tmp_path / "bundle"
    shutil.copytree(float_bundle, b)
    manifest = json.loads((b / "manifest.json").read_text())
    for name, spec in manifest["models"].items():  # pretend edgetpu_compiler ran
        shutil.copy(b / spec["file"], b / f"{name}_edgetpu.tflite")
        spec["edgetpu_file"] = f"{name}_edgetpu.tflite"
        manifest["files"][spec["edgetpu_file"]] = dict(manifest["files"][spec["file"]])
    (b / "manifest.json").write_text(json.dumps(manifest))
    r = subprocess.run([sys.executable, "-m", "scenecap", "caption", "x.jpg", "--bundle", str(b),
                        "--device", "edgetpu"], capture_output=True, text=True)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert "Edge TPU delegate libedgetpu.so.1 could not be loaded" in last and "--device cpu" in last
    assert "Traceback" not in r.stderr


def test_threads_and_beam_reach_the_interpreter(float_bundle, tmp_path):
    from PIL import Image

    Image.fromarray(scene(92)).save(tmp_path / "v.png")
    r = subprocess.run([sys.executable, "-m", "scenecap", "caption", str(tmp_path / "v.png"), "--bundle",
                        str(float_bundle), "--threads", "1", "--beam", "3", "--jsonl", "-"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    from scenecap.edge.captioner import Captioner

    greedy = Captioner.load(float_bundle).caption(np.asarray(Image.open(tmp_path / "v.png")))
    assert rec["log_prob"] >= round(greedy.log_prob, 4) - 1e-3
    bad = subprocess.run([sys.executable, "-m", "scenecap", "caption", "x.png", "--bundle", str(float_bundle),
                          "--threads", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--threads: '0': expected 1 or more" in bad.stderr


def test_shipped_systemd_unit_runs_a_valid_caption_command(tmp_path):
    import argparse
    import configparser
    import shlex
    from pathlib import Path

    import scenecap.edge
    from scenecap.edge import caption_cli

    unit = Path(scenecap.edge.__file__).with_name("scenecap.service")
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(unit.read_text(encoding="utf-8"))
    argv = shlex.split(cp["Service"]["ExecStart"])
    assert argv[0].endswith("/bin/scenecap") and argv[1] == "caption"
    parser = argparse.ArgumentParser(prog="scenecap")
    caption_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv[1:])  # every option in the unit exists and takes its value
    assert args.source == "picam" and args.speak and args.bundle == "/opt/scenecap/bundle"
    assert cp["Service"]["KillSignal"] == "SIGTERM" and cp["Install"]["WantedBy"] == "multi-user.target"
    if shutil.which("systemd-analyze"):
        copy = tmp_path / "scenecap.service"
        copy.write_text(unit.read_text(encoding="utf-8"))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True)
        # On a machine without /opt/scenecap the only complaint may be the missing program.
        complaints = [line for line in (r.stdout + r.stderr).splitlines()
                      if line.strip() and "/opt/scenecap/venv/bin/scenecap" not in line]
        assert not complaints, complaints


def test_latency_record_stays_bounded_over_a_long_run():
    from scenecap.edge.live import LATENCY_SAMPLE, RunStats

    stats = RunStats()
    values = np.random.default_rng(0).gamma(4.0, 5.0, 50_000)
    for v in values:
        stats.add_latency("total", float(v))
    assert len(stats.latencies_ms["total"]) == LATENCY_SAMPLE  # memory flat however long the cane runs
    assert stats.medians()["total"] == pytest.approx(float(np.median(values)), rel=0.05)


def test_a_stop_during_a_caption_ends_it_and_it_is_never_given(tmp_path):
    """The loop passes its stop event to Captioner.caption: a signal cuts the caption in progress short (a beam
    of 16 on a Pi takes seconds), and that unfinished caption reaches no output."""
    import threading
    from pathlib import Path

    from PIL import Image

    from scenecap.edge.captioner import Captioner
    from scenecap.edge.live import caption_stream
    from scenecap.edge.sources import Frame, FrameSource

    frame = np.asarray(Image.open(Path(__file__).resolve().parents[1] / "demo" / "frames" / "scene_1.jpg"))
    stop = threading.Event()

    class Camera(FrameSource):  # an app's own source that hands over a frame as the signal comes
        def frames(self, stop_=None):
            yield Frame("cam#frame=0", 0, frame)
            stop.set()  # the signal arrives as the second frame is being captioned
            yield Frame("cam#frame=1", 1, frame)

    cap = Captioner.load(Path(__file__).resolve().parents[1] / "demo" / "bundle")
    got = list(caption_stream(cap, Camera("cam"), when="all", dedup=False, stop=stop))
    assert [c.frame.index for c in got] == [0]
    assert got[0].caption.text and not got[0].caption.stopped
