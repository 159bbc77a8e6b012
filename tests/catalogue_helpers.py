"""What every bad-input catalogue case checks: a one-line ScenecapError naming the file or value and what was
expected, or on the command line exit status 2 with a single 'scenecap: error: ...' line and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scenecap import ScenecapError


def one_line_error(call, *named: str) -> str:
    """Run `call`; it must raise ScenecapError with a one-line message containing every string in `named`."""
    with pytest.raises(ScenecapError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for text in named:
        assert text in msg, (text, msg)
    return msg


def scenecap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scenecap", *args], capture_output=True, text=True,
                          timeout=timeout)


def cli_error(r: subprocess.CompletedProcess, *named: str) -> str:
    """The command failed the user's way: exit 2, one 'scenecap: error:' line naming `named`, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("scenecap: error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == errors[0], r.stderr[-2000:]  # the last word is the error
    for text in named:
        assert text in errors[0], (text, errors[0])
    return errors[0]
