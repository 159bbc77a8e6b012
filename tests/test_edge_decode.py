"""Greedy and beam search: on toy recurrent decoders whose exact answer can be enumerated, and on real bundles."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
from catalogue_helpers import one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecap.edge.decode import (
    ARGMAX_TOP_K,
    MAX_LENGTH_PENALTY,
    Hypothesis,
    Logits,
    RowScorer,
    as_logits,
    beam_search,
    greedy,
    length_normalised,
    log_softmax,
    top_words,
    word_log_prob,
)

DEMO = Path(__file__).resolve().parents[1] / "demo"

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


class Endless(ToyDecoder):
    """A decoder that never says <end>, and sets `stop` (as a signal handler would) after `stop_after` steps."""

    def __init__(self, stop: threading.Event, stop_after: int):
        super().__init__(1, end_bias=-1e9)
        self.stop, self.stop_after = stop, stop_after

    def __call__(self, tokens, hidden):
        out = super().__call__(tokens, hidden)
        if self.invokes == self.stop_after:
            self.stop.set()
        return out


@pytest.mark.parametrize("width", [1, 3])
def test_stop_ends_a_caption_that_would_never_end(width):
    """max_steps of a billion and a model that never says <end>: the stop event ends the search at the next step,
    with what it has marked unfinished."""
    stop = threading.Event()
    dec = Endless(stop, stop_after=5)
    hyp = beam_search(dec, dec.hidden0(), START, END, 10**9, width=width, stop=stop)
    assert hyp.stopped and dec.invokes == 5
    assert len(hyp.tokens) == 5 and END not in hyp.tokens


def test_an_unstopped_search_is_not_marked_stopped():
    stop = threading.Event()
    dec = ToyDecoder(3)
    assert not beam_search(dec, dec.hidden0(), START, END, 20, width=3, stop=stop).stopped
    assert not greedy(dec, dec.hidden0(), START, END, 20, stop=stop).stopped


@pytest.mark.parametrize("alpha", [400, -1, float("nan"), float("inf"), MAX_LENGTH_PENALTY + 0.1])
def test_a_length_penalty_out_of_range_is_one_line(alpha):
    """--beam 3 --length-penalty 400 was an OverflowError from ((5 + n) / 6) ** 400."""
    dec = ToyDecoder(1)
    one_line_error(lambda: beam_search(dec, dec.hidden0(), START, END, 10, width=3, length_penalty=alpha),
                   f"length penalty {alpha!r}; expected a number from 0 to")


def test_the_largest_length_penalty_stays_finite_at_the_longest_caption():
    from scenecap.edge.bundle import MAX_LENGTH

    h = Hypothesis([0] * (MAX_LENGTH - 1), -50.0)
    assert np.isfinite(length_normalised(h, MAX_LENGTH_PENALTY))


class QuantisedToy(ToyDecoder):
    """A toy decoder over `vocab` words whose logits come out as a coarse int8 (or float rounded to halves) model's
    would: many words share a value, so top-k meets ties at and within its k-th place."""

    def __init__(self, seed: int, vocab: int, kind: str):
        super().__init__(seed, vocab=vocab, sharpness=1.5)
        self.kind = kind

    def __call__(self, tokens, hidden):
        logits, h, attn = super().__call__(tokens, hidden)
        if self.kind == "float":
            return np.round(logits * 2) / 2, h, attn
        raw = np.clip(np.round(logits / 0.5) - 3, -128, 127).astype(np.int8)  # scale 0.5, zero point -3
        return Logits(raw, 0.5, -3), h, attn


def reference_beam(step, hidden0, start, end, max_steps, width, alpha=0.0) -> tuple[list[int], float]:
    """Beam search written out plainly: a whole log-softmax per step, each beam's top-k by a stable sort (value
    first, the lower word id among equals), every candidate in one stable sort; the greedy path kept; early stop."""
    beams, hiddens, greedy_idx, finished = [([], 0.0)], hidden0[:1], 0, []
    for t in range(max_steps):
        logits, new_hidden, _ = step(np.array([h[-1] if h else start for h, _ in beams], np.int32), hiddens)
        logp = log_softmax(as_logits(logits).floats())
        top = np.argsort(-logp, axis=1, kind="stable")[:, : min(width, logp.shape[1])]
        cand = sorted([(beams[b][1] + float(logp[b, w]), b, int(w)) for b in range(len(beams)) for w in top[b]],
                      key=lambda c: -c[0])[:width]
        g = (beams[greedy_idx][1] + float(logp[greedy_idx].max()), greedy_idx, int(np.argmax(logp[greedy_idx])))
        if g not in cand:
            cand[-1] = g
        nxt, rows, nxt_greedy = [], [], None
        for score, b, w in cand:
            if w == end or t == max_steps - 1:
                finished.append((beams[b][0] + [w], score))
            else:
                nxt_greedy = len(nxt) if (score, b, w) == g else nxt_greedy
                nxt.append((beams[b][0] + [w], score))
                rows.append(b)
        if not nxt or (alpha <= 0 and finished and max(s for _, s in finished) >= max(s for _, s in nxt)):
            break
        beams, hiddens, greedy_idx = nxt, new_hidden[rows], nxt_greedy if nxt_greedy is not None else 0
    return max(finished or beams, key=lambda h: length_normalised(Hypothesis(*h), alpha))


@pytest.mark.parametrize("kind", ["int8", "float"])
@pytest.mark.parametrize("width", [2, 3, 5, ARGMAX_TOP_K + 4])
def test_beam_search_is_the_plain_reference_on_logits_full_of_ties(kind, width):
    """The same words as the plain search on 60 random decoders whose logits tie often (int8 at a coarse scale,
    floats rounded to halves); log-probabilities equal to float32 rounding (the row is shifted by its raw maximum
    before scaling, where log_softmax scales first). Width ARGMAX_TOP_K + 4 takes the stable-sort top-k."""
    for seed in range(60):
        dec = QuantisedToy(seed, vocab=40, kind=kind)
        for alpha in (0.0, 0.7):
            b = beam_search(dec, dec.hidden0(), START, END, 12, width=width, length_penalty=alpha)
            tokens, total = reference_beam(dec, dec.hidden0(), START, END, 12, width, alpha)
            assert b.tokens == tokens, (seed, alpha)
            assert b.log_prob == pytest.approx(total, rel=1e-6, abs=1e-5)
            assert len(b.attention) == len(b.tokens)


@pytest.mark.parametrize("rows", [5, 1])  # one row: the lean beam step's case, taken on scalars
@pytest.mark.parametrize("k", [1, 3, ARGMAX_TOP_K, ARGMAX_TOP_K + 1, 40])
def test_top_words_are_a_stable_sorts_first_k_and_leave_the_row_as_it_was(k, rows):
    rng = np.random.default_rng(k)
    z = rng.integers(-4, 3, size=(rows, 40)).astype(np.float32)  # 7 values over 40 words: ties everywhere
    before = z.copy()
    words, vals = top_words(z, z.argmax(axis=1), k)
    want = np.argsort(-before, axis=1, kind="stable")[:, :k]
    assert (words == want).all() and (vals == np.take_along_axis(before, want, axis=1)).all()
    assert words.shape == vals.shape == (rows, k) and vals.dtype == np.float32
    assert (z == before).all()


@pytest.mark.parametrize("dtype, scale, zero_point", [(np.float32, None, 0), (np.int8, 0.03, -5),
                                                      (np.int16, 0.001, 0)])
def test_a_words_log_probability_is_log_softmaxs_to_float32_rounding(dtype, scale, zero_point):
    rng = np.random.default_rng(1)
    raw = (rng.normal(size=(2, 26556)) * (4 if scale is None else 40)).astype(dtype)
    lg = Logits(raw, scale, zero_point)
    want = log_softmax(lg.floats())
    scorer = RowScorer()
    for row, word in ((0, int(raw[0].argmax())), (1, 17), (0, 26555)):
        assert word_log_prob(lg, row, word, scorer) == pytest.approx(float(want[row, word]), rel=2e-6, abs=2e-6)
    assert (raw == lg.raw).all()  # not scratch: the caller's logits are left alone


def test_scratch_float_logits_are_scored_in_place_and_others_in_the_scorers_buffer():
    raw = np.array([[1.0, 3.0, 2.0]], np.float32)
    scorer = RowScorer()
    z = scorer.shifted(Logits(raw.copy()), np.array([1]))
    assert (z == [[-2.0, 0.0, -1.0]]).all()
    mine = raw.copy()
    assert scorer.shifted(Logits(mine, scratch=True), np.array([1])) is not z and (mine == z).all()


class NormToy(ToyDecoder):
    """A toy decoder whose logits come as a float decoder session's do: float32 scratch, with each row's log_norm
    computed in float32 as the graph does (max, then the log of the sum of the shifted exps, plus the max)."""

    def __call__(self, tokens, hidden):
        logits, h, attn = super().__call__(tokens, hidden)
        raw = np.ascontiguousarray(logits, np.float32)
        top = raw.max(axis=1, keepdims=True)
        norm = (np.log(np.exp(raw - top).sum(axis=1, keepdims=True)) + top)[:, 0].astype(np.float32)
        return Logits(raw, scratch=True, log_norm=norm), h, attn


def _without_norm(step):
    """The same step with its log_norm dropped: the numpy path, as for a bundle without the output."""
    def plain(tokens, hidden):
        lg, h, attn = step(tokens, hidden)
        return Logits(lg.raw, lg.scale, lg.zero_point, lg.scratch), h, attn

    return plain


@pytest.mark.parametrize("seed", range(20))
def test_greedy_with_the_graphs_log_norm_gives_the_numpy_paths_words_and_log_probability(seed):
    dec = NormToy(seed, vocab=300, sharpness=1.0)
    with_norm = greedy(dec, dec.hidden0(), START, END, 12)
    plain = greedy(_without_norm(dec), dec.hidden0(), START, END, 12)
    assert with_norm.tokens == plain.tokens
    assert with_norm.log_prob == pytest.approx(plain.log_prob, rel=1e-6, abs=1e-5)
    exact = ToyDecoder(seed, vocab=300, sharpness=1.0).score(with_norm.tokens)  # the same decoder, float logits
    assert with_norm.log_prob == pytest.approx(exact, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("width", [2, 3, ARGMAX_TOP_K + 4])
def test_beam_search_with_log_norm_is_the_plain_reference(width):
    """Top-k on the logits themselves, candidates scored as logit minus log_norm: the plain search's words."""
    for seed in range(30):
        dec = NormToy(seed, vocab=40, sharpness=1.5)
        for alpha in (0.0, 0.7):
            b = beam_search(dec, dec.hidden0(), START, END, 12, width=width, length_penalty=alpha)
            plain = beam_search(_without_norm(dec), dec.hidden0(), START, END, 12, width=width, length_penalty=alpha)
            tokens, total = reference_beam(dec, dec.hidden0(), START, END, 12, width, alpha)
            assert b.tokens == plain.tokens == tokens, (seed, alpha)
            assert b.log_prob == pytest.approx(total, rel=1e-6, abs=1e-5)


