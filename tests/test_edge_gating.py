"""When to speak: captions at scene cuts and not between them; --min-interval, --every; no repeated sentence."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from edge_helpers import jitter, pick_scenes, scene, write_cut_video

from scenecap.edge.errors import ScenecapError
from scenecap.edge.gating import GateConfig, SceneGate, content_score, hsv_small

FPS = 10.0
PER_SCENE = 25  # 2.5 s per scene


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory, float_bundle):
    path = tmp_path_factory.mktemp("cuts") / "walk.mp4"
    cuts = write_cut_video(path, pick_scenes(float_bundle, 5), PER_SCENE, FPS)
    return path, cuts


def _caption(bundle, *args):
    r = subprocess.run([sys.executable, "-m", "scenecap", "caption", *map(str, args), "--bundle", str(bundle),
                        "--jsonl", "-"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()], r.stderr


def test_score_is_contentdetectors_mean_hsv_difference():
    a = np.zeros((90, 120, 3), np.uint8)
    a[:] = (200, 30, 30)  # red
    b = a.copy()
    assert content_score(hsv_small(a), hsv_small(b)) == 0.0
    b[:] = (30, 30, 200)  # blue: hue 0 -> 120 (OpenCV 0-179), saturation and value unchanged
    ha, hb = hsv_small(a), hsv_small(b)
    assert content_score(ha, hb) == pytest.approx(abs(int(ha[0, 0, 0]) - int(hb[0, 0, 0])) / 3)
    assert hsv_small(np.zeros((480, 640, 3), np.uint8)).shape == (48, 64, 3)  # small frames: cheap on a Pi


def test_shake_and_noise_are_not_a_new_scene_but_a_cut_is():
    rng = np.random.default_rng(1)
    img = scene(21)
    base = hsv_small(jitter(img, rng))
    within = [content_score(base, hsv_small(jitter(img, rng))) for _ in range(10)]
    across = [content_score(base, hsv_small(scene(s))) for s in range(30, 40)]
    assert max(within) < 10, within  # shake and noise stay far below the threshold of 27
    # Two random synthetic scenes can share a similar background (as two rooms can): most cuts, not all, score high.
    assert sum(a >= 27 for a in across) >= 8, across


def test_video_captions_come_at_the_cuts_and_not_between(float_bundle, cut_video):
    path, cuts = cut_video
    recs, err = _caption(float_bundle, "--source", path, "--min-interval", "1")
    assert [r["frame"] for r in recs] == cuts
    assert [r["reason"] for r in recs] == ["first"] + ["change"] * (len(cuts) - 1)
    assert all(r["scene_score"] >= 27 for r in recs[1:])
    assert "summary: 125 frames read, 125 looked at, 5 captions" in err


def test_a_cut_inside_min_interval_waits_for_it(float_bundle, cut_video):
    path, cuts = cut_video
    recs, _ = _caption(float_bundle, path, "--when", "change", "--min-interval", "3")
    # Scenes last 2.5 s: each cut is held back until 3 s after the previous caption, then described.
    assert [r["frame"] for r in recs] == [0, 30, 60, 90, 120]
    assert all(r["reason"] == "change" for r in recs[1:])


def test_every_re_captions_a_long_scene_but_never_repeats_a_sentence(float_bundle, tmp_path):
    path = tmp_path / "still.avi"
    write_cut_video(path, [11], 100, FPS, shake=False)  # 10 s of a camera on a tripod
    recs, err = _caption(float_bundle, "--source", path, "--every", "2")
    # The heartbeat re-captions at 2, 4, 6 and 8 s; the view has not changed, so neither has the sentence,
    # and only the first is given.
    assert [r["frame"] for r in recs] == [0]
    assert "1 caption (4 repeats dropped)" in err


def test_files_keep_their_one_frame_per_second_default(float_bundle, cut_video):
    path, _ = cut_video
    recs, _ = _caption(float_bundle, path)
    assert [r["frame"] for r in recs] == list(range(0, 125, 10))
    recs, _ = _caption(float_bundle, path, "--when", "every", "--every", "5")
    assert [r["frame"] for r in recs] == [0, 50, 100]


def test_gate_modes_on_a_clock():
    frames = {"a": np.full((60, 80, 3), (200, 30, 30), np.uint8), "b": np.full((60, 80, 3), (30, 30, 200), np.uint8)}
    gate = SceneGate(GateConfig("change", min_interval=2.0, every=5.0))
    seen = [(t, name, gate.check(frames[name], t)) for t, name in
            [(0, "a"), (0.5, "a"), (1.0, "b"), (1.9, "b"), (2.0, "b"), (3, "b"), (6.9, "b"), (7.0, "b")]]
    fired = [(t, d.reason) for t, _, d in seen if d.caption]
    assert fired == [(0, "first"), (2.0, "change"), (7.0, "every")]

    every = SceneGate(GateConfig("every", every=1.0))
    assert [t for t in (0, 0.4, 0.99, 1.0, 1.5, 2.1) if every.check(frames["a"], t).caption] == [0, 1.0, 2.1]

    stills = SceneGate(GateConfig("change"))  # images have no clock: each new view is captioned
    assert [stills.check(frames[n], None).caption for n in "aab"] == [True, False, True]


def test_identical_caption_is_dropped_but_a_return_to_it_later_is_not():
    gate = SceneGate()
    assert [gate.is_repeat(t) for t in ["a door", "a door", "a car", "a door"]] == [False, True, False, False]
    assert gate.repeats == 1


def test_bad_options_are_one_line_errors():
    with pytest.raises(ScenecapError, match="--when 'sometimes'"):
        GateConfig("sometimes")
    with pytest.raises(ScenecapError, match="min-interval"):
        GateConfig("change", min_interval=-1)
    with pytest.raises(ScenecapError, match="shape"):
        SceneGate().check(np.zeros((10, 10, 2), np.uint8), 0.0)
