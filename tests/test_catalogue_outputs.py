"""Bad-input catalogue, outputs: what `scenecap caption` writes, where it writes it, its options and signals.

Surfaces, one parametrised test each:
- hostile file names (controls, escape sequences, bidi overrides, bytes that are not UTF-8) through each text
  output: stdout's tab-separated records, --jsonl FILE and --jsonl -; every byte written is valid UTF-8, stdout
  has one record per caption with the name escaped, stderr's skip line for a bad file of that name is escaped;
- output targets that fail or are missing: stdout on /dev/full, closed, a pipe closed early; stderr closed;
  --save-annotated on a read-only filesystem or past the file-size limit: one line, captioning goes on;
- option values out of range: one argparse line naming the option and the range;
- signals: SIGHUP, SIGTERM, SIGINT and a second SIGINT while speech is finishing: outputs closed, a summary.

Runs with the shipped demo bundle (no training).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from edge_helpers import MJPEGServer, running, wait_for
from PIL import Image

from scenecap.edge.terminal import escape, is_safe, jsonable

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "bundle"
FRAME = ROOT / "demo" / "frames" / "scene_1.jpg"


def _caption(*args, stdin=None, preexec_fn=None, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """`scenecap caption ... --bundle demo/bundle`, output as bytes (to check they are valid UTF-8)."""
    return subprocess.run([sys.executable, "-m", "scenecap", "caption", *map(str, args), "--bundle", str(DEMO)],
                          capture_output=True, timeout=timeout, stdin=stdin, preexec_fn=preexec_fn, **popen)


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8").splitlines()  # strict: anything not UTF-8 fails here


def _clean_stderr(err: bytes) -> list[str]:
    lines = _lines(err)
    assert "Traceback" not in err.decode("utf-8"), lines
    assert all(is_safe(line) for line in lines), [line for line in lines if not is_safe(line)]
    return lines


# -- hostile file names through each text output ------------------------------------------------------------------
NAMES: dict[str, bytes] = {
    "newline and tab": b"a\nb\tc",
    "ANSI clear screen": b"x\x1b[2Jy",
    "OSC window title": b"t\x1b]0;pwned\x07",
    "bidi override": "gpj\u202eexe".encode(),
    "not UTF-8": b"caf\xe9",
}
MODES = ("stdout", "jsonl file", "jsonl stdout")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(NAMES))
def test_hostile_names_are_escaped_on_every_text_output(tmp_path, name, mode):
    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    good = os.path.join(folder, NAMES[name] + b".jpg")
    bad = os.path.join(folder, NAMES[name] + b"_bad.jpg")
    shutil.copy(FRAME, good)
    with open(bad, "wb") as f:
        f.write(b"not an image")  # skipped, with one line naming it
    good_s, bad_s = os.fsdecode(good), os.fsdecode(bad)
    out = tmp_path / "caps.jsonl"
    extra = {"stdout": [], "jsonl file": ["--jsonl", out], "jsonl stdout": ["--jsonl", "-"]}[mode]
    r = _caption(os.fsdecode(folder), *extra)
    assert r.returncode == 1, r.stderr  # one unreadable file: the user's to fix
    err = _clean_stderr(r.stderr)
    assert f"scenecap: {escape(bad_s)}: " in "\n".join(err)
    stdout = _lines(r.stdout)
    assert len(stdout) == 1, stdout  # one caption, one line: no forged records
    if mode == "stdout" or mode == "jsonl file":
        fields = stdout[0].split("\t")
        assert len(fields) == 2 and fields[0] == escape(good_s) and all(is_safe(f) for f in fields)
    records = _lines(out.read_bytes()) if mode == "jsonl file" else stdout if mode == "jsonl stdout" else []
    for line in records:
        assert is_safe(line), line  # bidi overrides and C1 controls written as \uXXXX: safe to cat
        rec = json.loads(line)
        assert rec["source"] == jsonable(good_s) and rec["caption"]


def test_hostile_names_case_count():
    assert len(NAMES) * len(MODES) == 15


# -- output targets ---------------------------------------------------------------------------------------------
# A read-only filesystem for real (the tests may run as root, who ignores permission bits): a tmpfs mounted
# read-only in a private user+mount namespace, with the caption command run inside it.
READ_ONLY = 'mount -t tmpfs -o ro,size=64k tmpfs "$MNT" && exec "$@"'


def _on_read_only_mount(tmp_path: Path, *args) -> tuple[subprocess.CompletedProcess, Path]:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if not shutil.which("unshare"):
        pytest.skip("no unshare command")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", READ_ONLY, "sh", "true"],
                           env=dict(os.environ, MNT=str(mnt)), capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.decode()[:200]}")
    cmd = [sys.executable, "-m", "scenecap", "caption", *map(str, args), "--bundle", str(DEMO)]
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", READ_ONLY, "sh", *cmd],
                       env=dict(os.environ, MNT=str(mnt)), capture_output=True, timeout=300)
    return r, mnt


def _fsize_limit(limit: int):
    def set_limit() -> None:  # a write past `limit` bytes fails with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def _target_dev_full(tmp_path):
    with open("/dev/full", "wb") as full:
        r = subprocess.run(
            [sys.executable, "-m", "scenecap", "caption", str(FRAME.parent), "--bundle", str(DEMO)],
            stdout=full, stderr=subprocess.PIPE, timeout=300)
    err = _clean_stderr(r.stderr)
    errors = [line for line in err if line.startswith("scenecap: error:")]
    assert r.returncode == 2 and errors == ["scenecap: error: stdout: cannot write (no space left on device); "
                                            "captioning goes on without it"], err
    assert any(line.startswith("summary: 6 frames read, 6 looked at, 6 captions") for line in err), err


def _target_dev_full_jsonl(tmp_path):
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "scenecap", "caption", str(FRAME.parent), "--bundle", str(DEMO),
                            "--jsonl", "-"], stdout=full, stderr=subprocess.PIPE, timeout=300)
    err = _clean_stderr(r.stderr)
    assert r.returncode == 2 and sum(line.startswith("scenecap: error: --jsonl -: cannot write") for line in err) == 1
    assert any(line.startswith("summary:") for line in err)


def _closed(fd: int):
    def close() -> None:
        os.close(fd)
    return close


def _target_stdout_closed_alone(tmp_path):
    r = _caption(FRAME, preexec_fn=_closed(1))
    err = _clean_stderr(r.stderr)
    assert r.returncode == 2 and err[-1] == ("scenecap: error: stdout is closed and no other output was asked for "
                                             "(--jsonl FILE, --save-annotated, --speak): the captions would go nowhere")


def _target_stdout_closed_with_jsonl(tmp_path):
    out = tmp_path / "caps.jsonl"
    r = _caption(FRAME.parent, "--jsonl", out, preexec_fn=_closed(1))
    err = _clean_stderr(r.stderr)
    assert r.returncode == 0, err
    assert any("stdout is closed: captions go to --jsonl FILE only" in line for line in err), err
    assert len([json.loads(line) for line in _lines(out.read_bytes())]) == 6  # every caption, in whole lines


def _target_stderr_closed_jsonl_stdout(tmp_path):
    r = _caption(FRAME.parent, Path("/nonexistent.jpg"), "--jsonl", "-", preexec_fn=_closed(2))
    assert r.returncode == 1
    records = [json.loads(line) for line in _lines(r.stdout)]  # messages and the summary went nowhere, not here
    assert len(records) == 6


def _target_pipe_closed_early(tmp_path):
    args = [sys.executable, "-m", "scenecap", "caption", *[str(FRAME.parent)] * 20, "--bundle", str(DEMO)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()  # `| head -1`: one line read, then the reader goes away
    proc.stdout.close()
    err = proc.stderr.read()
    rc = proc.wait(timeout=300)
    assert first.startswith(str(FRAME.parent).encode())
    assert rc == 141 and not [line for line in _lines(err) if not line.startswith("INFO")], err  # quiet, as cat


def _target_annotated_dir_read_only(tmp_path):
    r, mnt = _on_read_only_mount(tmp_path, FRAME.parent, "--save-annotated", tmp_path / "ro")
    err = _clean_stderr(r.stderr)
    errors = [line for line in err if line.startswith("scenecap: error:")]
    assert r.returncode == 2 and errors == [f"scenecap: error: --save-annotated {mnt}: cannot write "
                                            "000000_scene_1.jpg (read-only file system); 0 written before; "
                                            "captioning goes on without it"], err
    assert len(_lines(r.stdout)) == 6  # every frame still captioned


def _target_annotated_video_read_only(tmp_path):
    r, mnt = _on_read_only_mount(tmp_path, ROOT / "demo" / "video" / "walk.mp4", "--save-annotated",
                                 tmp_path / "ro" / "walk.mp4")
    err = _clean_stderr(r.stderr)
    errors = [line for line in err if line.startswith("scenecap: error:")]
    assert r.returncode == 2 and errors == [f"scenecap: error: --save-annotated {mnt}/walk.mp4: cannot start "
                                            "the video (the folder is not writable); captioning goes on without it"]
    assert len(_lines(r.stdout)) == 12


def _target_annotated_dir_full(tmp_path):
    out = tmp_path / "seen"
    r = _caption(FRAME.parent, "--save-annotated", out, preexec_fn=_fsize_limit(24_000))
    err = _clean_stderr(r.stderr)
    errors = [line for line in err if line.startswith("scenecap: error:")]
    assert r.returncode == 2 and len(errors) == 1 and "file too large" in errors[0], err
    assert len(_lines(r.stdout)) == 6
    for jpg in out.iterdir():  # what was written is whole; nothing half-written beside it
        assert jpg.suffix == ".jpg"
        with Image.open(jpg) as im:
            im.load()  # a truncated JPEG raises here


TARGETS = {
    "stdout on /dev/full": _target_dev_full,
    "--jsonl - on /dev/full": _target_dev_full_jsonl,
    "stdout closed, no other output": _target_stdout_closed_alone,
    "stdout closed, --jsonl FILE": _target_stdout_closed_with_jsonl,
    "stderr closed, --jsonl -": _target_stderr_closed_jsonl_stdout,
    "stdout pipe closed early": _target_pipe_closed_early,
    "--save-annotated DIR read-only": _target_annotated_dir_read_only,
    "--save-annotated VIDEO in a read-only folder": _target_annotated_video_read_only,
    "--save-annotated DIR past the file-size limit": _target_annotated_dir_full,
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_an_output_target_that_fails_is_one_line_and_the_rest_goes_on(tmp_path, target):
    TARGETS[target](tmp_path)


def test_output_targets_case_count():
    assert len(TARGETS) == 9


# -- option bounds ----------------------------------------------------------------------------------------------
BOUNDS = {
    ("--beam", "0"): "expected 1 or more",
    ("--beam", "17"): "expected at most 16",
    ("--beam", "10000"): "expected at most 16",
    ("--threads", "0"): "expected 1 or more",
    ("--threads", "10000"): "expected at most 64",
    ("--length-penalty", "-1"): "expected a number from 0 to 5",
    ("--length-penalty", "400"): "expected a number from 0 to 5",
    ("--length-penalty", "nan"): "expected a number from 0 to 5",
    ("--threshold", "300"): "expected a number from 0 to 255",
}


@pytest.mark.parametrize("option, value", sorted(BOUNDS))
def test_option_out_of_range_is_one_argparse_line(option, value):
    r = _caption(FRAME, option, value, "--beam" if option != "--beam" else "--threads", "1")
    err = _lines(r.stderr)
    assert r.returncode == 2 and "Traceback" not in r.stderr.decode()
    assert err[-1].startswith("scenecap caption: error: argument") and f"{option}: '{value}': " in err[-1], err
    assert BOUNDS[option, value] in err[-1]


def test_option_bounds_case_count():
    assert len(BOUNDS) == 9


# -- signals ----------------------------------------------------------------------------------------------------
GATED_ESPEAK = """#!/bin/sh
# espeak-ng that, when asked to speak, records its pid and holds until the test says go (it never does here).
case "$*" in *--voices*) exec "{real}" "$@";; esac
echo $$ > "{pidfile}"
while [ ! -e "{gate}" ]; do sleep 0.05; done
exec "{real}" "$@"
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _gated_espeak(tmp_path: Path, env: dict) -> Path:
    """Put GATED_ESPEAK first on env's PATH as espeak-ng; returns the file it writes its pid to when it speaks."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    pidfile, bin_dir = tmp_path / "espeak.pid", tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "espeak-ng"
    fake.write_text(GATED_ESPEAK.format(real=shutil.which("espeak-ng"), pidfile=pidfile, gate=tmp_path / "go"))
    fake.chmod(0o755)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return pidfile


@pytest.mark.parametrize("sigs", ["SIGHUP", "SIGTERM", "SIGINT", "SIGINT twice while speaking"])
def test_a_signal_ends_the_run_with_outputs_closed_and_a_summary(tmp_path, sigs):
    env = dict(os.environ)
    twice = sigs.endswith("twice while speaking")
    pidfile = _gated_espeak(tmp_path, env) if twice else None
    server = MJPEGServer(cv2.imread(str(FRAME))[:, :, ::-1], fps=15).start()
    jsonl, video, err_path = tmp_path / "live.jsonl", tmp_path / "seen.mp4", tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "scenecap", "caption", "--source", server.url, "--bundle", str(DEMO),
           "--jsonl", str(jsonl), "--save-annotated", str(video), "--when", "every", "--every", "0.2"]
    if twice:
        cmd += ["--speak-to", str(tmp_path / "speech")]
    sig = signal.Signals[sigs.split()[0]]
    with running(cmd, server, err_path, stdout=subprocess.DEVNULL, env=env) as proc:
        assert wait_for(lambda: jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 1, timeout=120), \
            err_path.read_text()
        if twice:
            assert wait_for(pidfile.exists, timeout=60), err_path.read_text()  # espeak-ng is speaking (held)
        proc.send_signal(sig)
        if twice:
            assert wait_for(lambda: "stopping" in err_path.read_text(), timeout=60), err_path.read_text()
            proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    stderr = err_path.read_text()
    assert rc == 0 and "Traceback" not in stderr, stderr
    summary = [line for line in stderr.splitlines() if line.startswith("summary:")]
    assert len(summary) == 1 and summary[0].endswith("[stopped by signal]"), stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    # "1 caption;" or "3 captions (2 stale frames dropped);": the count of captions is the count of records.
    assert re.search(rf"(?<![\d,]){len(records)} captions?\b", summary[0]), (len(records), summary[0])
    cap = cv2.VideoCapture(str(video))  # the annotated video was finished and moved into place
    assert cap.isOpened() and cap.read()[0] and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= len(records)
    cap.release()
    assert not list(tmp_path.glob(".seen.partial*"))
    if twice:
        assert "speech cut short" in stderr and "1 cut short" in stderr, stderr
        assert wait_for(lambda: not _alive(int(pidfile.read_text())), timeout=10), "espeak-ng left running"


def test_signals_case_count():
    assert len(test_a_signal_ends_the_run_with_outputs_closed_and_a_summary.pytestmark[0].args[1]) == 4
