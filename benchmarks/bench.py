"""`scenecap bench`: build the models once, then measure each in its own process and write the report.

Workers (each a fresh `python -m` process, so thread pools are set before a runtime starts and memory is not
shared): scenecap.benchmarks.latency (edge runtime, TensorFlow blocked), scenecap.benchmarks.baselines
(TensorFlow), scenecap.benchmarks.memory (cold start and peak RSS). This process only orchestrates; it imports
TensorFlow only to build missing models.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scenecap import ScenecapError, __version__
from scenecap.benchmarks import artefacts
from scenecap.benchmarks.artefacts import CPU_VARIANTS, ModelSet

log = logging.getLogger("scenecap.bench")


# A quick run's figures are a smoke test, not results: outside the source tree's results (reports/ is not tracked).
QUICK_OUT = "reports/bench-quick"


def default_variants(tpu_attached: bool) -> list[str]:
    """What runs when --variants is not given (and what `bench --help` says)."""
    return [*CPU_VARIANTS, *(["edgetpu"] if tpu_attached else [])]


@dataclass
class BenchOptions:
    quick: bool = False
    dims: list[str] = field(default_factory=lambda: ["synth", "original"])
    variants: list[str] | None = None  # None: the CPU variants, and edgetpu when a TPU is attached
    threads: list[int] = field(default_factory=lambda: [1, 2, 4])
    runs: int = 20
    warmup: int = 3
    beam: int = 3
    cold_runs: int = 3
    synth_run: str | None = None
    synth_export: str | None = None
    bundles: list[str] = field(default_factory=list)  # [NAME=]DIR: measure these as the synth set, no conversion
    seed_tokenizer: str | None = None
    vocab_limit: int | None = None  # original dims imported with --vocab-limit N; None: the full vocabulary
    work: str = "build/bench"
    out: str = "benchmarks/results"  # the committed full-run results; quick runs write to QUICK_OUT
    name: str = "bench"
    rebuild: bool = False
    prepare_only: bool = False
    baselines: bool = True
    memory: bool = True
    edge_python: str | None = None
    train_venv: str | None = ".venv"
    edge_venv: str | None = ".venv-edge"

    @classmethod
    def quick_defaults(cls, **kw) -> BenchOptions:
        base = dict(quick=True, dims=["synth"], threads=[1], runs=3, warmup=1, cold_runs=1, name="bench-quick",
                    out=QUICK_OUT)
        return cls(**{**base, **kw})


# --- machine ---------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    """'model name' on x86; 'Model' (e.g. Raspberry Pi 5 Model B Rev 1.0) or 'Hardware' on ARM."""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
        for key in ("model name", "model", "hardware"):
            if fields.get(key) and not fields[key].isdigit():
                return fields[key]
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Vector extensions that decide how fast int8 kernels run: x86 dot-product (VNNI) and matrix (AMX) units, ARM's
# dot-product and int8 matrix-multiply ones. Without them an int8 multiply-add takes several instructions.
INT8_DOT_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")  # int8 dot products in one instruction
INT8_FEATURES = ("avx2", "avx512f", *INT8_DOT_FEATURES, "sve")


def _cpu_features() -> list[str]:
    """The INT8_FEATURES this CPU lists in /proc/cpuinfo ('flags' on x86, 'Features' on ARM)."""
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            return [f for f in INT8_FEATURES if f in have]
    return []


def _caches() -> dict[str, str]:
    """CPU 0's caches by level (L1d, L2, L3) with their size, and how many CPUs share each."""
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        level, kind, size = _read(str(d / "level")), _read(str(d / "type")), _read(str(d / "size"))
        if level and size and kind != "Instruction":
            out[f"L{level}{'d' if kind == 'Data' else ''}"] = size
    return out


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    from importlib import metadata

    names = {"cv2": "opencv-python-headless", "ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}
    for name in (names.get(module, module), module):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).resolve().parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip("\x00 \n") or None
    except OSError:
        return None


