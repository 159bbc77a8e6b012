"""The caption loop: frames from a source -> scene-change gate -> captioner -> outputs.

`caption_stream` is the loop as a Python iterator (what `Captioner.captions(source)` returns); `run` is the
command-line loop around it: it writes the outputs, stops cleanly on SIGINT/SIGTERM (the caption in progress is
finished, outputs flushed, the camera released) and prints a summary. One bad frame is skipped with one line;
the loop never dies on it.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

import cv2
import numpy as np

from scenecap.edge.errors import ScenecapError
from scenecap.edge.fileio import LineFile, OutputError
from scenecap.edge.gating import GateConfig, SceneGate
from scenecap.edge.sources import Frame, FrameSource, open_source

log = logging.getLogger("scenecap.edge.live")

STAGES = ("preprocess", "encoder", "decoder", "total", "gate", "output", "frame_age")
LATENCY_SAMPLE = 1024


@dataclass
class Captioned:
    """One caption the loop gave: the frame, the caption, and why the gate let it through."""

    frame: Frame
    caption: object  # scenecap.edge.captioner.Caption
    reason: str  # first | change | every | all
    score: float  # scene-change score against the previous caption's frame


@dataclass
class RunStats:
    frames_read: int = 0  # by the source (a live source reads more than the loop takes)
    frames_seen: int = 0  # frames the loop looked at
    captions: int = 0  # given to the outputs
    repeats: int = 0  # identical to the previous caption, dropped
    skipped: int = 0  # unreadable or malformed frames
    reconnects: int = 0
    dropped: int = 0  # live frames replaced by newer ones before the loop took them
    interrupted: bool = False
    # Per stage, a uniform sample of at most LATENCY_SAMPLE latencies over the whole run (reservoir sampling):
    # the medians are exact up to that many captions and estimates after, and memory stays flat on a cane
    # that runs for days.
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _seen_ms: Counter = field(default_factory=Counter)
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def add_latency(self, stage: str, ms: float) -> None:
        sample = self.latencies_ms[stage]
        self._seen_ms[stage] += 1
        if len(sample) < LATENCY_SAMPLE:
            sample.append(ms)
        else:
            j = self._rng.randrange(self._seen_ms[stage])
            if j < LATENCY_SAMPLE:
                sample[j] = ms

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.latencies_ms.items() if v}

    def summary(self) -> str:
        def n(count: int, what: str) -> str:
            return f"{count} {what}" + ("" if count == 1 else "s")

        parts = [n(self.frames_read, "frame") + " read", f"{self.frames_seen} looked at", n(self.captions, "caption")]
        extra = []
        if self.repeats:
            extra.append(n(self.repeats, "repeat") + " dropped")
        if self.skipped:
            extra.append(n(self.skipped, "unreadable or bad frame") + " skipped")
        if self.dropped:
            extra.append(n(self.dropped, "stale frame") + " dropped")
        if self.reconnects:
            extra.append(n(self.reconnects, "reconnect"))
        med = self.medians()
        stages = ", ".join(f"{k} {med[k]:.1f}" for k in STAGES if k in med)
        text = "summary: " + ", ".join(parts) + (f" ({', '.join(extra)})" if extra else "")
        if stages:
            text += f"; median ms per stage: {stages}"
        return text + (" [stopped by signal]" if self.interrupted else "")


class SkipReporter:
    """One line per bad frame on stderr; a camera repeating the same fault is reported 3 times, then at
    10, 100, 1000... occurrences, so a broken camera cannot flood the log."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.counts: Counter[str] = Counter()

    def __call__(self, source: str, message: str) -> None:
        n = self.counts[message] = self.counts[message] + 1
        if n <= 3 or (n >= 10 and str(n).rstrip("0") == "1"):
            text = message if message.startswith(source.split("#")[0]) else f"{source}: {message}"
            suffix = f" ({n} times so far)" if n > 3 else ""
            print(f"scenecap: {text}{suffix}", file=self.stream or sys.stderr, flush=True)


def plan(live: bool, when: str | None, every: float | None, min_interval: float = 2.0,
         threshold: float = 27.0) -> tuple[float, GateConfig]:
    """(stride in seconds for video files, gate) from the user's options.

    Defaults: a live source (camera, stream) captions on scene changes; files caption one frame per second of
    video and every image, as before. A video read with --when every is sampled by its reader (cheap grab
    without decoding), so its gate lets every sampled frame through.
    """
    when = when or ("change" if live else "every")
    if when == "every":
        period = 1.0 if every is None else every
        if live:
            return 0.0, GateConfig("every", threshold, min_interval, period)
        return period, GateConfig("all", threshold, min_interval, 0.0)
    if when == "all":
        return 0.0, GateConfig("all", threshold, min_interval, 0.0)
    return 0.0, GateConfig("change", threshold, min_interval, 0.0 if every is None else every)


