"""The shipped demo: `make demo`'s command on the shipped bundle and samples, as a Pi would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edge_helpers import BLOCK_TF

from scenecap.edge.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"

pytestmark = pytest.mark.skipif(not (DEMO / "bundle" / "manifest.json").is_file(), reason="demo bundle not built")


def test_demo_bundle_is_a_small_int8_bundle_with_its_recipe():
    b = load_bundle(DEMO / "bundle")  # verifies every sha256
    m = b.manifest
    assert {s.quant for s in m.models.values()} == {"int8"}
    assert m.model["backbone"] == "mobilenet_v2"
    assert sum(m.files[s.file]["bytes"] for s in m.models.values()) < 8 * 2**20
    assert "demo/build_bundle.py" in m.provenance["recipe"]
    quality = json.loads((DEMO / "quality.json").read_text(encoding="utf-8"))
    assert quality["images"] == 200 and 0 < quality["BLEU-4"] <= 1


def test_make_demo_command_captions_every_sample_without_tensorflow():
    frames = sorted((DEMO / "frames").glob("*.jpg"))
    r = subprocess.run([sys.executable, "-c", BLOCK_TF, "caption", str(DEMO / "frames"), str(DEMO / "video"),
                        "--bundle", str(DEMO / "bundle"), "--every", "2"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "\t" in line]
    sources = [line.split("\t")[0] for line in lines]
    assert [s for s in sources if s.endswith(".jpg")] == [str(DEMO / "frames" / f.name) for f in frames]
    assert sum("walk.mp4" in s for s in sources) >= 4  # 12 s of video, one caption every 2 s
    assert all(line.split("\t")[1].strip() for line in lines)
