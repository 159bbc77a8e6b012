"""The Python API for apps: Captioner.load(bundle).caption(image) -> Caption."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenecap.edge import confidence as conf
from scenecap.edge import lean_search
from scenecap.edge.bundle import Bundle, TensorSpec, load_bundle, load_confidence_arrays, load_embedding
from scenecap.edge.decode import Hypothesis, Logits, beam_search, check_length_penalty, forced, greedy, search_beams
from scenecap.edge.errors import ScenecapError
from scenecap.edge.export_contract import LOG_NORM
from scenecap.edge.interpreter import TFLiteModel, dequantize, find_runtime, load_edgetpu_delegate, quantize
from scenecap.edge.preprocess import prepare, zoomed


@dataclass
class Caption:
    text: str
    tokens: list[int]  # generated ids, <end> excluded
    words: list[str]
    hypothesis: Hypothesis = field(repr=False)  # the search's result; log_prob reads it
    attention: np.ndarray | None  # [n_words, locations]; None unless the Captioner keeps it (attention=True)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    invokes: int = 0  # decoder invokes used
    stopped: bool = False  # cut short by `stop`: the words so far, unfinished; never say or show it as a caption
    step_ms: list[float] = field(default_factory=list)  # each decoder step's milliseconds, in order
    # How sure (edge/confidence.py): word probabilities x the image's familiarity (None: the bundle has no image
    # statistics). `unsure`: below the threshold (the bundle's, or min_confidence): say so, not the caption.
    familiarity: float | None = None
    confidence: float = 0.0
    unsure: bool = False

    word_confidence: float = 0.0  # the words' geometric-mean probability, before the image's familiarity
    second_look: float | None = None  # its least likely word's probability on a zoomed view (None: not taken)

    @property
    def log_prob(self) -> float:
        """Total log-probability of the words (and <end>)."""
        return self.hypothesis.log_prob


def _same_quantisation(a: TensorSpec, b: TensorSpec) -> bool:
    return a.dtype == b.dtype and (not a.quantized or (a.scale == b.scale and a.zero_point == b.zero_point))


def _requant_table(src: TensorSpec, dst: TensorSpec) -> np.ndarray | None:
    """For an 8-bit state stored at one scale and read at another: dst's value for each of src's 256 values,
    indexed by the raw byte (an int8 value's uint8 view), so carrying the state costs one gather per word."""
    if not (src.quantized and dst.quantized and np.dtype(src.dtype).itemsize == 1):
        return None
    values = np.arange(256, dtype=np.uint8).view(np.dtype(src.dtype))  # byte i as src's dtype reads it
    return quantize(dequantize(values, src), dst)


class DecoderSession:
    """One image on the decoder: its features bound once, then step() advances hypotheses word by word.

    From `with captioner.start(features) as session:` (features = captioner.encode(image)); it holds the
    Captioner's lock until the block ends, since the decoder's tensors now hold this image.

    step(tokens[n], hidden[n, U] float32) -> (logits[n, V], new_hidden[n, U], attention[n, L]), float32 copies:
    n may exceed the model's batch (several invokes) or fall short (padding). raw_step is the same in the model's
    own dtypes: `hidden` as raw_step returned it (hidden0() to begin) and Logits for argmax without dequantising.
    raw_step's logits are not copied: a view of the decoder's output (or, over several invokes, this session's
    buffer), valid only until the next step, which overwrites them; the caller must drop them before then
    (LiteRT refuses to invoke while a view of its tensors lives) and may overwrite them (Logits.scratch).
    new_hidden and attention are copies, to keep. When the decoder outputs log_norm (each logits row's
    log-sum-exp, computed in the graph), raw_step's Logits carry it (a copy); else their log_norm is None.
    """

    def __init__(self, captioner: Captioner, features: dict[str, np.ndarray]):
        self.captioner = captioner
        dec = self.decoder = captioner.decoder
        self.batch, self.units, self.embedding = captioner.batch, captioner.units, captioner.embedding
        self.token_input = "token" if self.embedding is None else "embedding"
        self.specs = {n: dec.input_spec(n) for n in ("hidden", self.token_input)}
        self.specs.update({n: dec.output_spec(n) for n in ("logits", "new_hidden", "attention")})
        # A bundle converted before log_norm (or an integer decoder) has none: the search computes it in numpy.
        self.log_norm = LOG_NORM in dec.spec.outputs
        self.carry_raw, self.requant = captioner.carry_raw, captioner.requant  # decided once per Captioner
        self.invokes, self.step_ms = 0, []
        self._logits_buf: np.ndarray | None = None  # logits of a step that took several invokes (_logits_rows)
        for name, value in features.items():  # inputs persist between invokes: once per image, not per word
            dec.set(name, np.repeat(value, self.batch, axis=0) if self.batch > 1 else value)

    def __enter__(self) -> DecoderSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the Captioner for the next caption (the `with` block does this)."""
        if self.captioner is not None:
            self.captioner._lock.release()
            self.captioner = None

    def hidden0(self, n: int = 1) -> np.ndarray:
        """The initial state for raw_step: zeros, as new_hidden stores them."""
        return quantize(np.zeros((n, self.units), np.float32), self.specs["new_hidden"])

    def step(self, tokens: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, new_hidden, attention = self._advance(np.asarray(tokens, np.int32),
                                                      quantize(hidden, self.specs["hidden"]))
        floats = logits.raw.astype(np.float32) if logits.scale is None else logits.floats()  # a copy, to keep
        return (floats, dequantize(new_hidden, self.specs["new_hidden"]),
                dequantize(attention, self.specs["attention"]))

    def raw_step(self, tokens: np.ndarray, hidden: np.ndarray) -> tuple[Logits, np.ndarray, np.ndarray]:
        return self._advance(tokens, self.carried(hidden))

    def carried(self, hidden: np.ndarray) -> np.ndarray:
        """A state as new_hidden stores it, as the hidden input stores it: itself when they share a quantisation,
        else through the 256-entry table (an 8-bit state), else dequantised and quantised again (same bits)."""
        if self.requant is not None:  # one lookup per value
            return self.requant[hidden.view(np.uint8) if hidden.dtype == np.int8 else hidden]
        if self.carry_raw:
            return hidden
        return quantize(dequantize(hidden, self.specs["new_hidden"]), self.specs["hidden"])

    def greedy(self, start: int, end: int, max_steps: int, stop: threading.Event | None = None,
               attention: bool = True) -> Hypothesis:
        """Greedy search from <start> over this image: edge/lean_search.py's flat loop where the decoder takes it
        (batch 1, token ids in), else decode.greedy through raw_step. The same words either way. `attention`
        False: the flat loop keeps no attention rows (the reference keeps them regardless)."""
        if lean_search.supports(self):
            return lean_search.lean_greedy(self, start, end, max_steps, stop, attention)
        return greedy(self.raw_step, self.hidden0(), start, end, max_steps, stop)

    def beam_search(self, start: int, end: int, max_steps: int, width: int, length_penalty: float = 0.0,
                    stop: threading.Event | None = None, attention: bool = True) -> Hypothesis:
        """Beam search from <start> over this image (greedy at width 1): decode.search_beams with edge/lean_search.py's
        expand step where the decoder takes it, else decode.beam_search through raw_step. `attention` False: the
        lean steps keep no attention rows (the reference keeps them regardless)."""
        length_penalty = check_length_penalty(length_penalty)
        if width <= 1:
            return self.greedy(start, end, max_steps, stop, attention)
        if lean_search.supports(self):
            return search_beams(lean_search.lean_expander(self, attention), self.hidden0(), start, end, max_steps,
                                width, length_penalty, stop)
        return beam_search(self.raw_step, self.hidden0(), start, end, max_steps, width, length_penalty, stop)

    def forced(self, start: int, tokens: list[int]) -> np.ndarray:
        """log p of each of `tokens` after <start> and the ones before it, on this image (teacher forcing):
        edge/lean_search.py's loop where the decoder takes it, else decode.forced through raw_step (the same
        figures). Moves this session's state; start another session to search again."""
        if lean_search.supports(self):
            return lean_search.lean_forced(self, start, tokens)
        return forced(self.raw_step, self.hidden0(), start, tokens)

    def attention_floats(self, attention: np.ndarray) -> np.ndarray:
        return dequantize(attention, self.specs["attention"])

    def _token_values(self, tokens: np.ndarray) -> np.ndarray:
        if self.embedding is None:
            return tokens
        return quantize(self.embedding[tokens], self.specs["embedding"])

    def _advance(self, tokens: np.ndarray, hidden: np.ndarray) -> tuple[Logits, np.ndarray, np.ndarray]:
        """`hidden` already as the hidden input stores it; outputs raw, the logits uncopied (see raw_step)."""
        n, b, dec = len(tokens), self.batch, self.decoder
        t0 = time.perf_counter()
        if n == b:  # the common case: one invoke, no padding, no concatenation
            dec.write(self.token_input, self._token_values(tokens))
            dec.write("hidden", hidden)
            dec.invoke()
            outs = (dec.view("logits"), dec.read("new_hidden"), dec.read("attention"),
                    dec.read(LOG_NORM) if self.log_norm else None)
            self.invokes += 1
        else:
            outs = self._advance_chunks(tokens, hidden)
        self.step_ms.append((time.perf_counter() - t0) * 1e3)
        spec = self.specs["logits"]
        logits = Logits(outs[0], spec.scale if spec.quantized else None, spec.zero_point, scratch=True,
                        log_norm=outs[3])
        return logits, outs[1], outs[2]

    def _logits_rows(self, n: int) -> np.ndarray:
        """This session's buffer for n rows of logits, reused from step to step (grown when n grows)."""
        spec = self.specs["logits"]
        if self._logits_buf is None or len(self._logits_buf) < n:
            self._logits_buf = np.empty((n, *spec.shape[1:]), spec.dtype)
        return self._logits_buf[:n]

    def _advance_chunks(self, tokens: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray | None, ...]:
        """Several invokes (or a padded one): each invoke's logits copied into the session's buffer before the
        next overwrites them; the states, attention rows and log_norms (a few hundred values) copied out and
        joined. (logits, new_hidden, attention, log_norm or None)."""
        n, b, dec = len(tokens), self.batch, self.decoder
        # Padding rows: token 0 and a zero state, as quantised; their outputs are dropped.
        pad_token = self._token_values(np.zeros(b, np.int32))
        pad_hidden = quantize(np.zeros((b, self.units), np.float32), self.specs["hidden"])
        logits, states, attention, norms = self._logits_rows(n), [], [], []
        for s in range(0, n, b):
            k = min(b, n - s)
            tk, hd = self._token_values(tokens[s : s + k]), hidden[s : s + k]
            if k < b:
                tk, hd = np.concatenate([tk, pad_token[k:]]), np.concatenate([hd, pad_hidden[k:]])
            dec.write(self.token_input, tk)
            dec.write("hidden", hd)
            dec.invoke()
            self.invokes += 1
            dec.read_into("logits", logits[s : s + k])
            states.append(dec.read("new_hidden", k))
            attention.append(dec.read("attention", k))
            if self.log_norm:
                norms.append(dec.read(LOG_NORM, k))
        return logits, np.concatenate(states), np.concatenate(attention), np.concatenate(norms) if norms else None


