"""The lean search loops (edge/lean_search.py, issue 13): a user captions with the tiny model's bundles, and the
flat greedy loop and the lean beam step give exactly what the reference search through DecoderSession.raw_step
gives: the same words, the same log-probabilities to the last bit, the same attention rows and the same number of
invokes, for float, dynamic-range and int8 decoders (with and without the graph's log_norm, with the state carried
raw or requantised), and when stopped part-way. Decoders the lean loops do not take (a batch-3 decoder, an
embedding-row input) run the reference search, with the same results as before.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from scenecap.edge import lean_search
from scenecap.edge.captioner import Captioner
from scenecap.edge.decode import beam_search, forced, greedy
from scenecap.edge.images import load_image

LEAN = ["float32", "int8", "float32:dynamic", "int8:dynamic", "float32:int8"]


@pytest.fixture(scope="module")
def images(test_split) -> list[np.ndarray]:
    return [load_image(s.image) for s in test_split[0][:8]]


def _searches(cap: Captioner, image: np.ndarray, width: int, stop_after: int | None = None):
    """((reference hypothesis, invokes), (lean hypothesis, invokes)) for one image."""
    from scenecap.edge.preprocess import prepare

    m = cap.bundle.manifest
    feats = cap.encode(prepare(image, m.preprocess))
    ids, steps = m.tokens, m.max_length - 1
    out = []
    for lean in (False, True):
        stop = None if stop_after is None else StopAfter(stop_after)
        with cap.start(feats) as s:
            if lean:
                h = s.beam_search(ids["start"], ids["end"], steps, width, 0.0, stop)
            elif width > 1:
                h = beam_search(s.raw_step, s.hidden0(), ids["start"], ids["end"], steps, width, 0.0, stop)
            else:
                h = greedy(s.raw_step, s.hidden0(), ids["start"], ids["end"], steps, stop)
            out.append((h, s.invokes))
    return out


class StopAfter(threading.Event):
    """A stop that reads as set from its (n + 1)-th look on: a user's signal arriving after n decoder steps (each
    search looks once before every step)."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.looks = n, 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks > self.n or super().is_set()


def _same(ref, lean) -> None:
    (h0, n0), (h1, n1) = ref, lean
    assert h1.tokens == h0.tokens
    assert h1.log_prob == h0.log_prob  # bit for bit, not approximately
    assert h1.stopped == h0.stopped
    assert len(h1.attention) == len(h0.attention)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(h0.attention, h1.attention, strict=True))
    assert n1 == n0


@pytest.mark.parametrize("quant", LEAN)
@pytest.mark.parametrize("width", [1, 3])
def test_the_lean_loops_give_the_reference_searchs_words_bit_for_bit(make_bundle, images, quant, width):
    cap = Captioner.load(make_bundle(quant))
    captions = set()
    for image in images:
        ref, lean = _searches(cap, image, width)
        _same(ref, lean)
        assert not ref[0].stopped
        captions.add(tuple(ref[0].tokens))
    assert len(captions) > 1  # the images differ, and so do their captions: the comparison is not of one sentence


def test_a_caption_keeps_attention_only_when_asked_and_its_words_do_not_change(make_bundle, images):
    """A spoken caption needs no attention maps, so a Captioner keeps none unless asked (attention=True, as
    `caption --attention` does): the same words and log-probability either way."""
    bundle = make_bundle("int8:dynamic")
    for beam in (1, 3):
        plain, maps = Captioner.load(bundle, beam=beam), Captioner.load(bundle, beam=beam, attention=True)
        for image in images[:4]:
            a, b = plain.caption(image), maps.caption(image)
            assert a.attention is None and not a.hypothesis.attention
            assert (a.tokens, a.log_prob, a.confidence) == (b.tokens, b.log_prob, b.confidence)
            assert b.attention.shape == (len(b.tokens), plain.decoder.output_spec("attention").shape[-1])
            assert np.allclose(b.attention.sum(axis=1), 1.0, atol=1e-2)  # each word's map is a distribution


def test_a_benchmark_sees_every_invoke_of_a_caption(make_bundle, images):
    """What `scenecap bench` subtracts from a whole caption to find the Python around the interpreter: every
    encoder and decoder invoke, timed by the model itself (no method replaced on the instance)."""
    cap = Captioner.load(make_bundle("int8:dynamic"), beam=3)
    enc, dec = cap.encoder.record_invokes(), cap.decoder.record_invokes()
    for width in (1, 3):
        cap.beam = width
        enc.clear()
        dec.clear()
        c = cap.caption(images[0])
        assert len(enc) == 1 and len(dec) == c.invokes > len(c.tokens) * (width > 1)
        assert 0 < sum(enc) <= c.timings["encoder"] and 0 < sum(dec) <= c.timings["decoder"]


@pytest.mark.parametrize("quant", LEAN)
def test_reading_a_caption_along_another_image_gives_the_reference_figures_bit_for_bit(make_bundle, images, quant):
    """The second look's loop (teacher forcing): the caption of one image read along another, lean and through
    raw_step, gives the same log-probability for every word."""
    from scenecap.edge.preprocess import prepare

    cap = Captioner.load(make_bundle(quant))
    m = cap.bundle.manifest
    tokens = cap.caption(images[0]).hypothesis.tokens
    with cap.start(cap.encode(prepare(images[1], m.preprocess))) as s:
        ref = forced(s.raw_step, s.hidden0(), m.tokens["start"], tokens)
    with cap.start(cap.encode(prepare(images[1], m.preprocess))) as s:
        lean = s.forced(m.tokens["start"], tokens)
        assert s.invokes == len(tokens)
    assert lean.dtype == ref.dtype and np.array_equal(lean, ref) and (lean <= 0).all()


@pytest.mark.parametrize("width", [1, 3])
def test_stopped_part_way_the_lean_loops_stop_where_the_reference_does(make_bundle, images, width):
    cap = Captioner.load(make_bundle("int8:dynamic"))
    ref, lean = _searches(cap, images[0], width, stop_after=4)
    assert ref[0].stopped and lean[0].stopped
    _same(ref, lean)


def test_every_bundle_above_takes_the_lean_loops_and_they_cover_both_state_carries(make_bundle, images):
    """The lean loops carry the state as the session does: across LEAN, raw and converted carrying both occur."""
    from scenecap.edge.preprocess import prepare

    modes = set()
    for quant in LEAN:
        cap = Captioner.load(make_bundle(quant))
        with cap.start(cap.encode(prepare(images[0], cap.bundle.manifest.preprocess))) as s:
            assert lean_search.supports(s)
        modes.add("raw" if cap.carry_raw else "table" if cap.requant is not None else "requantised")
    assert "raw" in modes and modes - {"raw"}, modes


@pytest.mark.parametrize("which", ["batch3", "int16x8"])
def test_decoders_the_lean_loops_do_not_take_run_the_reference(make_bundle, images, which):
    bundle = make_bundle("float32", batch=3) if which == "batch3" else make_bundle("int8:int16x8")
    cap = Captioner.load(bundle)
    m = cap.bundle.manifest
    from scenecap.edge.preprocess import prepare

    with cap.start(cap.encode(prepare(images[0], m.preprocess))) as s:
        assert not lean_search.supports(s)
    c = cap.caption(images[0])
    assert c.tokens and c.invokes >= len(c.tokens)
