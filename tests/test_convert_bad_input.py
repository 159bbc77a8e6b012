"""Bad input to `scenecap convert`: one line naming what and why, and nothing half-written left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from scenecap.cli import main


def _convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scenecap", "convert", *args], capture_output=True, text=True)


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("scenecap: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def _nothing_written(parent) -> None:
    assert sorted(p.name for p in parent.iterdir()) == [], list(parent.iterdir())


def test_unknown_quant_is_refused_before_any_work(tiny_export, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert", str(tiny_export), "--out", str(out / "b"), "--quant", "int4"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "--quant 'int4' unknown" in err and "edgetpu" in err
    _nothing_written(out)


def test_savedmodel_without_the_signatures_names_them(tiny_export, tmp_path):
    import tensorflow as tf

    class Plain(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.float32)])
        def double(self, x):
            return {"y": 2 * x}

    export = tmp_path / "export"
    m = Plain()
    tf.saved_model.save(m, str(export), signatures={"double": m.double})
    out = tmp_path / "out"
    out.mkdir()
    # Not written by 'scenecap export': the missing sidecar is named...
    r = _convert(str(export), "--out", str(out / "b"))
    assert r.returncode == 2 and "scenecap_export.json: missing" in _one_line_error(r.stderr)
    # ...and with the sidecar but the wrong graph, the missing signatures are.
    for f in ("vocab.json", "scenecap_export.json"):
        shutil.copy(tiny_export / f, export / f)
    r = _convert(str(export), "--out", str(out / "b"))
    err = _one_line_error(r.stderr)
    # (the sidecar is a current export's, which says it has decode_step_norm: float32 is converted from that)
    assert r.returncode == 2 and "has no signature decode_step_norm, encode" in err and "'double'" in err
    _nothing_written(out)


def test_export_missing_a_signature_is_named(tiny_export, tmp_path, capsys):
    """A real scenecap export asked for a beam width it was not exported with."""
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert", str(tiny_export), "--out", str(out / "b"), "--decoder-batch", "5"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "no decoder step for batch 5" in err and "scenecap export --decoder-batch 5" in err
    _nothing_written(out)


def test_old_export_without_edgetpu_signatures_is_named(tiny_export, tmp_path, capsys):
    """An export from before the Edge TPU signatures: the missing ones are named, with the fix."""
    import tensorflow as tf

    old = tmp_path / "old"
    sm = tf.saved_model.load(str(tiny_export))
    tf.saved_model.save(sm, str(old), signatures={"encode": sm.signatures["encode"],
                                                  "decode_step": sm.signatures["decode_step"]})
    for f in ("vocab.json", "scenecap_export.json"):
        shutil.copy(tiny_export / f, old / f)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert", str(old), "--out", str(out / "b"), "--quant", "edgetpu"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "no signature" in err and "encode_pixels" in err and "re-export" in err
    _nothing_written(out)


@pytest.mark.parametrize("case", ["unreadable", "empty", "missing"])
def test_bad_calibration_images_are_named(tiny_export, tmp_path, capsys, case):
    cal = tmp_path / "cal"
    if case != "missing":
        cal.mkdir()
    if case == "unreadable":
        for i in range(3):
            (cal / f"photo{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert", str(tiny_export), "--out", str(out / "b"), "--quant", "int8",
                 "--calibration-images", str(cal)]) == 2
    err = _one_line_error(capsys.readouterr().err)
    expected = {"unreadable": "none of the 3 calibration images could be read",
                "empty": "no images found", "missing": "no such file or folder"}[case]
    assert expected in err and str(cal) in err or "photo" in err
    _nothing_written(out)


def test_existing_bundle_is_kept_without_force(float_bundle, copy_bundle, tiny_export, capsys):
    target = copy_bundle(float_bundle)
    before = (target / "manifest.json").read_bytes()
    assert main(["convert", str(tiny_export), "--out", str(target)]) == 2
    assert "already exists; pass --force" in _one_line_error(capsys.readouterr().err)
    assert (target / "manifest.json").read_bytes() == before


def test_add_edgetpu_with_a_missing_file_or_bundle(float_bundle, tmp_path, capsys):
    assert main(["convert", "--add-edgetpu", str(tmp_path / "nope_edgetpu.tflite"), "--out", str(float_bundle)]) == 2
    assert "nope_edgetpu.tflite: no such file" in _one_line_error(capsys.readouterr().err)
    assert main(["convert", "--add-edgetpu", str(float_bundle / "encoder.tflite"), "--out", str(tmp_path)]) == 2
    assert "manifest.json" in _one_line_error(capsys.readouterr().err)


def _export_with_sidecar(tiny_export, tmp_path, change) -> str:
    """The export's files with its sidecar edited (the SavedModel is never loaded: the sidecar is read first)."""
    import json

    d = tmp_path / "edited"
    d.mkdir()
    for f in ("saved_model.pb", "vocab.json"):
        shutil.copy(tiny_export / f, d / f)
    data = json.loads((tiny_export / "scenecap_export.json").read_text(encoding="utf-8"))
    change(data)
    (d / "scenecap_export.json").write_text(json.dumps(data), encoding="utf-8")
    return str(d)


@pytest.mark.parametrize("case", ["newer major", "not ours", "not JSON"])
def test_sidecar_format_and_version_are_checked(tiny_export, tmp_path, capsys, case):
    change = {"newer major": lambda d: d.update(version=2), "not ours": lambda d: d.update(format="other"),
              "not JSON": None}[case]
    export = _export_with_sidecar(tiny_export, tmp_path, change or (lambda d: None))
    if change is None:
        (tmp_path / "edited" / "scenecap_export.json").write_text("{not json", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert", export, "--out", str(out / "b")]) == 2
    err = _one_line_error(capsys.readouterr().err)
    expected = {"newer major": "export version 2 is newer than this scenecap reads (1)",
                "not ours": "format 'other'; expected 'scenecap-export'", "not JSON": "invalid JSON at line 1"}[case]
    assert "scenecap_export.json" in err and expected in err, err
    _nothing_written(out)


def test_sidecar_round_trips_and_keeps_unknown_keys(tiny_export):
    import json

    from scenecap.edge.export_contract import ExportSidecar

    data = json.loads((tiny_export / "scenecap_export.json").read_text(encoding="utf-8"))
    assert ExportSidecar.from_json(data).to_json() == data  # what export writes, read back exactly
    newer = {**data, "version": "1.3", "future_key": [1]}  # a newer minor: read, its new key kept
    assert ExportSidecar.from_json(newer).to_json() == newer
