"""Edge TPU readiness: which ops of a model the Coral compiler would map to the TPU, running edgetpu_compiler
(or printing the exact command when it is not installed), and adding the compiled files to a bundle.

The mapping prediction follows Coral's documented rules: only full-integer (u)int8 tensors, static shapes, the
ops in the supported list with their known limits, op versions the compiler-16 parser knows, and ONE Edge TPU
subgraph: from the first op that cannot map, every later op runs on the CPU. The compiler's own log
(`edgetpu_compiler -s`) is the authority; this module needs no TensorFlow, so `scenecap inspect` uses it on a Pi.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scenecap import ScenecapError
from scenecap.convert.compat import TARGETS
from scenecap.edge.bundle import MANIFEST, load_bundle
from scenecap.edge.fileio import atomic_write_bytes, atomic_write_text, sha256_file
from scenecap.edge.modelinfo import ModelInfo, read_model

log = logging.getLogger("scenecap.convert")

EDGETPU_OP = "CUSTOM(edgetpu-custom-op)"
# Coral's list of operations the Edge TPU runs (TFLite names).
TPU_OPS = frozenset("""ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D EXPAND_DIMS FULLY_CONNECTED
HARD_SWISH L2_NORMALIZATION LOGISTIC LSTM MAXIMUM MAX_POOL_2D MEAN MINIMUM MUL PACK PAD PRELU QUANTIZE REDUCE_MAX
REDUCE_MIN RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SLICE SOFTMAX
SPACE_TO_DEPTH SPLIT SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM TANH TRANSPOSE TRANSPOSE_CONV""".split())
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"}
_SOFTMAX_MAX = 16000


@dataclass
class Placement:
    index: int
    op: str
    version: int
    device: str  # "tpu" or "cpu"
    reason: str = ""  # why it runs on the CPU


def _why_not(info: ModelInfo, i: int) -> str:
    """Why op i cannot map to the TPU by itself ('' = it can)."""
    op = info.operators[i]
    if op.name not in TPU_OPS:
        return f"{op.name} is not an Edge TPU operation"
    top = TARGETS["edgetpu-compiler-16"].max_versions.get(op.name, 0)
    if op.version > top:
        return f"version {op.version} is newer than compiler 16 knows (v{top})"
    tensors = [info.tensor(t) for t in op.inputs + op.outputs if t >= 0]
    activations = [t for t in tensors if not t.buffer_bytes]
    for t in activations:
        if t.dynamic:
            return f"tensor {t.name} has a dynamic shape"
        if t.dtype not in ("int8", "uint8") and not (t.dtype == "int32" and t.values is not None):
            return f"tensor {t.name} is {t.dtype}, not 8-bit quantised"
        if sum(1 for d in t.shape if d > 1) > 3:
            return f"tensor {t.name} {t.shape} has more than 3 dimensions larger than 1"
    x = info.tensor(op.inputs[0]) if op.inputs and op.inputs[0] >= 0 else None
    if op.name == "SOFTMAX" and x is not None:
        if sum(1 for d in x.shape if d > 1) > 1 or max(x.shape or [1]) > _SOFTMAX_MAX:
            return f"softmax input {x.shape} is not 1-D (at most {_SOFTMAX_MAX} elements)"
    if op.name in _REDUCTIONS and x is not None and len(op.inputs) > 1:
        axes = info.tensor(op.inputs[1]).values or []
        if any(a % max(len(x.shape), 1) == 0 for a in axes) and x.shape and x.shape[0] > 1:
            return "reduces over the batch dimension"
    if op.name == "FULLY_CONNECTED" and len(op.inputs) > 1 and not info.tensor(op.inputs[1]).buffer_bytes:
        return "weights are not constant"
    return ""


def plan(info: ModelInfo) -> list[Placement]:
    """Each op of the main subgraph, in execution order, with the device the compiler would give it."""
    out, split = [], None
    for i, op in enumerate(info.operators):
        reason = _why_not(info, i)
        if reason and split is None:
            split = i
        elif not reason and split is not None:
            reason = f"after the first CPU op (#{split} {info.operators[split].name}): one Edge TPU subgraph only"
        out.append(Placement(i, op.name, op.version, "cpu" if reason else "tpu", reason))
    return out


def summarize(placements: list[Placement]) -> dict:
    """Counts by device and op, and the distinct reasons for the CPU ops."""
    tpu = Counter(p.op for p in placements if p.device == "tpu")
    cpu = Counter(p.op for p in placements if p.device == "cpu")
    reasons: dict[str, str] = {}
    for p in placements:
        if p.device == "cpu":
            reasons.setdefault(p.op, p.reason)
    return {"tpu_ops": sum(tpu.values()), "cpu_ops": sum(cpu.values()), "tpu": dict(sorted(tpu.items())),
            "cpu": dict(sorted(cpu.items())), "cpu_reasons": reasons}


# --- the compiler ------------------------------------------------------------------------------------------

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
        m.models[name].edgetpu_file = target.name
        m.files[target.name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    # The new files are in place first; the manifest that lists them is replaced last, atomically.
    import json

    atomic_write_text(bundle_dir / MANIFEST, json.dumps(m.to_json(), indent=2, ensure_ascii=False))
    load_bundle(bundle_dir)
    return bundle_dir
