"""Memory, cold start and install size: an edge-only captioning process against a TensorFlow one.

Each measurement is a fresh process that imports what it needs, loads the model, captions one JPEG and exits:
  edge        scenecap.edge (LiteRT, numpy, OpenCV) with TensorFlow blocked from importing, on a bundle
  tensorflow  the replaced system's way: import TensorFlow, rebuild the Keras model, load its weights, caption
              the frame eagerly (scenecap.benchmarks.baselines, "eager")
Cold start = from the moment the parent spawns the process to the first caption's text (import + load + first
caption, each also timed inside); peak RSS = the process's own ru_maxrss at the end. The page cache is warm
(the files were read before): this is a process cold start, not a cold boot.

Install size: the training venv against the edge venv (.venv and .venv-edge, as `make test` and `make demo`
make them). Where no edge venv exists, the size is computed from the files scenecap[edge]'s dependencies
installed in the current environment, and labelled so.

    python -m scenecap.benchmarks.memory edge|tensorflow SPEC.json OUT.json    (what `scenecap bench` runs)
"""

from __future__ import annotations

import time

_T0 = time.time()  # as early as this process can see; the parent's clock starts at spawn

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def status_kb(field: str) -> int:
    """A kB figure of this process from /proc/self/status on Linux (VmRSS: now, VmHWM: peak); elsewhere the
    peak from getrusage, the nearest there is."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes, Linux kB


def peak_rss_kb() -> int:
    """This process's peak resident set size in kB: VmHWM on Linux (reset by exec, unlike ru_maxrss, which a
    child spawned from a big parent inherits), else ru_maxrss."""
    return status_kb("VmHWM")


def _edge_child(spec: dict) -> dict:
    from scenecap.benchmarks.latency import block_tensorflow

    block_tensorflow()
    t0 = time.time()
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.images import load_image

    t1 = time.time()
    cap = Captioner.load(spec["bundle"], threads=spec.get("threads"), device=spec.get("device", "cpu"))
    t2 = time.time()
    text = cap.caption(load_image(spec["frame"])).text
    t3 = time.time()
    return {"import_s": t1 - t0, "load_s": t2 - t1, "first_caption_s": t3 - t2, "done_at": t3, "caption": text,
            "runtime": cap.runtime.name, "tensorflow_imported": "tensorflow" in sys.modules}


def _tensorflow_child(spec: dict) -> dict:
    t0 = time.time()
    import tensorflow as tf

    from scenecap.benchmarks.baselines import Baseline, load_keras
    from scenecap.edge.images import load_image

    threads = spec.get("threads")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    t1 = time.time()
    model, _ = load_keras(spec["keras"])
    t2 = time.time()
    b = Baseline(model, spec["image_size"], spec["resize"], compiled=False)
    tokens = b.caption(load_image(spec["frame"]), spec["tokens"]["start"], spec["tokens"]["end"],
                       int(spec["max_words"]), 1)
    t3 = time.time()
    return {"import_s": t1 - t0, "load_s": t2 - t1, "first_caption_s": t3 - t2, "done_at": t3,
            "caption_tokens": len(tokens), "runtime": f"tensorflow {tf.__version__}"}


def child_main(argv: list[str]) -> int:
    kind, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    res = _edge_child(spec) if kind == "edge" else _tensorflow_child(spec)
    res["started_at"] = _T0
    res["peak_rss_kb"] = peak_rss_kb()
    Path(out_path).write_text(json.dumps(res, ensure_ascii=False), encoding="utf-8")
    return 0


# --- parent side -----------------------------------------------------------------------------------------------


def cold_start(kind: str, spec: dict, python: str, work: Path, env: dict | None = None) -> dict:
    """Spawn one measuring process; returns its figures with cold_start_s measured from the spawn."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = work / f"cold-{kind}-spec.json", work / f"cold-{kind}-out.json"
    spec_path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    t_spawn = time.time()
    r = subprocess.run([python, "-m", "scenecap.benchmarks.memory", kind, str(spec_path), str(out_path)],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0 or not out_path.is_file():
        from scenecap import ScenecapError  # here: this module's imports are what it measures

        tail = (r.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise ScenecapError(f"{kind} cold-start process failed ({python}): {tail[0]}")
    res = json.loads(out_path.read_text(encoding="utf-8"))
    res["cold_start_s"] = res["done_at"] - t_spawn
    res["interpreter_start_s"] = res["started_at"] - t_spawn
    res["python"] = python
    return res


def tree_bytes(path: Path) -> int:
    """Apparent size of every regular file under `path` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, f)):
                total += st.st_size
    return total


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(roots: list[str], extras: dict[str, set[str]] | None = None) -> list:
    """The installed distributions that `roots` (with the given extras) need, recursively, markers evaluated."""
    from importlib import metadata

    from packaging.requirements import Requirement

    extras = extras or {}
    seen: dict[str, object] = {}
    todo = [(r, extras.get(r, set())) for r in roots]
    while todo:
        name, want = todo.pop()
        key = _norm(name)
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in (want or {""})]
            if req.marker is None or any(req.marker.evaluate(e) for e in envs):
                todo.append((req.name, set(req.extras)))
    return list(seen.values())


def dist_bytes(dist) -> int:
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _site_packages(venv: Path) -> Path | None:
    found = sorted(venv.glob("lib/python*/site-packages")) + sorted(venv.glob("Lib/site-packages"))
    return found[0] if found else None


def venv_sizes(train_venv: Path | None, edge_venv: Path | None) -> dict:
    """{"train": {...}, "edge": {...}}: bytes and how each was obtained."""
    out: dict[str, dict] = {}
    for role, venv in (("train", train_venv), ("edge", edge_venv)):
        if venv and venv.is_dir():
            out[role] = {"bytes": tree_bytes(venv), "source": f"measured: {venv}",
                         "site_packages_bytes": tree_bytes(_site_packages(venv) or venv)}
    here_has_tf = _installed("tensorflow")
    if "train" not in out and here_has_tf:
        out["train"] = {"bytes": tree_bytes(Path(sys.prefix)), "source": f"measured: {sys.prefix} (this environment)"}
    if "edge" not in out:
        if here_has_tf:
            dists = dependency_closure(["scenecap", "pip"], {"scenecap": {"edge"}})
            out["edge"] = {"bytes": sum(dist_bytes(d) for d in dists),
                           "source": f"computed: files of scenecap[edge]'s {len(dists)} installed distributions "
                                     f"(and pip) in {sys.prefix}; run 'make demo' for a real .venv-edge",
                           "distributions": sorted(d.metadata["Name"] for d in dists)}
        else:  # this environment is an edge one (a Pi): measure it
            out["edge"] = {"bytes": tree_bytes(Path(sys.prefix)),
                           "source": f"measured: {sys.prefix} (this environment)"}
    return out


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("edge", "tensorflow"):
        print("usage: python -m scenecap.benchmarks.memory edge|tensorflow SPEC.json OUT.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(child_main(sys.argv[1:]))
