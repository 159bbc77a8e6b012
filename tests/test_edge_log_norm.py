"""log_norm (issue 13): a user exports a tiny model and converts float32, dynamic and int8 decoder steps. The float
ones compute each logits row's log-sum-exp in their graph (the decoder's `log_norm` output), so the caption loop
takes a word's log-probability as its logit minus log_norm, with no pass over the vocabulary in Python; the int8
one does not carry it (a quantised log_norm is too coarse) and the loop computes it in numpy, as before. Captions
are the same either way, and so are their log-probabilities to float32 rounding. An export made before log_norm
still converts, to bundles without it, and a bundle whose manifest does not list it runs the numpy path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from catalogue_helpers import one_line_error

from scenecap.edge.captioner import Captioner
from scenecap.edge.decode import log_softmax
from scenecap.edge.export_contract import LOG_NORM, SIGNATURES_REVISION
from scenecap.edge.images import load_image
from scenecap.edge.modelinfo import read_model
from scenecap.edge.preprocess import prepare

DECODERS = {"float32": "float32", "dynamic": "float32-dynamic", "int8": "float32-int8"}  # decoder -> bundle folder
NORM_OPS = {"REDUCE_MAX", "EXP", "SUM", "LOG"}


def scenecap(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scenecap", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def bundles(tiny_export, cache_dir) -> dict[str, Path]:
    """The tiny model's float32, dynamic and int8 decoder steps (float32 encoders), from one `scenecap convert`."""
    d, done = cache_dir(f"log_norm_bundles_sig{SIGNATURES_REVISION}")
    if not done:
        shutil.rmtree(d, ignore_errors=True)
        r = scenecap("convert", tiny_export, "--out", d / "b", "--quant", "float32,float32:dynamic,float32:int8",
                     "--calibration-count", "40")
        assert r.returncode == 0, r.stderr[-3000:]
        (d / ".done").touch()
    return {dec: d / "b" / name for dec, name in DECODERS.items()}


@pytest.fixture(scope="module")
def images(test_split) -> list[np.ndarray]:
    return [load_image(s.image) for s in test_split[0][:10]]


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def _without_log_norm(bundle: Path, dst: Path) -> Path:
    """A copy whose manifest does not list log_norm: what a bundle converted before it looks like to the runtime."""
    shutil.copytree(bundle, dst)
    m = _manifest(dst)
    del m["models"]["decoder_step"]["outputs"][LOG_NORM]
    (dst / "manifest.json").write_text(json.dumps(m, indent=2), encoding="utf-8")
    return dst


def test_the_export_says_it_has_the_log_norm_signatures(tiny_export):
    import tensorflow as tf

    sidecar = json.loads((tiny_export / "scenecap_export.json").read_text(encoding="utf-8"))
    assert sidecar["log_norm"] is True and sidecar["decoder_batches"] == [1, 3]
    sigs = tf.saved_model.load(str(tiny_export)).signatures
    assert {"decode_step_norm", "decode_step_norm_b3"} <= set(sigs)
    assert not any(s.startswith("decode_step_embedded_norm") for s in sigs)  # the integer decoders' steps: none
    out = sigs["decode_step_norm_b3"].structured_outputs
    assert set(out) == {"logits", "new_hidden", "attention", LOG_NORM} and out[LOG_NORM].shape == (3,)


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_float_decoders_carry_log_norm_and_the_int8_one_does_not(bundles, decoder):
    bundle = bundles[decoder]
    spec = _manifest(bundle)["models"]["decoder_step"]
    info = read_model(bundle / spec["file"])
    outputs = set(next(iter(info.signatures.values()))["outputs"])
    ops = {o.name for o in info.all_ops}
    if decoder == "int8":
        assert LOG_NORM not in spec["outputs"] and LOG_NORM not in outputs and not ops & {"REDUCE_MAX", "LOG"}
        return
    assert spec["outputs"][LOG_NORM] == {"name": LOG_NORM, "shape": [1], "dtype": "float32", "scale": 0.0,
                                         "zero_point": 0}
    assert LOG_NORM in outputs and NORM_OPS <= ops  # cheap builtins, no CUSTOM or flex op
    shown = scenecap("inspect", bundle)
    assert shown.returncode == 0 and "log_norm in the graph" in shown.stdout and f"out {LOG_NORM}" in shown.stdout


@pytest.mark.parametrize("decoder", ["float32", "dynamic"])
def test_log_norm_is_the_rows_log_sum_exp(bundles, decoder, images):
    """What the session hands the search: the graph's log_norm, numpy's log-sum-exp of the same logits."""
    cap = Captioner.load(bundles[decoder])
    m = cap.bundle.manifest
    with cap.start(cap.encode(prepare(images[0], m.preprocess))) as session:
        token, hidden = np.array([m.tokens["start"]], np.int32), session.hidden0()
        for _ in range(5):
            lg, hidden, _ = session.raw_step(token, hidden)
            z = lg.floats().astype(np.float64)
            want = np.log(np.exp(z - z.max()).sum()) + z.max()
            assert lg.log_norm.dtype == np.float32 and lg.log_norm.shape == (1,)
            assert float(lg.log_norm[0]) == pytest.approx(want, rel=1e-6, abs=1e-5)
            token = np.array([int(lg.raw[0].argmax())], np.int32)
            del lg  # a view of the decoder's output: dropped before the next invoke


