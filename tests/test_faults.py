"""Faults with nothing lost: a conversion killed with SIGKILL at any step, a disk that fills up while captions
are written as JSON lines, and one that fills while an annotated video is written (the earlier video is kept).

Covered elsewhere, not repeated here: training killed with SIGKILL resumes from its last checkpoint
(test_train_runs.py::test_sigkill_mid_epoch_then_resume_continues_epochs_and_optimizer); a camera or stream that
disappears and comes back is reopened (test_edge_live.py::test_live_stream_survives_a_dropout_and_stops_cleanly_on_
a_signal, test_edge_sources.py::test_lost_stream_is_reopened_with_backoff_and_logged and
test_camera_missing_at_boot_is_retried_until_stopped).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenecap.convert.bundle_writer import sweep_leftovers
from scenecap.edge.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "bundle"


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _wait_until(condition, timeout: float) -> bool:
    """Poll `condition` (a bounded wait for another process, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _only_the_bundle_is_left(parent: Path, name: str, timeout: float = 60) -> list[str]:
    """The folder's entries once the janitor has had time to clean up after the killed writer."""
    _wait_until(lambda: os.listdir(parent) == [name], timeout)
    return sorted(os.listdir(parent))


# --- (a) SIGKILL during `scenecap convert` ----------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_during_scenecap_convert_keeps_the_previous_bundle(float_bundle, copy_bundle, tiny_export):
    target = copy_bundle(float_bundle, "bundles/B")
    parent = target.parent
    before = _hashes(target)
    cmd = [sys.executable, "-m", "scenecap", "convert", str(tiny_export), "--out", str(target), "--force",
           "--quant", "float32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    try:
        # The models are converted in memory; the bundle folder is built beside B at the end. Kill then.
        building = _wait_until(lambda: any(n.endswith(".partial") for n in os.listdir(parent))
                               or proc.poll() is not None, timeout=600)
        assert building and proc.poll() is None, f"convert ended before building the bundle: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert _only_the_bundle_is_left(parent, "B") == ["B"]
    assert _hashes(target) == before
    load_bundle(target)


# The writer killed (SIGKILL, so no cleanup code runs) at each step of write_bundle, in a process that rewrites
# the demo bundle with a new provenance; the patch kills it right after the named step.
KILL_AT = {
    "while writing the models": ("describe_model", "old"),
    "after checking the new bundle, before the swap": ("load_bundle", "old"),
    "right after the atomic swap": ("exchange_atomically", "new"),
    "between the two renames (no atomic swap)": ("rename:old", "old"),
    "after the two renames (no atomic swap)": ("rename:target", "new"),
}

WRITER = r"""
import json, os, signal, sys
from pathlib import Path
from scenecap.convert import bundle_writer as bw
from scenecap.edge.vocab import Vocab

source, target, step = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
m = json.loads((source / "manifest.json").read_text())
models = {n: ((source / s["file"]).read_bytes(), s["quant"]) for n, s in m["models"].items()}
info = {k: m[k] for k in ("language", "preprocess", "max_length", "model", "training")}
info["decoder_state"] = m["decoder"]["state"]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def after(fn):
    def wrapped(*a, **k):
        result = fn(*a, **k)
        die()
    return wrapped

if step in ("describe_model", "load_bundle", "exchange_atomically"):
    setattr(bw, step, after(getattr(bw, step)))
if step.startswith("rename:"):
    bw.exchange_atomically = lambda a, b: False  # a filesystem without RENAME_EXCHANGE
    rename = Path.rename
    def killing_rename(self, dest):
        result = rename(self, dest)
        if (step == "rename:old" and str(dest).endswith(".old")) or (step == "rename:target" and Path(dest) == target):
            die()
        return result
    Path.rename = killing_rename
if step == "no-janitor":  # a power cut: the janitor dies too
    import contextlib
    bw.janitor_watching = lambda *a: contextlib.nullcontext()
    bw.exchange_atomically = lambda a, b: False
    rename = Path.rename
    def rename_then_power_cut(self, dest):
        result = rename(self, dest)
        if str(dest).endswith(".old"):
            die()
        return result
    Path.rename = rename_then_power_cut
emb = m["decoder"].get("embedding")  # the word-lookup table of an embedding-input decoder (int16x8, edgetpu)
extra = {emb["file"]: (source / emb["file"]).read_bytes()} if emb else {}
bw.write_bundle(target, models, Vocab.load(source / "vocab.json"), info, {"rewritten": True}, force=True,
                extra_files=extra, decoder_extra={"embedding": emb} if emb else {})
"""


def _kill_writer_at(step: str, target: Path) -> None:
    r = subprocess.run([sys.executable, "-c", WRITER, str(DEMO), str(target), step], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -signal.SIGKILL, f"the writer was not killed at {step}: {r.returncode} {r.stderr[-2000:]}"


@pytest.fixture
def old_bundle(copy_bundle) -> Path:
    """The demo bundle as B, alone in its folder: a writer's leftovers beside it are easy to see."""
    return copy_bundle(DEMO, "bundles/B")


@pytest.mark.parametrize("where", sorted(KILL_AT))
def test_writer_killed_at_any_step_leaves_a_whole_bundle_and_nothing_else(old_bundle, where):
    step, expected = KILL_AT[where]
    old = _hashes(old_bundle)
    calibration = getattr(load_bundle(old_bundle).manifest.confidence, "file", None)
    _kill_writer_at(step, old_bundle)
    assert _only_the_bundle_is_left(old_bundle.parent, "B") == ["B"]
    manifest = load_bundle(old_bundle).manifest  # complete: every file there with its recorded hash
    if expected == "old":
        assert _hashes(old_bundle) == old
    else:
        assert manifest.provenance == {"rewritten": True}
        # The writer is a new conversion: the confidence statistics of the old models are not carried over
        # (scenecap calibrate makes them for the new ones).
        assert {k: v for k, v in _hashes(old_bundle).items() if k != "manifest.json"} == \
            {k: v for k, v in old.items() if k not in ("manifest.json", calibration)}


def test_leftovers_of_a_writer_killed_with_its_janitor_are_repaired_by_the_next_write(old_bundle):
    old = _hashes(old_bundle)
    _kill_writer_at("no-janitor", old_bundle)
    # The worst moment: the previous bundle moved aside, the new one not yet in place, nobody left to fix it.
    left = sorted(os.listdir(old_bundle.parent))
    assert "B" not in left and any(n.endswith(".old") for n in left) and any(n.endswith(".partial") for n in left)
    sweep_leftovers(old_bundle)  # what the next write_bundle to B does first
    assert sorted(os.listdir(old_bundle.parent)) == ["B"]
    assert _hashes(old_bundle) == old


def test_a_running_writers_folder_is_not_swept(old_bundle):
    """A second conversion to the same place must not delete the folder a first one is still building."""
    busy = old_bundle.parent / f".B.{os.getpid()}.abc123.partial"
    busy.mkdir()
    dead = old_bundle.parent / ".B.999999999.abc123.partial"  # beyond pid_max: never a running process
    dead.mkdir()
    sweep_leftovers(old_bundle)
    assert busy.is_dir() and not dead.exists()
    (old_bundle.parent / "unrelated.partial").mkdir()
    sweep_leftovers(old_bundle)
    assert (old_bundle.parent / "unrelated.partial").is_dir()


def test_the_janitor_is_told_when_all_went_well(old_bundle, monkeypatch):
    """In-process rewrite: the new bundle in place, nothing beside it, and the janitor exited without acting."""
    from scenecap.convert import bundle_writer as bw
    from scenecap.edge.vocab import Vocab

    m = json.loads((DEMO / "manifest.json").read_text())
    models = {n: ((DEMO / s["file"]).read_bytes(), s["quant"]) for n, s in m["models"].items()}
    info = {k: m[k] for k in ("language", "preprocess", "max_length", "model", "training")}
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(bw.subprocess, "Popen", lambda *a, **k: started.append(popen(*a, **k)) or started[-1])
    emb = m["decoder"].get("embedding")
    bw.write_bundle(old_bundle, models, Vocab.load(DEMO / "vocab.json"), info, {"rewritten": True}, force=True,
                    extra_files={emb["file"]: (DEMO / emb["file"]).read_bytes()} if emb else {},
                    decoder_extra={"embedding": emb} if emb else {})
    assert sorted(os.listdir(old_bundle.parent)) == ["B"]
    assert load_bundle(old_bundle).manifest.provenance == {"rewritten": True}
    assert len(started) == 1 and started[0].returncode == 0


# --- (b) the disk fills while captions are written as JSON lines ------------------------------------------------

FRAMES = 40  # captioned one by one (--when all): far more records than fit in the space left


@pytest.fixture(scope="module")
def walk_video(tmp_path_factory) -> Path:
    from edge_helpers import write_cut_video

    path = tmp_path_factory.mktemp("faults") / "walk.avi"
    write_cut_video(path, [3, 5, 8, 13], frames_per_scene=FRAMES // 4, size=96)
    return path


def _caption_cmd(video: Path, jsonl: Path) -> list[str]:
    return [sys.executable, "-m", "scenecap", "caption", str(video), "--bundle", str(DEMO), "--when", "all",
            "--threads", "1", "--jsonl", str(jsonl)]


def _tmpfs_works() -> str:
    """'' if this machine lets an unprivileged user namespace mount a tmpfs, else why not."""
    if not shutil.which("unshare"):
        return "no unshare command"
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                        "d=$(mktemp -d) && mount -t tmpfs -o size=16k tmpfs \"$d\" && umount \"$d\" && rmdir \"$d\""],
                       capture_output=True, text=True, timeout=60)
    return "" if r.returncode == 0 else f"unshare/mount tmpfs not permitted here: {r.stderr.strip()[:200]}"


# Inside a private mount namespace: a 16 KiB tmpfs, 12 KiB of it taken, so one 4 KiB page is left for the JSON
# lines (about a dozen records). The file is copied out before the namespace, and with it the tmpfs, goes away.
TINY_DISK = r"""
set -e
mount -t tmpfs -o size=16k tmpfs "$MNT"
head -c 12288 /dev/zero > "$MNT/filler"
set +e
"$@" > "$OUT/stdout.txt" 2> "$OUT/stderr.txt"
echo $? > "$OUT/rc"
cp "$MNT/caps.jsonl" "$OUT/caps.jsonl"
"""


def _run_on_a_full_disk(how: str, video: Path, tmp_path: Path) -> tuple[int, str, str, Path, Path]:
    """(exit status, stdout, stderr, the JSON lines as left, the path the command was given) for a caption run
    whose --jsonl file runs out of room: a real full filesystem (tmpfs), or the process's file size limit."""
    out = tmp_path / "out"
    out.mkdir()
    if how == "full tmpfs":
        mnt = tmp_path / "tiny"
        mnt.mkdir()
        given = mnt / "caps.jsonl"
        subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", TINY_DISK, "sh",
                        *_caption_cmd(video, given)], env=dict(os.environ, MNT=str(mnt), OUT=str(out)),
                       check=True, timeout=600)
        rc = int((out / "rc").read_text())
        return rc, (out / "stdout.txt").read_text(), (out / "stderr.txt").read_text(), out / "caps.jsonl", given
    import resource

    given = out / "caps.jsonl"

    def limit_file_size() -> None:  # RLIMIT_FSIZE: a write past 4 KiB fails with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    r = subprocess.run(_caption_cmd(video, given), capture_output=True, text=True, timeout=600,
                       preexec_fn=limit_file_size)  # only setrlimit runs between fork and exec
    return r.returncode, r.stdout, r.stderr, given, given


