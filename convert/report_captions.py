"""The report's measurements: caption every held-out image with one variant (a bundle with the edge runtime, or
the float SavedModel looped in Python the same way), timing the encoder and each decoder step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # report.py imports this module; the options are only a type here
    from scenecap.convert.report import ReportOptions


@dataclass
class VariantResult:
    name: str
    kind: str  # "bundle" or "savedmodel"
    path: str
    encoder: str  # quantisation (and options)
    decoder: str
    runtime: str
    tokens: dict = field(default_factory=dict)  # image_id -> token ids (<end> excluded)
    captions: dict = field(default_factory=dict)  # image_id -> text
    encoder_ms: list[float] = field(default_factory=list)
    step_ms_by_position: dict[int, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    decoder_step_macs: int | None = None
    # The gate (bundles with a confidence section): per image_id, as the device would judge each caption.
    confidence: dict = field(default_factory=dict)
    unsure: dict = field(default_factory=dict)
    familiarity: dict = field(default_factory=dict)
    threshold: float | None = None
    looked: dict = field(default_factory=dict)  # the confidence with the second look, if the bundle calibrated one
    look_threshold: float | None = None


def progress(it, desc: str, enabled: bool):
    """`it`, with a tqdm bar when enabled (a terminal)."""
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="img", leave=False)


def evaluate_bundle(path: Path, samples, frames: dict, opts: ReportOptions, show: bool) -> VariantResult:
    """Caption every held-out image with the edge runtime, timing the encoder and each decoder step."""
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.modelinfo import fc_macs, read_model

    cap = Captioner.load(path, beam=opts.beam, length_penalty=opts.length_penalty, threads=opts.threads)
    m = cap.bundle.manifest
    enc, dec = m.models["encoder"], m.models["decoder_step"]

    def label(spec):
        return spec.quant + (f" ({', '.join(spec.options)})" if spec.options else "")

    r = VariantResult(path.name, "bundle", str(path), label(enc), label(dec), cap.runtime.name)
    r.sizes = {"encoder": m.files[enc.file].bytes, "decoder_step": m.files[dec.file].bytes}
    if m.embedding:
        r.sizes["embedding_table"] = m.files[m.embedding.file].bytes
    r.decoder_step_macs = fc_macs(read_model(path / dec.file))
    cap.caption(frames[samples[0].image_id])  # warm-up: first invokes allocate
    for s in progress(samples, f"captioning with {path.name}", show):
        c = cap.caption(frames[s.image_id])
        for position, ms in enumerate(c.step_ms, 1):  # each decoder step, as timed inside the caption
            r.step_ms_by_position.setdefault(position, []).append(ms)
        r.tokens[s.image_id], r.captions[s.image_id] = c.tokens, c.text
        r.encoder_ms.append(c.timings["encoder"])
        if m.confidence:
            _judged(r, cap, s.image_id, c, frames[s.image_id])
    return r


def _judged(r: VariantResult, cap, image_id, c, frame) -> None:
    """The caption's confidence and verdict, and with the bundle's second look (timed apart from the caption)."""
    from scenecap.edge import confidence as conf
    from scenecap.edge.preprocess import prepare

    m = cap.bundle.manifest
    r.threshold = cap.min_confidence
    r.confidence[image_id], r.unsure[image_id], r.familiarity[image_id] = c.confidence, c.unsure, c.familiarity
    look = m.confidence.second_look
    if look is None:
        return
    r.look_threshold = look.threshold
    second = cap.look_if_it_matters(c, prepare(frame, m.preprocess), look.zoom, look.threshold)  # as on the device
    r.looked[image_id] = conf.combine(c.word_confidence, c.familiarity, second)


def evaluate_savedmodel(path: Path, samples, frames: dict, opts: ReportOptions, show: bool) -> VariantResult:
    """The float reference: the exported SavedModel's signatures, looped in Python as the edge loops them."""
    import tensorflow as tf

    from scenecap.convert.export_reader import read_export
    from scenecap.edge.decode import beam_search, greedy
    from scenecap.edge.preprocess import PreprocessSpec, prepare

    export = read_export(path)
    sm = tf.saved_model.load(str(path))
    encode, step_sig = sm.signatures["encode"], sm.signatures["decode_step"]
    spec = PreprocessSpec(**export.info["preprocess"])
    ids, units = export.info["tokens"], export.info["model"]["units"]
    max_steps = export.info["max_length"] - 1
    r = VariantResult("float SavedModel", "savedmodel", str(path), "float32", "float32", f"tensorflow {tf.__version__}")
    variables = path / "variables"
    r.sizes = {"savedmodel": sum(f.stat().st_size for f in variables.glob("*")) if variables.is_dir() else 0}
    for s in progress(samples, "captioning with the float SavedModel", show):
        t0 = time.perf_counter()
        enc = encode(image=tf.constant(prepare(frames[s.image_id], spec)[None]))
        r.encoder_ms.append((time.perf_counter() - t0) * 1e3)
        pos = [0]

        def step(tokens, hidden, enc=enc, pos=pos):
            t1 = time.perf_counter()
            outs = [step_sig(token=tf.constant(tokens[i : i + 1]), hidden=tf.constant(hidden[i : i + 1]),
                             features=enc["features"], keys=enc["keys"]) for i in range(len(tokens))]
            pos[0] += 1
            r.step_ms_by_position.setdefault(pos[0], []).append((time.perf_counter() - t1) * 1e3)
            return tuple(np.concatenate([o[k].numpy() for o in outs]) for k in ("logits", "new_hidden", "attention"))

        hidden0 = np.zeros((1, units), np.float32)
        if opts.beam > 1:
            hyp = beam_search(step, hidden0, ids["start"], ids["end"], max_steps, opts.beam, opts.length_penalty)
        else:
            hyp = greedy(step, hidden0, ids["start"], ids["end"], max_steps)
        tokens = [t for t in hyp.tokens if t != ids["end"]]
        r.tokens[s.image_id], r.captions[s.image_id] = tokens, " ".join(export.vocab.decode(tokens))
    return r
