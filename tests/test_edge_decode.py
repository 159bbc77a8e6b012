"""Greedy and beam search: on toy recurrent decoders whose exact answer can be enumerated, and on real bundles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecap.edge.decode import Hypothesis, beam_search, greedy, length_normalised, log_softmax

START, END = 4, 3  # toy vocabulary: 0..4, <end> = 3, <start> = 4


class ToyDecoder:
    """A small random RNN: logits depend on the whole history through the hidden state, so a beam that used
    another beam's state, or scored the wrong row, gives a different answer from exhaustive search."""

    def __init__(self, seed: int, vocab: int = 5, units: int = 8, sharpness: float = 2.0, end_bias: float = 0.0):
        rng = np.random.default_rng(seed)
        self.bias = np.zeros(vocab, np.float32)
        self.bias[END] = end_bias
        self.embed = rng.normal(size=(vocab, units)).astype(np.float32)
        self.recur = (rng.normal(size=(units, units)) / np.sqrt(units)).astype(np.float32)
        self.out = (rng.normal(size=(units, vocab)) * sharpness).astype(np.float32)
        self.units = units
        self.invokes = 0
        self.widest = 0

    def __call__(self, tokens: np.ndarray, hidden: np.ndarray):
        assert tokens.shape[0] == hidden.shape[0]
        self.invokes += 1
        self.widest = max(self.widest, len(tokens))
        h = np.tanh(hidden @ self.recur + self.embed[tokens])
        attn = np.exp(h[:, :4]) / np.exp(h[:, :4]).sum(axis=1, keepdims=True)
        return h @ self.out + self.bias, h, attn

    def hidden0(self) -> np.ndarray:
        return np.zeros((1, self.units), np.float32)

    def score(self, tokens: list[int]) -> float:
        """Total log-probability of a token sequence, replayed one step at a time."""
        hidden, prev, total = self.hidden0(), START, 0.0
        for t in tokens:
            logits, hidden, _ = self(np.array([prev], np.int32), hidden)
            total += float(log_softmax(logits[0])[t])
            prev = t
        return total


def exhaustive(dec: ToyDecoder, max_steps: int, alpha: float = 0.0) -> tuple[list[int], float]:
    """The best finished sequence of all: ends with <end>, or runs to max_steps words."""
    best, best_score = None, -np.inf
    for n in range(1, max_steps + 1):
        for body in itertools.product([t for t in range(5) if t != END], repeat=n - 1):
            for last in range(5):
                if n < max_steps and last != END:
                    continue
                seq = [*body, last]
                s = length_normalised(Hypothesis(seq, dec.score(seq)), alpha)
                if s > best_score:
                    best, best_score = seq, s
    return best, best_score


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 8))
def test_beam_width_1_is_greedy(seed, steps):
    dec = ToyDecoder(seed)
    g = greedy(dec, dec.hidden0(), START, END, steps)
    b = beam_search(dec, dec.hidden0(), START, END, steps, width=1)
    assert b.tokens == g.tokens and b.log_prob == g.log_prob


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 100_000), width=st.integers(2, 6), steps=st.integers(1, 10),
       sharpness=st.sampled_from([0.3, 1.0, 3.0]))
def test_beam_never_less_likely_than_greedy(seed, width, steps, sharpness):
    dec = ToyDecoder(seed, sharpness=sharpness)
    g = greedy(dec, dec.hidden0(), START, END, steps)
    b = beam_search(dec, dec.hidden0(), START, END, steps, width=width, length_penalty=0.0)
    assert b.log_prob >= g.log_prob - 1e-5
    # The reported score is the true total of the tokens returned, and the rules of a caption hold.
    assert b.log_prob == pytest.approx(dec.score(b.tokens), abs=1e-4)
    assert len(b.tokens) <= steps and (b.tokens[-1] == END or len(b.tokens) == steps)
    assert END not in b.tokens[:-1]
    assert len(b.attention) == len(b.tokens)