@pytest.mark.parametrize("decoder", ["float32", "dynamic"])
@pytest.mark.parametrize("beam", [1, 3])
def test_captions_are_the_same_with_and_without_log_norm(bundles, decoder, beam, images, tmp_path):
    """The same bundle with log_norm listed and not (a new runtime reading an older bundle): identical words,
    log-probabilities equal to float32 rounding, and the numpy path's equal to a plain log-softmax."""
    with_norm = Captioner.load(bundles[decoder], beam=beam)
    plain = Captioner.load(_without_log_norm(bundles[decoder], tmp_path / "plain"), beam=beam)
    for img in images:
        a, b = with_norm.caption(img), plain.caption(img)
        assert a.tokens == b.tokens and a.text == b.text
        assert a.log_prob == pytest.approx(b.log_prob, rel=1e-6, abs=2e-5)
        assert a.confidence == pytest.approx(b.confidence, rel=1e-5)
        assert a.invokes == b.invokes


def test_greedy_log_probability_is_the_reference_loops(bundles, images):
    """Against a plain loop: every output dequantised, a whole log-softmax per word."""
    cap = Captioner.load(bundles["float32"])
    m = cap.bundle.manifest
    for img in images[:4]:
        c = cap.caption(img)
        feats = cap.encode(prepare(img, m.preprocess))
        with cap.start(feats) as session:
            token, hidden, total = m.tokens["start"], np.zeros((1, cap.units), np.float32), 0.0
            for t in c.hypothesis.tokens:
                logits, hidden, _ = session.step(np.array([token], np.int32), hidden)
                total += float(log_softmax(logits[0])[t])
                token = t
        assert c.log_prob == pytest.approx(total, rel=1e-6, abs=2e-5)


def test_an_export_from_before_log_norm_converts_to_bundles_without_it(tiny_export, bundles, images, tmp_path):
    """An export whose sidecar does not say it has the log_norm signatures (as every export before them): its
    float32 decoder is converted from decode_step, as always, and captions as the new one does."""
    old = tmp_path / "old-export"
    shutil.copytree(tiny_export, old)
    sidecar = json.loads((old / "scenecap_export.json").read_text(encoding="utf-8"))
    del sidecar["log_norm"]
    (old / "scenecap_export.json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    r = scenecap("convert", old, "--out", tmp_path / "b", "--quant", "float32")
    assert r.returncode == 0, r.stderr[-3000:]
    spec = _manifest(tmp_path / "b")["models"]["decoder_step"]
    assert set(spec["outputs"]) == {"logits", "new_hidden", "attention"}
    info = read_model(tmp_path / "b" / spec["file"])
    assert not {o.name for o in info.all_ops} & {"REDUCE_MAX", "LOG"}
    new, legacy = Captioner.load(bundles["float32"]), Captioner.load(tmp_path / "b")
    for img in images[:4]:
        a, b = new.caption(img), legacy.caption(img)
        assert a.tokens == b.tokens and a.log_prob == pytest.approx(b.log_prob, rel=1e-6, abs=2e-5)


@pytest.mark.parametrize("damage, expected", [
    (lambda o: o.update(shape=[2]), "log_norm is float32[2]; expected float32[1]"),
    (lambda o: o.update(dtype="int8", scale=0.1), "log_norm is int8[1]; expected float32[1]"),
])
def test_a_log_norm_of_the_wrong_shape_or_type_is_one_line(bundles, tmp_path, damage, expected):
    from scenecap.edge.bundle import load_bundle

    b = shutil.copytree(bundles["float32"], tmp_path / "b")
    m = _manifest(b)
    damage(m["models"]["decoder_step"]["outputs"][LOG_NORM])
    (b / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    one_line_error(lambda: load_bundle(b), "models.decoder_step output", expected)


def test_the_contract_names_the_norm_signatures_and_the_sidecar_says_whether_they_exist(tiny_export):
    from scenecap.edge.export_contract import ExportSidecar, decode_signature

    assert (decode_signature(1, log_norm=True), decode_signature(3, log_norm=True)) == (
        "decode_step_norm", "decode_step_norm_b3")
    with pytest.raises(ValueError):
        decode_signature(1, embedded=True, log_norm=True)  # the embedded steps are the integer decoders'
    data = json.loads((tiny_export / "scenecap_export.json").read_text(encoding="utf-8"))
    older = {k: v for k, v in data.items() if k != "log_norm"}
    assert ExportSidecar.from_json(older).log_norm is False
    assert ExportSidecar.from_json(older).to_json() == older  # an older sidecar reads back as it was written
    one_line_error(lambda: ExportSidecar.from_json({**data, "log_norm": "yes"}), "log_norm is 'yes'")