def test_a_words_log_probability_from_log_norm_and_the_rows_left_as_they_were():
    rng = np.random.default_rng(2)
    raw = (rng.normal(size=(2, 26556)) * 4).astype(np.float32)
    want = log_softmax(raw)
    norm = (np.log(np.exp(raw - raw.max(1, keepdims=True)).sum(1)) + raw.max(1)).astype(np.float32)
    lg = Logits(raw.copy(), log_norm=norm)
    for row, word in ((0, int(raw[0].argmax())), (1, 17), (0, 26555)):
        assert word_log_prob(lg, row, word) == pytest.approx(float(want[row, word]), rel=2e-6, abs=2e-6)
    scorer = RowScorer()
    rows = scorer.floats(lg)
    assert rows is not lg.raw and (rows == raw).all()  # not scratch: a copy in the scorer's buffer
    q = Logits(rng.integers(-128, 128, size=(3, 50)).astype(np.int8), 0.03, -5)
    assert (scorer.floats(q) == q.floats()).all()  # the same bits as dequantising
    assert [q.logit(1, w) for w in range(50)] == q.floats()[1].tolist()
    mine = raw.copy()
    assert scorer.floats(Logits(mine, scratch=True, log_norm=norm)) is mine  # scratch float32: no pass over it


# -- real bundles ------------------------------------------------------------------------------------------------
def test_captioner_refuses_a_length_penalty_out_of_range_at_load():
    from scenecap.edge.captioner import Captioner

    one_line_error(lambda: Captioner.load(DEMO / "bundle", beam=3, length_penalty=400), "length penalty 400")


