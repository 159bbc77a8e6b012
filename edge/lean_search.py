"""Greedy and beam steps written flat for the common case: a batch-1 decoder fed token ids, one image bound.

decode.greedy and decode.beam_search through DecoderSession.raw_step are the reference: they work through any
step function (several invokes, padding, float copies, an embedding table). Each of their words costs a dozen
small Python calls around the invoke (a Logits, the step's dispatch, the state's copy and write), and the invoke
evicts the caches they run from. This loop does the same arithmetic on zero-copy views of the interpreter's
tensors and little else: the new state goes from the output straight into the input (in the model's own dtype,
or through the session's table), the token is one element written, argmax runs on the raw logits, and the word's
log-probability is its logit minus the graph's log_norm (or decode's one log-sum-exp of the row, for decoders
without it). Beam search keeps decode.search_beams and swaps its expand step for one that invokes once per beam
and takes each beam's candidates from the output tensor itself, with no logits copied. Same tokens,
log-probabilities and attention rows as the reference, bit for bit (tests/test_edge_lean_search.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from scenecap.edge.decode import (
    ARGMAX_TOP_K,
    ExpandFn,
    Hypothesis,
    Logits,
    RowScorer,
    beam_candidates,
    best_log_prob,
    row_top_words,
    word_log_prob,
)
from scenecap.edge.export_contract import LOG_NORM

if TYPE_CHECKING:
    from scenecap.edge.captioner import DecoderSession


def supports(session: DecoderSession) -> bool:
    """Whether the session's decoder takes this loop: batch 1 and token ids in (not embedding rows)."""
    return session.batch == 1 and session.embedding is None


class _Views(NamedTuple):
    """A session's decoder tensors as zero-copy view makers, fetched once per caption, and its logits' scale."""

    token_in: Callable
    hidden_in: Callable
    logits_out: Callable
    hidden_out: Callable
    attn_out: Callable
    norm_out: Callable | None  # the graph's log_norm, when it has one
    scale: float | None  # None: float logits
    zero: int
    carry: Callable | None  # session.carried; None when the state goes back in as it is (a call saved per word)


def _views(session: DecoderSession) -> _Views:
    dec, lspec = session.decoder, session.specs["logits"]
    scale, zero = (lspec.scale, lspec.zero_point) if lspec.quantized else (None, 0)
    return _Views(dec.input_view_fn("token"), dec.input_view_fn("hidden"), dec.output_view_fn("logits"),
                  dec.output_view_fn("new_hidden"), dec.output_view_fn("attention"),
                  dec.output_view_fn(LOG_NORM) if session.log_norm else None, scale, zero,
                  None if session.carry_raw else session.carried)


def lean_greedy(session: DecoderSession, start: int, end: int, max_steps: int,
                stop: threading.Event | None = None, attention: bool = True) -> Hypothesis:
    """decode.greedy(session.raw_step, session.hidden0(), ...) for a decoder that `supports` it. `attention`
    False: no attention rows kept (hyp.attention empty), two of the word's dozen small operations saved."""
    token_in, hidden_in, logits_out, hidden_out, attn_out, norm_out, scale, zero, carry = _views(session)
    invoke, step_ms, perf = session.decoder.invoke, session.step_ms, time.perf_counter
    view = hidden_in()
    view[...] = session.carried(session.hidden0())
    del view
    aspec = session.specs["attention"]
    attn_rows = np.empty((max_steps, *aspec.shape[1:]), aspec.dtype) if attention else None  # filled in place
    hyp, scorer, token, tokens = Hypothesis([], 0.0), RowScorer(), start, []
    for i in range(max_steps):
        if stop is not None and stop.is_set():
            hyp.stopped = True
            break
        view = token_in()
        view[0] = token
        del view  # no view of the tensors may live across the invoke
        t0 = perf()
        invoke()
        step_ms.append((perf() - t0) * 1e3)
        row = logits_out()
        token = int(row[0].argmax())  # first maximum: the dequantised row's argmax (same order, same ties)
        if norm_out is not None and scale is None:
            hyp.log_prob += float(row[0, token]) - float(norm_out()[0])
        else:  # decode's own formula for this decoder (quantised logits, or no log_norm in the graph)
            norm = norm_out().copy() if norm_out is not None else None
            hyp.log_prob += best_log_prob(Logits(row, scale, zero, True, norm), np.intp(token), scorer)
        del row
        if attn_rows is not None:
            attn_rows[i] = attn_out()[0]
        view = hidden_in()
        view[...] = hidden_out() if carry is None else carry(hidden_out())  # the state stays in the model's dtype
        del view
        tokens.append(token)
        if token == end:
            break
    hyp.tokens = tokens
    if attn_rows is not None:
        hyp.attention = list(attn_rows[: len(tokens)])
    session.invokes += len(tokens)
    return hyp


