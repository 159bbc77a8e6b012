"""Shared fixtures: one tiny model trained for real on synthetic scenes, exported and converted, reused by
the tests that need a trained model (training is the slow part; everything after it is fast).

Set SCENECAP_TEST_CACHE=DIR to keep these artefacts between local runs (CI never sets it).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from scenecap.edge.export_contract import SIGNATURES_REVISION

ROOT = Path(__file__).resolve().parents[1]

# Small enough to train in about two minutes on 2 cores, big enough to learn colours and shapes.
TINY = dict(n_train=800, n_val=60, n_test=60, image_size=64, units=128, embed_dim=64, attention_units=64,
            epochs=8, max_length=32, batch_size=32, learning_rate=3e-3,
            feature_stride=8)  # 8x8 locations at 64 px: learns colours and shapes ~3x faster than the last map


def _cache_dir(tmp_path_factory, name: str) -> tuple[Path, bool]:
    """(folder, already built?)"""
    root = os.environ.get("SCENECAP_TEST_CACHE")
    if root:
        d = Path(root) / name
        return d, (d / ".done").exists()
    return tmp_path_factory.mktemp(name), False


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """cache_dir(name) -> (folder, already built?): a test's own artefact, kept under SCENECAP_TEST_CACHE."""
    return lambda name: _cache_dir(tmp_path_factory, name)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    from scenecap.train.synthetic import generate

    d, done = _cache_dir(tmp_path_factory, "synth_en")
    if not done:
        shutil.rmtree(d, ignore_errors=True)
        # The classic style: the tiny model is here to exercise the whole path with a model that has measurably
        # learnt something in a CI budget; the varied default (harder on purpose) leaves it too little margin.
        generate(d, TINY["n_train"], TINY["n_val"], TINY["n_test"], seed=7, lang="en", style="classic")
        (d / ".done").touch()
    return d


@pytest.fixture(scope="session")
def tiny_run(synth_data, tmp_path_factory) -> Path:
    """A training run folder: a tiny captioner trained on the synthetic scenes."""
    from scenecap.train.model import ModelConfig
    from scenecap.train.trainer import TrainConfig, run

    d, done = _cache_dir(tmp_path_factory, "tiny_run")
    if not done:
        shutil.rmtree(d, ignore_errors=True)
        model = ModelConfig(vocab_size=0, image_size=TINY["image_size"], alpha=0.35, embed_dim=TINY["embed_dim"],
                            units=TINY["units"], attention_units=TINY["attention_units"], fc_units=TINY["units"],
                            max_length=TINY["max_length"], feature_stride=TINY["feature_stride"])
        cfg = TrainConfig(train=str(synth_data / "captions_train.json"), val=str(synth_data / "captions_val.json"),
                          out=str(d), epochs=TINY["epochs"], batch_size=TINY["batch_size"],
                          learning_rate=TINY["learning_rate"], seed=1, model=model)
        run(cfg)
        (d / ".done").touch()
    return d


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    from scenecap.train.export import export_run

    # Keyed on the export's signatures (3: with decode_step_norm): a cached export never lacks what convert uses.
    d, done = _cache_dir(tmp_path_factory, f"tiny_export_v{SIGNATURES_REVISION}")
    if not done:
        export_run(tiny_run, d / "export", decoder_batches=(1, 3), force=True)
        (d / ".done").touch()
    return d / "export"


def _bundle(tiny_export, tmp_path_factory, quant: str, batch: int = 1) -> Path:
    """quant: one for both models, or ENC:DEC (int8:int16x8)."""
    from scenecap.convert.run import ConvertOptions, convert

    enc, _, dec = quant.partition(":")
    d, done = _cache_dir(tmp_path_factory, f"bundle_{quant.replace(':', '-')}_b{batch}_sig{SIGNATURES_REVISION}")
    if not done:
        convert(ConvertOptions(export=str(tiny_export), out=str(d / "bundle"), encoder_quant=enc,
                               decoder_quant=dec or enc, decoder_batch=batch, calibration_count=60, force=True))
        (d / ".done").touch()
    return d / "bundle"


@pytest.fixture(scope="session")
def make_bundle(tiny_export, tmp_path_factory) -> Callable[..., Path]:
    """make_bundle(quant, batch=1): the tiny model as a bundle of that quantisation and decoder batch, converted
    once per session (or once per cache)."""
    return functools.partial(_bundle, tiny_export, tmp_path_factory)


@pytest.fixture(scope="session")
def float_bundle(make_bundle) -> Path:
    return make_bundle("float32")


@pytest.fixture(scope="session")
def int8_bundle(make_bundle) -> Path:
    return make_bundle("int8")


@pytest.fixture(scope="session")
def float_bundle_b3(make_bundle) -> Path:
    """float32 with a batch-3 decoder: three beams advance in one invoke."""
    return make_bundle("float32", batch=3)


@pytest.fixture
def copy_bundle(tmp_path) -> Callable[..., Path]:
    """copy_bundle(source, name="bundle"): a copy of a bundle folder at tmp_path/name, for a test to change
    (the session's bundles and the shipped demo are shared by every test)."""

    def copy(source: Path, name: str = "bundle") -> Path:
        dst = tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def variant_bundles(tiny_export, tmp_path_factory) -> dict[str, Path]:
    """More variants of the tiny model, each model converted once: a float16 encoder with a dynamic-range decoder
    (which tflite-runtime 2.14 cannot load), the Edge TPU pair, and dynamic-range for tflite-runtime 2.14."""
    from scenecap.convert.run import ConvertOptions, convert_variants

    d, done = _cache_dir(tmp_path_factory, f"variant_bundles_sig{SIGNATURES_REVISION}")
    if not done:
        convert_variants(ConvertOptions(export=str(tiny_export), out=str(d / "litert"), calibration_count=60,
                                        force=True), [("float16", "dynamic"), ("edgetpu", "edgetpu")])
        convert_variants(ConvertOptions(export=str(tiny_export), out=str(d / "dynamic-tflite214"), force=True,
                                        target_runtime="tflite-runtime-2.14"), [("dynamic", "dynamic")])
        (d / ".done").touch()
    return {"float16-dynamic": d / "litert" / "float16-dynamic", "edgetpu": d / "litert" / "edgetpu",
            "dynamic-tflite214": d / "dynamic-tflite214"}


@pytest.fixture(scope="session")
def test_split(synth_data):
    """(samples, scenes) of the held-out synthetic test split."""
    import json

    from scenecap.train.datasets import load_coco

    samples = load_coco(synth_data / "captions_test.json")
    scenes = json.loads((synth_data / "scenes_test.json").read_text(encoding="utf-8"))
    return samples, scenes


@pytest.fixture(scope="session")
def demo_bundle() -> Path:
    return ROOT / "demo" / "bundle"


@pytest.fixture
def flickr_dir(tmp_path):
    """A Flickr-style folder: Images/ with three small JPEGs (annotation files are the tests' own)."""
    from catalogue_helpers import write_image

    for name in ("1000_a.jpg", "1001_b.jpg", "1002_c.jpg"):
        write_image(tmp_path / "Images" / name)
    return tmp_path
