"""The caption loop: frames from a source -> scene-change gate -> captioner -> outputs.

`caption_stream` is the loop as a Python iterator (what `Captioner.captions(source)` returns); `run` is the
command-line loop around it: it writes the outputs, stops cleanly on SIGINT/SIGTERM (the caption in progress is
finished, outputs flushed, the camera released) and prints a summary. One bad frame is skipped with one line;
the loop never dies on it.
"""

from __future__ import annotations

import inspect
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

from scenecap.edge.errors import ScenecapError, first_line
from scenecap.edge.fileio import LineFile, OutputError
from scenecap.edge.gating import GateConfig, SceneGate
from scenecap.edge.sources import Frame, FrameSource, open_source
from scenecap.edge.terminal import escape, json_line, jsonable

log = logging.getLogger("scenecap.edge.live")

STAGES = ("preprocess", "encoder", "decoder", "confidence", "total", "gate", "output", "frame_age")
UNSURE_MODES = ("say", "silent", "caption")  # what speech does with an unsure caption
UNSURE_MARK = "(unsure) "  # before an unsure caption on stdout: still one record a line, two columns
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
            # Escaped: a file named with ESC[2J or a newline must not clear the terminal or forge a line.
            say_line(f"scenecap: {escape(text)}{suffix}", self.stream)


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
                item = _one(captioner, gate, frame, report, stats, dedup, src.live, stop)
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


def _takes_stop(captioner) -> bool:
    """True if `captioner.caption` can be interrupted (takes `stop=`); an app's own captioner may not."""
    try:
        return "stop" in inspect.signature(captioner.caption).parameters
    except (TypeError, ValueError):
        return False


def _caption(captioner, image: np.ndarray, stop: threading.Event | None):
    if stop is not None and _takes_stop(captioner):
        return captioner.caption(image, stop=stop)
    return captioner.caption(image)


