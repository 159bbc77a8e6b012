"""Caption text -> words, for any script: Unicode normalisation, case folding only where a script has case,
punctuation removed without touching letters or combining marks of other alphabets, optional Arabic diacritic
and tatweel removal, Chinese/Japanese characters as one token each (those scripts put no spaces between words).

No token ever holds a control character: tokens are printed as caption words, and the runtime refuses a
vocabulary with one. Controls, separators, surrogates, private-use and unassigned code points split words;
invisible format characters (bidi marks and overrides, BOM, soft hyphen) are dropped, except the zero-width
(non-)joiner, which Persian and Indic spelling use inside words.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scenecap import ScenecapError
from scenecap.edge.vocab import DEFAULT_SPECIALS, Vocab

# Arabic harakat, tanwin, shadda, sukun, dagger alif, Quranic marks.
_ARABIC_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e8\u06ea-\u06ed]")
_TATWEEL = "\u0640"  # kashida: stretches a word for layout, never changes it
# Apostrophes inside words ("don't", "l’eau"): typographic ones are folded to ASCII so both spell one word.
_APOSTROPHES = {"\u2019": "'", "\u02bc": "'", "\uff07": "'"}
# Scripts written without spaces between words: each character becomes a token (as BERT's tokenizer does).
_CJK_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x2FA1F),  # CJK Extensions B-F, Compatibility Supplement
)
NORMALIZATIONS = ("NFC", "NFKC", "NFD", "NFKD", "none")
_SEPARATING = {"Zs", "Zl", "Zp", "Cc", "Cs", "Co", "Cn"}  # categories that end a word
_JOINERS = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: part of a word's spelling in Persian, Hindi, ...


@dataclass(frozen=True)
class TextOptions:
    normalization: str = "NFKC"  # NFKC folds presentation forms (common in Arabic text) to base letters
    lowercase: bool = True  # only affects scripts with case; Arabic, Hebrew, CJK are left as they are
    strip_arabic_diacritics: bool = True  # harakat are rarely written consistently in captions
    keep_apostrophes: bool = True  # "don't" stays one word
    strip_tatweel: bool = True

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ScenecapError(f"text normalization {self.normalization!r} unknown; expected one of {NORMALIZATIONS}")


def _is_punct(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "PS"  # punctuation and symbols of every script (Arabic comma, CJK full stop, ...)


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def normalize(text: str, opts: TextOptions = TextOptions()) -> str:
    if opts.normalization != "none":
        text = unicodedata.normalize(opts.normalization, text)
    if opts.strip_arabic_diacritics:
        text = _ARABIC_DIACRITICS.sub("", text)
    if opts.strip_tatweel:
        text = text.replace(_TATWEEL, "")
    if opts.lowercase:
        text = text.lower()  # a no-op for caseless scripts such as Arabic
    return text


def tokenize(text: str, opts: TextOptions = TextOptions()) -> list[str]:
    """Normalised words; punctuation (any script's) separates words, letters and combining marks never do."""
    text = normalize(text, opts)
    out = []
    for ch in text:
        ch = _APOSTROPHES.get(ch, ch) if opts.keep_apostrophes else ch
        if ch == "'" and opts.keep_apostrophes:
            out.append(ch)
        elif _is_punct(ch) or unicodedata.category(ch) in _SEPARATING:
            out.append(" ")
        elif unicodedata.category(ch) == "Cf" and ch not in _JOINERS:
            continue  # invisible: a bidi mark inside a word must not make it a different word
        elif _is_cjk(ch):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    words = (w.strip("'").strip("".join(_JOINERS)) for w in "".join(out).split())
    return [w for w in words if w]


# The default caption length fits this share of the training captions (+ <start>/<end>), up to the cap: a longer
# decoder loop costs every caption on the device, and the rare very long caption is mostly a list.
MAX_LENGTH_PERCENTILE = 99
MAX_LENGTH_CAP = 64


def fitting_max_length(lengths: Sequence[int], percentile: int = MAX_LENGTH_PERCENTILE,
                       cap: int = MAX_LENGTH_CAP) -> int:
    """The length (tokens) that `percentile`% of these caption lengths fit in (nearest rank), from 3 to `cap`."""
    if not lengths:
        return 3
    ordered = sorted(lengths)
    rank = max(math.ceil(len(ordered) * percentile / 100), 1)
    return max(3, min(cap, ordered[rank - 1]))


def build_vocab(captions: Iterable[list[str]], min_count: int = 1, max_size: int | None = None) -> Vocab:
    """Specials first (pad, unk, start, end), then words by frequency (ties alphabetical: deterministic).

    min_count drops rare words (they become <unk>); max_size caps the whole vocabulary, specials included."""
    if min_count < 1:
        raise ScenecapError(f"min_count {min_count}; expected 1 or more")
    specials = [DEFAULT_SPECIALS["pad"], DEFAULT_SPECIALS["unk"], DEFAULT_SPECIALS["start"], DEFAULT_SPECIALS["end"]]
    if max_size is not None and max_size <= len(specials):
        raise ScenecapError(f"max vocabulary size {max_size}; expected more than the {len(specials)} special tokens")
    counts = Counter(w for words in captions for w in words)
    kept = (w for w, c in counts.items() if c >= min_count and w not in specials)
    words = sorted(kept, key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[: max_size - len(specials)]
    return Vocab(specials + words)


def coverage(captions: Iterable[list[str]], vocab: Vocab) -> float:
    """Share of running words the vocabulary knows (the rest become <unk>): reported after building it."""
    total = known = 0
    for words in captions:
        total += len(words)
        known += sum(1 for w in words if w in vocab.index)
    return known / total if total else 1.0