def test_a_captioner_stopped_before_it_starts_returns_an_unfinished_caption_at_once():
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.images import load_image

    cap = Captioner.load(DEMO / "bundle")
    stop = threading.Event()
    stop.set()
    c = cap.caption(load_image(DEMO / "frames" / "scene_1.jpg"), stop=stop)
    assert c.stopped and c.invokes == 0 and c.text == ""


@pytest.mark.parametrize("beam", [1, 3])
def test_one_captioner_shared_by_four_threads_gives_each_the_single_thread_caption(beam):
    """A LiteRT interpreter is one set of tensors: from 4 threads at once, 143 of 160 calls raised its RuntimeError
    and 4 returned another image's words. The Captioner serialises its captions."""
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.images import load_image

    cap = Captioner.load(DEMO / "bundle", beam=beam)
    frames = [load_image(p) for p in sorted((DEMO / "frames").glob("*.jpg"))]
    expected = [cap.caption(f).text for f in frames]
    assert len(set(expected)) == len(frames)  # distinct captions: a mix-up between images would show
    start = threading.Barrier(4)
    results: dict[int, list[tuple[int, str]]] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            start.wait()
            results[k] = [(i, cap.caption(frames[i]).text) for _ in range(3)
                          for i in (range(len(frames)) if k % 2 else reversed(range(len(frames))))]
        except BaseException as e:  # noqa: BLE001 (reported below, with the thread's result)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(len(r) for r in results.values()) == 4 * 3 * len(frames)
    for r in results.values():
        assert all(text == expected[i] for i, text in r)
