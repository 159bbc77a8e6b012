"""A user's session: synthetic data -> train -> export -> convert -> caption, checking what a user would check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from edge_helpers import BLOCK_TF

from scenecap.edge.captioner import Captioner
from scenecap.edge.images import load_image
from scenecap.train.synthetic import attribute_accuracy, colour_shape_accuracy, position_accuracy

N_HELD_OUT = 40


def _captions(bundle, samples):
    cap = Captioner.load(bundle)
    return {s.image_id: cap.caption(load_image(s.image)) for s in samples}


def _savedmodel_tokens(export_dir, image, tokens, max_length, units):
    """Loop the exported decode_step signature by hand, as a TensorFlow Serving user would."""
    import tensorflow as tf

    sm = tf.saved_model.load(str(export_dir))
    enc = sm.signatures["encode"](image=tf.constant(image[None]))
    hidden = tf.zeros((1, units))
    token = tf.constant([tokens["start"]], tf.int32)
    out = []
    for _ in range(max_length - 1):
        r = sm.signatures["decode_step"](token=token, hidden=hidden, features=enc["features"], keys=enc["keys"])
        best = int(np.argmax(r["logits"].numpy()[0]))
        out.append(best)
        if best == tokens["end"]:
            break
        token, hidden = tf.constant([best], tf.int32), r["new_hidden"]
    return out


def test_keras_savedmodel_and_float_bundle_give_identical_tokens(tiny_run, tiny_export, float_bundle, test_split):
    from scenecap.edge.preprocess import prepare
    from scenecap.train.trainer import load_trained

    model, cfg, vocab = load_trained(tiny_run)
    samples = test_split[0][:12]
    edge = Captioner.load(float_bundle)
    for s in samples:
        image = prepare(load_image(s.image), cfg.preprocess)
        keras_tokens = model.greedy_caption(image, vocab.start, vocab.end)
        sm_tokens = _savedmodel_tokens(tiny_export, image, vocab.ids, cfg.model.max_length, cfg.model.units)
        edge_tokens = edge.caption(load_image(s.image)).tokens
        assert sm_tokens == keras_tokens, s.image
        assert edge_tokens == [t for t in keras_tokens if t != vocab.end], s.image


def test_tiny_model_learns_from_the_image(float_bundle, test_split):
    """A tiny model trained for 200 steps names where the objects are and their colours, clearly above what a
    model blind to the image can reach. Shapes come later: measured here 30% (chance 25%) after 200 steps, and a
    plain shape classifier on the same backbone reaches only ~50% in as many; the shipped demo bundle, trained
    longer, is held to shapes in test_demo.py."""
    samples, scenes = test_split
    caps = {k: c.text for k, c in _captions(float_bundle, samples[:N_HELD_OUT]).items()}
    held = scenes[:N_HELD_OUT]
    pos, both = position_accuracy(caps, held), colour_shape_accuracy(caps, held)
    colour, shape = attribute_accuracy(caps, held, "colour"), attribute_accuracy(caps, held, "shape")
    print(f"\ntiny float model on {N_HELD_OUT} held-out scenes, objects named right: position {pos:.0%} (chance 11%), "
          f"colour {colour:.0%} (20%), shape {shape:.0%} (25%), colour+shape {both:.0%} (5%)")
    # A model blind to the image can at best always name the commonest value: 1 in 9 positions, 1 in 5 colours,
    # 1 in 4 shapes, 1 in 20 pairs (the dataset draws each uniformly).
    assert pos >= 0.45
    assert colour >= 0.45  # measured 63%
    assert both >= 0.12  # measured 22%; a model naming colours right and shapes at random gets ~ colour / 4
    assert len(set(caps.values())) > N_HELD_OUT // 4  # captions depend on the image


def test_int8_bundle_agrees_with_float(float_bundle, int8_bundle, test_split):
    samples, scenes = test_split
    f = _captions(float_bundle, samples[:N_HELD_OUT])
    q = _captions(int8_bundle, samples[:N_HELD_OUT])
    agree = np.mean([f[k].tokens == q[k].tokens for k in f])
    acc_f = colour_shape_accuracy({k: c.text for k, c in f.items()}, scenes[:N_HELD_OUT])
    acc_q = colour_shape_accuracy({k: c.text for k, c in q.items()}, scenes[:N_HELD_OUT])
    print(f"\nint8 vs float: identical tokens on {agree:.0%} of {N_HELD_OUT} images; "
          f"colour+shape float {acc_f:.1%}, int8 {acc_q:.1%}")
    # Measured 47-62% on this tiny model across clean runs (its near-flat logits tie in int8; see issue 5's
    # report). A broken quantisation agrees on next to none; the "most" is not yet reliable here.
    assert agree >= 0.3
    assert acc_q >= acc_f - 0.10


def test_int8_bundle_is_much_smaller(float_bundle, int8_bundle):
    from scenecap.edge.bundle import read_manifest

    def size(b):
        m = read_manifest(b)
        return sum(m.files[s.file].bytes for s in m.models.values())

    assert size(int8_bundle) < 0.4 * size(float_bundle)


def test_train_and_edge_preprocessing_see_the_same_pixels(synth_data, float_bundle):
    """The tf.data pipeline and the edge runtime resize identically (at most 1 grey level apart)."""
    from scenecap.edge.bundle import read_manifest
    from scenecap.edge.preprocess import prepare
    from scenecap.train.pipeline import image_dataset

    spec = read_manifest(float_bundle).preprocess
    paths = sorted((synth_data / "images").glob("test_*.jpg"))[:10]
    for path, train_img in zip(paths, image_dataset([str(p) for p in paths], spec).as_numpy_iterator(), strict=True):
        edge_img = prepare(load_image(path), spec)
        assert train_img.shape == edge_img.shape
        assert np.abs(train_img.astype(int) - edge_img.astype(int)).max() <= 1


def test_caption_command_never_imports_tensorflow(int8_bundle, test_split, tmp_path):
    samples = test_split[0][:3]
    out = tmp_path / "caps.jsonl"
    r = subprocess.run([sys.executable, "-c", BLOCK_TF, "caption", *[str(s.image) for s in samples],
                        "--bundle", str(int8_bundle), "--jsonl", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and all("\t" in line and line.split("\t")[1] for line in lines)
    recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["source"] for r in recs] == [str(s.image) for s in samples]
    for rec in recs:
        assert rec["caption"] and rec["tokens"]
        assert {"preprocess", "encoder", "decoder", "total"} <= set(rec["latency_ms"])


def test_export_and_convert_print_only_their_own_lines_unless_verbose(tiny_run, tiny_export, tmp_path):
    """No TensorFlow, CUDA or converter chatter on a plain run ('failed call to cuInit', oneDNN notices,
    'fully_quantize: 0, inference_type: 6', 'Assets written to'); with -v TensorFlow's own lines show."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL")}

    def scenecap(*args):
        r = subprocess.run([sys.executable, "-m", "scenecap", *args], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stderr.splitlines()

    runs = {
        "export": scenecap("export", str(tiny_run), "--out", str(tmp_path / "export")),
        "convert": scenecap("convert", str(tiny_export), "--out", str(tmp_path / "bundle"), "--quant", "int8",
                            "--calibration-count", "8"),
    }
    for command, lines in runs.items():
        foreign = [line for line in lines if not line.startswith(("INFO scenecap", "WARNING scenecap"))]
        assert not foreign, f"scenecap {command} printed: {foreign[:5]}"
    verbose = scenecap("-v", "export", str(tiny_run), "--out", str(tmp_path / "export"), "--force")
    assert any("Assets written to" in line for line in verbose)  # shown when asked for, not lost