@pytest.mark.parametrize("how", ["full tmpfs", "file size limit"])
def test_a_full_disk_during_jsonl_output_is_one_line_and_keeps_every_complete_record(walk_video, tmp_path, how):
    if how == "full tmpfs" and (why := _tmpfs_works()):
        pytest.skip(why)
    rc, stdout, stderr, jsonl, given = _run_on_a_full_disk(how, walk_video, tmp_path)
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("scenecap: error:")]
    assert rc == 2 and len(errors) == 1, stderr
    what = "no space left on device" if how == "full tmpfs" else "file too large"
    assert errors[0].startswith(f"scenecap: error: --jsonl {given}: {what}"), errors[0]
    data = jsonl.read_bytes()
    assert data.endswith(b"\n"), data[-200:]  # no partial record at the end
    records = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert 3 <= len(records) < FRAMES  # some fitted, not all
    assert errors[0].endswith(f"stopped after {len(records)} lines, which are kept complete; captioning goes on "
                              "without it")
    assert [r["frame"] for r in records] == list(range(len(records)))  # in order, none missing
    # Only the log stopped: every frame was still captioned (a cane keeps talking), then the summary printed.
    assert any(line.startswith("summary:") for line in stderr.splitlines()), stderr
    assert len(stdout.splitlines()) == FRAMES


# --- (c) the disk fills while an annotated video is written -----------------------------------------------------

def test_an_annotated_video_that_cannot_be_completed_keeps_the_earlier_one(tmp_path):
    """OpenCV's writer says nothing when the disk fills; the broken file used to replace a good one ('moov atom
    not found'), exit 0. Now the video is read back before it replaces anything."""
    import resource

    import cv2

    video = ROOT / "demo" / "video" / "walk.mp4"
    out = tmp_path / "seen.mp4"
    cmd = [sys.executable, "-m", "scenecap", "caption", str(video), "--bundle", str(DEMO), "--when", "all",
           "--save-annotated", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and out.is_file(), first.stderr
    good = hashlib.sha256(out.read_bytes()).hexdigest()
    limit = out.stat().st_size // 3  # the second run's video cannot fit

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("scenecap: error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert errors[0].startswith(f"scenecap: error: --save-annotated {out}: the video could not be completed")
    assert errors[0].endswith("the earlier file is kept"), errors[0]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == good  # the earlier video, untouched
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and cap.read()[0]
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seen.mp4"]  # no partial file left beside it
    assert len(r.stdout.splitlines()) == 120  # every frame was still captioned