@pytest.fixture(scope="module")
def images(test_split):
    from scenecap.edge.images import load_image

    return [load_image(s.image) for s in test_split[0][:12]]


def _rescore(cap_obj, image, tokens):
    """Replay tokens through the bundle's decoder step, as a second opinion on the beam's log-probability."""
    from scenecap.edge.preprocess import prepare

    m = cap_obj.bundle.manifest
    with cap_obj.start(cap_obj.encode(prepare(image, m.preprocess))) as session:
        hidden = np.zeros((1, cap_obj.units), np.float32)
        prev, total = m.tokens["start"], 0.0
        for t in tokens:
            logits, hidden, _ = session.step(np.array([prev], np.int32), hidden)
            total += float(log_softmax(logits[0])[t])
            prev = t
    return total


def test_real_bundle_beam_1_is_greedy_and_beam_3_is_at_least_as_likely(float_bundle, images):
    from scenecap.edge.captioner import Captioner

    g = Captioner.load(float_bundle)
    b1 = Captioner.load(float_bundle, beam=1)
    b3 = Captioner.load(float_bundle, beam=3, attention=True)
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


# The reference: the per-word loop as it was before the raw-logits one, written out plainly. Every output
# dequantised, a full log-softmax per step, the state fed back as floats.
def _reference_step(cap_obj):
    dec, b = cap_obj.decoder, cap_obj.batch

    def step(tokens, hidden):
        outs = []
        for s in range(0, len(tokens), b):
            tk, hd = tokens[s : s + b], hidden[s : s + b]
            pad = b - len(tk)
            tk = np.concatenate([tk, np.zeros(pad, np.int32)])
            hd = np.concatenate([hd, np.zeros((pad, hd.shape[1]), np.float32)])
            if cap_obj.embedding is None:
                dec.set("token", tk)
            else:
                dec.set("embedding", cap_obj.embedding[tk])
            dec.set("hidden", hd)
            dec.invoke()
            outs.append([dec.get(n)[: b - pad] for n in ("logits", "new_hidden", "attention")])
        return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))

    return step


def _reference_greedy(step, start, end, max_steps, units):
    token, hidden, tokens, total = np.array([start], np.int32), np.zeros((1, units), np.float32), [], 0.0
    for _ in range(max_steps):
        logits, hidden, _ = step(token, hidden)
        best = int(np.argmax(logits[0]))
        total += float(log_softmax(logits[0])[best])
        tokens.append(best)
        if best == end:
            break
        token = np.array([best], np.int32)
    return tokens, total


