"""Bundle format v1: the manifest is validated on load (required keys, types, shapes, file names, hashes), a newer
major version is refused, a newer minor one is read with its unknown keys kept. No TensorFlow needed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from catalogue_helpers import edit_manifest, manifest_set

from scenecap import ScenecapError
from scenecap.edge.bundle import FORMAT_VERSION, load_bundle, parse_manifest


@pytest.fixture()
def bundle(float_bundle, tmp_path):
    b = tmp_path / "bundle"
    shutil.copytree(float_bundle, b)
    return b


# Damaged bundles and manifests: tests/test_catalogue_bundles.py.


def test_newer_minor_version_loads_and_keeps_unknown_keys(bundle):
    def change(d):
        d["format_version"] = "1.9"
        d["future_feature"] = {"x": 1}
        d["models"]["encoder"]["future_model_key"] = [1, 2]
        d["decoder"]["future_decoder_key"] = "y"

    edit_manifest(bundle, change)
    m = load_bundle(bundle).manifest
    out = m.to_json()
    assert out["future_feature"] == {"x": 1}
    assert out["models"]["encoder"]["future_model_key"] == [1, 2]
    assert out["decoder"]["future_decoder_key"] == "y"
    assert parse_manifest(out).to_json() == out  # round trip, nothing lost


def test_a_written_manifest_round_trips_exactly(float_bundle):
    data = json.loads((float_bundle / "manifest.json").read_text(encoding="utf-8"))
    assert data["format_version"] == FORMAT_VERSION
    assert parse_manifest(data).to_json() == data


def test_edgetpu_embedding_table_is_validated(variant_bundles, tmp_path):
    b = tmp_path / "coral"
    shutil.copytree(variant_bundles["edgetpu"], b)
    load_bundle(b)
    edit_manifest(b, manifest_set("decoder", "embedding", "scale", 0.5))
    with pytest.raises(ScenecapError, match="decoder.embedding dtype/scale/zero_point differ"):
        load_bundle(b)
    shutil.rmtree(b)
    shutil.copytree(variant_bundles["edgetpu"], b)
    table = np.load(b / "embedding.npy")
    np.save(b / "embedding.npy", table.astype(np.float32))  # changed file: the hash refuses it first
    with pytest.raises(ScenecapError, match="embedding.npy: .*(does not match|the manifest says)"):
        load_bundle(b)
