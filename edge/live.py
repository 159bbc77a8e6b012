"""The caption loop: frames from a source -> scene-change gate -> captioner -> outputs.

`caption_stream` is the loop as a Python iterator (what `Captioner.captions(source)` returns); `run` is the
command-line loop around it: it writes the outputs, stops cleanly on SIGINT/SIGTERM (the caption in progress is
finished, outputs flushed, the camera released) and prints a summary. One bad frame is skipped with one line;
the loop never dies on it. Both take one `LoopOptions` (built from the command line, or from their keywords).
Where captions go is edge/sinks.py; when to caption, edge/gating.py.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import signal
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from scenecap.edge.errors import ScenecapError
from scenecap.edge.gating import MIN_INTERVAL, THRESHOLD, GateConfig, SceneGate, stride_and_gate
from scenecap.edge.sinks import Outputs as Outputs  # re-exported: the loop's callers build their outputs from here
from scenecap.edge.sinks import SkipReporter, say_line
from scenecap.edge.sources import Frame, FrameSource, is_live, open_source

log = logging.getLogger("scenecap.edge.live")

STAGES = ("preprocess", "encoder", "decoder", "confidence", "second_look", "total", "gate", "output", "frame_age")
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
    skipped: int = 0  # missing or unreadable files, malformed frames (none of them counted as frames read)
    empty: int = 0  # captions with no words (the model ended at once): nothing to say
    reconnects: int = 0
    dropped: int = 0  # live frames replaced by newer ones before the loop took them
    interrupted: bool = False
    live: bool = False  # the source was a camera or stream (a bad frame there is routine, not the user's to fix)
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
        if self.empty:
            extra.append(n(self.empty, "empty caption"))
        if self.skipped:
            extra.append(n(self.skipped, "missing, unreadable or bad input") + " skipped")
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


@dataclass(frozen=True)
class LoopOptions:
    """What to caption when: built once, from the command line (caption_cli) or the keywords of `run` and
    `caption_stream`, and read by both."""

    when: str | None = None  # change | every | all; None: change for a live source, every for files
    every: float | None = None  # see gating.stride_and_gate
    min_interval: float = MIN_INTERVAL
    threshold: float = THRESHOLD
    dedup: bool | None = None  # drop a caption identical to the last; None: on for live sources and --when change
    camera_size: tuple[int, int] | None = None
    max_frames: int | None = None


def _options(options: LoopOptions | None, settings: dict) -> LoopOptions:
    if options is None:
        return LoopOptions(**settings)
    if settings:
        raise TypeError(f"give options or {', '.join(settings)}, not both")
    return options


@dataclass(frozen=True)
class Planned:
    """A source opened for one run, with the gate its options give it: planned once, before the first frame."""

    source: FrameSource
    gate: GateConfig
    options: LoopOptions

    @property
    def dedup(self) -> bool:
        if self.options.dedup is not None:
            return self.options.dedup
        return self.gate.when == "change" or self.source.live


def plan_source(source: str | int | Iterable | FrameSource, options: LoopOptions) -> Planned:
    """Open `source` (unless it is a FrameSource already) with the video stride the options ask for."""
    o = options
    stride, gate = stride_and_gate(is_live(source), o.when, o.every, o.min_interval, o.threshold)
    if not isinstance(source, FrameSource):
        source = open_source(source, every_s=stride, camera_size=o.camera_size)
    return Planned(source, gate, options)


def caption_stream(captioner, source: str | int | Iterable | FrameSource, *, options: LoopOptions | None = None,
                   stop: threading.Event | None = None, on_skip: Callable[[str, str], None] | None = None,
                   on_frame: Callable[[Frame], None] | None = None, stats: RunStats | None = None,
                   **settings) -> Iterator[Captioned]:
    """Caption frames from `source` as they come; yields Captioned(frame, caption, reason, score).

    `source`: image file, folder, glob, video file, camera index or /dev/videoN, 'picam', rtsp/http URL, a
    FrameSource, or any iterable of numpy frames. `settings` are LoopOptions' fields (when, every, min_interval,
    threshold, dedup, camera_size, max_frames), or give `options`. Bad frames are reported to
    `on_skip(source, message)` (default: logged) and skipped. `dedup` (default: on for live sources and
    scene-change mode) drops a caption identical to the previous one. The source is opened at the first frame.
    """
    options = _options(options, settings)  # a wrong keyword is refused here, not at the first frame

    def frames() -> Iterator[Captioned]:
        report = on_skip or (lambda where, msg: log.warning("%s: %s", where, msg))
        yield from caption_planned(captioner, plan_source(source, options),
                                   stats if stats is not None else RunStats(), report, stop=stop, on_frame=on_frame)

    return frames()


def caption_planned(captioner, planned: Planned, stats: RunStats, report: Callable[[str, str], None],
                    stop: threading.Event | None = None,
                    on_frame: Callable[[Frame], None] | None = None) -> Iterator[Captioned]:
    """The loop over a planned source: every frame through the gate, the chosen ones captioned; the source is
    closed at the end."""
    src, max_frames = planned.source, planned.options.max_frames
    stats.live = src.live
    loop = _Loop(SceneGate(planned.gate), _caption_fn(captioner, stop), report, stats, planned.dedup, src.live)
    try:
        for frame in src.frames(stop):
            stats.frames_seen += 1
            _sync(stats, src)
            if frame.error or frame.image is None:
                loop.skip(frame, frame.error or "no pixels in this frame")
            else:
                item = loop.one(frame)
                if item is not None:
                    yield item
                if on_frame is not None:  # after the caller has the caption, so a video frame can show it
                    on_frame(frame)
            if (max_frames and stats.frames_seen >= max_frames) or (stop is not None and stop.is_set()):
                break
    finally:
        src.close()
        _sync(stats, src)


def _sync(stats: RunStats, src: FrameSource) -> None:
    stats.frames_read = src.stats.frames_read
    stats.reconnects = src.stats.reconnects
    stats.dropped = src.stats.dropped


def _takes_stop(captioner) -> bool:
    """True if `captioner.caption` can be interrupted (takes `stop=`); an app's own captioner may not."""
    try:
        return "stop" in inspect.signature(captioner.caption).parameters
    except (TypeError, ValueError):
        return False


