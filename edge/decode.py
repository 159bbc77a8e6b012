"""Greedy and beam search over a single-step decoder, in numpy.

`step(tokens[n], hidden[n, U]) -> (logits[n, V], hidden[n, U], attention[n, L])` advances n hypotheses by one
word; the caller binds the image's features. Each hypothesis carries its own hidden state, which the search only
passes back and selects rows of (so it may stay in the model's own dtype). `logits` is a float array or a
`Logits` (the model's raw, e.g. int8, values and their scale): argmax and top-k run on the raw values, and
log-probabilities are computed only for the words that need them: the word's logit minus its row's `log_norm`
when the decoder graph computed it (float-logit decoders converted from a recent export), else one numpy
log-sum-exp of the row each.

`stop` (a threading.Event, optional) is checked before every step: once it is set the search returns the best
hypothesis so far with `stopped=True` (unfinished: never to be spoken or shown as a caption), so a signal stops
a model that never says <end> within one decoder step.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scenecap.edge.errors import ScenecapError

StepFn = Callable[[np.ndarray, np.ndarray], tuple["np.ndarray | Logits", np.ndarray, np.ndarray]]
# GNMT's alpha is tuned in [0, 1] (0.6-0.7 in the paper); 5 already ranks by length alone. The bound keeps
# ((5 + n) / 6) ** alpha finite for any caption length the manifest allows (171 ** 5 ~ 1.5e11).
MAX_LENGTH_PENALTY = 5.0


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, without <start>; ends with <end> if finished
    log_prob: float  # total log-probability of `tokens`
    attention: list[np.ndarray] = field(default_factory=list)  # one [L] map per token
    stopped: bool = False  # cut short by `stop`: unfinished, not a caption


@dataclass(frozen=True)
class Logits:
    """Logits as the model stored them, `raw` [n, V] (int8, int16 or float), and their dequantisation
    (raw - zero_point) * scale; scale None: `raw` are the float logits. The map is increasing (scale > 0), so
    argmax and top-k need no dequantisation. `scratch`: the search may overwrite `raw` (a decoder session's
    output, rewritten by its next step anyway), so a float row's log-sum-exp needs no buffer of its own.
    `log_norm`: each row's log(sum(exp(logits))) [n] float32 as the decoder graph computed it, or None (the search
    computes it in numpy)."""

    raw: np.ndarray
    scale: float | None = None
    zero_point: int = 0
    scratch: bool = False
    log_norm: np.ndarray | None = None

    def floats(self) -> np.ndarray:
        """Dequantised float32, computed as the edge runtime's dequantize() does (same bits)."""
        if self.scale is None:
            return self.raw.astype(np.float32, copy=False)
        return (self.raw.astype(np.float32) - self.zero_point) * np.float32(self.scale)

    def logit(self, row: int, word: int) -> float:
        """One dequantised logit (the bits floats() gives it)."""
        raw = self.raw[row] if self.raw.ndim > 1 else self.raw
        if self.scale is None:
            return float(raw[word])
        return float((np.float32(raw[word]) - np.float32(self.zero_point)) * np.float32(self.scale))


def as_logits(x: np.ndarray | Logits) -> Logits:
    return x if isinstance(x, Logits) else Logits(np.asarray(x))


class RowScorer:
    """Log-sum-exps of logits rows for one search, in numpy's fewest passes over the vocabulary.

    Each row is shifted by its raw maximum (the zero point cancels) and scaled into a float32 buffer reused for
    every word (a fresh one per word would be 106 KB at 26,556 words, page-faulted each time), or in place when
    the logits are float32 scratch; then exponentiated in place and summed. The sum is numpy's pairwise one, as
    log_softmax's: a dot product with a ones vector is no faster inside the loop (the invoke evicts the vector
    from the cache; measured), and the pairwise sum keeps float32 logits' log-probabilities bit for bit."""

    def __init__(self) -> None:
        self._buf: np.ndarray | None = None

    def _rows(self, shape: tuple[int, ...]) -> np.ndarray:
        """The reused float32 buffer's first shape[0] rows (grown when more rows come)."""
        if self._buf is None or self._buf.shape[0] < shape[0] or self._buf.shape[1] != shape[1]:
            self._buf = np.empty(shape, np.float32)
        return self._buf[: shape[0]]

    def shifted(self, lg: Logits, best: np.ndarray) -> np.ndarray:
        """(raw - raw[best]) * scale as float32 [n, V], `best` each row's argmax: 0 at the maximum."""
        raw = lg.raw if lg.raw.ndim > 1 else lg.raw[None]
        top = raw[np.arange(len(raw)), best][:, None]
        if _in_place(lg, raw):
            return np.subtract(raw, top, out=raw)
        z = np.subtract(raw, top, out=self._rows(raw.shape), dtype=np.float32)
        return z if lg.scale is None else np.multiply(z, np.float32(lg.scale), out=z)

    def floats(self, lg: Logits) -> np.ndarray:
        """The logits as float32 [n, V] that top_words may mask: float32 scratch logits themselves (no pass over
        them), else dequantised into the buffer (the bits Logits.floats gives)."""
        raw = lg.raw if lg.raw.ndim > 1 else lg.raw[None]
        if _in_place(lg, raw):
            return raw
        rows = self._rows(raw.shape)
        if lg.scale is None:
            np.copyto(rows, raw, casting="same_kind")
            return rows
        np.subtract(raw, np.float32(lg.zero_point), out=rows, dtype=np.float32)
        return np.multiply(rows, np.float32(lg.scale), out=rows)

    @staticmethod
    def log_norms(z: np.ndarray) -> np.ndarray:
        """log(sum(exp(z))) per row, float32 [n]; overwrites z."""
        return np.log(np.exp(z, out=z).sum(axis=1))


