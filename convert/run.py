"""`scenecap convert`: an export folder -> a bundle, for the chosen quantisation of each model."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scenecap import ScenecapError
from scenecap.convert.bundle_writer import write_bundle
from scenecap.convert.calibrate import (
    batch_rows,
    calibration_paths,
    load_calibration_images,
    record_decoder_inputs,
)
from scenecap.convert.export_reader import check_signatures, read_export
from scenecap.convert.tflite import QUANTS, convert_signature
from scenecap.edge.preprocess import PreprocessSpec

log = logging.getLogger("scenecap.convert")


@dataclass
class ConvertOptions:
    export: str
    out: str
    encoder_quant: str = "float32"
    decoder_quant: str = "float32"
    decoder_batch: int = 1
    calibration_images: str | None = None
    calibration_count: int = 100
    seed: int = 0
    force: bool = False
    recipe: str = ""  # how to rebuild this bundle, recorded in the manifest


def convert(opts: ConvertOptions) -> Path:
    for q in (opts.encoder_quant, opts.decoder_quant):
        if q not in QUANTS:
            raise ScenecapError(f"--quant {q!r} unknown; expected one of {', '.join(QUANTS)}")
    out = Path(opts.out)
    if out.exists() and not opts.force:
        raise ScenecapError(f"{out}: already exists; pass --force to replace it")
    export = read_export(opts.export)
    step_sig = export.decoder_signature(opts.decoder_batch)
    check_signatures(export, ["encode", step_sig])
    needs_calibration = {opts.encoder_quant, opts.decoder_quant} & {"int8", "edgetpu"}
    enc_rep = dec_rep = None
    if needs_calibration:
        spec = PreprocessSpec(**export.info["preprocess"])
        paths = calibration_paths(opts.calibration_images, export, opts.calibration_count, opts.seed)
        images = load_calibration_images(paths, spec)
        log.info("calibrating on %d real images", len(images))

        def enc_rep():
            for img in images:
                yield {"image": img[None]}

        if opts.decoder_quant in ("int8", "edgetpu"):
            rows = batch_rows(record_decoder_inputs(export, images, seed=opts.seed, progress=sys.stderr.isatty()),
                              opts.decoder_batch, opts.seed)
            log.info("recorded %d real decoder-step inputs", len(rows))

            def dec_rep():
                yield from rows

    t0 = time.perf_counter()
    models = {
        "encoder": (convert_signature(export.path, "encode", opts.encoder_quant, enc_rep), opts.encoder_quant),
        "decoder_step": (convert_signature(export.path, step_sig, opts.decoder_quant, dec_rep), opts.decoder_quant),
    }
    log.info("converted in %.1f s", time.perf_counter() - t0)
    provenance = {
        "export": str(Path(opts.export).resolve()),
        "encoder_quant": opts.encoder_quant,
        "decoder_quant": opts.decoder_quant,
        "calibration_images": opts.calibration_images or "training split sample",
        "calibration_count": opts.calibration_count if needs_calibration else 0,
        "seed": opts.seed,
        "recipe": opts.recipe,
        "command": " ".join(sys.argv) if sys.argv and "scenecap" in sys.argv[0] else "",
    }
    return write_bundle(out, models, export.vocab, export.info, provenance, opts.decoder_batch, force=opts.force)
