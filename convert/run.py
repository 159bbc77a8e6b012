"""`scenecap convert`: an export folder -> one bundle per variant (a quantisation for the encoder and one for the
decoder step), with the variants chosen so the target runtime has every op's kernel."""

from __future__ import annotations

import io
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenecap import ScenecapError
from scenecap.convert.bundle_writer import write_bundle
from scenecap.convert.calibrate import (
    batch_rows,
    calibration_paths,
    load_calibration_images,
    record_decoder_inputs,
)
from scenecap.convert.compat import Target, Variant, candidates, get_target
from scenecap.convert.export_reader import ExportInfo, check_signatures, read_export
from scenecap.convert.selective import SELECTIVE
from scenecap.convert.tflite import QUANTS, convert_signature
from scenecap.edge.export_contract import EMBED, ENCODE, ENCODE_PIXELS, decode_signature, encoder_signature
from scenecap.edge.manifest_models import LOG_NORM_QUANTS
from scenecap.edge.modelinfo import ModelInfo, parse_model
from scenecap.edge.preprocess import PreprocessSpec
from scenecap.train.quiet import native_stderr_to_debug, quiet_tensorflow_logger

log = logging.getLogger("scenecap.convert")
EMBEDDING_FILE = "embedding.npy"


@dataclass
class ConvertOptions:
    export: str
    out: str
    encoder_quant: str = "float32"
    decoder_quant: str = "float32"
    decoder_batch: int = 1
    calibration_images: str | None = None
    calibration_count: int = 100
    calibration_steps: int = 600  # decoder-step inputs kept from the float model's captions of those images
    seed: int = 0
    force: bool = False
    recipe: str = ""  # how to rebuild this bundle, recorded in the manifest
    target_runtime: str = "litert"  # litert | tflite-runtime-2.14 | edgetpu-compiler-16 (see compat.py)
    progress: bool | None = None  # progress bars; None = when stderr is a terminal


@dataclass
class ConvertResult:
    path: Path
    name: str  # "int8", or "int8-dynamic" for an int8 encoder with a dynamic decoder
    encoder_quant: str  # as requested
    decoder_quant: str
    changes: list[str] = field(default_factory=list)  # what had to change for the target runtime, and why
    edgetpu: str = ""  # the compiler's outcome, or the commands to run where it is not installed


def variant_name(encoder_quant: str, decoder_quant: str) -> str:
    return encoder_quant if encoder_quant == decoder_quant else f"{encoder_quant}-{decoder_quant}"


def parse_quant_list(text: str) -> list[tuple[str, str]]:
    """'int8' | 'float32,int8,int8:dynamic' | 'all' -> [(encoder quant, decoder quant), ...]."""
    if text.strip() == "all":
        return [(q, q) for q in QUANTS if q not in DECODER_ONLY] + [("int8", q) for q in DECODER_ONLY]
    pairs = []
    for item in (t.strip() for t in text.split(",")):
        enc, _, dec = item.partition(":")
        dec = dec or enc
        _check_pair(enc, dec)
        if (enc, dec) not in pairs:
            pairs.append((enc, dec))
    return pairs


# Calibrated quantisations (need real images and decoder inputs), and those for the decoder step only.
CALIBRATED = ("int8", "int16x8", "edgetpu", *SELECTIVE)
DECODER_ONLY = ("int16x8", *SELECTIVE)
# Decoders whose word-embedding lookup runs on the CPU from a table in the bundle: the Edge TPU cannot map the
# GATHER, and int16x8 cannot calibrate an integer token input.
EMBEDDED = ("edgetpu", "int16x8")


def _check_pair(enc: str, dec: str) -> None:
    for q in (enc, dec):
        if q not in QUANTS:
            raise ScenecapError(f"--quant {q!r} unknown; expected one of {', '.join(QUANTS)}, 'ENC:DEC' or 'all'")
    if enc in DECODER_ONLY:
        raise ScenecapError(f"--quant {enc}: for the decoder step only; give the encoder another, e.g. int8:{enc}")


def _signature(which: str, quant: str, batch: int, log_norm: bool = False) -> str:
    """The export's signature a model of this quantisation is converted from. `log_norm`: the export has the
    decode_step_norm signatures (its sidecar says so), which the float-logit decoders are converted from; an
    older export's are converted from decode_step, as before."""
    if which == "encoder":
        return encoder_signature(pixels=quant == "edgetpu")
    return decode_signature(batch, embedded=quant in EMBEDDED, log_norm=log_norm and quant in LOG_NORM_QUANTS)


