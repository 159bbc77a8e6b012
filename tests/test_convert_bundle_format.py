"""Bundle format v1: the manifest is validated on load (required keys, types, shapes, file names, hashes), a newer
major version is refused, a newer minor one is read with its unknown keys kept. No TensorFlow needed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from catalogue_helpers import edit_manifest, manifest_set, one_line_error

from scenecap import ScenecapError
from scenecap.edge.bundle import FORMAT_VERSION, load_bundle, parse_manifest
from scenecap.edge.captioner import Captioner

# Damaged bundles and manifests: tests/test_catalogue_bundles.py.


def test_newer_minor_version_loads_and_keeps_unknown_keys(float_bundle, copy_bundle):
    bundle = copy_bundle(float_bundle)

    def change(d):
        d["format_version"] = "1.9"
        d["future_feature"] = {"x": 1}
        d["models"]["encoder"]["future_model_key"] = [1, 2]
        d["decoder"]["future_decoder_key"] = "y"

    edit_manifest(bundle, change)
    m = load_bundle(bundle).manifest
    out = m.to_json()
    assert out["future_feature"] == {"x": 1}
    assert out["models"]["encoder"]["future_model_key"] == [1, 2]
    assert out["decoder"]["future_decoder_key"] == "y"
    assert parse_manifest(out).to_json() == out  # round trip, nothing lost


def test_a_written_manifest_round_trips_exactly(float_bundle):
    data = json.loads((float_bundle / "manifest.json").read_text(encoding="utf-8"))
    assert data["format_version"] == FORMAT_VERSION
    assert parse_manifest(data).to_json() == data


def test_edgetpu_embedding_table_is_validated(variant_bundles, copy_bundle):
    b = copy_bundle(variant_bundles["edgetpu"], "coral")
    load_bundle(b)
    edit_manifest(b, manifest_set("decoder", "embedding", "scale", 0.5))
    with pytest.raises(ScenecapError, match="decoder.embedding dtype/scale/zero_point differ"):
        load_bundle(b)
    b = copy_bundle(variant_bundles["edgetpu"], "coral_table")
    table = np.load(b / "embedding.npy")
    np.save(b / "embedding.npy", table.astype(np.float32))  # changed file: the hash refuses it first
    with pytest.raises(ScenecapError, match="embedding.npy: .*(does not match|the manifest says)"):
        load_bundle(b)


# -- the bytes checked are the bytes used ----------------------------------------------------------------------

def _swapped_colours(vocab_bytes: bytes) -> bytes:
    """The same vocabulary with two colour words exchanged: valid, of the same size (only the hash tells), and
    every caption then names the wrong colour."""
    out = vocab_bytes.replace(b'"red"', b'"\0"').replace(b'"blue"', b'"red"').replace(b'"\0"', b'"blue"')
    assert out != vocab_bytes and len(out) == len(vocab_bytes)
    return out


def test_a_vocabulary_swapped_in_while_loading_is_never_used(demo_bundle, copy_bundle, tmp_path):
    """A thread swaps vocab.json between the real file and one with red and blue exchanged while the bundle loads
    again and again. Once a load hashed the file and then opened it again (180 of 400 loads took the swapped one);
    now each load verifies and parses the same bytes: it gets the real vocabulary or refuses the file."""
    b = copy_bundle(demo_bundle)
    good = (b / "vocab.json").read_bytes()
    real = load_bundle(b).vocab.tokens
    (tmp_path / "good.json").write_bytes(good)
    (tmp_path / "bad.json").write_bytes(_swapped_colours(good))
    done = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not done.is_set():
            for name in ("bad.json", "good.json"):
                shutil.copyfile(tmp_path / name, tmp_path / "next.json")
                os.replace(tmp_path / "next.json", b / "vocab.json")  # atomic: the file is always whole
                swaps += 1

    t = threading.Thread(target=swapper)
    t.start()
    outcomes = {"real": 0, "refused": 0}
    try:
        for _ in range(200):
            try:
                assert load_bundle(b).vocab.tokens == real
                outcomes["real"] += 1
            except ScenecapError as e:
                assert "vocab.json" in str(e) and "does not match the manifest" in str(e), str(e)
                outcomes["refused"] += 1
    finally:
        done.set()
        t.join()
    assert sum(outcomes.values()) == 200 and swaps > 0, (outcomes, swaps)
    print(f"\n200 loads while swapping: {outcomes}, {swaps} swaps")


_OVERWRITE_MID_RUN = r"""
import sys
from pathlib import Path
from scenecap.edge.captioner import Captioner
from scenecap.edge.images import load_image

bundle, frames = Path(sys.argv[1]), sorted(Path(sys.argv[2]).glob("*.jpg"))
cap = Captioner.load(bundle)
before = [cap.caption(load_image(f)).text for f in frames]
for name in ("encoder.tflite", "decoder_step.tflite"):  # overwritten in place, as a careless copy would
    with open(bundle / name, "r+b") as f:
        f.write(b"\0" * 4096)
        f.truncate(4096)
after = [cap.caption(load_image(f)).text for f in frames]
print(before == after, len(after))
"""


def test_a_model_overwritten_in_place_under_a_running_captioner_does_not_kill_it(demo_bundle, copy_bundle):
    """A memory-mapped model truncated under a running interpreter is SIGBUS (exit -7, no summary). The models
    run from the bytes read at load, so captioning goes on with the bundle that was verified."""
    b = copy_bundle(demo_bundle)
    r = subprocess.run([sys.executable, "-c", _OVERWRITE_MID_RUN, str(b), str(demo_bundle.parent / "frames")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["True", "6"]
    with pytest.raises(ScenecapError, match="does not match the manifest|the manifest says"):
        load_bundle(b)  # and the next load sees the damage


@contextlib.contextmanager
def _unprivileged():
    """Run as user nobody when root (who reads any file whatever its mode); as oneself otherwise."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)  # the real uid stays root, so it can be taken back
    try:
        yield
    finally:
        os.seteuid(0)


def test_an_unreadable_bundle_file_is_one_line(demo_bundle):
    """PermissionError on a bundle file was a traceback."""
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)
        b = Path(d) / "bundle"
        shutil.copytree(demo_bundle, b)
        for p in [b, *b.iterdir()]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(b / "vocab.json", 0)
        with _unprivileged():
            one_line_error(lambda: Captioner.load(b), str(b / "vocab.json"),
                           "cannot read the bundle file (Permission denied)")