def _reference_beam(step, start, end, max_steps, width, units):
    beams, hiddens, greedy_idx, finished = [([], 0.0)], np.zeros((1, units), np.float32), 0, []
    for t in range(max_steps):
        logits, new_hidden, _ = step(np.array([h[-1] if h else start for h, _ in beams], np.int32), hiddens)
        logp = log_softmax(logits)
        # Each beam's top words by a stable sort: among equal values the lower word id, as the search ranks them.
        part = np.argsort(-logp, axis=1, kind="stable")[:, :width]
        cand = sorted([(beams[b][1] + float(logp[b, w]), b, int(w)) for b in range(len(beams)) for w in part[b]],
                      key=lambda c: -c[0])[:width]
        g_word = int(np.argmax(logp[greedy_idx]))
        g_pick = next((i for i, c in enumerate(cand) if c[1] == greedy_idx and c[2] == g_word), None)
        if g_pick is None:
            cand[-1] = (beams[greedy_idx][1] + float(logp[greedy_idx, g_word]), greedy_idx, g_word)
            g_pick = len(cand) - 1
        nxt, rows, nxt_greedy = [], [], None
        for i, (score, b, w) in enumerate(cand):
            if w == end or t == max_steps - 1:
                finished.append((beams[b][0] + [w], score))
            else:
                nxt_greedy = len(nxt) if i == g_pick else nxt_greedy
                nxt.append((beams[b][0] + [w], score))
                rows.append(b)
        if not nxt:
            break
        if finished and max(s for _, s in finished) >= max(s for _, s in nxt):  # early stop: scores only fall
            break
        beams, hiddens, greedy_idx = nxt, new_hidden[rows], nxt_greedy if nxt_greedy is not None else 0
    return max(finished or beams, key=lambda h: h[1])


def _reference_caption(cap_obj, image, width):
    from scenecap.edge.preprocess import prepare

    m = cap_obj.bundle.manifest
    start, end, n = m.tokens["start"], m.tokens["end"], m.max_length - 1
    feats = cap_obj.encode(prepare(image, m.preprocess))
    for name, value in feats.items():
        cap_obj.decoder.set(name, np.repeat(value, cap_obj.batch, axis=0) if cap_obj.batch > 1 else value)
    step = _reference_step(cap_obj)
    if width == 1:
        tokens, total = _reference_greedy(step, start, end, n, cap_obj.units)
    else:
        tokens, total = _reference_beam(step, start, end, n, width, cap_obj.units)
    return [t for t in tokens if t != end], total


@pytest.mark.parametrize("which", ["float32", "int8", "demo"])
@pytest.mark.parametrize("width", [1, 3])
def test_captions_are_token_for_token_the_reference_loops(which, width, request, images):
    """The raw-logits loop (argmax and top-k on int8 values, the state kept quantised) gives the captions the
    plain dequantise-everything loop gives, and the same log-probabilities."""
    from scenecap.edge.captioner import Captioner

    path = {"float32": "float_bundle", "int8": "int8_bundle"}.get(which)
    bundle = request.getfixturevalue(path) if path else DEMO / "bundle"
    cap_obj = Captioner.load(bundle, beam=width)
    for img in images:
        c = cap_obj.caption(img)
        tokens, total = _reference_caption(cap_obj, img, width)
        assert c.tokens == tokens
        assert c.log_prob == pytest.approx(total, abs=1e-4)
        # One timing per search step: one invoke each for greedy, one per live beam for beam 3 (batch 1).
        assert len(c.step_ms) == len(tokens) + (len(tokens) < cap_obj.bundle.manifest.max_length - 1) if width == 1 \
            else len(c.step_ms) < c.invokes


def test_a_session_steps_a_caption_by_hand(float_bundle, images):
    """The public stepping API: the same words as caption(), and the Captioner is free again afterwards."""
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.preprocess import prepare

    cap_obj = Captioner.load(float_bundle)
    m = cap_obj.bundle.manifest
    want = cap_obj.caption(images[0]).tokens
    with cap_obj.start(cap_obj.encode(prepare(images[0], m.preprocess))) as session:
        token, hidden, got = m.tokens["start"], np.zeros((1, cap_obj.units), np.float32), []
        for _ in range(m.max_length - 1):
            logits, hidden, attention = session.step(np.array([token], np.int32), hidden)
            assert logits.dtype == hidden.dtype == attention.dtype == np.float32
            token = int(np.argmax(logits[0]))
            if token == m.tokens["end"]:
                break
            got.append(token)
    assert got == want
    done = []
    t = threading.Thread(target=lambda: done.append(cap_obj.caption(images[0]).tokens))
    t.start()
    t.join(timeout=60)
    assert done == [want]
