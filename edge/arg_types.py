"""argparse types for the edge commands: a number in a range, refused in one line that says why the range."""

from __future__ import annotations

import argparse


def int_in(low: int, high: int, why: str):
    """An argparse type: a whole number from `low` to `high` (the error says why the range)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {low} or more")
        if v > high:
            raise argparse.ArgumentTypeError(f"{text!r}: expected at most {high} ({why})")
        return v

    return parse


def float_in(low: float, high: float, why: str):
    """An argparse type: a number from `low` to `high`."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number from {low:g} to {high:g} ({why})")
        return v

    return parse
