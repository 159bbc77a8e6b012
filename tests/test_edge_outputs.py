"""Outputs: JSON lines, annotated frames and video (Arabic drawn right), attention grids, and speech."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_helpers import scene, wait_for, write_cut_video
from PIL import Image

from scenecap.edge.annotate import (
    attention_grid,
    draw_caption,
    is_rtl,
    load_font,
    visual_text,
)
from scenecap.edge.errors import ScenecapError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt install espeak-ng); speech cannot be tested")


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "scenecap", "caption", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    for k in range(4):
        Image.fromarray(scene(60 + k)).save(d / f"view{k}.jpg", quality=92)
    return d


# -- Arabic on frames --------------------------------------------------------------------------------------------
def test_arabic_is_shaped_and_ordered_right_to_left():
    # qaf-tah-teh marbuta: joined forms (initial, medial, final), drawn in reverse (the eye reads right to left)
    assert visual_text("قطة") == "\ufe94\ufec4\ufed7"
    assert visual_text("قطة حمراء").endswith("\ufe94\ufec4\ufed7")  # first word ends up rightmost
    assert visual_text("a red square") == "a red square"
    assert is_rtl("مربع أحمر") and not is_rtl("a red square")


def test_the_shipped_font_has_every_arabic_glyph_a_caption_needs():
    from scenecap.train.synthetic import LEXICON

    font = load_font(24)
    notdef = bytes(font.getmask("\ue000"))  # a private-use code point: the font's empty box
    words = set()
    for table in LEXICON["ar"].values():
        for v in (table.values() if isinstance(table, dict) else [table]):
            words |= set(" ".join(v if isinstance(v, (list, tuple)) else [v]).split())
    missing = {ch for w in words for ch in visual_text(w) if bytes(font.getmask(ch)) == notdef}
    assert not missing, sorted(missing)


def _ink_columns(img: np.ndarray, original: np.ndarray) -> np.ndarray:
    band = np.abs(img.astype(int) - original.astype(int)).sum(axis=2)[-40:]
    white = (img[-40:] > 200).all(axis=2) & (band > 200)
    return np.where(white.any(axis=0))[0]


def test_arabic_caption_is_drawn_from_the_right_and_english_from_the_left():
    frame = np.full((240, 320, 3), 90, np.uint8)
    ar = draw_caption(frame, "مربع أحمر")
    en = draw_caption(frame, "a red square")
    ar_cols, en_cols = _ink_columns(ar, frame), _ink_columns(en, frame)
    assert ar_cols.max() > 300 and ar_cols.min() > 120  # right-aligned
    assert en_cols.min() < 20 and en_cols.max() < 200  # left-aligned
    # Shaped text differs from drawing the isolated letters one by one.
    naive = draw_caption(frame, "x")  # same band
    assert not np.array_equal(ar, naive)


def test_long_caption_wraps_inside_the_frame():
    frame = np.full((240, 320, 3), 90, np.uint8)
    out = draw_caption(frame, " ".join(["a large red square at the top left"] * 3))
    assert out.shape == frame.shape
    rows = np.where((out > 200).all(axis=2).any(axis=1))[0]
    assert rows.min() < 200  # more than one line of text


def test_attention_grid_has_a_tile_per_word(float_bundle):
    from scenecap.edge.captioner import Captioner

    img = scene(70)
    cap = Captioner.load(float_bundle, attention=True).caption(img)
    grid = attention_grid(img, cap.words, cap.attention, tile=96, columns=4)
    n = len(cap.words) + 1
    rows = -(-n // 4)
    label = max(18, 96 // 7)
    assert grid.shape == (rows * (96 + label), min(4, n) * 96, 3)
    tiles = [grid[r * (96 + label):r * (96 + label) + 96, c * 96:(c + 1) * 96] for r in range(rows) for c in range(4)]
    # Heat-maps follow the attention: words that look at different places get different tiles.
    distinct = {tiles[i].tobytes() for i in range(1, n) if cap.attention[i - 1].std() > 1e-3}
    assert len(distinct) >= 2


# -- CLI outputs -------------------------------------------------------------------------------------------------
def test_jsonl_records_say_what_when_and_how_fast_and_append(float_bundle, frames_dir, tmp_path):
    out = tmp_path / "caps.jsonl"
    for _ in range(2):
        r = _run(frames_dir, "--bundle", float_bundle, "--jsonl", out)
        assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(recs) == 8  # a second run appends, never truncates
    for rec in recs:
        assert {"time", "frame", "source", "caption", "tokens", "log_prob", "latency_ms", "reason"} <= set(rec)
        assert rec["caption"] and all(isinstance(t, int) for t in rec["tokens"]) and rec["log_prob"] <= 0
        assert {"preprocess", "encoder", "decoder", "total", "gate", "output"} <= set(rec["latency_ms"])
    assert "summary: 4 frames read, 4 looked at, 4 captions" in r.stderr
    assert "median ms per stage: preprocess" in r.stderr


def test_save_annotated_folder_with_attention_grids(float_bundle, frames_dir, tmp_path):
    out = tmp_path / "seen"
    r = _run(frames_dir, "--bundle", float_bundle, "--save-annotated", out, "--attention")
    assert r.returncode == 0, r.stderr
    frames = sorted(p for p in out.glob("*.jpg") if not p.name.endswith("_attention.jpg"))
    grids = sorted(out.glob("*_attention.jpg"))
    assert len(frames) == 4 and len(grids) == 4
    assert [p.name for p in frames] == [f"00000{k}_view{k}.jpg" for k in range(4)]  # not view0.jpg.jpg
    assert grids[0].name == "000000_view0_attention.jpg"
    img = np.asarray(Image.open(frames[0]))
    assert img.shape == (160, 160, 3)
    assert img[-10:].mean() < np.asarray(Image.open(frames_dir / "view0.jpg"))[-10:].mean()  # the caption band
    assert not list(out.glob(".*tmp"))


def test_attention_without_somewhere_to_write_is_refused(float_bundle, frames_dir):
    r = _run(frames_dir, "--bundle", float_bundle, "--attention")
    assert r.returncode == 2 and "--attention needs --save-annotated" in r.stderr.splitlines()[-1]


def test_save_annotated_video_has_every_frame_with_its_caption(float_bundle, tmp_path):
    src = tmp_path / "walk.avi"
    write_cut_video(src, [11, 12], 15, fps=10)
    out = tmp_path / "annotated.mp4"
    r = _run("--source", src, "--bundle", float_bundle, "--save-annotated", out, "--min-interval", "0.5")
    assert r.returncode == 0, r.stderr
    assert out.is_file() and not list(tmp_path.glob(".annotated.partial*"))
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    assert n == 30 and ok and first.shape == (160, 160, 3)
    assert first[-12:].mean() < scene(11)[-12:].mean() - 10  # caption band drawn from the first frame on


# -- speech ------------------------------------------------------------------------------------------------------
def _sound(path: Path) -> tuple[float, float]:
    """(seconds, RMS of 16-bit samples) of a WAV file."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64)
        return w.getnframes() / w.getframerate(), float(np.sqrt((data ** 2).mean())) if data.size else 0.0