def _in_place(lg: Logits, raw: np.ndarray) -> bool:
    """Whether the search may work on the logits themselves: float32, and the caller's to overwrite."""
    return lg.scratch and raw.dtype == np.float32 and lg.scale is None


def word_log_prob(lg: Logits, row: int, word: int, scorer: RowScorer | None = None) -> float:
    """log_softmax(row)[word] in float32, without building the log-softmax array: the logit minus the graph's
    log_norm when the logits carry it, else one log-sum-exp of the row."""
    if lg.log_norm is not None:
        return lg.logit(row, word) - float(lg.log_norm[row])
    raw = lg.raw[row] if lg.raw.ndim > 1 else lg.raw
    one = Logits(raw[None], lg.scale, lg.zero_point, lg.scratch)
    z = (scorer or RowScorer()).shifted(one, np.array([int(raw.argmax())]))
    shifted = float(z[0, word])
    return shifted - float(RowScorer.log_norms(z)[0])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32, copy=False)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def check_length_penalty(alpha: float) -> float:
    """`alpha` as a float in [0, MAX_LENGTH_PENALTY], or one ScenecapError line."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or \
            not 0 <= alpha <= MAX_LENGTH_PENALTY:
        raise ScenecapError(f"length penalty {alpha!r}; expected a number from 0 to {MAX_LENGTH_PENALTY:g} "
                            "(0 = raw log-probability; 0.6-1 favours longer captions)")
    return float(alpha)


def _stopped(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()


def greedy(step: StepFn, hidden0: np.ndarray, start: int, end: int, max_steps: int,
           stop: threading.Event | None = None) -> Hypothesis:
    """Pick the most likely word each step until <end>, max_steps words or `stop`."""
    token = np.array([start], np.int32)
    hidden = hidden0[:1]
    hyp = Hypothesis([], 0.0)
    scorer = RowScorer()
    for _ in range(max_steps):
        if _stopped(stop):
            hyp.stopped = True
            break
        best, log_prob, hidden, attn = _greedy_word(step, token, hidden, scorer)
        hyp.log_prob += log_prob
        hyp.tokens.append(best)
        hyp.attention.append(attn)
        if best == end:
            break
        token = np.array([best], np.int32)
    return hyp


def _greedy_word(step: StepFn, token: np.ndarray, hidden: np.ndarray,
                 scorer: RowScorer) -> tuple[int, float, np.ndarray, np.ndarray]:
    """One greedy step: (word, its log-probability, the new state, its attention row). The logits die with this
    frame, before the next step (a session's are a view LiteRT will not invoke past)."""
    logits, hidden, attn = step(token, hidden)
    lg = as_logits(logits)
    best = lg.raw[0].argmax()  # first maximum, as on the dequantised row (same order, same ties)
    return int(best), best_log_prob(lg, best, scorer), hidden, attn[0]


def forced(step: StepFn, hidden0: np.ndarray, start: int, tokens: list[int]) -> np.ndarray:
    """log p(tokens[i] | <start>, tokens[:i]) [len(tokens)] float32 on the bound image: the decoder read along
    a given caption (teacher forcing), e.g. a caption of another view of the same image."""
    out, hidden, prev, scorer = np.empty(len(tokens), np.float32), hidden0, start, RowScorer()
    for i, token in enumerate(tokens):
        logits, hidden, _ = step(np.array([prev], np.int32), hidden)
        out[i] = word_log_prob(as_logits(logits), 0, int(token), scorer)
        del logits  # a view of the decoder's output: none may live across the next invoke
        prev = token
    return out


def best_log_prob(lg: Logits, best: np.intp, scorer: RowScorer) -> float:
    """The log-probability of row 0's argmax `best`. With the graph's log_norm: its logit minus log_norm, no pass
    over the vocabulary here. Else one log-sum-exp of the row, not a log-softmax array; the word is the row's
    maximum, shifted to 0."""
    if lg.log_norm is not None:
        return word_log_prob(lg, 0, int(best))
    return -float(scorer.log_norms(scorer.shifted(lg, best[None]))[0])


def length_normalised(h: Hypothesis, alpha: float) -> float:
    """GNMT length penalty ((5 + n) / 6) ** alpha; alpha = 0 compares raw total log-probabilities."""
    if alpha == 0:
        return h.log_prob
    return h.log_prob / (((5.0 + len(h.tokens)) / 6.0) ** check_length_penalty(alpha))


def beam_search(step: StepFn, hidden0: np.ndarray, start: int, end: int, max_steps: int, width: int = 3,
                length_penalty: float = 0.0, stop: threading.Event | None = None) -> Hypothesis:
    """Beam search with log-softmax scores, one hidden state per beam and early stop.

    The greedy path is always kept among the beams (it replaces the weakest when pruned), so the result is
    never less likely than greedy's; with width 1 this is exactly greedy. `length_penalty`: 0 to
    MAX_LENGTH_PENALTY (a ScenecapError otherwise).
    """
    length_penalty = check_length_penalty(length_penalty)
    if width <= 1:
        return greedy(step, hidden0, start, end, max_steps, stop)
    return search_beams(step_expander(step), hidden0, start, end, max_steps, width, length_penalty, stop)


# expand(last tokens [n], hidden states [n, U], k) -> (words [n, k], their log-probabilities [n, k] float32,
# new states [n, U], attention rows [n, L] or None when not kept): one decoder step for n beams and each beam's k
# likeliest next words, its argmax first (top_words' order). step_expander makes one from a StepFn; a session may
# run its own.
ExpandFn = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]