def _one(captioner, gate: SceneGate, frame: Frame, report, stats: RunStats, dedup: bool,
         live: bool, stop: threading.Event | None = None) -> Captioned | None:
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
        cap = _caption(captioner, frame.image, stop)
    except ScenecapError as e:
        stats.skipped += 1
        report(frame.source, str(e))
        return None
    except (ValueError, MemoryError) as e:  # numpy/OpenCV refusing a frame: still one line, never a crash
        stats.skipped += 1
        report(frame.source, f"cannot caption this frame ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        return None
    if getattr(cap, "stopped", False):
        return None  # cut short by a signal: a half-decoded caption is not something to say to anyone
    if not cap.text:
        stats.empty += 1
    cap.timings["gate"] = gate_ms
    if live and frame.time_s is not None:  # capture -> caption ready: how stale the description is
        cap.timings["frame_age"] = (time.monotonic() - frame.time_s) * 1e3
    if dedup and gate.is_repeat(cap.text):
        stats.repeats += 1
        return None
    return Captioned(frame, cap, decision.reason, decision.score)


# -- outputs ----------------------------------------------------------------------------------------------------
def record(item: Captioned) -> dict:
    """The JSON-lines record of one caption. File names may carry undecodable bytes: kept as the text \\xNN."""
    cap, frame = item.caption, item.frame
    return {"time": round(time.time(), 3), "source": jsonable(frame.source), "frame": frame.index,
            "caption": jsonable(cap.text), "tokens": [int(t) for t in cap.tokens], "log_prob": round(cap.log_prob, 4),
            "confidence": round(float(getattr(cap, "confidence", 0.0)), 4),
            "unsure": bool(getattr(cap, "unsure", False)),
            "reason": item.reason, "scene_score": round(item.score, 2),
            "latency_ms": {k: round(v, 3) for k, v in cap.timings.items()}}


def _why(e: BaseException) -> str:
    if isinstance(e, OSError):
        return (e.strerror or type(e).__name__).lower()
    return f"{type(e).__name__}: {first_line(e, limit=200)}" if str(e).strip() else type(e).__name__


def _is_stdout(stream) -> bool:
    return stream is not None and stream in (sys.stdout, sys.__stdout__)


def say_line(text: str, stream: TextIO | None = None) -> None:
    """A line for the person watching (stderr), which may itself be gone (a closed ssh terminal after SIGHUP):
    then there is no one to tell, and the run still closes its outputs."""
    stream = stream or sys.stderr
    if stream is None:  # started with stderr closed: print(file=None) would write to stdout, into the captions
        return
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        raise
    except (OSError, ValueError, AttributeError, RuntimeError):  # EIO after a hang-up; None; re-entered
        pass


class Outputs:
    """Where captions go: stdout text, JSON lines, annotated frames/video, speech.

    An output that fails (a full disk, a read-only folder, stdout on /dev/full) is reported in one line and
    dropped; the others go on and the exit status is 2 at the end: a cane must not fall silent because one
    output failed. A closed pipe on stdout (`| head -1`) is different: the reader has gone, so BrokenPipeError
    goes up and `run` ends quietly.
    """

    def __init__(self, text: TextIO | None = None, jsonl: TextIO | None = None, annotated=None, speaker=None,
                 unsure: str = "say", unsure_phrase: str = "not sure what is ahead"):
        self.text = text
        self.jsonl = jsonl
        self.annotated = annotated
        self.speaker = speaker
        if unsure not in UNSURE_MODES:
            raise ScenecapError(f"unsure {unsure!r}; expected one of {', '.join(UNSURE_MODES)}")
        self.unsure, self.unsure_phrase = unsure, unsure_phrase
        self.failed: list[str] = []  # outputs that stopped (a full disk), one line each, for the exit status

    def fail(self, message: str, at_end: bool = False) -> None:
        """One output stopped: say so once (escaped: it names a file), remember it for the exit status."""
        msg = message if at_end else f"{message}; captioning goes on without it"
        say_line(f"scenecap: error: {escape(msg)}")
        self.failed.append(msg)

    def seen(self, frame: Frame) -> None:
        if self.annotated is not None and frame.image is not None:
            try:
                self.annotated.seen(frame.image)
            except (ValueError, cv2.error) as e:  # a frame the writer cannot take: the others still can
                log.warning("annotated video: frame %s not written (%s)", escape(frame.source), escape(e))
            except (OutputError, OSError) as e:
                self._drop_annotated(e)

    def emit(self, item: Captioned) -> None:
        cap, frame = item.caption, item.frame
        t0 = time.perf_counter()
        unsure = bool(getattr(cap, "unsure", False))
        spoken = self.spoken(cap.text, unsure)
        if self.speaker is not None and spoken:
            self.speaker.say(spoken)  # first: it only hands the text over, and speech is what the user waits for
        if self.text is not None:
            # Both fields escaped: a name or a vocabulary token with a tab or newline must not forge a record.
            self._write_text(f"{escape(frame.source)}\t{UNSURE_MARK if unsure else ''}{escape(cap.text)}")
        if self.annotated is not None:
            try:
                self.annotated.captioned(frame.source, frame.image, cap)
            except (OutputError, OSError) as e:
                self._drop_annotated(e)
        cap.timings["output"] = (time.perf_counter() - t0) * 1e3
        if self.jsonl is not None:
            self._write_jsonl(json_line(record(item)))

    def spoken(self, text: str, unsure: bool) -> str | None:
        """What speech says for a caption: the caption, or if unsure the phrase, nothing, or the caption anyway."""
        if not unsure or self.unsure == "caption":
            return text
        return self.unsure_phrase if self.unsure == "say" else None

    def _write_text(self, line: str) -> None:
        try:
            print(line, file=self.text, flush=True)
        except BrokenPipeError:
            raise
        except (OSError, ValueError, UnicodeEncodeError) as e:  # /dev/full, a closed file, a non-UTF-8 console
            self.text = None
            self.fail(f"stdout: cannot write ({_why(e)})")

    def _drop_annotated(self, e: BaseException, at_end: bool = False) -> None:
        target = getattr(self.annotated, "target", "")
        msg = str(e) if isinstance(e, OutputError) else f"--save-annotated {target}: cannot write ({_why(e)})"
        self.annotated.abandon()
        self.annotated = None
        self.fail(msg, at_end)

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
            except BrokenPipeError:
                raise
            except (OSError, ValueError, UnicodeEncodeError) as e:
                name = "-" if _is_stdout(self.jsonl) else getattr(self.jsonl, "name", "JSON lines output")
                raise OutputError(f"--jsonl {name}: cannot write ({_why(e)})") from None
        except OutputError as e:
            if isinstance(self.jsonl, LineFile):
                self.jsonl.close()
            self.jsonl = None
            self.fail(str(e))

    def hurry(self) -> None:
        """A second signal while stopping: cut speech short (the espeak-ng child is killed), close the rest."""
        if self.speaker is not None:
            self.speaker.cut_short()

    def close(self) -> None:
        if self.annotated is not None:
            try:
                self.annotated.close()
            except (OutputError, OSError) as e:  # the video could not be completed: the previous one is kept
                self._drop_annotated(e, at_end=True)
        if self.jsonl is not None and not isinstance(self.jsonl, LineFile):
            try:
                self.jsonl.flush()
            except (OSError, ValueError):  # a reader gone at the very end: nothing left to tell it
                pass
        if self.speaker is not None:
            self.speaker.close()


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


def run(captioner, source, outputs: Outputs, *, when: str | None = None, every: float | None = None,
        min_interval: float = 2.0, threshold: float = 27.0, camera_size: tuple[int, int] | None = None,
        max_frames: int | None = None, stderr: TextIO | None = None) -> RunStats:
    """The command-line loop: caption `source` into `outputs` until it ends or a signal stops it.

    The signal handlers stay in place until the outputs are closed and the summary printed, so a signal while
    speech finishes is handled, not a traceback. A closed pipe on stdout ends the run without a summary (as `cat`
    does): BrokenPipeError goes to the caller once the outputs are closed."""
    stats = RunStats()
    stop = threading.Event()
    src = source if isinstance(source, FrameSource) else None
    live = src.live if src is not None else _is_live(source)
    if src is None:
        stride, _ = plan(live, when, every, min_interval, threshold)
        src = open_source(source, every_s=stride, camera_size=camera_size)
    if outputs.annotated is not None and src.fps:
        outputs.annotated.fps = src.fps
    with stop_on_signals(stop, again=outputs.hurry):
        reader_gone = False
        try:
            for item in caption_stream(captioner, src, when=when, every=every, min_interval=min_interval,
                                       threshold=threshold, stop=stop, max_frames=max_frames,
                                       on_skip=SkipReporter(stderr), on_frame=outputs.seen, stats=stats):
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
            _sync(stats, src)
            if not reader_gone:
                say_line(stats.summary(), stderr)
    return stats


def as_frames(images: Iterable[np.ndarray], name: str = "frames") -> FrameSource:
    """Wrap an app's own frames (numpy arrays) as a source for `caption_stream`."""
    from scenecap.edge.sources import ArraySource

    return ArraySource(images, name)
