"""Caption text -> words, for any script: Unicode normalisation, case folding only where a script has case,
punctuation removed without touching letters of other alphabets, optional Arabic diacritic/tatweel removal."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from scenecap.edge.vocab import DEFAULT_SPECIALS, Vocab

# Arabic harakat, tanwin, shadda, sukun, dagger alif, Quranic marks; and tatweel (kashida).
_ARABIC_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e8\u06ea-\u06ed]")
_TATWEEL = "\u0640"


@dataclass(frozen=True)
class TextOptions:
    normalization: str = "NFKC"  # NFKC folds presentation forms (common in Arabic text) to base letters
    lowercase: bool = True  # only affects scripts with case
    strip_arabic_diacritics: bool = True
    keep_apostrophes: bool = True  # "don't" stays one word


def _is_punct(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat.startswith("P") or cat.startswith("S")


def normalize(text: str, opts: TextOptions = TextOptions()) -> str:
    text = unicodedata.normalize(opts.normalization, text)
    if opts.strip_arabic_diacritics:
        text = _ARABIC_DIACRITICS.sub("", text).replace(_TATWEEL, "")
    if opts.lowercase:
        text = text.lower()  # a no-op for caseless scripts such as Arabic
    return text


def tokenize(text: str, opts: TextOptions = TextOptions()) -> list[str]:
    """Normalised words; punctuation (any script's, e.g. Arabic comma) becomes a separator."""
    text = normalize(text, opts)
    out = []
    for ch in text:
        if ch == "'" and opts.keep_apostrophes:
            out.append(ch)
        elif _is_punct(ch):
            out.append(" ")
        else:
            out.append(ch)
    return [w.strip("'") for w in "".join(out).split() if w.strip("'")]


def build_vocab(captions: Iterable[list[str]], min_count: int = 1, max_size: int | None = None) -> Vocab:
    """Specials first (pad, unk, start, end), then words by frequency (ties alphabetical: deterministic)."""
    counts = Counter(w for words in captions for w in words)
    specials = list(DEFAULT_SPECIALS.values())
    kept = (w for w, c in counts.items() if c >= min_count and w not in specials)
    words = sorted(kept, key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[: max(0, max_size - len(specials))]
    return Vocab([DEFAULT_SPECIALS["pad"], DEFAULT_SPECIALS["unk"], DEFAULT_SPECIALS["start"], DEFAULT_SPECIALS["end"]]
                 + words)
