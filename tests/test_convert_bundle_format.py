"""Bundle format v1: the manifest is validated on load (required keys, types, shapes, file names, hashes), a newer
major version is refused, a newer minor one is read with its unknown keys kept. No TensorFlow needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from scenecap import ScenecapError
from scenecap.edge.bundle import FORMAT_VERSION, load_bundle, parse_manifest


@pytest.fixture()
def bundle(float_bundle, tmp_path):
    b = tmp_path / "bundle"
    shutil.copytree(float_bundle, b)
    return b


def _edit(bundle, change) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _set(*keys_value):
    *keys, value = keys_value

    def change(d):
        for k in keys[:-1]:
            d = d[k]
        if value is DELETE:
            del d[keys[-1]]
        else:
            d[keys[-1]] = value

    return change


DELETE = object()
DAMAGE = {
    "missing tokens": (_set("tokens", DELETE), "missing required key 'tokens'"),
    "max_length text": (_set("max_length", "24"), "'max_length' is str; expected int"),
    "no decoder model": (_set("models", "decoder_step", DELETE), "models.decoder_step missing"),
    "quant unknown": (_set("models", "encoder", "quant", "int4"), "models.encoder.quant 'int4'"),
    "shape not ints": (_set("models", "encoder", "outputs", "features", "shape", [1, "4", 64]), "shape"),
    "batch vs hidden": (_set("decoder", "batch", 2), "input hidden (decoder.batch 2) has shape"),
    "image vs preprocess": (_set("preprocess", "height", 32), "preprocess says [1, 32,"),
    "vocab size": (_set("model", "vocab_size", 999), "model.vocab_size is 999 but the models use"),
    "token outside vocab": (_set("tokens", "end", 5000), "tokens.end = 5000 is outside the vocabulary"),
    "escaping file name": (_set("models", "encoder", "file", "../../etc/passwd"), "plain file name"),
    "bad sha": (_set("files", "vocab.json", "sha256", "abc"), "64 hex digits"),
    "negative scale": (_set("models", "decoder_step", "inputs", "hidden", "scale", -1.0), "scale -1.0"),
    "bad op entry": (_set("models", "encoder", "ops", ["CONV_2D"]), "'OP_NAME:vN'"),
    "newer major": (_set("format_version", "2.0"), "newer than this runtime reads"),
    "not a bundle": (_set("format", "something-else"), "'format' is 'something-else'"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_bad_manifest_is_refused_in_one_line_naming_what(bundle, case):
    change, expected = DAMAGE[case]
    _edit(bundle, change)
    with pytest.raises(ScenecapError) as e:
        load_bundle(bundle)
    msg = str(e.value)
    assert "\n" not in msg and "manifest.json" in msg and expected in msg, msg


def test_newer_minor_version_loads_and_keeps_unknown_keys(bundle):
    def change(d):
        d["format_version"] = "1.9"
        d["future_feature"] = {"x": 1}
        d["models"]["encoder"]["future_model_key"] = [1, 2]
        d["decoder"]["future_decoder_key"] = "y"

    _edit(bundle, change)
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


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "extra_file_missing"])
def test_files_are_checked_by_size_and_hash(bundle, damage):
    model = bundle / "decoder_step.tflite"
    if damage == "flip_byte":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 1
        model.write_bytes(bytes(data))
        expected = "does not match the manifest"
    elif damage == "truncate":
        model.write_bytes(model.read_bytes()[:1000])
        expected = "bytes; the manifest says"
    else:
        _edit(bundle, _set("files", "notes.txt", {"sha256": "0" * 64, "bytes": 3}))
        expected = "notes.txt: missing from the bundle"
    with pytest.raises(ScenecapError, match=expected):
        load_bundle(bundle)


def test_edgetpu_embedding_table_is_validated(variant_bundles, tmp_path):
    b = tmp_path / "coral"
    shutil.copytree(variant_bundles["edgetpu"], b)
    load_bundle(b)
    _edit(b, _set("decoder", "embedding", "scale", 0.5))
    with pytest.raises(ScenecapError, match="decoder.embedding dtype/scale/zero_point differ"):
        load_bundle(b)
    shutil.rmtree(b)
    shutil.copytree(variant_bundles["edgetpu"], b)
    table = np.load(b / "embedding.npy")
    np.save(b / "embedding.npy", table.astype(np.float32))  # changed file: the hash refuses it first
    with pytest.raises(ScenecapError, match="embedding.npy: .*(does not match|the manifest says)"):
        load_bundle(b)


def test_caption_refuses_a_newer_major_bundle_in_one_line(bundle, tmp_path):
    _edit(bundle, _set("format_version", "2.0"))
    r = subprocess.run([sys.executable, "-m", "scenecap", "caption", str(tmp_path / "x.jpg"), "--bundle", str(bundle)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("scenecap: error:") and "bundle format 2.0 is newer" in last and "upgrade scenecap" in last