class Calibration:
    """Real calibration data, computed once and shared by every variant that needs it."""

    def __init__(self, opts: ConvertOptions, export: ExportInfo, progress: bool):
        self.opts, self.export, self.progress = opts, export, progress
        self._images: list[np.ndarray] | None = None
        self._rows: list[dict[str, np.ndarray]] | None = None
        self._saved = None

    def saved(self):
        import tensorflow as tf

        if self._saved is None:
            self._saved = tf.saved_model.load(str(self.export.path))
        return self._saved

    @property
    def images(self) -> list[np.ndarray]:
        if self._images is None:
            spec = PreprocessSpec(**self.export.sidecar.preprocess)
            paths = calibration_paths(self.opts.calibration_images, self.export, self.opts.calibration_count,
                                      self.opts.seed)
            self._images = load_calibration_images(paths, spec)
            log.info("calibrating on %d real images", len(self._images))
        return self._images

    @property
    def rows(self) -> list[dict[str, np.ndarray]]:
        if self._rows is None:
            self._rows = record_decoder_inputs(self.export, self.images, max_rows=self.opts.calibration_steps,
                                               seed=self.opts.seed, progress=self.progress)
            log.info("recorded %d real decoder-step inputs", len(self._rows))
        return self._rows

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self.saved().signatures[EMBED](token=tf.constant(tokens, tf.int32))["embedding"].numpy()

    def data(self, signature: str, batch: int):
        """A representative-dataset callable for one signature (a decoder step's at `batch`), keyed by its input
        names."""
        if signature == ENCODE:
            return lambda: ({"image": img[None]} for img in self.images)
        if signature == ENCODE_PIXELS:  # pixel values as floats: the model's input is quantised from them
            return lambda: ({"image": img[None].astype(np.float32)} for img in self.images)
        rows = self.rows
        if signature == decode_signature(batch, embedded=True):
            rows = [{"embedding": self.embed(r["token"]), **{k: v for k, v in r.items() if k != "token"}}
                    for r in rows]
        batched = batch_rows(rows, batch, self.opts.seed)
        return lambda: iter(batched)


def _convert_model(export: ExportInfo, which: str, quant: str, batch: int, target: Target,
                   cal: Calibration) -> tuple[bytes, Variant, ModelInfo, str]:
    """The first candidate variant whose ops the target has: (tflite, variant, info, what changed and why)."""
    chain, note = candidates(quant, target)
    first_problems: list[str] = []
    for variant in chain:
        sig = _signature(which, variant.quant, batch, export.sidecar.log_norm)
        rep = cal.data(sig, batch) if variant.quant in CALIBRATED else None
        t0 = time.perf_counter()
        with native_stderr_to_debug():  # the quantiser prints 'fully_quantize: 0, inference_type: 6 ...'
            data = convert_signature(export.path, sig, variant.quant, rep, io_type="int8",
                                     input_type="uint8" if sig == ENCODE_PIXELS else None,
                                     per_tensor_dense=variant.per_tensor_dense)
        info = parse_model(data, f"{which}.tflite")
        problems = target.problems(info.all_ops)
        if variant.quant == "edgetpu":
            problems += [f"tensor {t.name} has a dynamic shape" for t in info.tensors if t.dynamic]
        log.info("%s: %s -> %d KiB in %.1f s%s", which, variant, len(data) // 1024, time.perf_counter() - t0,
                 f" (not for {target.name}: {problems[0]})" if problems else "")
        if not problems:
            change = ""
            if variant != Variant(quant) or note:
                why = note or "; ".join(first_problems)
                change = f"{which}: {quant} requested, {variant} used for {target.name} ({why})"
            return data, variant, info, change
        first_problems = first_problems or problems
    raise ScenecapError(f"{which}: no {quant} variant loads on {target.name} ({first_problems[0]}); try another "
                        f"--quant or --target-runtime")


def _embedding_table(cal: Calibration, info: ModelInfo, signature: str, vocab_size: int) -> tuple[bytes, dict]:
    """The word-embedding table, quantised exactly like the decoder's embedding input (float32 if it is float)."""
    t = info.tensor(info.signatures[signature]["inputs"]["embedding"])
    table = cal.embed(np.arange(vocab_size, dtype=np.int32))
    if t.dtype == "float32":
        scale, zp, q = 0.0, 0, table.astype(np.float32)
    else:
        scale, zp = t.scales[0], t.zero_points[0]
        q = np.clip(np.round(table / scale) + zp, np.iinfo(t.dtype).min, np.iinfo(t.dtype).max).astype(t.dtype)
    buf = io.BytesIO()
    np.save(buf, q, allow_pickle=False)
    return buf.getvalue(), {"file": EMBEDDING_FILE, "shape": list(q.shape), "dtype": t.dtype, "scale": scale,
                            "zero_point": zp}


def convert(opts: ConvertOptions) -> Path:
    """One bundle at opts.out with the requested encoder and decoder quantisation."""
    return convert_variants(opts, [(opts.encoder_quant, opts.decoder_quant)])[0].path


