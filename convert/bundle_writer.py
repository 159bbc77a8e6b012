"""Write a bundle folder atomically: models, vocab.json and a manifest describing exactly what is inside."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from scenecap import ScenecapError, __version__
from scenecap.convert.compat import runtime_claims
from scenecap.edge.bundle import FORMAT_VERSION, MANIFEST, Manifest, ModelSpec, TensorSpec, load_bundle
from scenecap.edge.fileio import atomic_write_text, default_mode, sha256_file
from scenecap.edge.interpreter import find_runtime
from scenecap.edge.modelinfo import read_ops
from scenecap.edge.preprocess import PreprocessSpec
from scenecap.edge.vocab import Vocab


def describe_model(path: Path, quant: str, options: list[str] | None = None) -> ModelSpec:
    """Inputs/outputs (shape, dtype, quantisation) as the runtime sees them, the op list, and which target
    runtimes have every op's kernel (compat.py's tables)."""
    interp = find_runtime().interpreter_cls(model_path=str(path))
    runner = interp.get_signature_runner()

    def specs(details: dict) -> dict[str, TensorSpec]:
        out = {}
        for name, d in details.items():
            scale, zp = d["quantization"]
            out[name] = TensorSpec(name, [int(x) for x in d["shape"]], np.dtype(d["dtype"]).name, float(scale),
                                   int(zp))
        return out

    ops = read_ops(path)
    return ModelSpec(file=path.name, quant=quant, inputs=specs(runner.get_input_details()),
                     outputs=specs(runner.get_output_details()), ops=[str(o) for o in ops],
                     options=list(options or []), runtimes=runtime_claims(ops))


def write_bundle(out: str | Path, models: dict[str, tuple], vocab: Vocab, export_info: dict,
                 provenance: dict, decoder_batch: int = 1, extra_files: dict[str, bytes] | None = None,
                 force: bool = False, decoder_extra: dict | None = None) -> Path:
    """models: {"encoder": (tflite bytes, quant[, options]), "decoder_step": (...)}. Returns the bundle folder.

    decoder_extra: more decoder facts for the manifest (the Edge TPU decoder's embedding table)."""
    out = Path(out)
    if out.exists() and not force:
        raise ScenecapError(f"{out}: already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    tmp.chmod(default_mode(directory=True))  # mkdtemp makes it 0700
    try:
        specs = {}
        for name, (data, quant, *options) in models.items():
            (tmp / f"{name}.tflite").write_bytes(data)
            specs[name] = describe_model(tmp / f"{name}.tflite", quant, options[0] if options else None)
        vocab.save(tmp / "vocab.json")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = Manifest(
            language=export_info["language"],
            preprocess=PreprocessSpec(**export_info["preprocess"]),
            tokens=vocab.ids,
            max_length=int(export_info["max_length"]),
            model=dict(export_info["model"]),
            decoder={"state": export_info.get("decoder_state", "carry"), "batch": decoder_batch,
                     **(decoder_extra or {})},
            models=specs,
            files=files,
            scenecap_version=__version__,
            format_version=FORMAT_VERSION,
            training=export_info.get("training", {}),
            provenance=provenance,
        )
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest.to_json(), indent=2, ensure_ascii=False))
        load_bundle(tmp)  # what we wrote must read back
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def replace_dir(new: Path, target: Path) -> None:
    """Put `new` at `target`; an old `target` is kept aside until the new one is in place."""
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
