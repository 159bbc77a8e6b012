"""The two baselines, on the same Keras model (same dimensions, same weights) as the bundles:

  eager      the naive way, as the replaced system ran: full TensorFlow, the Keras models called eagerly from
             Python one step at a time; the frame resized by tf.image.resize; the backbone and the encoder's
             Dense called as two models; the attention recomputing W1(features) at every step (its
             BahdanauAttention did); `.numpy()` and argmax after every step.
  function   the same Keras model with a tf.function-compiled preprocessing, encoder (features and attention keys,
             once per image) and decoder step; the word loop stays in Python, as it must for early stopping.

Both are timed per stage exactly like the edge runtime (scenecap.benchmarks.latency), beam search included
(the edge runtime's numpy beam search driving the Keras step), in a worker whose TensorFlow thread pools are set
before TensorFlow starts.

    python -m scenecap.benchmarks.baselines SPEC.json OUT.json    (what `scenecap bench` runs)
"""

from __future__ import annotations

import sys
import time

import numpy as np

from scenecap.benchmarks.latency import STAGES, Progress, summarize, worker_main

BASELINES = ("eager", "function")
TF_RESIZE = {"area": "area", "bilinear": "bilinear", "nearest": "nearest"}


def load_keras(spec: dict):
    """(ShowAttendTell model, description) rebuilt the way the model set was made."""
    if spec["kind"] == "run":
        from scenecap.train.trainer import load_trained

        model, _, _ = load_trained(spec["run"])
        return model, f"training run {spec['run']}"
    if spec["kind"] == "seed":
        from dataclasses import replace

        from scenecap.convert.safe_pickle import load_tokenizer
        from scenecap.convert.seed_import import build_seed_model, read_seed_weights, seed_vocab
        from scenecap.convert.seed_layout import SeedDims

        vocab = seed_vocab(load_tokenizer(spec["tokenizer"]), spec["tokenizer"])
        dims = replace(SeedDims(), vocab_size=len(vocab))
        _, arrays = read_seed_weights(spec["weights"], dims)
        return build_seed_model(dims, arrays, spec["backbone"]), f"seed layout {spec['weights']}"
    raise ValueError(f"keras model kind {spec['kind']!r} unknown")


class Baseline:
    """preprocess(frame) -> image; encode(image) -> per-image state; step(tokens, hidden, state) -> numpy triple."""

    def __init__(self, model, size: int, resize: str, compiled: bool):
        import tensorflow as tf

        self.model, self.units = model, model.cfg.units
        method = TF_RESIZE.get(resize, "bilinear")
        s = size
        if not compiled:
            def preprocess(frame):
                return tf.cast(tf.image.resize(tf.convert_to_tensor(frame), (s, s), method=method), tf.float32)

            def encode(image):
                fmap = model.feature_map(image[None])  # the original: image_features_extract_model(...)
                return (model.encoder_fc(fmap),)  # then its CNN_Encoder (Dense + ReLU)

            def step(token, hidden, features):
                keys = model.W1(features)  # its BahdanauAttention: W1(features) at every step
                return model.step(token, hidden, features, keys)
        else:
            L, E, A = model.locations, model.cfg.embed_dim, model.cfg.attention_units
            preprocess = tf.function(lambda frame: tf.cast(tf.image.resize(frame, (s, s), method=method), tf.float32),
                                     input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)])
            encode = tf.function(lambda image: model.encode(image[None]),
                                 input_signature=[tf.TensorSpec((s, s, 3), tf.float32)])
            step = tf.function(model.step, input_signature=[
                tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None, self.units), tf.float32),
                tf.TensorSpec((None, L, E), tf.float32), tf.TensorSpec((None, L, A), tf.float32)])
        self._pre, self._enc, self._step, self.tf = preprocess, encode, step, tf

    def preprocess(self, frame: np.ndarray):
        return self._pre(frame)

    def encode(self, image) -> tuple:
        return tuple(self._enc(image))

    def step(self, tokens: np.ndarray, hidden: np.ndarray, state: tuple):
        tf = self.tf
        n = len(tokens)
        if n > 1:
            state = tuple(tf.repeat(t, n, axis=0) for t in state)
        logits, new_hidden, attention = self._step(tf.constant(tokens, tf.int32), tf.constant(hidden), *state)
        return logits.numpy(), new_hidden.numpy(), attention.numpy()

    def caption(self, frame: np.ndarray, start: int, end: int, max_words: int, beam: int,
                image: np.ndarray | None = None) -> list[int]:
        """Token ids for a frame (or, given `image`, for that already prepared model input)."""
        from scenecap.edge.decode import beam_search, greedy

        state = self.encode(self.preprocess(frame) if image is None else self.tf.constant(image, self.tf.float32))
        hidden0 = np.zeros((1, self.units), np.float32)
        hyp = (greedy(lambda t, h: self.step(t, h, state), hidden0, start, end, max_words) if beam <= 1 else
               beam_search(lambda t, h: self.step(t, h, state), hidden0, start, end, max_words, beam))
        return [t for t in hyp.tokens if t != end]