def step_expander(step: StepFn) -> ExpandFn:
    """An ExpandFn over a StepFn: the step's logits, then beam_candidates of all its rows."""
    scorer = RowScorer()

    def expand(last: np.ndarray, hiddens: np.ndarray, k: int):
        logits, new_hidden, attn = step(last, hiddens)
        words, gain = beam_candidates(as_logits(logits), k, scorer)
        return words, gain, new_hidden, attn  # the logits die here, before the next step

    return expand


def search_beams(expand: ExpandFn, hidden0: np.ndarray, start: int, end: int, max_steps: int, width: int,
                 length_penalty: float = 0.0, stop: threading.Event | None = None) -> Hypothesis:
    """beam_search's search (width >= 2) over any ExpandFn."""
    beams = [Hypothesis([], 0.0)]
    hiddens = hidden0[:1]
    greedy_idx = 0  # which live beam is the greedy path
    finished: list[Hypothesis] = []
    for t in range(max_steps):
        if _stopped(stop):
            best = max(beams, key=lambda h: length_normalised(h, length_penalty))
            return Hypothesis(best.tokens, best.log_prob, best.attention, stopped=True)
        last = np.array([h.tokens[-1] if h.tokens else start for h in beams], np.int32)
        words, gain, new_hidden, attn = expand(last, hiddens, width)
        chosen, g_pick = _choose(beams, words, gain, width, greedy_idx)
        next_beams, rows, next_greedy = _extend(beams, chosen, g_pick, attn, end, t == max_steps - 1, finished)
        if not next_beams:
            break
        # Early stop: with no length bonus, scores only fall, so no live beam can overtake the best finished one.
        if length_penalty <= 0 and _top(finished) >= _top(next_beams):
            break
        beams, hiddens = next_beams, new_hidden[rows]
        # Once the greedy path has ended its guarantee is met; the slot then just points at a live beam.
        greedy_idx = next_greedy if next_greedy is not None else 0
    return max(finished or beams, key=lambda h: length_normalised(h, length_penalty))


Choice = tuple[float, int, int]  # (total log-probability, beam it extends, word)
# Up to this many words per beam, top-k is k argmax passes; beyond, one stable sort of each row.
ARGMAX_TOP_K = 16


def _top(hyps: list[Hypothesis]) -> float:
    """The best raw total log-probability (what length_normalised gives with alpha 0); -inf for none."""
    return max((h.log_prob for h in hyps), default=-np.inf)


