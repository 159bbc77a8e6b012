"""The Python API for apps: Captioner.load(bundle).caption(image) -> Caption."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenecap.edge.bundle import Bundle, load_bundle, load_embedding
from scenecap.edge.decode import Hypothesis, beam_search, check_length_penalty, greedy
from scenecap.edge.errors import ScenecapError
from scenecap.edge.interpreter import TFLiteModel, find_runtime, load_edgetpu_delegate
from scenecap.edge.preprocess import prepare


@dataclass
class Caption:
    text: str
    tokens: list[int]  # generated ids, <end> excluded
    words: list[str]
    log_prob: float
    attention: np.ndarray  # [n_words, locations]
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    invokes: int = 0  # decoder invokes used
    stopped: bool = False  # cut short by `stop`: the words so far, unfinished; never say or show it as a caption


class Captioner:
    """Runs a bundle: the encoder once per image, then the decoder step word by word.

    Thread-safe: one caption runs at a time (a lock around each); a LiteRT interpreter holds one image's tensors
    and cannot be invoked from two threads at once. For captions in parallel, load one Captioner per thread.
    """

    def __init__(self, bundle: Bundle, threads: int | None = None, device: str = "cpu", beam: int = 1,
                 length_penalty: float = 0.0, runtime: str | None = None):
        self.bundle = bundle
        m = bundle.manifest
        self.runtime = find_runtime(runtime)
        delegate = None
        files = {k: v.file for k, v in m.models.items()}
        if device == "edgetpu":
            missing = [k for k, v in m.models.items() if not v.edgetpu_file]
            if missing:
                raise ScenecapError(
                    f"{bundle.path}: no Edge TPU-compiled model for {', '.join(missing)}; convert with "
                    "--quant edgetpu and run edgetpu_compiler (see 'scenecap convert --help')"
                )
            files = {k: v.edgetpu_file for k, v in m.models.items()}
            delegate = load_edgetpu_delegate(self.runtime)
        elif device != "cpu":
            raise ScenecapError(f"device {device!r} unknown; expected cpu or edgetpu")
        # From the bytes the bundle verified (kept alive by each model), not by opening the files again.
        self.encoder = TFLiteModel(bundle.file(files["encoder"]), m.models["encoder"], threads, delegate, self.runtime,
                                   bundle.data.get(files["encoder"]))
        self.decoder = TFLiteModel(bundle.file(files["decoder_step"]), m.models["decoder_step"], threads, delegate,
                                   self.runtime, bundle.data.get(files["decoder_step"]))
        # Edge TPU and int16x8 bundles: the word lookup (GATHER) runs here, from a table shaped like the input.
        self.embedding = load_embedding(bundle)
        self.batch = m.decoder_batch
        self.units = int(m.models["decoder_step"].inputs["hidden"].shape[-1])
        self.beam = max(1, int(beam))
        self.length_penalty = check_length_penalty(length_penalty)
        self.feature_names = [n for n in m.models["encoder"].outputs]
        self._invokes = 0
        self._decoder_ms = 0.0
        self._lock = threading.RLock()  # one caption (or encode) at a time: the interpreters' tensors are shared

    @classmethod
    def load(cls, bundle_dir: str | Path, **kwargs) -> Captioner:
        return cls(load_bundle(bundle_dir), **kwargs)

    def captions(self, source, **options):
        """Caption frames from a source as they come: an iterator of Captioned(frame, caption, reason, score).

        `source`: image file, folder, glob, video file, camera index or /dev/videoN, 'picam', rtsp/http URL, or
        any iterable of numpy frames. Options (when, every, min_interval, threshold, dedup, stop, ...): see
        scenecap.edge.live.caption_stream. Live sources caption on scene changes by default.
        """
        from scenecap.edge.live import caption_stream

        return caption_stream(self, source, **options)

    @property
    def vocab(self):
        return self.bundle.vocab

    def encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Model-size RGB uint8 [H, W, 3] -> per-image tensors (features, attention keys)."""
        # A quantised image input (Edge TPU encoder) is quantised from the pixel values by the manifest's scale.
        quantised = self.encoder.spec.inputs["image"].quantized
        with self._lock:
            self.encoder.set("image", image[None].astype(np.float32) if quantised else image[None])
            self.encoder.invoke()
            return {name: self.encoder.get(name) for name in self.feature_names}

    def _bind_features(self, feats: dict[str, np.ndarray]) -> None:
        # Inputs persist between invokes: set the image's tensors once, not once per word.
        for name, value in feats.items():
            self.decoder.set(name, np.repeat(value, self.batch, axis=0) if self.batch > 1 else value)

    def _step(self, tokens: np.ndarray, hidden: np.ndarray):
        """Advance n hypotheses; n may exceed the model's batch (several invokes) or fall short (padding)."""
        n, b = len(tokens), self.batch
        outs = []
        t0 = time.perf_counter()
        for s in range(0, n, b):
            tk, hd = tokens[s : s + b], hidden[s : s + b]
            pad = b - len(tk)
            if pad:
                tk = np.concatenate([tk, np.zeros(pad, np.int32)])
                hd = np.concatenate([hd, np.zeros((pad, hd.shape[1]), np.float32)])
            if self.embedding is None:
                self.decoder.set("token", tk)
            else:
                self.decoder.set("embedding", self.embedding[tk])
            self.decoder.set("hidden", hd)
            self.decoder.invoke()
            self._invokes += 1
            k = b - pad
            outs.append((self.decoder.get("logits")[:k], self.decoder.get("new_hidden")[:k],
                         self.decoder.get("attention")[:k]))
        self._decoder_ms += (time.perf_counter() - t0) * 1e3
        if len(outs) == 1:
            return outs[0]
        return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))

    def caption(self, frame: np.ndarray | str | Path, bgr: bool = False,
                stop: threading.Event | None = None) -> Caption:
        """Caption one frame (any size, RGB unless bgr=True), or an image file.

        `stop`: checked before every decoder step; once set, the caption returns at once with the words so far and
        `stopped=True` (unfinished: not to be spoken or shown). Safe to call from several threads (serialised)."""
        if isinstance(frame, (str, Path)):
            from scenecap.edge.images import load_image

            frame = load_image(frame)
        t0 = time.perf_counter()
        image = prepare(frame, self.bundle.manifest.preprocess, bgr=bgr)
        preprocess_ms = (time.perf_counter() - t0) * 1e3
        with self._lock:
            return self._caption(image, preprocess_ms, stop)

    def _caption(self, image: np.ndarray, preprocess_ms: float, stop: threading.Event | None) -> Caption:
        """Encoder then decoder loop, under the lock (the time spent waiting for it is in no stage)."""
        m = self.bundle.manifest
        t1 = time.perf_counter()
        feats = self.encode(image)
        t2 = time.perf_counter()
        self._bind_features(feats)
        self._invokes, self._decoder_ms = 0, 0.0
        hidden0 = np.zeros((1, self.units), np.float32)
        ids = m.tokens
        if self.beam > 1:
            hyp = beam_search(self._step, hidden0, ids["start"], ids["end"], m.max_length - 1, self.beam,
                              self.length_penalty, stop)
        else:
            hyp = greedy(self._step, hidden0, ids["start"], ids["end"], m.max_length - 1, stop)
        t3 = time.perf_counter()
        return self._finish(hyp, {
            "preprocess": preprocess_ms,
            "encoder": (t2 - t1) * 1e3,
            "decoder": (t3 - t2) * 1e3,
            "decoder_invokes": self._decoder_ms,
            "total": preprocess_ms + (t3 - t1) * 1e3,
        })

    def _finish(self, hyp: Hypothesis, timings: dict[str, float]) -> Caption:
        end = self.bundle.manifest.tokens["end"]
        tokens = [t for t in hyp.tokens if t != end]
        words = self.vocab.decode(tokens)
        attn = np.stack(hyp.attention[: len(tokens)]) if tokens else np.zeros((0, 0), np.float32)
        return Caption(" ".join(words), tokens, words, hyp.log_prob, attn, timings, self._invokes, hyp.stopped)