def caption_stream(captioner, source: str | int | Iterable | FrameSource, *, when: str | None = None,
                   every: float | None = None, min_interval: float = 2.0, threshold: float = 27.0,
                   dedup: bool | None = None, stop: threading.Event | None = None,
                   camera_size: tuple[int, int] | None = None, max_frames: int | None = None,
                   on_skip: Callable[[str, str], None] | None = None,
                   on_frame: Callable[[Frame], None] | None = None,
                   stats: RunStats | None = None) -> Iterator[Captioned]:
    """Caption frames from `source` as they come; yields Captioned(frame, caption, reason, score).

    `source`: image file, folder, glob, video file, camera index or /dev/videoN, 'picam', rtsp/http URL, a
    FrameSource, or any iterable of numpy frames. Bad frames are reported to `on_skip(source, message)` (default:
    logged) and skipped. `dedup` (default: on for live sources and scene-change mode) drops a caption identical
    to the previous one.
    """
    src = source if isinstance(source, FrameSource) else None
    live = src.live if src is not None else _is_live(source)
    stride, gate_cfg = plan(live, when, every, min_interval, threshold)
    if src is None:
        src = open_source(source, every_s=stride, camera_size=camera_size)
    gate = SceneGate(gate_cfg)
    dedup = (gate_cfg.when == "change" or src.live) if dedup is None else dedup
    stats = stats if stats is not None else RunStats()
    report = on_skip or (lambda where, msg: log.warning("%s: %s", where, msg))
    try:
        for frame in src.frames(stop):
            stats.frames_seen += 1
            _sync(stats, src)
            if frame.error or frame.image is None:
                stats.skipped += 1
                report(frame.source, frame.error or "no pixels in this frame")
            else:
                item = _one(captioner, gate, frame, report, stats, dedup, src.live)
                if item is not None:
                    yield item
                if on_frame is not None:  # after the caller has the caption, so a video frame can show it
                    on_frame(frame)
            if (max_frames and stats.frames_seen >= max_frames) or (stop is not None and stop.is_set()):
                break
    finally:
        src.close()
        _sync(stats, src)


def _is_live(source) -> bool:
    from scenecap.edge.sources import describe_source

    if isinstance(source, (str, int)):
        return describe_source(source) != "file"
    return False


def _sync(stats: RunStats, src: FrameSource) -> None:
    stats.frames_read = src.stats.frames_read
    stats.reconnects = src.stats.reconnects
    stats.dropped = src.stats.dropped


