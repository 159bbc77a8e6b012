"""The quality report (`scenecap eval`, `scenecap convert --report`) and the proof that the attention keys are
computed once per image: captions unchanged against a per-step W1 loop, and a decoder step of constant cost."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from scenecap.convert.report import ReportOptions, write_report
from scenecap.edge.captioner import Captioner
from scenecap.edge.modelinfo import fc_macs, read_model

N = 20


@pytest.fixture(scope="module")
def report(float_bundle, int8_bundle, variant_bundles, tiny_export, synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(ReportOptions(
        items=[str(float_bundle), str(int8_bundle), str(variant_bundles["edgetpu"]),
               str(variant_bundles["float16-dynamic"])],
        reference=str(tiny_export), out=str(out), annotations=str(synth_data / "captions_test.json"), count=N,
        progress=False))
    return paths, json.loads(paths["json"].read_text(encoding="utf-8"))


def test_report_measures_every_variant_against_the_float_savedmodel(report):
    paths, data = report
    rows = {r["path"].split("/")[-1] if r["kind"] == "savedmodel" else r["path"]: r for r in data["variants"]}
    assert data["images"] == N and data["decoding"] == "greedy"
    assert len(data["variants"]) == 5 and data["variants"][0]["kind"] == "savedmodel"
    ref = data["variants"][0]
    float_row = data["variants"][1]
    # The float32 bundle run by LiteRT is the SavedModel, token for token.
    assert float_row["agreement"] == 1.0 and float_row["BLEU-4"] == pytest.approx(ref["BLEU-4"])
    for r in data["variants"]:
        assert 0 < r["BLEU-4"] <= 1 and r["CIDEr-D"] > 0 and r["images"] == N
        assert r["encoder_ms_median"] > 0 and r["decoder_step_ms_median"] > 0 and r["total_bytes"] > 0
        assert 0 <= r["agreement"] <= 1
    assert data["variants"][2]["total_bytes"] < 0.4 * float_row["total_bytes"]  # int8
    assert rows  # every row is addressable by its path


def test_report_says_in_words_who_misses_the_target(report):
    paths, data = report
    md = paths["md"].read_text(encoding="utf-8")
    assert "| variant | encoder | decoder | BLEU-4 | CIDEr-D | agreement |" in md
    ref = data["variants"][0]
    for r, verdict in zip(data["variants"][1:], data["verdicts"], strict=True):
        if r["trivial"] or ref["trivial"]:  # a model no better than a constant caption never meets the target
            assert "NOT a working captioner" in verdict and "meets the target" not in verdict
            continue
        meets = r["agreement"] >= 0.95 and ref["BLEU-4"] - r["BLEU-4"] <= 0.01
        assert ("meets the target" in verdict) == meets and ("MISSES the target" in verdict) == (not meets)
        assert verdict in md
        if r["agreement"] < 0.95:
            assert f"only {r['agreement']:.1%} of images" in verdict


def test_report_chart_and_coco_results(report):
    paths, data = report
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 10_000
    results = sorted((paths["json"].parent / "results").glob("*.json"))
    assert len(results) == 5
    for f in results:
        entries = json.loads(f.read_text(encoding="utf-8"))
        assert len(entries) == N and all(set(e) == {"image_id", "caption"} and e["caption"] for e in entries)


def test_eval_command_on_a_bundle_with_beam_search(int8_bundle, tiny_export, synth_data, tmp_path):
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "scenecap", "eval", str(int8_bundle), "--reference", str(tiny_export),
                        "--annotations", str(synth_data / "captions_test.json"), "--count", "6", "--beam", "3",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "decoding: beam 3" in r.stdout and (out / "report.md").is_file()
    assert "## Does each model beat trivial baselines?" in r.stdout  # the constant-caption bar, in words
    assert "## Objects named (synthetic scenes)" in r.stdout  # scenes_test.json is beside the captions
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [v["kind"] for v in data["variants"]] == ["savedmodel", "bundle"]


def test_attention_keys_once_per_image_give_the_same_captions_as_a_per_step_w1(tiny_run, float_bundle, test_split):
    """Reference loop that recomputes W1 . features at every word (the textbook Bahdanau step) vs the bundle."""
    from keras import ops

    from scenecap.edge.images import load_image
    from scenecap.edge.preprocess import prepare
    from scenecap.train.trainer import load_trained

    model, cfg, vocab = load_trained(tiny_run)
    edge = Captioner.load(float_bundle)
    for s in test_split[0][:8]:
        image = prepare(load_image(s.image), cfg.preprocess)
        features = model.project(model.feature_map(image[None]))[0]
        hidden = ops.zeros((1, cfg.model.units))
        token, out = np.array([vocab.start], np.int32), []
        for _ in range(cfg.model.max_length - 1):
            keys = model.W1(features)  # per step, as if nothing were cached
            logits, hidden, _ = model.step(ops.convert_to_tensor(token), hidden, features, keys)
            best = int(np.argmax(ops.convert_to_numpy(logits)[0]))
            if best == vocab.end:
                break
            out.append(best)
            token = np.array([best], np.int32)
        assert edge.caption(s.image).tokens == out, s.image


def test_decoder_step_cost_is_constant_in_caption_length(float_bundle, int8_bundle, variant_bundles):
    """Every invoke runs the same fixed-shape graph with no W1 projection of the features inside it."""
    from scenecap.edge.bundle import read_manifest

    for bundle in (float_bundle, int8_bundle, variant_bundles["edgetpu"]):
        m = read_manifest(bundle)
        info = read_model(bundle / m.models["decoder_step"].file)
        assert not any(t.dynamic for t in info.tensors)  # no shape that could grow with the caption
        d = m.model
        a, u, L = d.attention_dim, d.units, d.locations
        # W2 . hidden, V . tanh(keys + query) over L locations, the GRU's input and recurrent kernels, fc1, fc2;
        # a float step scores with MUL+SUM instead of V's one-unit FULLY_CONNECTED (convert/single_output_dense.py).
        score = 0 if m.models["decoder_step"].quant in ("float32", "float16", "dynamic") else L * a
        expected = a * u + score + 3 * u * (d.feature_dim + d.embed_dim) + 3 * u * u + d.fc_units * u + \
            d.vocab_size * d.fc_units
        assert fc_macs(info) == expected
        for op in info.operators:  # W1 (A x E over L locations) would be the one FC of A outputs over L rows
            if op.name == "FULLY_CONNECTED":
                x, w = info.tensor(op.inputs[0]), info.tensor(op.inputs[1])
                rows = int(np.prod(x.shape[:-1]))
                assert not (w.shape[0] == a and rows == L * m.decoder_batch), "W1 runs inside the decoder step"