class Captioner:
    """Runs a bundle: the encoder once per image, then the decoder step word by word.

    Thread-safe: one caption runs at a time (a lock around each); a LiteRT interpreter holds one image's tensors
    and cannot be invoked from two threads at once. For captions in parallel, load one Captioner per thread.

    attention=True keeps each word's attention map in Caption.attention (heat-maps: `caption --attention`); a
    caption that is spoken needs none, so by default none is kept (about 2 us a word saved).
    """

    def __init__(self, bundle: Bundle, threads: int | None = None, device: str = "cpu", beam: int = 1,
                 length_penalty: float = 0.0, runtime: str | None = None, min_confidence: float | None = None,
                 second_look: bool = False, attention: bool = False):
        self.bundle = bundle
        self.attention = attention
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
        # How the state returned by one step goes back in at the next, decided once for every caption: raw when
        # new_hidden and hidden share a dtype and scale (bit-identical to dequantising and quantising again),
        # else through a 256-entry table for an 8-bit state, else requantised.
        state_out, state_in = self.decoder.output_spec("new_hidden"), self.decoder.input_spec("hidden")
        self.carry_raw = _same_quantisation(state_out, state_in)
        self.requant = None if self.carry_raw else _requant_table(state_out, state_in)
        self.beam = max(1, int(beam))
        self.length_penalty = check_length_penalty(length_penalty)
        self.feature_names = [n for n in m.models["encoder"].outputs]
        self._lock = threading.RLock()  # one caption (or encode) at a time: the interpreters' tensors are shared
        # The second look (edge/confidence.py), when asked for: about twice a caption's time, so not by default (the
        # gate alone costs a few percent). The threshold is the one the bundle calibrated for the looks taken.
        self.look = _second_look(bundle, second_look)
        self.novelty, self.min_confidence = _novelty_stats(bundle), _threshold(bundle, min_confidence, self.look)

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

    def start(self, features: dict[str, np.ndarray]) -> DecoderSession:
        """Bind one image's features (from encode()) to the decoder for stepping by hand: a DecoderSession.

        Use as `with captioner.start(captioner.encode(image)) as session:`; it holds this Captioner's lock (other
        captions wait) until the block ends."""
        self._lock.acquire()
        try:
            return DecoderSession(self, features)
        except BaseException:
            self._lock.release()
            raise

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
        t1 = time.perf_counter()
        feats = self.encode(image)
        return self.decode(feats, stop, preprocess_ms, (time.perf_counter() - t1) * 1e3, image)

    def decode(self, feats: dict[str, np.ndarray], stop: threading.Event | None = None, preprocess_ms: float = 0.0,
               encoder_ms: float = 0.0, image: np.ndarray | None = None) -> Caption:
        """The caption of one image's features (from encode()), judged like caption()'s: for a caller that needs
        the features too (calibration) and should not encode twice. `image` (the model-size image encoded) is
        needed when this Captioner takes a second look."""
        if self.look is not None and image is None:
            raise ScenecapError("decode() needs the model-size image for the bundle's second look "
                                "(or load the Captioner with second_look=False)")
        m = self.bundle.manifest
        t2 = time.perf_counter()
        ids = m.tokens
        with self.start(feats) as session:
            hyp = session.beam_search(ids["start"], ids["end"], m.max_length - 1, self.beam, self.length_penalty,
                                      stop, self.attention)
            t3 = time.perf_counter()
            cap = self._finish(hyp, session, {
                "preprocess": preprocess_ms,
                "encoder": encoder_ms,
                "decoder": (t3 - t2) * 1e3,
                "decoder_invokes": sum(session.step_ms),
                "total": preprocess_ms + encoder_ms + (t3 - t2) * 1e3,
            })
        self._judge(cap, feats, image)
        return cap

    def look_again(self, image: np.ndarray, tokens: list[int], zoom: float | None = None) -> float:
        """The second look (edge/confidence.py): the probability of the least likely of `tokens` (a caption's,
        <end> included) read along the model-size `image` zoomed in by `zoom` (default: the bundle's)."""
        zoom = zoom or self.look
        if zoom is None:
            raise ScenecapError("look_again needs a zoom: this Captioner takes no second look")
        with self._lock:
            feats = self.encode(zoomed(image, zoom))
            with self.start(feats) as session:
                return conf.second_look(session.forced(self.bundle.manifest.tokens["start"], tokens))

    def look_if_it_matters(self, cap: Caption, image: np.ndarray, zoom: float | None = None,
                           threshold: float | None = None) -> float | None:
        """look_again for `cap` where the look could change its verdict, else None: a caption with no words, a
        stopped one, or one already below `threshold` (default: this Captioner's) on one look stays unsure
        whatever the look says, since it can only lower the confidence (a photograph costs no second look)."""
        threshold = self.min_confidence if threshold is None else threshold
        if not cap.tokens or cap.stopped or conf.combine(cap.word_confidence, cap.familiarity) < threshold:
            return None
        return self.look_again(image, cap.hypothesis.tokens, zoom)

    def _judge(self, cap: Caption, feats: dict[str, np.ndarray], image: np.ndarray | None) -> None:
        """Fill the caption's familiarity, second look, confidence and unsure (timed as the 'confidence' stage, and
        the look as 'second_look')."""
        t0, look_ms = time.perf_counter(), 0.0
        if self.novelty is not None:
            cap.familiarity = conf.image_familiarity(self.novelty, conf.pooled_features(feats["features"]))
        cap.word_confidence = conf.word_confidence(cap.log_prob, len(cap.hypothesis.tokens))
        if self.look is not None:
            t1 = time.perf_counter()
            cap.second_look = self.look_if_it_matters(cap, image)
            if cap.second_look is not None:
                look_ms = (time.perf_counter() - t1) * 1e3
                cap.timings["second_look"] = look_ms
        cap.confidence = conf.combine(cap.word_confidence, cap.familiarity, cap.second_look)
        cap.unsure = cap.confidence < self.min_confidence
        gate_ms = (time.perf_counter() - t0) * 1e3
        cap.timings["confidence"] = gate_ms - look_ms
        cap.timings["total"] += gate_ms

    def _finish(self, hyp: Hypothesis, session: DecoderSession, timings: dict[str, float]) -> Caption:
        end = self.bundle.manifest.tokens["end"]
        tokens = [t for t in hyp.tokens if t != end]
        words = self.vocab.decode(tokens)
        # Attention rows were kept raw; dequantised once here, not once per word.
        attn = None
        if self.attention:
            attn = session.attention_floats(np.stack(hyp.attention[: len(tokens)])) if tokens else \
                np.zeros((0, 0), np.float32)
        return Caption(" ".join(words), tokens, words, hyp, attn, timings, session.invokes, hyp.stopped,
                       session.step_ms)