def _caption_fn(captioner, stop: threading.Event | None) -> Callable[[np.ndarray], object]:
    """`captioner.caption`, bound to `stop` when it takes one: its signature is looked at once a run."""
    if stop is not None and _takes_stop(captioner):
        return functools.partial(captioner.caption, stop=stop)
    return captioner.caption


@dataclass
class _Loop:
    """What each frame of a run meets: the gate, the captioner, the repeat filter and the counts."""

    gate: SceneGate
    caption: Callable[[np.ndarray], object]
    report: Callable[[str, str], None]
    stats: RunStats
    dedup: bool
    live: bool

    def skip(self, frame: Frame, message: str) -> None:
        self.stats.skipped += 1
        self.report(frame.source, message)

    def one(self, frame: Frame) -> Captioned | None:
        """The frame's caption if the gate lets it through and it is new; None otherwise (or skipped)."""
        t0 = time.perf_counter()
        try:
            decision = self.gate.check(frame.image, frame.time_s)
        except ScenecapError as e:  # a frame of the wrong shape or type from a camera
            self.skip(frame, str(e))
            return None
        gate_ms = (time.perf_counter() - t0) * 1e3
        if not decision.caption:
            return None
        try:
            cap = self.caption(frame.image)
        except ScenecapError as e:
            self.skip(frame, str(e))
            return None
        except (ValueError, MemoryError) as e:  # numpy/OpenCV refusing a frame: still one line, never a crash
            self.skip(frame, f"cannot caption this frame ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            return None
        if getattr(cap, "stopped", False):
            return None  # cut short by a signal: a half-decoded caption is not something to say to anyone
        if not cap.text:
            self.stats.empty += 1
        cap.timings["gate"] = gate_ms
        if self.live and frame.time_s is not None:  # capture -> caption ready: how stale the description is
            cap.timings["frame_age"] = (time.monotonic() - frame.time_s) * 1e3
        if self.dedup and self.gate.is_repeat(cap.text):
            self.stats.repeats += 1
            return None
        return Captioned(frame, cap, decision.reason, decision.score)


STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)


@contextmanager
def stop_on_signals(stop: threading.Event, again: Callable[[], None] | None = None):
    """SIGINT, SIGTERM or SIGHUP (the ssh terminal closed) set `stop`: the loop ends and cleans up. A second one
    calls `again` (cut speech short) and the clean-up still runs; only a third quits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handler(signum, _frame):
        nonlocal count
        count += 1
        name = signal.Signals(signum).name
        if count == 1:
            stop.set()
            say_line(f"scenecap: {name}: stopping (send it again to cut speech short)")
        elif count == 2:
            if again is not None:
                again()
            say_line(f"scenecap: {name} again: speech cut short; closing the outputs (a third time quits at once)")
        else:
            raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(captioner, source, outputs: Outputs, *, options: LoopOptions | None = None, stderr: TextIO | None = None,
        **settings) -> RunStats:
    """The command-line loop: caption `source` into `outputs` until it ends or a signal stops it. `settings`:
    LoopOptions' fields, or give `options`.

    The signal handlers stay in place until the outputs are closed and the summary printed, so a signal while
    speech finishes is handled, not a traceback. A closed pipe on stdout ends the run without a summary (as `cat`
    does): BrokenPipeError goes to the caller once the outputs are closed."""
    stats = RunStats()
    stop = threading.Event()
    planned = plan_source(source, _options(options, settings))
    if outputs.annotated is not None and planned.source.fps:
        outputs.annotated.fps = planned.source.fps
    with stop_on_signals(stop, again=outputs.hurry):
        reader_gone = False
        try:
            items = caption_planned(captioner, planned, stats, SkipReporter(stderr), stop=stop, on_frame=outputs.seen)
            for item in items:
                outputs.emit(item)
                stats.captions += 1
                for k, v in item.caption.timings.items():
                    if k in STAGES:
                        stats.add_latency(k, float(v))
        except BrokenPipeError:
            reader_gone = True
            raise
        finally:
            stats.interrupted = stop.is_set()
            outputs.close()
            _sync(stats, planned.source)
            if not reader_gone:
                say_line(stats.summary(), stderr)
    return stats


def as_frames(images: Iterable[np.ndarray], name: str = "frames") -> FrameSource:
    """Wrap an app's own frames (numpy arrays) as a source for `caption_stream`."""
    from scenecap.edge.sources import ArraySource

    return ArraySource(images, name)
