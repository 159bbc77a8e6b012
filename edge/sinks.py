"""Where captions go: stdout text, JSON lines, annotated frames or video, speech; and the one-line reports on
stderr for the person watching (a bad frame, an output that stopped).

Every sink is written so that a failure of one never silences the others: see `Outputs`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, TextIO

import cv2

from scenecap.edge.errors import ScenecapError, first_line
from scenecap.edge.fileio import LineFile, OutputError
from scenecap.edge.terminal import escape, json_line, jsonable

if TYPE_CHECKING:
    from scenecap.edge.frames import Frame
    from scenecap.edge.live import Captioned

# The loop's logger name, as these lines were logged before the sinks had a module of their own.
log = logging.getLogger("scenecap.edge.live")

UNSURE_MODES = ("say", "silent", "caption")  # what speech does with an unsure caption
UNSURE_MARK = "(unsure) "  # before an unsure caption on stdout: still one record a line, two columns


def record(item: Captioned) -> dict:
    """The JSON-lines record of one caption. File names may carry undecodable bytes: kept as the text \\xNN."""
    cap, frame = item.caption, item.frame
    return {"time": round(time.time(), 3), "source": jsonable(frame.source), "frame": frame.index,
            "caption": jsonable(cap.text), "tokens": [int(t) for t in cap.tokens], "log_prob": round(cap.log_prob, 4),
            "confidence": round(float(getattr(cap, "confidence", 0.0)), 4),
            "unsure": bool(getattr(cap, "unsure", False)),
            **_second_look(cap),
            "reason": item.reason, "scene_score": round(item.score, 2),
            "latency_ms": {k: round(v, 3) for k, v in cap.timings.items()}}


def _second_look(cap) -> dict:
    """The second look's figure, in records of captions that took one (--second-look)."""
    look = getattr(cap, "second_look", None)
    return {} if look is None else {"second_look": round(float(look), 4)}


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
