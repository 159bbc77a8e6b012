"""Evaluation that shows invented objects: object precision, recall and exact scenes on hand-made cases; a model
that gives one caption for every image is flagged, never reported as meeting the target; the tiny model on a
held-out set of another drawing style, side by side with its own style."""

from __future__ import annotations

import json

import pytest

from scenecap.train.metrics import caption_metrics, constant_baseline, distinct_captions, trivial_reasons
from scenecap.train.synthetic import generate, object_scores, scenes_beside

SCENES = [
    {"image_id": 1, "objects": [{"colour": "red", "shape": "circle"}]},
    {"image_id": 2, "objects": [{"colour": "blue", "shape": "star"}, {"colour": "green", "shape": "square"}]},
    {"image_id": 3, "objects": [{"colour": "yellow", "shape": "triangle"}]},
]


def test_precision_counts_an_invented_object_and_recall_a_missing_one():
    caps = {
        1: "a large red circle in the middle and a small blue star at the top",  # right, plus one invented
        2: "a blue star on the left",  # right, one missing
        3: "a yellow triangle at the bottom",  # exactly right
    }
    o = object_scores(caps, SCENES)
    assert (o["named"], o["invented"], o["missing"], o["objects"]) == (4, 1, 1, 4)
    assert o["precision"] == pytest.approx(3 / 4) and o["recall"] == pytest.approx(3 / 4)
    assert o["exact_scenes"] == pytest.approx(1 / 3)  # only scene 3: nothing missing, nothing invented


def test_exact_scenes_on_hand_made_cases():
    right = {1: "a red circle", 2: "a green square on the right and a blue star at the top", 3: "a yellow triangle"}
    assert object_scores(right, SCENES)["exact_scenes"] == 1.0  # order does not matter
    wrong_colour = {**right, 1: "a blue circle"}
    o = object_scores(wrong_colour, SCENES)
    assert o["exact_scenes"] == pytest.approx(2 / 3) and o["invented"] == 1 and o["missing"] == 1
    twice = {**right, 3: "a yellow triangle and a yellow triangle"}  # one triangle named twice: one invented
    assert object_scores(twice, SCENES)["invented"] == 1
    nothing = object_scores({}, SCENES)  # no caption names nothing: all missing, none exact
    assert nothing["recall"] == 0.0 and nothing["exact_scenes"] == 0.0 and nothing["missing"] == 4
    ar = {1: "دائرة حمراء في الوسط", 2: "نجمة زرقاء على اليسار و مربع أخضر في الأسفل", 3: "مثلث أصفر"}
    assert object_scores(ar, SCENES, "ar")["exact_scenes"] == 1.0


def test_a_constant_caption_model_is_flagged(tmp_path):
    data = generate(tmp_path / "s", n_train=0, n_val=0, n_test=30, seed=5, img_size=32)
    samples = json.loads((data / "captions_test.json").read_text(encoding="utf-8"))
    refs: dict = {}
    for a in samples["annotations"]:
        refs.setdefault(a["image_id"], []).append(a["caption"])
    baseline = constant_baseline(refs)
    constant = {i: "a large red circle in the middle" for i in refs}  # a "model" that ignores the image
    scores = caption_metrics(refs, constant, meteor=False)
    reasons = trivial_reasons(scores, distinct_captions(constant), len(constant), baseline)
    print(f"\nbest constant caption {baseline['caption']!r}: BLEU-4 {baseline['BLEU-4']:.3f}; flagged: {reasons}")
    assert any("1 different caption for 30 images" in r for r in reasons)
    assert any("does not beat the constant caption" in r for r in reasons)
    truthful = {i: refs[i][0] for i in refs}  # captions that describe each image
    good = caption_metrics(refs, truthful, meteor=False)
    assert trivial_reasons(good, distinct_captions(truthful), len(truthful), baseline) == []
    assert scenes_beside(data / "captions_test.json") == data / "scenes_test.json"


def test_report_flags_a_constant_model_and_never_says_it_meets_the_target():
    from scenecap.convert.report_scores import verdicts

    broken = {"name": "float SavedModel", "kind": "savedmodel", "BLEU-4": 0.3,
              "trivial": ["it gives only 1 different caption for 60 images"]}
    quantised = {"name": "int8", "kind": "bundle", "encoder": "int8", "decoder": "int8", "BLEU-4": 0.3,
                 "agreement": 1.0, "trivial": ["it gives only 1 different caption for 60 images"]}
    (verdict,) = verdicts([broken, quantised], broken)
    assert "meets the target" not in verdict and "NOT a working captioner" in verdict
    assert "1 different caption for 60 images" in verdict


def test_tiny_model_on_its_own_style_and_a_shifted_one(int8_bundle, tiny_export, synth_data, tmp_path):
    """The report side by side: the tiny model's figures on its own style and on the shifted style (printed);
    asserted only where a model blind to the image cannot pass."""
    from scenecap.convert.report import ReportOptions, write_report

    shifted = generate(tmp_path / "shifted", n_train=0, n_val=0, n_test=24, seed=9, style="shifted", img_size=64)
    paths = write_report(ReportOptions(
        items=[str(int8_bundle)], reference=str(tiny_export), out=str(tmp_path / "report"), count=24,
        annotations=[f"own={synth_data / 'captions_test.json'}", f"shifted={shifted / 'captions_test.json'}"],
        progress=False))
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    md = paths["md"].read_text(encoding="utf-8")
    own, shift = report["sets"]
    for hs in report["sets"]:
        for r in hs["variants"]:
            o = r["objects"]
            print(f"\n{hs['name']}: {r['name']}: exact {o['exact_scenes']:.1%}, precision {o['precision']:.1%}, "
                  f"recall {o['recall']:.1%}, BLEU-4 {r['BLEU-4']:.3f} (constant {hs['baseline']['BLEU-4']:.3f}), "
                  f"{r['distinct_captions']} distinct; trivial: {r['trivial']}")
    assert [hs["name"] for hs in report["sets"]] == ["own", "shifted"] and shift["images"] == 24
    assert "## Objects named (synthetic scenes)" in md and "own: exact | precision | recall" in md
    assert "shifted: exact | precision | recall" in md and "## Held-out sets side by side" in md
    for hs in report["sets"]:  # a model that ignores the image gives one caption and a constant's BLEU-4
        for r in hs["variants"]:
            assert r["distinct_captions"] > 24 // 4 and r["BLEU-4"] > hs["baseline"]["BLEU-4"]
            assert 0 <= r["objects"]["precision"] <= 1 and r["objects"]["named"] > 0
    for hs in report["sets"]:
        for r in hs["variants"]:
            verdict = f"On {hs['name']}, **{r['name']}** " + ("does NOT beat" if r["trivial"] else "beats them")
            assert verdict in md  # said in words, whichever way it goes
    assert (tmp_path / "report" / "results" / "shifted").is_dir()
