"""Decoder-step recipes (issue 13): at `scenecap train`'s default sizes a full-integer decoder step changes the
captions (and int16x8 collapses them); the recommended CPU recipe, a dynamic-range decoder step, and the
selective int8-mixed one keep the float32 bundle's captions. Measured in benchmarks/results/decoder-recipes.md.

A model that has collapsed to a few captions cannot pass these bounds: it agrees with float32 on at most the share
of images whose float caption is the most common one, and it has few distinct captions.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

# The bounds, measured (200 held-out scenes, float32 encoder): the default-size model's dynamic decoder agrees
# 94%, int8-mixed 92.5%, int8 28%, int16x8 17.5%; the tiny model's 95%, 92%, 61%, 97%. The test's own
# default-size model (40 scenes): dynamic 95%, int8-mixed 92.5%, int8 45%, int16x8 25% (5 distinct of 8).
MIN_AGREEMENT = 0.8
MIN_DISTINCT_SHARE = 0.8  # distinct captions, as a share of the float32 bundle's


@pytest.fixture(scope="session")
def default_size_export(synth_data, cache_dir) -> Path:
    """`scenecap train`'s default model sizes (embed 256, GRU 512, attention 512, alpha 0.35, 96 px) at stride 8
    (144 locations, as the demo), trained briefly on the tiny scenes (about 2-3 minutes on 2 cores), then exported.
    Batch 8 for 500 updates: at batch 16-32 for 150 the model still gives 1-2 captions whatever the image, and at
    300 (3 epochs) it gave 5 distinct captions over 8 scenes on one machine and 1-2 over 40 on another (seeds 1
    and 2); at 500 it gave 15 over 40 there."""
    from scenecap.train.export import export_run
    from scenecap.train.model import ModelConfig
    from scenecap.train.trainer import TrainConfig, run

    d, done = cache_dir("default_size_v3")
    if not done:
        shutil.rmtree(d, ignore_errors=True)
        model = ModelConfig(vocab_size=0, max_length=32, feature_stride=8)
        cfg = TrainConfig(train=str(synth_data / "captions_train.json"), out=str(d / "run"), epochs=5,
                          batch_size=8, learning_rate=2e-3, seed=1, val_caption_images=0, model=model)
        run(cfg, progress=False)
        export_run(d / "run", d / "export", force=True)
        (d / ".done").touch()
    return d / "export"


def _bundles(export: Path, out: Path, decoders: list[str]) -> dict[str, Path]:
    """One bundle per decoder recipe beside a float32 one, all with the float32 encoder (the decoder alone)."""
    from scenecap.convert.run import ConvertOptions, convert_variants

    pairs = [("float32", "float32"), *(("float32", d) for d in decoders)]
    results = convert_variants(ConvertOptions(export=str(export), out=str(out), calibration_count=40,
                                              calibration_steps=300, force=True), pairs)
    return {r.decoder_quant: r.path for r in results}


def _captions(bundle: Path, frames: list[np.ndarray]) -> list[tuple[int, ...]]:
    from scenecap.edge.captioner import Captioner

    cap = Captioner.load(bundle)
    return [tuple(cap.caption(f).tokens) for f in frames]


def _check_keeps_float(bundles: dict[str, Path], frames: list[np.ndarray], recipe: str) -> None:
    ref, got = _captions(bundles["float32"], frames), _captions(bundles[recipe], frames)
    collapsed_bound = Counter(ref).most_common(1)[0][1] / len(ref)  # what a constant caption would agree on
    assert len(set(ref)) >= 5, f"the float32 model itself gives {len(set(ref))} distinct captions"
    agreement = float(np.mean([a == b for a, b in zip(ref, got, strict=True)]))
    assert agreement >= max(MIN_AGREEMENT, collapsed_bound + 0.2), (recipe, agreement, collapsed_bound)
    assert len(set(got)) >= MIN_DISTINCT_SHARE * len(set(ref)), (recipe, len(set(got)), len(set(ref)))


@pytest.fixture(scope="session")
def held_out_frames(test_split) -> list[np.ndarray]:
    from scenecap.edge.images import load_image

    samples, _ = test_split
    return [load_image(s.image) for s in samples[:40]]


@pytest.fixture(scope="session")
def default_size_bundles(default_size_export, tmp_path_factory) -> dict[str, Path]:
    return _bundles(default_size_export, tmp_path_factory.mktemp("default_size_bundles"), ["dynamic", "int8-mixed"])


@pytest.fixture(scope="session")
def tiny_recipe_bundles(tiny_export, tmp_path_factory) -> dict[str, Path]:
    return _bundles(tiny_export, tmp_path_factory.mktemp("tiny_recipe_bundles"),
                    ["dynamic", "int8-mixed", "int8-fstate", "int8-fattn", "edgetpu"])


@pytest.mark.parametrize("recipe", ["dynamic", "int8-mixed"])
def test_default_size_decoder_keeps_float_captions(default_size_bundles, held_out_frames, recipe):
    _check_keeps_float(default_size_bundles, held_out_frames, recipe)


@pytest.mark.parametrize("recipe", ["dynamic", "int8-mixed"])
def test_tiny_decoder_keeps_float_captions(tiny_recipe_bundles, held_out_frames, recipe):
    _check_keeps_float(tiny_recipe_bundles, held_out_frames, recipe)


def test_selective_recipes_float_only_what_they_name(tiny_recipe_bundles):
    """Each recipe's edges as the manifest records them (the Captioner reads them per tensor): the carried state is
    float32 when the state part is float, the attention keys stay int8 (quantised once per image, not per step),
    and the int8 weights come back in the float layers (no bigger than an int8 step)."""
    from scenecap.edge.bundle import load_bundle

    def spec(recipe):
        return load_bundle(tiny_recipe_bundles[recipe]).manifest.models["decoder_step"]

    for recipe, state_float, attention_float in (("int8-fstate", True, False), ("int8-fattn", False, True),
                                                 ("int8-mixed", True, True)):
        s = spec(recipe)
        assert s.quant == recipe
        assert (s.inputs["hidden"].dtype == "float32") == state_float
        assert (s.outputs["new_hidden"].dtype == "float32") == state_float
        assert (s.outputs["attention"].dtype == "float32") == attention_float
        assert s.inputs["keys"].dtype == "int8"  # the attention scores over every location stay int8
        # the features feed only the weighted sum: float where that is float, set once per image either way
        assert (s.inputs["features"].dtype == "float32") == attention_float
    assert spec("int8-mixed").outputs["logits"].dtype == "float32"  # its output layers are float
    # log_norm only where the whole step is float (dynamic): never beside int8 parts, nor on the Edge TPU
    assert {r: "log_norm" in spec(r).outputs for r in ("dynamic", "int8-mixed", "int8-fstate", "int8-fattn",
                                                        "edgetpu")} == {"dynamic": True, "int8-mixed": False,
                                                                        "int8-fstate": False, "int8-fattn": False,
                                                                        "edgetpu": False}
    float_size = (tiny_recipe_bundles["float32"] / "decoder_step.tflite").stat().st_size
    assert (tiny_recipe_bundles["int8-mixed"] / "decoder_step.tflite").stat().st_size < 0.4 * float_size


def test_edgetpu_decoder_carries_its_state_raw_and_resolves_the_winning_logits(tiny_recipe_bundles):
    """The all-integer decoder's hidden state has one symmetric range in and out (it goes back in as it came out)
    and its logits' range starts at 0 (the int8 steps go to the words that can win)."""
    from scenecap.edge.bundle import load_bundle

    s = load_bundle(tiny_recipe_bundles["edgetpu"]).manifest.models["decoder_step"]
    h, nh, logits = s.inputs["hidden"], s.outputs["new_hidden"], s.outputs["logits"]
    assert (h.dtype, h.scale, h.zero_point) == (nh.dtype, nh.scale, nh.zero_point)
    assert abs(h.zero_point) <= 1
    assert logits.dtype == "int8" and logits.zero_point == -128


