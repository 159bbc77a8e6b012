"""Speaking captions with espeak-ng (Arabic and English), off the capture loop.

A worker thread runs espeak-ng; `say()` only hands over the text and returns at once. While one sentence is
being spoken, a newer caption replaces any caption still waiting, so the user always hears the latest scene
next and never a backlog. A sentence already being spoken is finished, not cut off mid-word.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
from collections import deque
from pathlib import Path

from scenecap.edge.errors import ScenecapError

log = logging.getLogger("scenecap.edge.speech")

# Bundle language -> espeak-ng voice. Anything else is passed through if espeak-ng knows it.
VOICES = {"en": "en-us", "ar": "ar"}
# Said instead of a caption marked unsure (`--unsure say`): short, and plainly not a description.
UNSURE_PHRASES = {"en": "not sure what is ahead", "ar": "لست متأكدا مما أمامك"}
RATE_WPM = 165  # espeak-ng's default is 175; a little slower is easier to follow while walking
ESPEAK_TIMEOUT_S = 30.0
# Control characters, line separators, bidi overrides and lone surrogates (undecodable bytes): nothing to say, and
# a surrogate cannot even be written to espeak-ng's stdin. Each becomes a space.
_UNSPEAKABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def speakable(text: str) -> str:
    """`text` as plain words for espeak-ng: control and formatting characters gone, spaces collapsed."""
    return " ".join(_UNSPEAKABLE.sub(" ", text).split())


def unsure_phrase(language: str) -> str:
    """What to say for an unsure caption, in the bundle's language (English where there is no phrase for it)."""
    lang = (language or "en").strip().lower()
    return UNSURE_PHRASES.get(lang, UNSURE_PHRASES.get(lang.split("-")[0], UNSURE_PHRASES["en"]))


def find_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise ScenecapError("espeak-ng not found; --speak needs it: sudo apt install espeak-ng")
    return path


def list_voices(espeak: str | None = None) -> set[str]:
    """Voice names espeak-ng knows (the 'Language' column of --voices, e.g. en-us, ar)."""
    r = subprocess.run([espeak or find_espeak(), "--voices"], capture_output=True, text=True, timeout=30)
    names = set()
    for line in r.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            names.add(parts[1])
    return names


def voice_for(language: str, espeak: str | None = None) -> str:
    """The espeak-ng voice for a bundle language ('en' -> en-us, 'ar' -> ar), checked against espeak-ng."""
    lang = (language or "en").strip()
    voice = VOICES.get(lang.lower(), VOICES.get(lang.split("-")[0].lower(), lang))
    known = list_voices(espeak)
    if known and voice not in known:
        raise ScenecapError(f"espeak-ng has no voice for language {lang!r} (tried {voice!r}); "
                            "choose one from 'espeak-ng --voices' with --voice")
    return voice


def check_voice(voice: str, espeak: str | None = None) -> str:
    """A voice the user named (--voice), checked against espeak-ng's list."""
    known = list_voices(espeak)
    if known and voice not in known:
        raise ScenecapError(f"--voice {voice!r}: espeak-ng has no such voice; see 'espeak-ng --voices'")
    return voice


def espeak_command(espeak: str, voice: str, rate: int, wav: Path | None = None) -> list[str]:
    # Text goes in on stdin: a caption can never be read as an option, and no shell is involved.
    cmd = [espeak, "-v", voice, "-s", str(int(rate)), "--stdin"]
    if wav is not None:
        cmd[1:1] = ["-w", str(wav)]
    return cmd


def synthesize(text: str, wav: str | Path, voice: str = "en-us", rate: int = RATE_WPM,
               espeak: str | None = None) -> Path:
    """Speak `text` into a WAV file (blocking). Raises ScenecapError if espeak-ng fails."""
    wav = Path(wav)
    cmd = espeak_command(espeak or find_espeak(), voice, rate, wav)
    r = subprocess.run(cmd, input=text + "\n", capture_output=True, text=True, timeout=ESPEAK_TIMEOUT_S)
    if r.returncode != 0 or not wav.is_file():
        first = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ScenecapError(f"espeak-ng could not speak to {wav} ({first})")
    return wav


