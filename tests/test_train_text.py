"""Caption text in any script: what a user writing Arabic, French, Hindi or Chinese captions gets as words."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenecap import ScenecapError
from scenecap.edge.terminal import is_safe
from scenecap.edge.vocab import Vocab
from scenecap.train.language import caption_language
from scenecap.train.text import (
    MAX_LENGTH_CAP,
    TextOptions,
    build_vocab,
    coverage,
    fitting_max_length,
    normalize,
    tokenize,
)


def test_english_is_lower_cased_and_punctuation_split():
    assert tokenize("A dog, running on the BEACH.") == ["a", "dog", "running", "on", "the", "beach"]
    assert tokenize("Don't stop — it’s fine!") == ["don't", "stop", "it's", "fine"]


def test_arabic_keeps_its_letters_and_drops_diacritics_tatweel_and_arabic_punctuation():
    caption = "قِطَّةٌ صَغِيرَةٌ، تَجْلِسُ عَلى الكـــرسي؟"  # harakat, Arabic comma, tatweel, Arabic question mark
    assert tokenize(caption) == ["قطة", "صغيرة", "تجلس", "على", "الكرسي"]
    kept = tokenize(caption, TextOptions(strip_arabic_diacritics=False, strip_tatweel=False))
    assert kept[0] == "قِطَّةٌ" and "الكـــرسي" in kept


def test_arabic_presentation_forms_fold_to_base_letters():
    presentation = "\ufee9\ufeae\ufe98"  # isolated/final glyph codepoints some PDFs and old systems produce
    assert tokenize(presentation) == [unicodedata.normalize("NFKC", presentation)]
    assert tokenize(presentation, TextOptions(normalization="NFC")) == [presentation]


def test_case_folding_only_where_a_script_has_case():
    assert tokenize("Ελληνικά ΚΕΙΜΕΝΑ") == ["ελληνικά", "κειμενα"]
    assert tokenize("Un Chat", TextOptions(lowercase=False)) == ["Un", "Chat"]
    assert tokenize("ein Maß") == ["ein", "maß"]


def test_combining_marks_of_other_scripts_stay_inside_words():
    assert tokenize("एक कुत्ता घास पर।") == ["एक", "कुत्ता", "घास", "पर"]  # Devanagari vowel signs, danda
    assert tokenize("نگاه می‌کند") == ["نگاه", "می\u200cکند"]  # Persian zero-width non-joiner kept


def test_chinese_and_japanese_characters_become_tokens():
    assert tokenize("一只猫在桌子上。") == ["一", "只", "猫", "在", "桌", "子", "上"]
    assert tokenize("ねこ が いる") == ["ね", "こ", "が", "い", "る"]


def test_unknown_normalization_is_a_one_line_error():
    with pytest.raises(ScenecapError, match="normalization 'NFX'"):
        TextOptions(normalization="NFX")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_tokenizing_is_idempotent_and_never_loses_a_letter(text):
    words = tokenize(text)
    assert tokenize(" ".join(words)) == words
    assert all(w and " " not in w for w in words)
    letters = [c for c in normalize(text) if unicodedata.category(c)[0] in "LN"]
    assert sorted(letters) == sorted(c for w in words for c in w if unicodedata.category(c)[0] in "LN")


def test_vocabulary_by_min_count_and_max_size_with_specials_first(tmp_path):
    caps = [tokenize(c) for c in ["a red circle", "a red square", "a blue circle", "a star"]]
    v = build_vocab(caps, min_count=2)
    assert v.tokens[:4] == ["<pad>", "<unk>", "<start>", "<end>"]
    assert v.tokens[4:] == ["a", "circle", "red"]  # by frequency, ties alphabetical; rare words dropped
    assert v.encode(["a", "blue", "circle"]) == [v.start, v.index["a"], v.unk, v.index["circle"], v.end]
    assert len(build_vocab(caps, max_size=6)) == 6
    assert coverage(caps, v) == pytest.approx(8 / 11)  # "blue", "square", "star" are unknown
    v.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text("utf-8"))["tokens"] == v.tokens
    assert Vocab.load(tmp_path / "vocab.json").tokens == v.tokens
    with pytest.raises(ScenecapError, match="max vocabulary size 3"):
        build_vocab(caps, max_size=3)


def test_arabic_vocabulary_round_trips_as_utf8_json(tmp_path):
    caps = [tokenize(c) for c in ["دائرة حمراء في الوسط", "مربع أزرق على اليسار"]]
    v = build_vocab(caps)
    v.save(tmp_path / "vocab.json")
    raw = (tmp_path / "vocab.json").read_bytes().decode("utf-8")
    assert "دائرة" in raw  # stored as readable UTF-8, not \\u escapes
    assert Vocab.load(tmp_path / "vocab.json").decode(v.encode(caps[0])) == caps[0]


# --- no token the runtime would refuse: tokens are printed as caption words -------------------------------------


def test_controls_bidi_overrides_and_separators_never_reach_a_token():
    hostile = "a\u202edog\x1b[31m red\u2028cat\u2029 \ufeffbig \u200fقطة\x85x \ue000y tab\tnew\nline"
    words = tokenize(hostile)
    assert words == ["adog", "31m", "red", "cat", "big", "قطة", "x", "y", "tab", "new", "line"]
    v = build_vocab([words])
    assert all(is_safe(t) for t in v.tokens)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))  # every code point, surrogates and controls included
def test_every_token_of_any_text_is_one_the_runtime_accepts(text):
    assert all(is_safe(w) and w.strip() == w for w in tokenize(text))


# --- caption length: the default fits the captions -------------------------------------------------------------


def test_the_default_caption_length_fits_99_percent_of_the_projects_own_captions(synth_data):
    from scenecap.train.datasets import load_coco

    lengths = [len(tokenize(c)) + 2 for s in load_coco(synth_data / "captions_train.json") for c in s.captions]
    n = fitting_max_length(lengths)
    assert sum(length <= n for length in lengths) >= 0.99 * len(lengths)
    assert sum(length <= n - 1 for length in lengths) < 0.99 * len(lengths)  # and no longer than that
    assert sum(length > 24 for length in lengths) > 0.2 * len(lengths)  # what the old fixed 24 cut
    assert fitting_max_length([200] * 10) == MAX_LENGTH_CAP and fitting_max_length([]) == 3


# --- the caption language, from the captions' script -----------------------------------------------------------


@pytest.mark.parametrize("captions, given, expected", [
    (["a red circle at the top"], None, "en"),
    (["دائرة حمراء في الأعلى", "مربع أزرق"], None, "ar"),
    (["un chat sur la table"], "fr", "fr"),
    (["نگاه می‌کند"], "fa", "fa"),  # Persian: Arabic script, told
    (["猫がテーブルの上にいる"], None, "ja"),
    (["一只猫在桌子上"], None, "zh"),
    (["כלב רץ בפארק"], None, "he"),
    (["a cat", "a dog", "a cow", "a hen", "a pig", "a fox", "an owl", "a yak", "an ox", "a bee", "قط"], None, "en"),
    (["кошка на столе"], "ru", "ru"),
    (["a cat"], "xx-custom", "xx-custom"),  # a code whose script is unknown: taken as given
])
def test_caption_language(captions, given, expected):
    assert caption_language(captions, given, "c.json")[0] == expected
