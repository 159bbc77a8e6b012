"""Edge TPU deployment: running edgetpu_compiler on a bundle's models (or printing the exact commands when it is not
installed) and adding the compiled files to the bundle. Which ops would map to the TPU is edge/edgetpu_plan.py's
(re-exported here: place_ops, summarize)."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from scenecap import ScenecapError
from scenecap.edge.bundle import MANIFEST, load_bundle
from scenecap.edge.edgetpu_plan import EDGETPU_OP, Placement, place_ops, summarize
from scenecap.edge.fileio import atomic_write_bytes, atomic_write_text, sha256_file
from scenecap.edge.manifest import FileEntry
from scenecap.edge.modelinfo import ModelInfo, read_model

__all__ = ["Placement", "add_command", "add_edgetpu", "compile_or_explain", "compiler_command", "place_ops",
           "summarize"]
log = logging.getLogger("scenecap.convert")


def compiler_command(bundle: Path, files: list[str]) -> list[str]:
    """Compile the bundle's models together (they then share the TPU's parameter cache)."""
    return ["edgetpu_compiler", "--show_operations", "--out_dir", str(bundle), *[str(bundle / f) for f in files]]


def add_command(bundle: Path, files: list[str]) -> list[str]:
    compiled = [str(bundle / f"{Path(f).stem}_edgetpu.tflite") for f in files]
    return ["scenecap", "convert", "--add-edgetpu", *compiled, "--out", str(bundle)]


def compile_or_explain(bundle: Path, files: list[str]) -> str:
    """Run edgetpu_compiler if installed and add its output to the bundle; else return the commands to run."""
    cmd = compiler_command(bundle, files)
    if shutil.which("edgetpu_compiler") is None:
        return ("edgetpu_compiler is not on PATH (an x86-64 Linux package from Coral's apt repository: "
                "apt-get install edgetpu-compiler). On an x86-64 Linux host run:\n  " + shlex.join(cmd) +
                "\nthen add the compiled models to the bundle:\n  " + shlex.join(add_command(bundle, files)))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ScenecapError(f"edgetpu_compiler failed on {bundle}: {last[0]}")
    log.info("edgetpu_compiler:\n%s", r.stdout.strip())
    add_edgetpu(bundle, [bundle / f"{Path(f).stem}_edgetpu.tflite" for f in files])
    return f"compiled for the Edge TPU and added to {bundle}"


def _match_model(bundle, info: ModelInfo) -> str:
    """Which of the bundle's models a compiled file is: by file name, then by its inputs' shapes."""
    m = bundle.manifest
    stem = info.path.name.removesuffix(".tflite").removesuffix("_edgetpu")
    for name, spec in m.models.items():
        if Path(spec.file).stem == stem:
            return name
    shapes = sorted((info.tensor(i).shape, info.tensor(i).dtype) for i in info.inputs)
    for name, spec in m.models.items():
        if sorted((t.shape, t.dtype) for t in spec.inputs.values()) == shapes:
            return name
    raise ScenecapError(f"{info.path}: matches none of the bundle's models ({', '.join(m.models)}) by name or inputs")


def add_edgetpu(bundle_dir: str | Path, files: list[str | Path]) -> Path:
    """Add edgetpu_compiler output to a bundle: check each file, copy it in, re-hash, rewrite the manifest."""
    bundle_dir = Path(bundle_dir)
    if not files:
        raise ScenecapError("--add-edgetpu: no files given; expected the *_edgetpu.tflite files from edgetpu_compiler")
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    chosen: dict[str, Path] = {}
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise ScenecapError(f"{f}: no such file; expected a *_edgetpu.tflite written by edgetpu_compiler")
        info = read_model(f)
        if not any(op.name == EDGETPU_OP for op in info.operators):
            raise ScenecapError(f"{f}: has no edgetpu-custom-op, so edgetpu_compiler did not compile it (or mapped "
                                "no op to the TPU); run edgetpu_compiler on the bundle's models first")
        name = _match_model(bundle, info)
        spec = m.models[name]
        if spec.quant not in ("edgetpu", "int8"):
            raise ScenecapError(f"{f}: the bundle's {name} is {spec.quant}; only int8/edgetpu models can be "
                                "compiled for the Edge TPU (convert with --quant edgetpu)")
        plain = read_model(bundle.file(spec.file))
        want = [(plain.tensor(i).shape, plain.tensor(i).dtype) for i in plain.inputs + plain.outputs]
        got = [(info.tensor(i).shape, info.tensor(i).dtype) for i in info.inputs + info.outputs]
        if sorted(want) != sorted(got):
            raise ScenecapError(f"{f}: inputs/outputs {got} differ from the bundle's {spec.file} {want}; it was "
                                "compiled from another model")
        if name in chosen:
            raise ScenecapError(f"{f}: a second compiled file for {name} (first: {chosen[name]})")
        chosen[name] = f
    for name, f in chosen.items():
        target = bundle_dir / f"{Path(m.models[name].file).stem}_edgetpu.tflite"
        if f.resolve() != target.resolve():
            atomic_write_bytes(target, f.read_bytes())
        m.models[name] = replace(m.models[name], edgetpu_file=target.name)  # specs are frozen
        m.files[target.name] = FileEntry(sha256_file(target), target.stat().st_size)
    # The new files are in place first; the manifest that lists them is replaced last, atomically.
    import json

    atomic_write_text(bundle_dir / MANIFEST, json.dumps(m.to_json(), indent=2, ensure_ascii=False))
    load_bundle(bundle_dir)
    return bundle_dir
