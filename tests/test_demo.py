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


def _build_recipe():
    sys.path.insert(0, str(DEMO))
    try:
        import build_bundle
    finally:
        sys.path.remove(str(DEMO))
    return build_bundle


def test_demo_bundle_is_a_small_quantised_bundle_with_its_recipe():
    recipe = _build_recipe()
    b = load_bundle(DEMO / "bundle")  # verifies every sha256
    m = b.manifest
    assert {k: s.quant for k, s in m.models.items()} == {"encoder": "int8", "decoder_step": recipe.DECODER_QUANT}
    assert m.model.backbone == "mobilenet_v2"
    assert sum(m.files[s.file].bytes for s in m.models.values()) < 8 * 2**20
    assert "demo/build_bundle.py" in m.provenance["recipe"] and f"style {recipe.STYLE}" in m.provenance["recipe"]
    quality = json.loads((DEMO / "quality.json").read_text(encoding="utf-8"))
    assert quality["images"] == 200 and 0 < quality["BLEU-4"] <= 1
    # Measured on its own style, on the shifted one and on photographs, with objects invented and missing counted
    assert quality["style"] == recipe.STYLE != "shifted" and quality["shifted"]["style"] == "shifted"
    for q in (quality, quality["shifted"]):
        assert {"exact_scenes", "object_precision", "object_recall", "gate"} <= set(q) and q["images"] == 200
    assert quality["photographs"]["images"] == 80 and "familiarity_auroc" in quality["photographs"]


def test_the_shipped_decoder_is_the_fastest_candidate_that_keeps_float32_s_captions():
    """build_bundle.py measured every decoder quantisation against demo/bundle-float32 (quality.json): the one
    shipped is the fastest of those giving >= 95% of the float32 step's greedy captions beside the same int8
    encoder, and int8 is not among them."""
    recipe = _build_recipe()
    rows = {r["decoder"]: r for r in json.loads((DEMO / "quality.json").read_text(encoding="utf-8"))
            ["decoder_candidates"] if r["encoder"] == "int8"}
    assert set(recipe.CANDIDATES) <= set(rows)
    faithful = [q for q, r in rows.items() if r["identical_to_float_decoder"] >= 0.95]
    assert recipe.DECODER_QUANT in faithful and "int8" not in faithful
    assert rows[recipe.DECODER_QUANT]["decoder_ms"] <= min(rows[q]["decoder_ms"] for q in faithful) * 1.15


def test_the_float32_reference_ships_beside_the_demo_and_agrees_with_it(tmp_path):
    """demo/bundle-float32 is the same model unquantised: on fresh scenes of its style the shipped bundle says
    the same caption for nearly every one (quality.json: 93.5% on 200 scenes)."""
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.images import load_image
    from scenecap.train.synthetic import generate

    ref = load_bundle(DEMO / "bundle-float32")
    assert {k: s.quant for k, s in ref.manifest.models.items()} == {"encoder": "float32", "decoder_step": "float32"}
    data = generate(tmp_path / "fresh", n_train=0, n_val=0, n_test=60, seed=2028, style=quality_style())
    images = sorted((data / "images").glob("*.jpg"))
    shipped, float32 = Captioner.load(DEMO / "bundle"), Captioner.load(DEMO / "bundle-float32")
    same = [shipped.caption(load_image(p)).text == float32.caption(load_image(p)).text for p in images]
    assert sum(same) / len(same) >= 0.9


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


def test_the_readme_python_example_runs_on_the_demo_without_tensorflow():
    """The README's "From Python" block, as a user pastes it, from the repository root, with TensorFlow blocked."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    no_tf = BLOCK_TF.split("from scenecap.cli import main")[0]
    r = subprocess.run([sys.executable, "-c", no_tf + block], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    first, *changes = r.stdout.splitlines()
    assert first.split()[-1] in ("confident", "unsure") and len(first.split()) > 3
    assert changes and changes[0].split()[:2] == ["demo/video/walk.mp4#frame=0", "first"]
    assert all(line.split()[1] == "change" for line in changes[1:])
    assert "TensorFlow is not allowed" not in r.stderr


def test_shipped_quality_figures_hold_on_fresh_scenes(tmp_path):
    """demo/quality.json (quoted in the README) was measured on 200 held-out scenes of the style the bundle was
    trained on; 100 scenes drawn with another seed must give the same picture, within sampling error (about 3
    points at 200 objects; exact scenes, one per scene, about 5)."""
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.images import load_image
    from scenecap.train.datasets import load_coco
    from scenecap.train.metrics import caption_metrics
    from scenecap.train.synthetic import attribute_accuracy, colour_shape_accuracy, generate, object_scores

    data = generate(tmp_path / "fresh", n_train=0, n_val=0, n_test=100, seed=2027, style=quality_style())
    samples = load_coco(data / "captions_test.json")
    scenes = json.loads((data / "scenes_test.json").read_text(encoding="utf-8"))
    cap = Captioner.load(DEMO / "bundle")
    hyps = {s.image_id: cap.caption(load_image(s.image)).text for s in samples}
    bleu4 = caption_metrics({s.image_id: s.captions for s in samples}, hyps, meteor=False)["BLEU-4"]
    both = colour_shape_accuracy(hyps, scenes)
    colour, shape = attribute_accuracy(hyps, scenes, "colour"), attribute_accuracy(hyps, scenes, "shape")
    shipped = json.loads((DEMO / "quality.json").read_text(encoding="utf-8"))
    print(f"\ndemo bundle on 100 fresh scenes: BLEU-4 {bleu4:.3f} (shipped {shipped['BLEU-4']:.3f}), colour+shape "
          f"{both:.1%} ({shipped['colour_shape_accuracy']:.1%}), colour {colour:.1%}, shape {shape:.1%}")
    assert bleu4 >= shipped["BLEU-4"] - 0.08
    assert both >= shipped["colour_shape_accuracy"] - 0.10
    assert colour >= 0.8 and shape >= 0.5  # far above chance (20%, 25%): the shipped model sees both
    exact = object_scores(hyps, scenes)["exact_scenes"]
    print(f"scenes named exactly right (nothing missing or invented): {exact:.1%} ({shipped['exact_scenes']:.1%})")
    assert exact >= shipped["exact_scenes"] - 0.12


def quality_style() -> str:
    """The style the shipped bundle was trained on, as demo/quality.json records it."""
    return json.loads((DEMO / "quality.json").read_text(encoding="utf-8"))["style"]


def test_the_benchmark_measures_the_demo_model_s_dimensions():
    sys.path.insert(0, str(DEMO))
    try:
        from build_bundle import MODEL
    finally:
        sys.path.remove(str(DEMO))
    from scenecap.benchmarks.artefacts import SYNTH_MODEL

    assert SYNTH_MODEL == MODEL