def _load_timed(spec: dict) -> tuple:
    """(model, description, seconds to load it) with TensorFlow's thread pools set first."""
    import tensorflow as tf

    threads = int(spec["threads"])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    t0 = time.perf_counter()
    model, desc = load_keras(spec["keras"])
    return model, desc, time.perf_counter() - t0


def _time_stages(b: Baseline, frame: np.ndarray, start: int) -> tuple[float, float, float]:
    """Milliseconds of preprocessing, the encoder and one decoder step, each waited for (`.numpy()`)."""
    t0 = time.perf_counter()
    image = b.preprocess(frame)
    _ = image.numpy() if hasattr(image, "numpy") else image  # wait for the result, as the edge does
    t1 = time.perf_counter()
    state = b.encode(image)
    _ = [x.numpy() for x in state]
    t2 = time.perf_counter()
    b.step(np.array([start], np.int32), np.zeros((1, b.units), np.float32), state)
    t3 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3


def _time_caption(b: Baseline, frame: np.ndarray, words: tuple[int, int, int], width: int,
                  rec: bool) -> tuple[list[int], float | None]:
    """(tokens, milliseconds or None in a warm-up round) of one caption; `words` is (start, end, max_words)."""
    start, end, max_words = words
    t0 = time.perf_counter()
    tokens = b.caption(frame, start, end, max_words, width)
    return tokens, ((time.perf_counter() - t0) * 1e3 if rec else None)


def _one_round(b: Baseline, entry: dict, frame: np.ndarray, words: tuple[int, int, int], beam: int,
               rec: bool) -> None:
    """Every stage of one baseline once; recorded unless a warm-up round (`rec` False)."""
    s = entry["samples"]
    pre, enc, step = _time_stages(b, frame, words[0])
    if rec:
        s["preprocess"].append(pre)
        s["encoder"].append(enc)
        s["step"].append(step)
    for stage, width in (("greedy", 1), ("beam", beam)):
        tokens, ms = _time_caption(b, frame, words, width, rec)
        if rec:
            s[stage].append(ms)
        entry[f"{stage}_words"] = len(tokens)
        entry[f"{stage}_tokens"] = tokens


def measure_baselines(spec: dict) -> dict:
    import tensorflow as tf

    from scenecap.edge.images import load_image

    model, desc, load_s = _load_timed(spec)
    frame = load_image(spec["frame"])
    words = spec["tokens"]["start"], spec["tokens"]["end"], int(spec["max_words"])
    threads, runs, warmup, beam = int(spec["threads"]), int(spec["runs"]), int(spec["warmup"]), int(spec["beam"])
    params = int(model.count_params())
    base = {name: Baseline(model, spec["image_size"], spec["resize"], compiled=name == "function")
            for name in spec.get("baselines", BASELINES)}
    out = {name: {"runtime": f"tensorflow {tf.__version__}", "model": desc, "params": params,
                  "weights_bytes_float32": params * 4, "load_seconds": load_s,
                  "samples": {s: [] for s in STAGES}} for name in base}
    bar = Progress(warmup + runs, f"baselines ({', '.join(base)}, {threads} thread{'s' * (threads > 1)})")
    for r in range(warmup + runs):
        for name, b in base.items():  # the baselines take turns within each round
            _one_round(b, out[name], frame, words, beam, rec=r >= warmup)
        bar.update()
    bar.close()
    if "preprocess" in spec:  # same input as the edge runtime's: do the bundles run this very model?
        from scenecap.edge.preprocess import PreprocessSpec, prepare

        image = prepare(frame, PreprocessSpec(**spec["preprocess"]))
        for name, b in base.items():
            out[name]["greedy_tokens_edge_input"] = b.caption(frame, *words, 1, image=image)
    for name in out:
        out[name]["stages"] = {k: summarize(v) for k, v in out[name].pop("samples").items()}
    return out


if __name__ == "__main__":
    from scenecap.cli import import_tensorflow_quietly  # its start-up noise would fill the bench's output

    sys.exit(worker_main(sys.argv[1:], "baselines", "baselines", measure_baselines, before=import_tensorflow_quietly))