def _throttled() -> str | None:
    """Raspberry Pi: `vcgencmd get_throttled` (0x0 = never throttled or under-volted since boot)."""
    try:
        r = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5)
        return r.stdout.strip().partition("=")[2] or None
    except (OSError, subprocess.SubprocessError):
        return None


def describe_machine() -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(), "cores_usable": affinity,
        "board": _read("/proc/device-tree/model"),  # e.g. Raspberry Pi 5 Model B Rev 1.0
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_max_mhz": (int(f) / 1000 if (f := _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"))
                        and f.isdigit() else None),
        "cpu_features": _cpu_features(), "caches": _caches(),
        "memory_mb": _mem_total_mb(), "os": platform.platform(), "python": platform.python_version(),
        "libraries": {m: _version(m) for m in ("numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "keras",
                                               "cv2", "pillow")},
        "scenecap": __version__, "git_commit": _git_commit(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "started_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }


def edgetpu_attached() -> tuple[bool, str]:
    """(attached?, why not): libedgetpu loads and makes a delegate, which it only does with a TPU plugged in."""
    from scenecap.edge.interpreter import find_runtime, load_edgetpu_delegate

    try:
        load_edgetpu_delegate(find_runtime())
        return True, ""
    except ScenecapError as e:
        return False, str(e)


# --- workers ---------------------------------------------------------------------------------------------------


def run_worker(module: str, spec: dict, work: Path, tag: str, python: str | None = None) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = work / f"{tag}-spec.json", work / f"{tag}-out.json"
    spec_path.write_text(json.dumps(spec, ensure_ascii=False, indent=1), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    r = subprocess.run([python or sys.executable, "-m", f"scenecap.benchmarks.{module}", str(spec_path),
                        str(out_path)], env=env)
    if r.returncode != 0 or not out_path.is_file():
        raise ScenecapError(f"benchmark worker {module} ({tag}) failed with exit code {r.returncode}; its messages "
                            "are above")
    log.info("%s: %s worker done in %.1f s", tag, module, time.perf_counter() - t0)
    return json.loads(out_path.read_text(encoding="utf-8"))


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def _runnable_bundles(ms: ModelSet, tpu: bool) -> tuple[dict[str, dict], list[str]]:
    """variant -> {path, device}; and why any variant was left out."""
    out, skipped = {}, []
    for v, path in ms.bundles.items():
        models = _manifest(path)["models"]
        if not any(m.get("quant") == "edgetpu" for m in models.values()):
            out[v] = {"path": str(path), "device": "cpu"}
            continue
        if not tpu:
            skipped.append(f"{v}: no Edge TPU attached (plug in the Coral and install libedgetpu1-std)")
        elif not all(m.get("edgetpu_file") for m in models.values()):
            skipped.append(f"{v}: the bundle has no edgetpu_compiler output (run the command 'scenecap convert' "
                           "printed, then 'scenecap convert --add-edgetpu')")
        else:
            out[v] = {"path": str(path), "device": "edgetpu"}
    return out, skipped


def _tf_spec(ms: ModelSet, reference: Path) -> dict:
    """What the TensorFlow processes need: the Keras model, and from the bundle the facts both sides share."""
    m = _manifest(reference)
    return {"keras": ms.keras, "frame": str(ms.frame), "tokens": m["tokens"], "max_words": m["max_length"] - 1,
            "image_size": m["preprocess"]["height"], "resize": m["preprocess"]["resize"], "preprocess": m["preprocess"]}


def _median_runs(runs: list[dict]) -> dict:
    keys = ("cold_start_s", "import_s", "load_s", "first_caption_s", "interpreter_start_s")
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["peak_rss_mb"] = statistics.median(r["peak_rss_kb"] for r in runs) / 1024
    out["peak_rss_mb_max"] = max(r["peak_rss_kb"] for r in runs) / 1024
    out["runs"] = len(runs)
    out["runtime"] = runs[0].get("runtime")
    out["python"] = runs[0].get("python")
    if "tensorflow_imported" in runs[0]:
        out["tensorflow_imported"] = any(r["tensorflow_imported"] for r in runs)
    return out


def _measure_memory(ms: ModelSet, bundle: str, opts: BenchOptions, tf_ok: bool, work: Path) -> dict:
    edge_python = opts.edge_python
    if not edge_python and opts.edge_venv:
        cand = Path(opts.edge_venv) / "bin" / "python"
        edge_python = str(cand) if cand.is_file() else None
    edge_python = edge_python or sys.executable
    from scenecap.benchmarks.memory import cold_start

    edge_spec = {"bundle": bundle, "frame": str(ms.frame), "threads": None}
    runs: dict[str, list[dict]] = {"edge": [], "tensorflow": []}
    for _ in range(opts.cold_runs):  # alternate, so a busy spell on the machine hits both alike
        runs["edge"].append(cold_start("edge", edge_spec, edge_python, work))
        if tf_ok and opts.baselines and ms.keras:
            runs["tensorflow"].append(cold_start("tensorflow", _tf_spec(ms, Path(bundle)), sys.executable, work))
    out = {k: _median_runs(v) for k, v in runs.items() if v}
    log.info("%s: cold starts: %s", ms.dims, ", ".join(f"{k} {v['cold_start_s']:.1f} s, {v['peak_rss_mb']:.0f} MB"
                                                        for k, v in out.items()))
    out["edge"]["bundle"] = Path(bundle).name
    return out


# --- the run ---------------------------------------------------------------------------------------------------


def _check_options(opts: BenchOptions) -> None:
    """One-line errors for counts and model sets that cannot run, before anything is built."""
    if opts.runs < 1 or opts.warmup < 0 or opts.cold_runs < 1:
        raise ScenecapError(f"--runs {opts.runs}, --warmup {opts.warmup}, --cold-runs {opts.cold_runs}; expected "
                            "runs and cold runs of at least 1 and warm-up of at least 0")
    if any(t < 1 for t in opts.threads):
        raise ScenecapError(f"--threads {opts.threads}; expected positive thread counts, e.g. 1,2,4")
    bad = [d for d in opts.dims if d not in artefacts.DIMS]
    if bad:
        raise ScenecapError(f"--dims {','.join(bad)} unknown; expected {' and/or '.join(artefacts.DIMS)}")


def _check_variants(variants: list[str]) -> None:
    bad = [v for v in variants if v not in (*CPU_VARIANTS, "edgetpu")]
    if bad:
        raise ScenecapError(f"--variants {','.join(bad)} unknown; expected some of {', '.join(CPU_VARIANTS)}, edgetpu")


def _model_sets(opts: BenchOptions, variants: list[str], work: Path) -> list[ModelSet]:
    """Each --dims set, built into `work` unless already there (the synth set: the given --bundle ones if any)."""
    sets: list[ModelSet] = []
    for d in opts.dims:
        if d == "synth" and opts.bundles:
            sets.append(artefacts.given_set(work, artefacts.parse_bundle_args(opts.bundles), opts.synth_run))
        elif d == "synth":
            sets.append(artefacts.synth_set(work, variants, opts.quick, opts.synth_run, opts.synth_export,
                                            opts.rebuild))
        else:
            full = artefacts.original_set(work, variants, opts.seed_tokenizer, opts.rebuild)
            if opts.vocab_limit is not None:
                artefacts.add_vocab_limited(full, artefacts.original_set(
                    work, variants, opts.seed_tokenizer, opts.rebuild, vocab_limit=opts.vocab_limit), opts.vocab_limit)
            sets.append(full)
    return sets


def _latency_row(ms: ModelSet, t: int, bundles: dict[str, dict], reference: Path, opts: BenchOptions, tf_ok: bool,
                 runs_dir: Path) -> dict:
    """Every variant and baseline of one set at `t` threads, each side in its own worker process."""
    log.info("%s: latency with %d thread%s", ms.dims, t, "s" * (t > 1))
    spec = {"bundles": bundles, "threads": t, "runs": opts.runs, "warmup": opts.warmup, "beam": opts.beam,
            "frame": str(ms.frame)}
    row = run_worker("latency", spec, runs_dir, f"{ms.dims}-edge-t{t}")["variants"]
    if opts.baselines and tf_ok and ms.keras:
        spec = {**_tf_spec(ms, reference), "threads": t, "runs": opts.runs, "warmup": opts.warmup,
                "beam": opts.beam}
        row.update(run_worker("baselines", spec, runs_dir, f"{ms.dims}-tf-t{t}")["baselines"])
    return row


def _measure_set(ms: ModelSet, opts: BenchOptions, tpu: bool, tf_ok: bool, runs_dir: Path) -> dict:
    """One model set's latency at every thread count, its sizes and (unless --no-memory) its processes' memory."""
    bundles, skipped = _runnable_bundles(ms, tpu)
    if not bundles:
        raise ScenecapError(f"{ms.dims}: no bundle can run here ({'; '.join(skipped)})")
    reference = Path(bundles.get("float32", next(iter(bundles.values())))["path"])
    r: dict = {"models": ms.to_json(), "skipped": skipped + ms.notes, "latency": {}}
    for t in opts.threads:
        r["latency"][str(t)] = _latency_row(ms, t, bundles, reference, opts, tf_ok, runs_dir)
    r["sizes"] = {v: row["sizes"] for v, row in r["latency"][str(opts.threads[0])].items() if "sizes" in row}
    if ms.files.get("keras"):
        r["sizes"]["keras"] = {"total": sum(Path(p).stat().st_size for p in ms.files["keras"])}
    if opts.memory:
        target = bundles.get("int8", next(iter(bundles.values())))["path"]
        log.info("%s: cold start and peak memory (%d run%s each)", ms.dims, opts.cold_runs,
                 "s" * (opts.cold_runs > 1))
        r["memory"] = _measure_memory(ms, target, opts, tf_ok, runs_dir)
    return r


def _install_sizes(opts: BenchOptions) -> dict:
    from scenecap.benchmarks.memory import venv_sizes

    t0 = time.perf_counter()
    sizes = venv_sizes(Path(opts.train_venv) if opts.train_venv else None,
                       Path(opts.edge_venv) if opts.edge_venv else None)
    log.info("install sizes measured in %.1f s", time.perf_counter() - t0)
    return sizes


def _machine_at_end(machine: dict) -> None:
    machine["throttled_end"] = _throttled()
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    machine["finished_utc"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def run_bench(opts: BenchOptions) -> dict:
    """Measure everything; returns the results dict (also written by the caller via report.write_report)."""
    _check_options(opts)
    t_start = time.perf_counter()
    machine = describe_machine()
    tpu, tpu_why = edgetpu_attached()
    variants = opts.variants or default_variants(tpu)
    _check_variants(variants)
    tf_ok = importlib.util.find_spec("tensorflow") is not None
    work = Path(opts.work)
    sets = _model_sets(opts, variants, work)
    results: dict = {"format": "scenecap-bench", "version": 1, "machine": machine, "options": asdict(opts),
                     "edgetpu": {"attached": tpu, "why_not": tpu_why}, "dims": {}}
    if opts.prepare_only:
        results["dims"] = {ms.dims: {"models": ms.to_json()} for ms in sets}
        return results
    if opts.baselines and not tf_ok:
        log.warning("TensorFlow is not installed here: the eager and tf.function baselines are skipped")
    for ms in sets:
        results["dims"][ms.dims] = _measure_set(ms, opts, tpu, tf_ok, work / "runs")
    if opts.memory:
        results["install"] = _install_sizes(opts)
    _machine_at_end(machine)
    results["seconds"] = time.perf_counter() - t_start
    from scenecap.benchmarks.targets import evaluate

    results["targets"] = evaluate(results)
    return results