def _novelty_stats(bundle: Bundle) -> conf.NoveltyStats | None:
    arrays = load_confidence_arrays(bundle)
    if arrays is None:
        return None
    return conf.stats_from_arrays(arrays, str(bundle.file(bundle.manifest.confidence.file)))


def _second_look(bundle: Bundle, wanted: bool) -> float | None:
    """The second look's zoom when `wanted` (the bundle must have calibrated one), else None."""
    if not wanted:
        return None
    section = bundle.manifest.confidence
    if section is None or section.second_look is None:
        raise ScenecapError(f"{bundle.path}: no second look calibrated; run 'scenecap calibrate --second-look' "
                            "on the bundle first")
    return section.second_look.zoom


def _threshold(bundle: Bundle, min_confidence: float | None, look: float | None = None) -> float:
    """The unsure threshold: min_confidence if given, else the bundle's calibrated one (with the second look,
    when taken, else for one look), else 0 (never unsure: an uncalibrated bundle has no measured threshold)."""
    if min_confidence is not None:
        if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)) or \
                not 0 <= min_confidence <= 1:
            raise ScenecapError(f"min_confidence {min_confidence!r}; expected a number from 0 to 1")
        return float(min_confidence)
    section = bundle.manifest.confidence
    if not section:
        return 0.0
    return float(section.second_look.threshold if look is not None else section.threshold)
