"""Load a .tflite model with whichever LiteRT runtime is installed, and run it by tensor name.

Preference: ai_edge_litert, then tflite_runtime, then tf.lite (only if TensorFlow happens to be there).
The adapter is deliberately thin, in the manner of pycoral's: find the runtime, make an interpreter,
(de)quantise by the manifest's parameters.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenecap.edge.bundle import ModelSpec, TensorSpec
from scenecap.edge.errors import ScenecapError, first_line
from scenecap.edge.fileio import read_regular
from scenecap.edge.modelinfo import MAX_MODEL_BYTES
from scenecap.native_stderr import caught_fd2

log = logging.getLogger("scenecap.edge")

EDGETPU_LIBS = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


@dataclass(frozen=True)
class Runtime:
    name: str  # "ai_edge_litert 2.3.0"
    interpreter_cls: Any
    load_delegate: Any
    op_resolver_type: Any = None  # the module's OpResolverType enum, when it has one


_RUNTIME: Runtime | None = None


def find_runtime(prefer: str | None = None) -> Runtime:
    """The first importable LiteRT runtime (or the one named by `prefer`), logged once."""
    global _RUNTIME
    if _RUNTIME is not None and prefer is None:
        return _RUNTIME
    order = [prefer] if prefer else ["ai_edge_litert", "tflite_runtime", "tensorflow"]
    for name in order:
        try:
            if name == "ai_edge_litert":
                import ai_edge_litert as pkg
                from ai_edge_litert import interpreter as mod
            elif name == "tflite_runtime":
                import tflite_runtime as pkg
                from tflite_runtime import interpreter as mod
            elif name == "tensorflow":
                import tensorflow as pkg  # last resort on a workstation; never on a Pi

                mod = pkg.lite
                mod.load_delegate = pkg.lite.experimental.load_delegate
            else:
                raise ScenecapError(f"runtime {name!r} unknown; expected ai_edge_litert, tflite_runtime or tensorflow")
        except ImportError:
            continue
        version = getattr(pkg, "__version__", "?")
        resolver = getattr(mod, "OpResolverType", None)
        if resolver is None and name == "tensorflow":
            resolver = pkg.lite.experimental.OpResolverType
        rt = Runtime(f"{name} {version}", mod.Interpreter, mod.load_delegate, resolver)
        log.info("LiteRT runtime: %s", rt.name)
        if prefer is None:
            _RUNTIME = rt
        return rt
    raise ScenecapError(no_runtime_message(platform.machine()))


# 32-bit ARM (Raspberry Pi OS 32-bit reports armv7l, or armv6l on a Pi Zero/1): neither ai-edge-litert nor
# tflite-runtime publishes wheels for it on PyPI (checked for Python 3.11), so advising pip would not help.
UNSUPPORTED_MACHINES = ("armv7l", "armv6l", "armhf", "arm")


def no_runtime_message(machine: str) -> str:
    """Why no runtime was found, and what would help on this machine."""
    if machine.lower() in UNSUPPORTED_MACHINES:
        return (f"no LiteRT runtime for {machine} (32-bit ARM): scenecap needs a 64-bit OS there; install "
                "Raspberry Pi OS 64-bit (aarch64), where pip install 'scenecap[edge]' brings ai-edge-litert")
    return "no LiteRT runtime found; install one: pip install 'scenecap[edge]' (ai-edge-litert) or tflite-runtime"


_OP_RE = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")
_CUSTOM_RE = re.compile(r"unresolved custom op: ([\w-]+)", re.IGNORECASE)


def target_for(runtime: Runtime) -> str:
    """The `scenecap convert --target-runtime` value that suits the runtime found here."""
    name, _, version = runtime.name.partition(" ")
    if name == "tflite_runtime":
        return "tflite-runtime-2.14"  # the last tflite-runtime release; its kernel table is measured
    return "litert"


def _explain_load_failure(path: Path, exc: Exception, runtime: Runtime) -> ScenecapError:
    text = str(exc)
    m = _OP_RE.search(text)
    if m:
        op, ver = m.groups()
        return ScenecapError(
            f"{path}: op {op} version {ver} is not in the runtime found ({runtime.name}); re-convert with "
            f"'scenecap convert --target-runtime {target_for(runtime)}', which picks variants whose kernels it has "
            "(or install a newer runtime: pip install ai-edge-litert)"
        )
    m = _CUSTOM_RE.search(text)
    if m and m.group(1) == "edgetpu-custom-op":
        return ScenecapError(f"{path}: compiled for the Edge TPU (op edgetpu-custom-op), which {runtime.name} "
                             "cannot run on the CPU; use --device edgetpu with libedgetpu installed, or the "
                             "bundle's plain .tflite")
    if m:
        return ScenecapError(f"{path}: custom op {m.group(1)} is not in the runtime found ({runtime.name}); "
                             "convert without custom ops (scenecap convert only emits builtin ops)")
    return ScenecapError(f"{path}: {runtime.name} cannot load this model ({first_line(exc)})")


def load_edgetpu_delegate(runtime: Runtime) -> Any:
    lib = EDGETPU_LIBS.get(platform.system(), "libedgetpu.so.1")
    try:
        # Try the library first: a runtime's Delegate that fails to find it prints a traceback from __del__.
        import ctypes

        ctypes.CDLL(lib)
    except OSError:
        raise ScenecapError(
            f"Edge TPU delegate {lib} could not be loaded (library not found); "
            "install libedgetpu1-std and plug in the Coral, or use --device cpu"
        ) from None
    try:
        return runtime.load_delegate(lib)
    except (ValueError, OSError) as e:
        raise ScenecapError(
            f"Edge TPU delegate {lib} could not be loaded ({first_line(e) if str(e).strip() else 'not found'}); "
            "install libedgetpu1-std and plug in the Coral, or use --device cpu"
        ) from None


def builtin_kernels() -> bool:
    """SCENECAP_KERNELS=builtin: run TFLite's own kernels only, without the default XNNPACK delegate.

    LiteRT runs int8 models through XNNPACK by default (about 3x faster here), whose requantisation rounds
    differently from the builtin kernels that tflite-runtime 2.14 uses for int8; with builtin kernels both
    runtimes give bit-identical outputs, so captions are reproducible across devices (measured; see
    tests/test_runtime_compat.py)."""
    return os.environ.get("SCENECAP_KERNELS", "").strip().lower() == "builtin"


@contextmanager
def native_notices_to_debug() -> Iterator[None]:
    """The runtime's C++ notices while a model loads ('INFO: Created TensorFlow Lite XNNPACK delegate for CPU.')
    become debug log lines (shown with -v); anything else it prints stays a warning."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    with caught_fd2() as lines:
        yield
    for line in lines:
        (log.debug if line.startswith("INFO: ") else log.warning)("%s", line)