def test_tflite_runtime_214_gets_the_per_tensor_mixed_decoder(tiny_export, tmp_path):
    """tflite-runtime 2.14 has no per-channel hybrid FULLY_CONNECTED (v12): the mixed decoder falls back to one
    weight scale per layer (v9) and says so."""
    from scenecap.convert.compat import candidates, get_target
    from scenecap.convert.run import ConvertOptions, convert_variants

    chain, _ = candidates("int8-mixed", get_target("tflite-runtime-2.14"))
    assert [str(v) for v in chain][:2] == ["int8-mixed", "int8-mixed with per-tensor dense weights"]
    [r] = convert_variants(ConvertOptions(export=str(tiny_export), out=str(tmp_path / "b"), calibration_count=20,
                                          calibration_steps=100, target_runtime="tflite-runtime-2.14"),
                           [("float32", "int8-mixed")])
    assert any("per-tensor dense weights used for tflite-runtime-2.14" in c for c in r.changes), r.changes


def test_float_decoders_score_attention_without_a_one_unit_dense_layer(tiny_recipe_bundles):
    """The attention's score layer (one output unit) runs as MUL+SUM in every float decoder step (float32,
    dynamic), where XNNPACK's matrix kernels would waste most of their work on it; the Edge TPU step keeps its
    integer FULLY_CONNECTED (the compiler maps it)."""
    from scenecap.convert import flatbuffer as fb
    from scenecap.convert.single_output_dense import reduce_single_output_dense

    for recipe in ("float32", "dynamic"):
        model = (tiny_recipe_bundles[recipe] / "decoder_step.tflite").read_bytes()
        assert reduce_single_output_dense(model)[1] == 0, recipe  # nothing left to rewrite
        assert "SUM" in fb.Graph(fb.unpack(model)).kinds
    edgetpu = fb.unpack((tiny_recipe_bundles["edgetpu"] / "decoder_step.tflite").read_bytes())
    g = fb.Graph(edgetpu)
    one_unit = [i for i, k in enumerate(g.kinds) if k == "FULLY_CONNECTED"
                and int(g.sg.tensors[g.op_inputs(i)[1]].shape[0]) == 1]
    assert one_unit, "the Edge TPU step's score layer should stay a FULLY_CONNECTED"


