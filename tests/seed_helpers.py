"""The original system's files for the seed tests: its tokenizer.pickle is optional, everything else is written.

The real tokenizer is not public. SCENECAP_SEED_TOKENIZER names it (`make test` sets it to
../shared/seed/tokenizer.pickle when that file exists); tests that need it skip when it is not set.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

SEED_TOKENIZER_ENV = "SCENECAP_SEED_TOKENIZER"
# Arabic letters alef..yeh without the tatweel: the pseudo-words are spelled with these.
ARABIC_LETTERS = [chr(c) for c in range(0x0627, 0x064B) if c not in range(0x063B, 0x0641)]


def real_tokenizer() -> Path:
    """The original's tokenizer.pickle, or skip the calling test with a one-line reason."""
    value = os.environ.get(SEED_TOKENIZER_ENV)
    if not value:
        pytest.skip(f"{SEED_TOKENIZER_ENV} is not set (the original's tokenizer.pickle is not public)")
    path = Path(value)
    # Set but wrong is the user's mistake, not a reason to skip quietly.
    assert path.is_file(), f"{SEED_TOKENIZER_ENV}={value}: no such file"
    return path


def arabic_index_word(n_ids: int) -> dict[int, str]:
    """Ids like the seed's: pad, <unk>, <start>, <end>, then Arabic words; one id fewer than the model has."""
    index_word = {0: "<pad>", 1: "<unk>", 2: "<start>", 3: "<end>"}
    words = ("".join(p) for n in itertools.count(2) for p in itertools.product(ARABIC_LETTERS, repeat=n))
    for i in range(4, n_ids - 1):
        index_word[i] = next(words)
    return index_word
