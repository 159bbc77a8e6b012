"""What every bad-input catalogue case checks: a one-line ScenecapError naming the file or value and what was
expected, or on the command line exit status 2 with a single 'scenecap: error: ...' line and no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image

from scenecap import ScenecapError

T = TypeVar("T")


def one_line_error(call, *named: str) -> str:
    """Run `call`; it must raise ScenecapError with a one-line message containing every string in `named`."""
    with pytest.raises(ScenecapError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for text in named:
        assert text in msg, (text, msg)
    return msg


def scenecap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scenecap", *args], capture_output=True, text=True,
                          timeout=timeout)


def cli_error(r: subprocess.CompletedProcess, *named: str) -> str:
    """The command failed the user's way: exit 2, one 'scenecap: error:' line naming `named`, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("scenecap: error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == errors[0], r.stderr[-2000:]  # the last word is the error
    for text in named:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def write_catalogue(tmp_path_factory, folder: str, make: Callable[[Path, str], T], names: Iterable[str],
                    mode: int | None = None) -> dict[str, T]:
    """Every case of a catalogue made once, in a new folder (of that mode, if given): {name: make(folder, name)}."""
    d = tmp_path_factory.mktemp(folder)
    if mode is not None:
        d.chmod(mode)
    return {name: make(d, name) for name in names}


def write_image(path: Path, mode: str = "RGB", size=(40, 30)) -> Path:
    """A small noise image in `mode` (JPEG for .jpg, else PNG), the same for the same file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    im = rgb.convert(mode) if mode != "RGB" else rgb
    im.save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")
    return path


DELETE = object()


def edit_manifest(bundle: Path, change: Callable[[dict], None]) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def manifest_set(*keys_value) -> Callable[[dict], None]:
    """A manifest change: manifest_set('models', 'encoder', 'quant', 'int4'); DELETE as the value removes the key."""
    *keys, value = keys_value

    def change(d):
        for k in keys[:-1]:
            d = d[k]
        if value is DELETE:
            del d[keys[-1]]
        else:
            d[keys[-1]] = value

    return change


def tflite_with_shared_inputs(operators: int, refs: int) -> bytes:
    """A small .tflite flatbuffer whose `operators` operators all point at one input list naming tensor 0 `refs`
    times: valid layout, tiny file, and operators x refs entries for a reader that decodes each list anew."""
    import flatbuffers

    b = flatbuffers.Builder(0)
    b.StartVector(4, refs, 4)
    for _ in range(refs):
        b.PrependInt32(0)
    shared = b.EndVector()
    ops = []
    for _ in range(operators):
        b.StartObject(3)  # Operator: opcode_index, inputs, outputs
        b.PrependUOffsetTRelativeSlot(1, shared, 0)
        ops.append(b.EndObject())

    def table_vector(items: list[int]) -> int:
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    ops_vec = table_vector(ops)
    b.StartVector(4, 1, 4)
    b.PrependInt32(1)
    shape = b.EndVector()
    b.StartObject(5)  # Tensor: shape, type, buffer, name, quantization
    b.PrependUOffsetTRelativeSlot(0, shape, 0)
    tensor = b.EndObject()
    tensors = table_vector([tensor])
    b.StartObject(5)  # SubGraph: tensors, inputs, outputs, operators, name
    b.PrependUOffsetTRelativeSlot(0, tensors, 0)
    b.PrependUOffsetTRelativeSlot(3, ops_vec, 0)
    subgraph = b.EndObject()
    subgraphs = table_vector([subgraph])
    b.StartObject(4)  # OperatorCode: deprecated_builtin_code, custom_code, version, builtin_code
    b.PrependInt32Slot(2, 1, 1)
    code = b.EndObject()
    codes = table_vector([code])
    b.StartObject(8)  # Model: version, operator_codes, subgraphs, description, buffers, ...
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, codes, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    model = b.EndObject()
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


def unprivileged(cmd: list[str]) -> list[str]:
    """`cmd` as a process file permissions apply to: root keeps its uid but loses the capabilities that
    override them, so a mode-000 file really is unreadable."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission denied cannot be made real")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