def top_words(z: np.ndarray, first: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest values of z [n, V] and their words [n, k]: largest first, the lower word id first
    among equals (as argmax picks), whatever the platform. `first`: each row's argmax, already known.

    For a few words, k - 1 more argmax passes with the words found masked by -inf (then restored): a pass is
    about 3 us a row at 26,556 words, where argpartition took about 300 us (and ordered ties as the CPU's sort
    kernels happen to: AVX-512 numpy unlike a Pi's)."""
    if len(z) == 1 and k <= ARGMAX_TOP_K:  # one beam's row (the lean beam step's case): no fancy indexing
        words1, vals1 = row_top_words(z[0], int(first[0]), k)
        return np.array([words1], np.intp), np.array([vals1], np.float32)
    rows = np.arange(len(z))
    if k > ARGMAX_TOP_K:
        words = np.argsort(-z, axis=1, kind="stable")[:, :k]
        return words, z[rows[:, None], words]
    words = np.empty((len(z), k), np.intp)
    vals = np.empty((len(z), k), np.float32)
    words[:, 0], vals[:, 0] = first, z[rows, first]
    for j in range(1, k):
        z[rows, words[:, j - 1]] = -np.inf
        words[:, j] = z.argmax(axis=1)
        vals[:, j] = z[rows, words[:, j]]
    z[rows[:, None], words] = vals
    return words, vals


def row_top_words(row: np.ndarray, first: int, k: int) -> tuple[list[int], list]:
    """top_words of one float32 row [V] (k <= ARGMAX_TOP_K), as lists: the same passes, masks and restoring, on
    scalars."""
    words, vals = [first], [row[first]]
    for _ in range(1, k):
        row[words[-1]] = -np.inf
        w = int(row.argmax())
        words.append(w)
        vals.append(row[w])
    row[words] = vals
    return words, vals


def _choose(beams: list[Hypothesis], words: np.ndarray, gain: np.ndarray, width: int,
            greedy_idx: int) -> tuple[list[Choice], int]:
    """The best `width` one-word extensions of the beams from each beam's candidates (words and log-probabilities
    [n, k], argmax first), with the greedy path's own next word among them (in the weakest's place if it was
    not), and where it is in the list. The full n x V sort is never needed.

    In plain Python: a dozen candidates cost a few numpy calls' overhead each otherwise (measured: 23 -> 10 us a
    step). The totals are the same float64 sums (float32 gains widened exactly), and Python's sort is stable even
    reversed: equal scores keep beam-by-beam, word-by-word order, as a stable argsort of the negated totals does."""
    k = words.shape[1]
    total = [h.log_prob + g for h, row in zip(beams, gain.tolist(), strict=True) for g in row]
    picks = sorted(range(len(total)), key=total.__getitem__, reverse=True)[:width]
    g_flat = greedy_idx * k  # the greedy beam's first candidate is its argmax
    if g_flat not in picks:
        picks[-1] = g_flat
    flat = words.ravel().tolist()
    chosen = [(total[i], i // k, flat[i]) for i in picks]
    return chosen, picks.index(g_flat)


def beam_candidates(lg: Logits, k: int, scorer: RowScorer) -> tuple[np.ndarray, np.ndarray]:
    """Each row's min(k, V) likeliest words [n, k], its argmax first, and their log-probabilities [n, k] (float32,
    as log_softmax gives them; only for the candidates). With the graph's log_norm, top-k reads the logits
    themselves and each candidate's log-probability is its logit minus its row's log_norm; else top-k reads the
    shifted rows and one log-sum-exp per row follows. Rows are independent: one row at a time gives the same
    bits as all at once."""
    first = lg.raw.argmax(axis=-1).reshape(-1)  # each beam's likeliest word, the greedy path's among them
    k = min(k, lg.raw.shape[-1])
    if lg.log_norm is not None:
        words, vals = top_words(scorer.floats(lg), first, k)
        return words, vals - lg.log_norm.astype(np.float32, copy=False)[:, None]
    z = scorer.shifted(lg, first)
    words, vals = top_words(z, first, k)
    return words, vals - scorer.log_norms(z)[:, None]  # after top-k has read the row: log_norms overwrites it


def _extend(beams: list[Hypothesis], chosen: list[Choice], g_pick: int, attn: np.ndarray | None, end: int,
            last_step: bool, finished: list[Hypothesis]) -> tuple[list[Hypothesis], list[int], int | None]:
    """The chosen extensions as hypotheses: ended ones (or all, at the last step) go to `finished`; the others
    are the next beams, with the rows of the hidden states they carry on and the greedy path's place among them."""
    next_beams, rows, next_greedy = [], [], None
    for i, (score, b, w) in enumerate(chosen):
        hyp = Hypothesis(beams[b].tokens + [w], score, beams[b].attention + [attn[b]] if attn is not None else [])
        if w == end or last_step:
            finished.append(hyp)
        else:
            if i == g_pick:
                next_greedy = len(next_beams)
            next_beams.append(hyp)
            rows.append(b)
    return next_beams, rows, next_greedy