def _one(captioner, gate: SceneGate, frame: Frame, report, stats: RunStats, dedup: bool,
         live: bool) -> Captioned | None:
    t0 = time.perf_counter()
    try:
        decision = gate.check(frame.image, frame.time_s)
    except ScenecapError as e:  # a frame of the wrong shape or type from a camera
        stats.skipped += 1
        report(frame.source, str(e))
        return None
    gate_ms = (time.perf_counter() - t0) * 1e3
    if not decision.caption:
        return None
    try:
        cap = captioner.caption(frame.image)
    except ScenecapError as e:
        stats.skipped += 1
        report(frame.source, str(e))
        return None
    except (ValueError, MemoryError) as e:  # numpy/OpenCV refusing a frame: still one line, never a crash
        stats.skipped += 1
        report(frame.source, f"cannot caption this frame ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        return None
    cap.timings["gate"] = gate_ms
    if live and frame.time_s is not None:  # capture -> caption ready: how stale the description is
        cap.timings["frame_age"] = (time.monotonic() - frame.time_s) * 1e3
    if dedup and gate.is_repeat(cap.text):
        stats.repeats += 1
        return None
    return Captioned(frame, cap, decision.reason, decision.score)


# -- outputs ----------------------------------------------------------------------------------------------------
class Outputs:
    """Where captions go: stdout text, JSON lines, annotated frames/video, speech."""

    def __init__(self, text: TextIO | None = None, jsonl: TextIO | None = None, annotated=None, speaker=None):
        self.text = text
        self.jsonl = jsonl
        self.annotated = annotated
        self.speaker = speaker
        self.failed: list[str] = []  # outputs that stopped (a full disk), one line each, for the exit status

    def seen(self, frame: Frame) -> None:
        if self.annotated is not None and frame.image is not None:
            try:
                self.annotated.seen(frame.image)
            except (ValueError, cv2.error) as e:  # a frame the writer cannot take: the others still can
                log.warning("annotated video: frame %s not written (%s)", frame.source, e)

    def emit(self, item: Captioned) -> None:
        cap, frame = item.caption, item.frame
        t0 = time.perf_counter()
        if self.speaker is not None:
            self.speaker.say(cap.text)  # first: it only hands the text over, and speech is what the user waits for
        if self.text is not None:
            print(f"{frame.source}\t{cap.text}", file=self.text, flush=True)
        if self.annotated is not None:
            self.annotated.captioned(frame.source, frame.image, cap)
        cap.timings["output"] = (time.perf_counter() - t0) * 1e3
        if self.jsonl is not None:
            rec = {"time": round(time.time(), 3), "source": frame.source, "frame": frame.index,
                   "caption": cap.text, "tokens": [int(t) for t in cap.tokens], "log_prob": round(cap.log_prob, 4),
                   "reason": item.reason, "scene_score": round(item.score, 2),
                   "latency_ms": {k: round(v, 3) for k, v in cap.timings.items()}}
            self._write_jsonl(json.dumps(rec, ensure_ascii=False))

    def _write_jsonl(self, line: str) -> None:
        """One record. A file that cannot take it (disk full) is reported in one line naming the file and
        dropped; the records before it are kept whole (LineFile cuts a partial line off again), and captioning
        and speech go on: a cane must not fall silent because its log filled the SD card."""
        try:
            if isinstance(self.jsonl, LineFile):
                self.jsonl.write_line(line)
                return
            try:
                self.jsonl.write(line + "\n")
                self.jsonl.flush()
            except OSError as e:
                name = getattr(self.jsonl, "name", "JSON lines output")
                raise OutputError(f"--jsonl {'-' if self.jsonl in (sys.stdout, sys.__stdout__) else name}: cannot "
                                  f"write ({e.strerror or type(e).__name__})") from None
        except OutputError as e:
            msg = f"{e}; captioning goes on without it"
            print(f"scenecap: error: {msg}", file=sys.stderr, flush=True)
            self.failed.append(msg)
            if isinstance(self.jsonl, LineFile):
                self.jsonl.close()
            self.jsonl = None

    def close(self) -> None:
        if self.annotated is not None:
            self.annotated.close()
        if self.jsonl is not None and not isinstance(self.jsonl, LineFile):
            try:
                self.jsonl.flush()
            except OSError:  # already reported by _write_jsonl, which stopped the run
                pass
        if self.speaker is not None:
            self.speaker.close()


@contextmanager
def stop_on_signals(stop: threading.Event):
    """SIGINT/SIGTERM set `stop` (the loop then finishes its caption and cleans up); a second one quits now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"scenecap: {signal.Signals(signum).name}: finishing the caption in progress, then stopping "
              "(send it again to quit at once)", file=sys.stderr, flush=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(captioner, source, outputs: Outputs, *, when: str | None = None, every: float | None = None,
        min_interval: float = 2.0, threshold: float = 27.0, camera_size: tuple[int, int] | None = None,
        max_frames: int | None = None, stderr: TextIO | None = None) -> RunStats:
    """The command-line loop: caption `source` into `outputs` until it ends or a signal stops it."""
    stats = RunStats()
    stop = threading.Event()
    src = source if isinstance(source, FrameSource) else None
    live = src.live if src is not None else _is_live(source)
    if src is None:
        stride, _ = plan(live, when, every, min_interval, threshold)
        src = open_source(source, every_s=stride, camera_size=camera_size)
    if outputs.annotated is not None and src.fps:
        outputs.annotated.fps = src.fps
    try:
        with stop_on_signals(stop):
            for item in caption_stream(captioner, src, when=when, every=every, min_interval=min_interval,
                                       threshold=threshold, stop=stop, max_frames=max_frames,
                                       on_skip=SkipReporter(stderr), on_frame=outputs.seen, stats=stats):
                outputs.emit(item)
                stats.captions += 1
                for k, v in item.caption.timings.items():
                    if k in STAGES:
                        stats.add_latency(k, float(v))
    finally:
        stats.interrupted = stop.is_set()
        outputs.close()
        _sync(stats, src)
        print(stats.summary(), file=stderr or sys.stderr, flush=True)
    return stats


def as_frames(images: Iterable[np.ndarray], name: str = "frames") -> FrameSource:
    """Wrap an app's own frames (numpy arrays) as a source for `caption_stream`."""
    from scenecap.edge.sources import ArraySource

    return ArraySource(images, name)
