"""argparse pieces for the edge commands: numbers in a range, refused in one line that says why the range, and a
sub-command with examples under its help. Nothing heavy is imported: every command registers at each start."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def add_command(sub: argparse._SubParsersAction, name: str, help: str, description: str,
                examples: str) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with `examples`, laid out as written."""
    return sub.add_parser(name, help=help, description=description, epilog=examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _number(cast: Callable[[str], float], noun: str, refuse: Callable[[float], str | None]):
    """An argparse type: `text` read by `cast` (else 'expected <noun>'), then refused if `refuse(value)` says
    what was expected instead."""
    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {noun}") from None
        expected = refuse(v)
        if expected:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return v

    return parse


def int_in(low: int, high: int | None = None, why: str = ""):
    """An argparse type: a whole number from `low` to `high` (None: no upper bound; the error says `why`)."""
    def refuse(v: int) -> str | None:
        if v < low:
            return f"{low} or more"
        if high is not None and v > high:
            return f"at most {high} ({why})"
        return None

    return _number(int, "a whole number", refuse)


def float_in(low: float, high: float, why: str):
    """An argparse type: a number from `low` to `high`."""
    return _number(float, "a number",
                   lambda v: None if low <= v <= high else f"a number from {low:g} to {high:g} ({why})")


def seconds():
    """An argparse type: a finite number of seconds, 0 or more."""
    return _number(float, "a number of seconds", lambda v: None if 0 <= v < math.inf else "a number of seconds >= 0")