@needs_espeak
@pytest.mark.parametrize("language, text", [("en", "a red square on the left"), ("ar", "مربع أحمر على اليسار")])
def test_speech_in_the_bundle_language_is_written_to_a_wav_that_holds_sound(tmp_path, language, text):
    from scenecap.edge.speech import synthesize, voice_for

    voice = voice_for(language)
    assert voice == {"en": "en-us", "ar": "ar"}[language]
    seconds, rms = _sound(synthesize(text, tmp_path / "say.wav", voice))
    assert seconds > 0.5 and rms > 300  # a spoken sentence, not silence


@needs_espeak
def test_unknown_language_is_a_one_line_error():
    from scenecap.edge.speech import voice_for

    with pytest.raises(ScenecapError, match="no voice for language 'tlh'"):
        voice_for("tlh")
    from scenecap.edge.speech import check_voice

    assert check_voice("en-gb") == "en-gb"
    with pytest.raises(ScenecapError, match="--voice 'klingon'"):
        check_voice("klingon")


@needs_espeak
def test_newer_caption_replaces_one_not_yet_spoken(tmp_path):
    from scenecap.edge.speech import Speaker

    # The real espeak-ng, held at a gate until the test opens it: "while one sentence is being spoken" is then
    # a fact of the test, not a race against how fast this machine synthesises (CI's did it between two polls).
    gate = tmp_path / "gate"
    espeak = tmp_path / "espeak-gated"
    real = shutil.which("espeak-ng")
    espeak.write_text(f'#!/bin/sh\nwhile [ ! -e "{gate}" ]; do sleep 0.02; done\nexec "{real}" "$@"\n')
    espeak.chmod(0o755)
    sp = Speaker("en-us", wav_dir=tmp_path / "wav", espeak=str(espeak))
    sp.say("there is a large red square at the top left and a small blue circle at the bottom right")
    assert wait_for(lambda: sp.speaking, timeout=30)
    for text in ["two", "three", "four", "a green star in the middle"]:
        sp.say(text)  # returns at once: the capture loop never waits for speech
    assert sp.speaking and sp.spoken == 0  # all four arrived while the first sentence was still being spoken
    gate.touch()
    sp.close(timeout=60)
    assert (sp.spoken, sp.replaced, sp.failed) == (2, 3, 0)
    assert sp.last_spoken == "a green star in the middle"
    assert [p.name for p in sp.files] == ["000000.wav", "000001.wav"]
    assert all(_sound(p)[1] > 300 for p in sp.files)


