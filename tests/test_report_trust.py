"""The quality report's trust section: a user evaluates the shipped demo bundle on scenes of its own style and of a
shifted one, and reads how often its gate marks captions unsure, how often it is confidently wrong, the
trade-off as the threshold moves (trust.png), and how well familiarity alone tells the shifted scenes apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scenecap.convert.report_trust import risk_coverage
from scenecap.edge.captioner import Captioner
from scenecap.edge.images import load_image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "bundle"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from scenecap.train.synthetic import generate

    tmp = tmp_path_factory.mktemp("trust")
    own = json.loads((ROOT / "demo" / "quality.json").read_text(encoding="utf-8"))["style"]
    generate(tmp / "own", 0, 0, 60, seed=28, style=own)
    generate(tmp / "shifted", 0, 0, 60, seed=29, style="shifted")
    r = subprocess.run([sys.executable, "-m", "scenecap", "eval", DEMO, "--annotations",
                        f"own={tmp / 'own' / 'captions_test.json'}", "--annotations",
                        f"shifted={tmp / 'shifted' / 'captions_test.json'}", "--out", tmp / "report"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return tmp, json.loads((tmp / "report" / "report.json").read_text())


def test_the_gate_figures_are_what_the_device_says_image_by_image(report):
    tmp, rep = report
    own = rep["sets"][0]
    gate = own["variants"][0]["gate"]
    cap = Captioner.load(DEMO)
    coco = json.loads((tmp / "own" / "captions_test.json").read_text())
    unsure = [cap.caption(load_image(tmp / "own" / "images" / im["file_name"])).unsure for im in coco["images"]]
    assert gate["unsure"] == pytest.approx(np.mean(unsure), abs=1e-4)
    assert gate["threshold"] == pytest.approx(cap.min_confidence)
    # Confident and wrong plus confident and right is everything confident.
    confident = 1 - gate["unsure"]
    assert gate["confidently_wrong"] == pytest.approx(confident * (1 - gate["right_when_confident"]), abs=1e-3)
    look = gate["second_look"]
    assert look["threshold"] < gate["threshold"] and 0 <= look["unsure"] <= 1


def test_the_trade_off_curve_and_the_shifted_sets_familiarity(report):
    tmp, rep = report
    own, shifted = rep["sets"]
    for hs in (own, shifted):
        curve = hs["variants"][0]["gate"]["curve"]
        cov, wrong = zip(*curve, strict=True)
        assert cov[0] == 0 and cov[-1] == 1 and wrong[0] == 0
        assert all(b >= a for a, b in zip(wrong, wrong[1:], strict=False))  # keeping more never hides errors
        exact = hs["variants"][0]["objects"]["exact_scenes"]
        assert wrong[-1] == pytest.approx(1 - exact, abs=1e-3)  # everything kept: every wrong caption said
    assert "familiarity_auroc_vs_first" not in own["variants"][0]["gate"]
    assert shifted["variants"][0]["gate"]["familiarity_auroc_vs_first"] > 0.5
    md = (tmp / "report" / "report.md").read_text()
    assert "## When the device is unsure" in md and "| shifted | bundle |" in md
    assert (tmp / "report" / "trust.png").stat().st_size > 10_000


def test_risk_coverage_on_a_hand_made_case():
    # Four captions, the least confident two wrong: keeping half says nothing wrong, keeping all says both.
    curve = risk_coverage([0.9, 0.8, 0.3, 0.2], [True, True, False, False], points=5)
    assert curve == [[0.0, 0.0], [0.25, 0.0], [0.5, 0.0], [0.75, 0.25], [1.0, 0.5]]
