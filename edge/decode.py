"""Greedy and beam search over a single-step decoder, in numpy.

`step(tokens[n], hidden[n, U]) -> (logits[n, V], hidden[n, U], attention[n, L])` advances n hypotheses by one
word; the caller binds the image's features. Each hypothesis carries its own hidden state, which the search only
passes back and selects rows of (so it may stay in the model's own dtype). `logits` is a float array or a
`Logits` (the model's raw, e.g. int8, values and their scale): argmax and top-k run on the raw values, and
log-probabilities are computed only for the words that need them (one log-sum-exp of the row each).

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
    argmax and top-k need no dequantisation."""

    raw: np.ndarray
    scale: float | None = None
    zero_point: int = 0

    def floats(self) -> np.ndarray:
        """Dequantised float32, computed as the edge runtime's dequantize() does (same bits)."""
        if self.scale is None:
            return self.raw.astype(np.float32, copy=False)
        return (self.raw.astype(np.float32) - self.zero_point) * np.float32(self.scale)


def as_logits(x: np.ndarray | Logits) -> Logits:
    return x if isinstance(x, Logits) else Logits(np.asarray(x))


def word_log_prob(lg: Logits, row: int, word: int) -> float:
    """log_softmax(row)[word] in float32, without building the log-softmax array: once per word, so the row is
    shifted by its raw maximum (the zero point cancels), scaled and exponentiated in one buffer (four passes over
    the vocabulary, no temporaries: at 26,556 words each temporary would be a fresh page-faulted allocation)."""
    raw = lg.raw[row] if lg.raw.ndim > 1 else lg.raw
    top = raw.max()
    z = np.subtract(raw, top, dtype=np.float32)
    if lg.scale is not None:
        np.multiply(z, np.float32(lg.scale), out=z)
    shifted = float(z[word])
    np.exp(z, out=z)
    return shifted - float(np.log(z.sum(dtype=np.float32)))

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
    for _ in range(max_steps):
        if _stopped(stop):
            hyp.stopped = True
            break
        logits, hidden, attn = step(token, hidden)
        lg = as_logits(logits)
        best = int(lg.raw[0].argmax())  # first maximum, as on the dequantised row (same order, same ties)
        hyp.log_prob += word_log_prob(lg, 0, best)  # one log-sum-exp of the row, not a log-softmax array
        hyp.tokens.append(best)
        hyp.attention.append(attn[0])
        if best == end:
            break
        token = np.array([best], np.int32)
    return hyp


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
    beams = [Hypothesis([], 0.0)]
    hiddens = hidden0[:1]
    greedy_idx = 0  # which live beam is the greedy path
    finished: list[Hypothesis] = []
    for t in range(max_steps):
        if _stopped(stop):
            best = max(beams, key=lambda h: length_normalised(h, length_penalty))
            return Hypothesis(best.tokens, best.log_prob, best.attention, stopped=True)
        last = np.array([h.tokens[-1] if h.tokens else start for h in beams], np.int32)
        logits, new_hidden, attn = step(last, hiddens)
        chosen, g_pick = _choose(beams, as_logits(logits), width, greedy_idx)
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


def _top(hyps: list[Hypothesis]) -> float:
    """The best raw total log-probability (what length_normalised gives with alpha 0); -inf for none."""
    return max((h.log_prob for h in hyps), default=-np.inf)


def _choose(beams: list[Hypothesis], lg: Logits, width: int, greedy_idx: int) -> tuple[list[Choice], int]:
    """The best `width` one-word extensions of the beams, with the greedy path's own next word among them (in
    the weakest's place if it was not), and where it is in the list."""
    # Per beam one log-sum-exp; log-probabilities only for the candidates, as log_softmax would give them.
    d = lg.floats()
    d = d - d.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(d).sum(axis=1))
    k = min(width, d.shape[1])
    # Top-k per beam, then the best `width` of those: the full n x V sort is never needed. Ranked on -d, in
    # the same order (and float32 dtype) as -log_softmax, so ties (frequent in int8 logits) break as before.
    part = np.argpartition(-d, k - 1, axis=1)[:, :k]
    cand = [(beams[b].log_prob + float(d[b, w] - log_norm[b]), b, int(w))
            for b in range(len(beams)) for w in part[b]]
    cand.sort(key=lambda c: -c[0])
    chosen = cand[:width]
    g_word = int(lg.raw[greedy_idx].argmax())
    g_pick = next((i for i, c in enumerate(chosen) if c[1] == greedy_idx and c[2] == g_word), None)
    if g_pick is None:
        chosen[-1] = (beams[greedy_idx].log_prob + float(d[greedy_idx, g_word] - log_norm[greedy_idx]),
                      greedy_idx, g_word)
        g_pick = len(chosen) - 1
    return chosen, g_pick


def _extend(beams: list[Hypothesis], chosen: list[Choice], g_pick: int, attn: np.ndarray, end: int,
            last_step: bool, finished: list[Hypothesis]) -> tuple[list[Hypothesis], list[int], int | None]:
    """The chosen extensions as hypotheses: ended ones (or all, at the last step) go to `finished`; the others
    are the next beams, with the rows of the hidden states they carry on and the greedy path's place among them."""
    next_beams, rows, next_greedy = [], [], None
    for i, (score, b, w) in enumerate(chosen):
        hyp = Hypothesis(beams[b].tokens + [w], score, beams[b].attention + [attn[b]])
        if w == end or last_step:
            finished.append(hyp)
        else:
            if i == g_pick:
                next_greedy = len(next_beams)
            next_beams.append(hyp)
            rows.append(b)
    return next_beams, rows, next_greedy
