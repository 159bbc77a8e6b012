"""Text bound for a person's terminal: control characters, bidi overrides and undecodable bytes are escaped.

A file name, a URL, a manifest string or a vocabulary token can carry a newline (forging a tab-separated
record), an ANSI/OSC escape (clearing or retitling the terminal), a bidi override (showing `gpj.exe` as
`exe.jpg`) or bytes that are not UTF-8 (a name made elsewhere). Every human-facing stream — stdout's
tab-separated records, log lines, error messages, `scenecap inspect` — passes through `escape`. JSON lines go
through `json_line` (json.dumps escapes C0; it writes the rest as \\uXXXX), and `jsonable` keeps undecodable
bytes as `\\xNN` text.
"""

from __future__ import annotations

import json
import os
import re

# What a terminal acts on beyond the C0 controls (which json.dumps escapes itself): DEL and C1 controls, the line
# and paragraph separators that some terminals and editors break on, the bidi embeddings/overrides/isolates
# (U+202A-202E, U+2066-2069). escape() adds C0 and lone surrogates, which is how Python carries a file name's
# non-UTF-8 bytes (os.fsdecode's surrogateescape).
_TERMINAL_ACTS_ON = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_TERMINAL_ACTS_ON}\ud800-\udfff]")
_JSON_UNSAFE = re.compile(f"[{_TERMINAL_ACTS_ON}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, shown as the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: object) -> str:
    """`text` as one safe line: printable characters (any script) kept, the rest written as \\n, \\x1b, \\u202e."""
    s = text if isinstance(text, str) else os.fsdecode(text) if isinstance(text, bytes) else str(text)
    if not _UNSAFE.search(s):
        return s
    # A backslash is doubled only when something else is escaped (so `\\n` in a name is not read as a newline),
    # and plain Windows-style names stay readable.
    return _UNSAFE.sub(_escape_char, s.replace("\\", "\\\\"))


def is_safe(text: str) -> bool:
    """True when `text` has nothing `escape` would change (no controls, bidi overrides or undecodable bytes)."""
    return not _UNSAFE.search(text)


def jsonable(text: str) -> str:
    """A string json.dumps can write as UTF-8: undecodable file-name bytes become the text \\xNN."""
    if not re.search("[\ud800-\udfff]", text):
        return text
    return re.sub("[\ud800-\udfff]", _escape_char, text)


def json_line(record: dict) -> str:
    """One JSON record on one line, UTF-8-writable and safe to show on a terminal: what json.dumps leaves raw that
    a terminal acts on when someone `cat`s the file is written as \\uXXXX (still the same JSON string)."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(record, ensure_ascii=False))
