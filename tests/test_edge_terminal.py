"""What reaches a person's terminal: any script kept, everything that could forge a line or steer the terminal
escaped, and a file name's undecodable bytes shown as the bytes they are."""

from __future__ import annotations

import json
import os

import pytest

from scenecap.edge.terminal import escape, is_safe, jsonable


@pytest.mark.parametrize("text, shown", [
    ("a red circle", "a red circle"),
    ("دائرة حمراء في الأعلى", "دائرة حمراء في الأعلى"),  # Arabic stays as it is
    ("C:\\frames\\a.jpg", "C:\\frames\\a.jpg"),  # a plain backslash is left alone
    ("two\nlines", "two\\nlines"),
    ("tab\tseparated", "tab\\tseparated"),
    ("\x1b[2J", "\\x1b[2J"),
    ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # OSC: retitles the terminal
    ("\x9b2J", "\\x9b2J"),  # the C1 form of the same
    ("photo\u202egpj.exe", "photo\\u202egpj.exe"),  # a bidi override shows exe as jpg
    ("x\u2066y\u2069", "x\\u2066y\\u2069"),
    ("line\u2028sep", "line\\u2028sep"),
    (os.fsdecode(b"caf\xe9.jpg"), "caf\\xe9.jpg"),  # not UTF-8: the byte, not a crash
    ("a\\nb\n", "a\\\\nb\\n"),  # a literal backslash-n stays distinguishable from an escaped newline
])
def test_escape(text, shown):
    assert escape(text) == shown
    assert is_safe(escape(text))
    assert is_safe(text) == (text == shown)


def test_jsonable_keeps_undecodable_bytes_visible_and_json_writable():
    name = os.fsdecode(b"/frames/caf\xe9\n.jpg")
    line = json.dumps({"source": jsonable(name)}, ensure_ascii=False)
    line.encode("utf-8")  # would raise on a lone surrogate
    assert json.loads(line)["source"] == "/frames/caf\\xe9\n.jpg"
