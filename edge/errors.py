"""The one error type every user-facing reader raises (re-exported so edge code needs no other import), and the
one way an exception from a library becomes part of such a one-line message."""

from __future__ import annotations

from scenecap import ScenecapError

__all__ = ["ScenecapError", "first_line"]


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when it has none), at most `limit` characters:
    library messages run to several lines and would break the one-line error."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if limit is None else line[:limit]