def convert_variants(opts: ConvertOptions, pairs: list[tuple[str, str]]) -> list[ConvertResult]:
    """One bundle per (encoder quant, decoder quant): at opts.out for one pair, else opts.out/<variant name>/.

    Everything is checked and converted before anything is written; each bundle is written atomically."""
    target, dests = _check_request(opts, pairs)
    quiet_tensorflow_logger()
    export = read_export(opts.export)
    export.decoder_signature(opts.decoder_batch)  # fails with the re-export command if the batch is missing
    needed = sorted({_signature(w, v.quant, opts.decoder_batch, export.sidecar.log_norm)
                     for e, d in pairs for w, q in (("encoder", e), ("decoder", d))
                     for v in candidates(q, target)[0]})
    embedded = decode_signature(opts.decoder_batch, embedded=True)
    check_signatures(export, needed + ([EMBED] if embedded in needed else []))
    progress = sys.stderr.isatty() if opts.progress is None else opts.progress
    cal = Calibration(opts, export, progress)
    if any(v.quant in CALIBRATED for e, d in pairs for q in (e, d) for v in candidates(q, target)[0][:1]):
        cal.images  # noqa: B018  (read and check the calibration images before the slow conversions)

    cache: dict[tuple[str, str], tuple] = {}  # a model converted once serves every variant that uses it
    planned = []
    for (enc, dec), dest in zip(pairs, dests, strict=True):
        parts, changes = {}, []
        for which, q in (("encoder", enc), ("decoder_step", dec)):
            if (which, q) not in cache:
                cache[(which, q)] = _convert_model(export, which, q, opts.decoder_batch, target, cal)
            data, variant, info, change = cache[(which, q)]
            parts[which] = (data, variant, info)
            if change:
                changes.append(change)
        planned.append((enc, dec, dest, parts, changes))
    return [_write_variant(opts, export, target, cal, *p) for p in planned]


def _check_request(opts: ConvertOptions, pairs: list[tuple[str, str]]) -> tuple[Target, list[Path]]:
    """The target runtime and each variant's bundle folder, once every option is checked (before TensorFlow)."""
    if not pairs:
        raise ScenecapError("no variants to convert; pass --quant")
    for enc, dec in pairs:
        _check_pair(enc, dec)
    target = get_target(opts.target_runtime)
    if opts.decoder_batch < 1:
        raise ScenecapError(f"--decoder-batch {opts.decoder_batch}; expected a positive integer (the beam width)")
    if opts.calibration_steps < 1:
        raise ScenecapError(f"--calibration-steps {opts.calibration_steps}; expected a positive integer")
    out = Path(opts.out)
    dests = [out] if len(pairs) == 1 else [out / variant_name(e, d) for e, d in pairs]
    for d in dests:
        if d.exists() and not opts.force:
            raise ScenecapError(f"{d}: already exists; pass --force to replace it")
    return target, dests


def _write_variant(opts: ConvertOptions, export: ExportInfo, target: Target, cal: Calibration, enc: str, dec: str,
                   dest: Path, parts: dict, changes: list[str]) -> ConvertResult:
    """One converted variant's bundle (with its embedding table where the decoder needs one), compiled for the
    Edge TPU where it has edgetpu models."""
    extra_files, decoder_extra = {}, {}
    data, variant, info = parts["decoder_step"]
    if variant.quant in EMBEDDED:
        sig = _signature("decoder", variant.quant, opts.decoder_batch)
        table, spec = _embedding_table(cal, info, sig, int(export.sidecar.model["vocab_size"]))
        extra_files[EMBEDDING_FILE], decoder_extra["embedding"] = table, spec
    for c in changes:
        log.warning("%s", c)
    models = {name: (d, v.quant, v.options) for name, (d, v, _) in parts.items()}
    provenance = _provenance(opts, target, cal, enc, dec, parts, changes)
    path = write_bundle(dest, models, export.vocab, export.info, provenance, opts.decoder_batch,
                        extra_files=extra_files, force=opts.force, decoder_extra=decoder_extra)
    result = ConvertResult(path, variant_name(enc, dec), enc, dec, changes)
    tpu_files = [f"{n}.tflite" for n, (_, v, _) in parts.items() if v.quant == "edgetpu"]
    if tpu_files:
        from scenecap.convert.edgetpu import compile_or_explain

        result.edgetpu = compile_or_explain(path, tpu_files)
    return result


def _provenance(opts: ConvertOptions, target: Target, cal: Calibration, enc: str, dec: str, parts: dict,
                changes: list[str]) -> dict:
    """How the bundle was made, for its manifest."""
    return {
        "export": str(Path(opts.export).resolve()),
        "encoder_quant": parts["encoder"][1].quant,
        "decoder_quant": parts["decoder_step"][1].quant,
        "requested": {"encoder": enc, "decoder_step": dec},
        "target_runtime": target.name,
        "changes": changes,
        "calibration_images": opts.calibration_images or "training split sample",
        "calibration_count": len(cal.images) if any(v.quant in CALIBRATED for _, v, _ in parts.values()) else 0,
        "calibration_steps": len(cal.rows) if any(v.quant in CALIBRATED for n, (_, v, _) in parts.items()
                                                  if n == "decoder_step") else 0,
        "seed": opts.seed,
        "recipe": opts.recipe,
        "command": " ".join(sys.argv) if sys.argv and "scenecap" in sys.argv[0] else "",
    }