def lean_forced(session: DecoderSession, start: int, tokens: list[int]) -> np.ndarray:
    """decode.forced(session.raw_step, session.hidden0(), start, tokens) for a decoder that `supports` it: the
    same log-probabilities, read from the output views (the second look's loop, edge/confidence.py)."""
    token_in, hidden_in, logits_out, hidden_out, _, norm_out, scale, zero, carry = _views(session)
    invoke = session.decoder.invoke
    view = hidden_in()
    view[...] = session.carried(session.hidden0())
    del view
    out, scorer, prev = np.empty(len(tokens), np.float32), RowScorer(), start
    for i, token in enumerate(tokens):
        view = token_in()
        view[0] = prev
        del view  # no view of the tensors may live across the invoke
        invoke()
        row = logits_out()
        norm = norm_out().copy() if norm_out is not None else None
        out[i] = word_log_prob(Logits(row, scale, zero, True, norm), 0, int(token), scorer)
        del row
        view = hidden_in()
        view[...] = hidden_out() if carry is None else carry(hidden_out())
        del view
        prev = token
    session.invokes += len(tokens)
    return out


def lean_expander(session: DecoderSession, attention: bool = True) -> ExpandFn:
    """decode.step_expander(session.raw_step) for a decoder that `supports` it: one invoke per beam, each beam's
    candidates taken from the logits tensor in place (a scratch row: top-k may mask it). `attention` False: no
    attention rows read (the expand step gives None for them, and the hypotheses keep none)."""
    token_in, hidden_in, logits_out, hidden_out, attn_out, norm_out, scale, zero, carry = _views(session)
    specs = session.specs
    lspec, sspec, aspec = specs["logits"], specs["new_hidden"], specs["attention"]
    invoke, perf, scorer = session.decoder.invoke, time.perf_counter, RowScorer()

    def expand(last: np.ndarray, hiddens: np.ndarray, k: int):
        n, k = len(last), min(k, lspec.shape[-1])
        direct = norm_out is not None and scale is None and lspec.dtype == "float32" and k <= ARGMAX_TOP_K
        words, gain = np.empty((n, k), np.intp), np.empty((n, k), np.float32)
        states = np.empty((n, *sspec.shape[1:]), sspec.dtype)
        attn_rows = np.empty((n, *aspec.shape[1:]), aspec.dtype) if attention else None
        t0 = perf()
        for i in range(n):
            view = token_in()
            view[0] = last[i]
            view = hidden_in()
            view[...] = hiddens[i : i + 1] if carry is None else carry(hiddens[i : i + 1])
            del view  # no view of the tensors may live across the invoke
            invoke()
            row = logits_out()
            if direct:  # float32 logits and the graph's log_norm: beam_candidates' arithmetic on one row
                w, v = row_top_words(row[0], int(row[0].argmax()), k)
                words[i], gain[i] = w, np.array(v, np.float32) - norm_out()[0]
            else:
                norm = norm_out().copy() if norm_out is not None else None
                words[i], gain[i] = (a[0] for a in beam_candidates(Logits(row, scale, zero, True, norm), k, scorer))
            del row
            states[i] = hidden_out()[0]
            if attn_rows is not None:
                attn_rows[i] = attn_out()[0]
        session.step_ms.append((perf() - t0) * 1e3)
        session.invokes += n
        return words, gain, states, attn_rows

    return expand