class Speaker:
    """Speaks captions in the background; `say()` never blocks. With `wav_dir`, each utterance is written to
    NNNNNN.wav there instead of played (for recordings, and for machines without a sound card)."""

    def __init__(self, voice: str, rate: int = RATE_WPM, wav_dir: str | Path | None = None,
                 espeak: str | None = None):
        self.espeak = espeak or find_espeak()
        self.voice = voice
        self.rate = rate
        self.wav_dir = Path(wav_dir) if wav_dir else None
        if self.wav_dir is not None:
            try:
                self.wav_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ScenecapError(f"--speak-to {self.wav_dir}: cannot create the folder ({e.strerror})") from None
        self.spoken = 0
        self.replaced = 0  # captions that a newer one replaced before they were spoken
        self.failed = 0
        self.cut = 0  # sentences cut short by a second signal while stopping
        self.last_spoken: str | None = None
        self.files: deque[Path] = deque(maxlen=1000)  # the latest WAVs written (bounded: a cane runs for days)
        self._pending: str | None = None
        self._busy = False
        self._closing = False
        self._hurry = False
        self._proc: subprocess.Popen | None = None
        self._cond = threading.Condition()
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="speech", daemon=True)
        self._thread.start()

    def say(self, text: str) -> None:
        text = speakable(text)
        if not text or self._hurry:
            return
        with self._cond:
            if self._pending is not None:
                self.replaced += 1
            self._pending = text
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    return
                text, self._pending, self._busy = self._pending, None, True
            try:
                self._speak(text)
            except Exception as e:  # noqa: BLE001 - one odd sentence must not end speech for the rest of the run
                self.failed += 1
                log.warning("speech: could not speak a caption (%s: %s)", type(e).__name__, e)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _speak(self, text: str) -> None:
        wav = self.wav_dir / f"{self.spoken + self.failed:06d}.wav" if self.wav_dir else None
        cmd = espeak_command(self.espeak, self.voice, self.rate, wav)
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True)
            if self._hurry:  # cut_short() came before there was a child to kill
                self._proc.kill()
            _, err = self._proc.communicate(text + "\n", timeout=ESPEAK_TIMEOUT_S)
            rc = self._proc.returncode
        except (OSError, subprocess.TimeoutExpired) as e:
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
            rc, err = -1, str(e)
        finally:
            self._proc = None
        if self._hurry:  # killed on purpose by cut_short(): not a fault of espeak-ng
            self.cut += 1
            if wav is not None:
                wav.unlink(missing_ok=True)  # half a sentence is not a recording of it
            return
        # espeak-ng exits 0 even when it found no sound card; its complaint on stderr is the only sign.
        trouble = [ln for ln in (err or "").splitlines() if ln.startswith("error") or "cannot" in ln.lower()]
        if rc != 0 or (wav is not None and not wav.is_file()) or (wav is None and trouble):
            self.failed += 1
            if not self._warned:  # once: a missing sound card would otherwise log every caption
                reason = (trouble or (err or "").strip().splitlines() or [f"exit status {rc}"])[-1]
                log.warning("speech: espeak-ng could not speak (%s); captions still go to the other outputs", reason)
                self._warned = True
            return
        self.spoken += 1
        self.last_spoken = text
        if wav is not None:
            self.files.append(wav)

    @property
    def speaking(self) -> bool:
        return self._busy

    def idle(self) -> bool:
        with self._cond:
            return self._pending is None and not self._busy

    def cut_short(self) -> None:
        """Stop speaking now: drop what is waiting and kill the espeak-ng child. Safe from a signal handler
        (takes no lock: the main thread may hold it when the signal comes)."""
        self._hurry = True
        self._pending = None
        proc = self._proc
        if proc is not None:
            try:
                proc.kill()
            except OSError:  # it had just ended
                pass

    def close(self, timeout: float = 15.0) -> None:
        """Let the current and pending sentence finish (up to `timeout` s), then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            proc = self._proc
            if proc is not None:
                proc.kill()
            self._thread.join(2.0)
        log.info("speech: %d spoken, %d replaced by a newer caption before being spoken, %d failed%s",
                 self.spoken, self.replaced, self.failed, f", {self.cut} cut short" if self.cut else "")
