"""The `scenecap` front door, as a shell user meets it: pipes that close early, closed standard streams, hostile
names in error lines, an install without a runtime, and a real import bug (an install that lacks the train extra
is tests/test_train_edge_install.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "bundle"

# Run scenecap with some modules made unimportable, as on an install without them (or with a broken module).
BLOCKING_MAIN = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in BLOCKED or name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from scenecap.cli import main
sys.exit(main(sys.argv[2:]))
"""


def scenecap(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scenecap", *args], capture_output=True, text=True, timeout=300,
                          **kwargs)


def blocked(modules: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKING_MAIN, modules, *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args", [
    ["inspect", str(DEMO)],
    ["caption", str(ROOT / "demo" / "frames"), "--bundle", str(DEMO)],
    ["--help"],
], ids=["inspect", "caption", "help"])
def test_a_reader_that_went_away_ends_the_run_quietly(args):
    # The pipe's read end is closed before scenecap writes a byte, so its first write meets EPIPE: `| head -0`.
    p = subprocess.Popen([sys.executable, "-m", "scenecap", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    code = p.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code in (0, 141), (code, err)


def test_a_closed_stderr_sends_nothing_into_stdout():
    # Started as with 2>&-: the error has nowhere to go, and must not land in stdout (a --jsonl - consumer).
    r = scenecap("inspect", "/nonexistent/bundle", preexec_fn=lambda: os.close(2))
    assert r.returncode == 2
    assert r.stdout == ""


def test_a_closed_stdin_and_stdout_do_not_become_the_next_file_opened(tmp_path):
    # Started as with <&- >&-: the JSONL file opened later must not be given fd 1.
    out = tmp_path / "captions.jsonl"
    r = scenecap("caption", str(ROOT / "demo" / "frames" / "scene_1.jpg"), "--bundle", str(DEMO), "--jsonl", str(out),
                 preexec_fn=lambda: (os.close(0), os.close(1)))
    assert "Traceback" not in r.stderr, r.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and lines[0].startswith("{"), lines  # no log or error text was written into it


@pytest.mark.parametrize("name", ["bad\x1b[2Jname", "two\nlines", "gpj\u202eexe.jpg", "tab\there"])
def test_error_lines_escape_what_they_quote(name):
    r = scenecap("inspect", f"/nonexistent/{name}")
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scenecap: error: "), r.stderr
    assert not any(c in lines[0] for c in "\x1b\t\u202e"), lines[0]


def test_a_real_import_bug_is_not_hidden_as_a_missing_command():
    # A scenecap module that fails to import is a bug to see, not an optional extra to skip quietly.
    r = blocked("scenecap.edge.inspect_cli", "--help")
    assert r.returncode == 1
    assert "ModuleNotFoundError" in r.stderr and "scenecap.edge.inspect_cli" in r.stderr


@pytest.mark.parametrize("machine, words", [
    ("x86_64", "pip install 'scenecap[edge]'"),
    ("aarch64", "pip install 'scenecap[edge]'"),
    ("armv7l", "needs a 64-bit OS"),  # 32-bit Raspberry Pi OS: no LiteRT wheel exists, pip would not help
    ("armv6l", "needs a 64-bit OS"),
])
def test_no_runtime_says_what_would_help_on_this_machine(machine, words):
    from scenecap.edge.interpreter import no_runtime_message

    assert words in no_runtime_message(machine)


def test_an_install_without_any_runtime_says_so_in_one_line():
    r = blocked("ai_edge_litert,tflite_runtime,tensorflow", "caption", str(ROOT / "demo" / "frames"),
                "--bundle", str(DEMO))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("scenecap: error: no LiteRT runtime found; install one")


def test_caption_prints_only_its_own_lines_unless_verbose():
    # LiteRT's C++ notice ('INFO: Created TensorFlow Lite XNNPACK delegate for CPU.') reads as noise; -v shows it.
    args = ["caption", str(ROOT / "demo" / "frames" / "scene_1.jpg"), "--bundle", str(DEMO)]
    quiet, verbose = scenecap(*args), scenecap("-v", *args)
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr
    assert all(line.startswith(("INFO scenecap", "summary: ")) for line in quiet.stderr.splitlines()), quiet.stderr
    assert "XNNPACK" in verbose.stderr or "SCENECAP_KERNELS" in os.environ