@pytest.mark.parametrize("seed", range(8))
def test_wide_beam_finds_the_exact_best_caption(seed):
    dec = ToyDecoder(seed, sharpness=1.0)
    best, best_score = exhaustive(dec, 4)
    b = beam_search(dec, dec.hidden0(), START, END, 4, width=5 ** 4)
    assert b.tokens == best
    assert b.log_prob == pytest.approx(best_score, abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_length_penalty_picks_the_best_normalised_caption(seed):
    dec = ToyDecoder(seed, sharpness=0.7)
    best, best_score = exhaustive(dec, 4, alpha=1.0)
    b = beam_search(dec, dec.hidden0(), START, END, 4, width=5 ** 4, length_penalty=1.0)
    assert b.tokens == best
    assert length_normalised(b, 1.0) == pytest.approx(best_score, abs=1e-4)


def test_length_penalty_favours_longer_captions_on_average():
    longer = [0, 0]
    for seed in range(40):
        dec = ToyDecoder(seed, sharpness=0.7)
        raw = beam_search(dec, dec.hidden0(), START, END, 10, width=4, length_penalty=0.0)
        pen = beam_search(dec, dec.hidden0(), START, END, 10, width=4, length_penalty=1.5)
        longer[0] += len(raw.tokens)
        longer[1] += len(pen.tokens)
    assert longer[1] > longer[0]


def test_beams_advance_together_one_invoke_per_word():
    dec = ToyDecoder(3)
    b = beam_search(dec, dec.hidden0(), START, END, 20, width=4)
    assert dec.widest <= 4  # all live beams in one call: the batch dimension is the beams
    assert len(b.tokens) <= dec.invokes <= 20


def test_search_stops_as_soon_as_no_live_beam_can_win():
    dec = ToyDecoder(3, end_bias=12.0)  # <end> is by far the likeliest first word
    b = beam_search(dec, dec.hidden0(), START, END, 20, width=4)
    assert b.tokens == [END]
    assert dec.invokes == 1  # every other beam is already less likely than the finished one


# -- real bundles ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(test_split):
    from scenecap.edge.images import load_image

    return [load_image(s.image) for s in test_split[0][:12]]


def _rescore(cap_obj, image, tokens):
    """Replay tokens through the bundle's decoder step, as a second opinion on the beam's log-probability."""
    from scenecap.edge.preprocess import prepare

    m = cap_obj.bundle.manifest
    cap_obj._bind_features(cap_obj.encode(prepare(image, m.preprocess)))
    hidden = np.zeros((1, cap_obj.units), np.float32)
    prev, total = m.tokens["start"], 0.0
    for t in tokens:
        logits, hidden, _ = cap_obj._step(np.array([prev], np.int32), hidden)
        total += float(log_softmax(logits[0])[t])
        prev = t
    return total


def test_real_bundle_beam_1_is_greedy_and_beam_3_is_at_least_as_likely(float_bundle, images):
    from scenecap.edge.captioner import Captioner

    g = Captioner.load(float_bundle)
    b1 = Captioner.load(float_bundle, beam=1)
    b3 = Captioner.load(float_bundle, beam=3)
    end = g.bundle.manifest.tokens["end"]
    better = 0
    for img in images:
        cg, c1, c3 = g.caption(img), b1.caption(img), b3.caption(img)
        assert c1.tokens == cg.tokens
        assert c3.log_prob >= cg.log_prob - 1e-4
        better += c3.log_prob > cg.log_prob + 1e-4
        # The caption's score is the real total of its words (plus <end> when it ended).
        full = c3.tokens + ([end] if len(c3.tokens) < g.bundle.manifest.max_length - 1 else [])
        assert c3.log_prob == pytest.approx(_rescore(g, img, full), abs=1e-3)
        assert len(c3.attention) == len(c3.tokens)
    print(f"\nbeam 3 beat greedy's log-probability on {better} of {len(images)} images")


@pytest.fixture(scope="module")
def float_bundle_b3(tiny_export, tmp_path_factory):
    from conftest import _bundle

    return _bundle(tiny_export, tmp_path_factory, "float32", 3)


def test_batched_beams_match_per_beam_invokes(float_bundle, float_bundle_b3, images):
    """Beams as the batch dimension of one invoke (a batch-3 decoder) give what one invoke per beam gives."""
    from scenecap.edge.captioner import Captioner

    one = Captioner.load(float_bundle, beam=3)
    three = Captioner.load(float_bundle_b3, beam=3)
    assert three.batch == 3
    for img in images[:6]:
        a, b = one.caption(img), three.caption(img)
        assert a.tokens == b.tokens
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-3)
        assert b.invokes < a.invokes  # three beams per invoke instead of one