def test_one_unit_dense_as_multiply_sum_gives_the_same_outputs(tmp_path):
    """The rewrite on a graph of its own: a score layer over locations (3-D, with bias) and a 2-D one without,
    beside a dense layer of 8 units left alone; the outputs agree to float rounding."""
    import tensorflow as tf

    from scenecap.convert import flatbuffer as fb
    from scenecap.convert.single_output_dense import reduce_single_output_dense
    from scenecap.edge.interpreter import find_runtime

    rng = np.random.default_rng(3)
    v, b = tf.constant(rng.normal(size=(24, 1)), tf.float32), tf.constant([0.7])
    u, w8 = tf.constant(rng.normal(size=(24, 1)), tf.float32), tf.constant(rng.normal(size=(24, 8)), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec((1, 40, 24), tf.float32), tf.TensorSpec((1, 24), tf.float32)])
    def graph(t, h):
        score = tf.tensordot(tf.tanh(t), v, 1) + b
        return {"score": tf.nn.softmax(score, axis=1), "plain": tf.matmul(h, u), "wide": tf.matmul(h, w8)}

    module = tf.Module()
    module.graph = graph
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"graph": graph})
    before = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"), signature_keys=["graph"]).convert()
    after, rewritten = reduce_single_output_dense(before)
    assert rewritten == 2
    kinds = fb.Graph(fb.unpack(after)).kinds
    assert kinds.count("FULLY_CONNECTED") == 1 and kinds.count("SUM") == 2  # the 8-unit layer stays
    assert reduce_single_output_dense(after) == (after, 0)
    inputs = {"t": rng.normal(size=(1, 40, 24)).astype(np.float32), "h": rng.normal(size=(1, 24)).astype(np.float32)}
    outs = []
    for model in (before, after):
        runner = find_runtime().interpreter_cls(model_content=model).get_signature_runner()
        outs.append(runner(**inputs))
    for name in ("score", "plain", "wide"):
        np.testing.assert_allclose(outs[1][name], outs[0][name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_decoder_embedding_lookup_reads_the_token_without_the_negative_id_wrap(tiny_recipe_bundles, tmp_path):
    """Keras's lookup wraps negative ids with LESS/ADD/SELECT, which XNNPACK does not run: the converted decoder
    steps gather the token's row directly, and on a graph of its own the lookup gives the same rows for every id."""
    import tensorflow as tf

    from scenecap.convert import flatbuffer as fb
    from scenecap.convert.token_lookup import drop_negative_index_wrap
    from scenecap.edge.interpreter import find_runtime

    for recipe in ("float32", "dynamic", "int8-mixed"):
        kinds = fb.Graph(fb.unpack((tiny_recipe_bundles[recipe] / "decoder_step.tflite").read_bytes())).kinds
        assert "GATHER" in kinds and "SELECT" not in kinds and "LESS" not in kinds, (recipe, kinds)

    import keras

    table = tf.constant(np.random.default_rng(4).normal(size=(11, 4)), tf.float32)
    module = tf.Module()
    module.lookup = tf.function(lambda token: {"row": keras.ops.take(table, token, axis=0)},  # as Embedding does
                                input_signature=[tf.TensorSpec((1,), tf.int32, name="token")])
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"lookup": module.lookup})
    before = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"), signature_keys=["lookup"]).convert()
    assert "SELECT" in fb.Graph(fb.unpack(before)).kinds  # what Keras writes
    after, changed = drop_negative_index_wrap(before)
    kinds = fb.Graph(fb.unpack(after)).kinds
    assert changed == 1 and "GATHER" in kinds and not {"LESS", "ADD", "SELECT"} & set(kinds), kinds
    runners = [find_runtime().interpreter_cls(model_content=m).get_signature_runner() for m in (before, after)]
    for token in range(11):
        rows = [r(token=np.array([token], np.int32))["row"] for r in runners]
        np.testing.assert_array_equal(rows[1], rows[0])