@needs_espeak
def test_caption_command_speaks_to_wav_files(float_bundle, frames_dir, tmp_path):
    out = tmp_path / "speech"
    r = _run(frames_dir, "--bundle", float_bundle, "--speak-to", out)
    assert r.returncode == 0, r.stderr
    assert "speech: espeak-ng voice en-us" in r.stderr
    wavs = sorted(out.glob("*.wav"))
    assert wavs and all(_sound(p)[1] > 300 for p in wavs)
    assert "0 failed" in r.stderr


def test_speak_without_espeak_ng_says_how_to_install_it(float_bundle, frames_dir, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no espeak-ng on this PATH
    r = _run(frames_dir, "--bundle", float_bundle, "--speak", env=env)
    assert r.returncode == 2
    last = r.stderr.splitlines()[-1]
    assert last == "scenecap: error: espeak-ng not found; --speak needs it: sudo apt install espeak-ng"


# -- what reaches a person: escaped, speakable, counted right --------------------------------------------------------
def _demo_caption(text: str):
    """A real caption of a demo frame from the shipped bundle, with its text as a hostile vocabulary would make it."""
    from dataclasses import replace

    from scenecap.edge.captioner import Captioner
    from scenecap.edge.live import Captioned
    from scenecap.edge.sources import Frame

    demo = Path(__file__).resolve().parents[1] / "demo"
    img = np.asarray(Image.open(demo / "frames" / "scene_1.jpg").convert("RGB"))
    cap = replace(Captioner.load(demo / "bundle").caption(img), text=text)
    return Captioned(Frame("scene\n_1.jpg", 0, img), cap, "first", 0.0)


def test_a_caption_with_control_characters_cannot_forge_records(tmp_path):
    import io

    from scenecap.edge.live import Outputs

    text, jsonl = io.StringIO(), io.StringIO()
    item = _demo_caption("a red\nforged.jpg\tsquare \x1b[2J\u202e")
    Outputs(text=text, jsonl=jsonl).emit(item)
    assert text.getvalue() == "scene\\n_1.jpg\ta red\\nforged.jpg\\tsquare \\x1b[2J\\u202e\n"
    line = jsonl.getvalue()
    assert line.count("\n") == 1 and "\u202e" not in line and "\x1b" not in line
    assert json.loads(line)["caption"] == "a red\nforged.jpg\tsquare \x1b[2J\u202e"  # the JSON keeps it exactly


def test_speech_gets_words_only():
    from scenecap.edge.speech import speakable

    assert speakable("a red\nsquare\x1b[2J \u202eon the left\udce9") == "a red square [2J on the left"
    assert speakable("مربع\u200cأحمر") == "مربع\u200cأحمر"  # a zero-width non-joiner is part of the word


def test_summary_counts_read_as_read_and_pluralises():
    from scenecap.edge.live import RunStats

    s = RunStats(frames_read=1, frames_seen=2, captions=1, skipped=1, empty=1).summary()
    assert s == ("summary: 1 frame read, 2 looked at, 1 caption (1 empty caption, 1 missing, unreadable or bad input "
                 "skipped)")
    assert "2 empty captions, 3 missing, unreadable or bad inputs skipped" in RunStats(empty=2, skipped=3).summary()