class TFLiteModel:
    """One .tflite model, run by input/output name, (de)quantised per the manifest."""

    def __init__(self, path: Path, spec: ModelSpec, threads: int | None = None, delegate: Any = None,
                 runtime: Runtime | None = None, content: bytes | None = None):
        """`content`: the model's bytes, as read and verified by the bundle loader (read from `path` if None).

        The interpreter runs from these bytes, never from the file: a model_path interpreter memory-maps the file,
        and a file overwritten in place under it kills the process with SIGBUS. LiteRT does not copy
        model_content, so `self.content` keeps the bytes alive as long as the interpreter."""
        self.path = Path(path)
        self.spec = spec
        self.runtime = runtime or find_runtime()
        self.content = content if content is not None else read_regular(self.path, MAX_MODEL_BYTES, "model file",
                                                                        follow_symlinks=True)
        if not self.content:  # LiteRT would say "model_path or model_content must be specified"
            raise ScenecapError(f"{self.path}: {self.runtime.name} cannot load this model (the file is empty)")
        kwargs: dict[str, Any] = {"model_content": self.content}
        if threads:
            kwargs["num_threads"] = int(threads)
        if delegate is not None:
            kwargs["experimental_delegates"] = [delegate]
        elif builtin_kernels() and self.runtime.op_resolver_type is not None:
            kwargs["experimental_op_resolver_type"] = self.runtime.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with native_notices_to_debug():
                self.interpreter = self.runtime.interpreter_cls(**kwargs)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise _explain_load_failure(self.path, e, self.runtime) from None
        runner = self.interpreter.get_signature_runner()
        in_details = runner.get_input_details()
        out_details = runner.get_output_details()
        self._in = self._bind(in_details, spec.inputs, "input")
        self._out = self._bind(out_details, spec.outputs, "output")
        # interpreter.tensor(i) returns a function giving a numpy view of the tensor's buffer: no copy. A view
        # must not live across invoke() (LiteRT refuses to run while one does), so only these functions are kept.
        self._in_views = {name: self.interpreter.tensor(i) for name, (i, _) in self._in.items()}
        self._out_views = {name: self.interpreter.tensor(i) for name, (i, _) in self._out.items()}
        self.invoke_ms: list[float] | None = None  # see record_invokes

    def _bind(self, details: dict, specs: dict[str, TensorSpec], kind: str) -> dict[str, tuple[int, TensorSpec]]:
        bound = {}
        for name, spec in specs.items():
            d = details.get(name)
            if d is None:
                raise ScenecapError(
                    f"{self.path}: has no {kind} named {name!r} (it has {sorted(details)}); "
                    "the file does not belong to this bundle's manifest"
                )
            shape = [int(x) for x in d["shape"]]
            dtype = np.dtype(d["dtype"]).name
            if shape != list(spec.shape) or dtype != spec.dtype:
                raise ScenecapError(
                    f"{self.path}: {kind} {name!r} is {dtype}{shape}; the manifest expects {spec.dtype}{spec.shape}"
                )
            bound[name] = (d["index"], spec)
        return bound

    def set(self, name: str, value: np.ndarray) -> None:
        index, spec = self._in[name]
        self.interpreter.set_tensor(index, quantize(value, spec))

    def invoke(self) -> None:
        if self.invoke_ms is None:
            self.interpreter.invoke()
            return
        t0 = time.perf_counter()
        self.interpreter.invoke()
        self.invoke_ms.append((time.perf_counter() - t0) * 1e3)

    def record_invokes(self) -> list[float]:
        """From now on append each invoke's milliseconds to the list returned (clear it between measurements): what
        a benchmark subtracts from a whole caption to find the Python around the interpreter."""
        self.invoke_ms = []
        return self.invoke_ms

    def get(self, name: str) -> np.ndarray:
        index, spec = self._out[name]
        return dequantize(self.interpreter.get_tensor(index), spec)

    def raw(self, name: str) -> np.ndarray:
        """Output as stored (int8 stays int8): for argmax, which dequantisation does not change."""
        return self.interpreter.get_tensor(self._out[name][0])

    def write(self, name: str, value: np.ndarray, rows: int | None = None) -> None:
        """Write an input in place, already in the model's dtype (see quantize); `rows`: only the first rows."""
        view = self._in_views[name]()
        view[slice(rows)] = value
        del view  # before any invoke

    def read(self, name: str, rows: int | None = None) -> np.ndarray:
        """A copy of an output as stored (int8 stays int8), optionally its first `rows`."""
        return self._out_views[name]()[slice(rows)].copy()

    def read_into(self, name: str, out: np.ndarray) -> None:
        """The output's first len(out) rows copied into `out` (a buffer reused from invoke to invoke)."""
        view = self._out_views[name]()
        np.copyto(out, view[: len(out)])
        del view  # before any invoke

    def view(self, name: str) -> np.ndarray:
        """An output as stored, not copied: valid until the next invoke, which overwrites it, and the caller must
        drop it before then (LiteRT's invoke raises while a view of its tensors lives)."""
        return self._out_views[name]()

    def input_view_fn(self, name: str) -> Callable[[], np.ndarray]:
        """The zero-copy view maker of an input: call it for a numpy view to write into, drop the view before
        invoke() (a loop that fetches the function once saves a lookup per word)."""
        return self._in_views[name]

    def output_view_fn(self, name: str) -> Callable[[], np.ndarray]:
        """The zero-copy view maker of an output: see view()."""
        return self._out_views[name]

    def input_spec(self, name: str) -> TensorSpec:
        return self._in[name][1]

    def output_spec(self, name: str) -> TensorSpec:
        return self._out[name][1]


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if spec.quantized and np.asarray(x).dtype != dtype:
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / spec.scale) + spec.zero_point
        return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x, dtype=dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """(q - zero_point) * scale in float32, in one new array: the encoder's features are 350 KB at the original
    dimensions, and each temporary of that size is a fresh, page-faulted mapping (the same bits either way)."""
    if spec.quantized:
        out = np.asarray(q).astype(np.float32)
        out -= np.float32(spec.zero_point)
        out *= np.float32(spec.scale)
        return out
    return q
