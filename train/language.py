"""Which language the captions are in, from the script of their letters: recorded in the bundle, it picks the
speech voice, so Arabic captions spoken by an English voice (letters spelt one by one) cannot happen silently.

Python's unicodedata has no script property, but every letter's Unicode name starts with its script
("ARABIC LETTER ALEF", "LATIN SMALL LETTER A", "CJK UNIFIED IDEOGRAPH-4E00"), which is all this needs.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

from scenecap import ScenecapError

# A script that one language writes (nearly) alone -> that language. Latin is English unless told (--lang fr ...);
# scripts shared by several languages (Cyrillic, Devanagari, Bengali ...) are not guessed: the user is asked.
SCRIPT_LANGUAGE = {
    "ARABIC": "ar", "LATIN": "en", "HEBREW": "he", "GREEK": "el", "HANGUL": "ko", "KANA": "ja", "HAN": "zh",
    "THAI": "th", "GEORGIAN": "ka", "ARMENIAN": "hy", "KHMER": "km", "LAO": "lo", "SINHALA": "si",
    "TAMIL": "ta", "TELUGU": "te", "KANNADA": "kn", "MALAYALAM": "ml", "GUJARATI": "gu", "GURMUKHI": "pa",
    "MYANMAR": "my", "ETHIOPIC": "am", "TIBETAN": "bo",
}
# Languages whose script is known, to refuse a --lang that contradicts the captions. Codes not listed are taken
# as given (nothing to check them against).
LANGUAGE_SCRIPT = {
    **{code: "LATIN" for code in (
        "en fr de es it pt nl sv da no nb nn fi pl cs sk sl hr bs ro hu tr az id ms vi sw tl ca eu gl ga cy et lv "
        "lt is sq af mt uz tk ha yo ig zu xh so eo la").split()},
    **{code: "ARABIC" for code in ("ar", "fa", "ur", "ps", "sd", "ug", "ckb")},
    **{code: "CYRILLIC" for code in ("ru", "uk", "bg", "mk", "be", "kk", "ky", "mn", "tg")},
    **{code: "DEVANAGARI" for code in ("hi", "mr", "ne", "sa")},
    **{code: "BENGALI" for code in ("bn", "as")},
    **{lang: script for script, lang in SCRIPT_LANGUAGE.items() if script != "LATIN"},
    "sr": None,  # Serbian is written in Cyrillic and Latin alike
    "ja": "KANA",
}
# Japanese mixes kana with Han characters; Chinese is Han alone.
_SCRIPT_ALIASES = {"HIRAGANA": "KANA", "KATAKANA": "KANA", "CJK": "HAN"}
DOMINANT = 0.9  # the share of letters one script must have for the captions to count as written in it


def letter_script(ch: str) -> str | None:
    """The script of a letter ('ARABIC', 'LATIN', 'HAN', ...), or None for digits, marks and anything else."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    first = unicodedata.name(ch, "").split(" ")[0]
    return _SCRIPT_ALIASES.get(first, first) or None


def script_shares(captions: Iterable[str]) -> Counter:
    """Letters per script over all the captions."""
    counts: Counter = Counter()
    for caption in captions:
        counts.update(s for s in map(letter_script, caption) if s)
    return counts


def _dominant(counts: Counter) -> str | None:
    """The captions' script, or None when no script has DOMINANT of the letters."""
    if counts["KANA"]:  # kana anywhere: Japanese, whose Han characters are part of it
        counts = Counter(counts)
        counts["KANA"] += counts.pop("HAN", 0)
    script, n = counts.most_common(1)[0]
    return script if n / sum(counts.values()) >= DOMINANT else None


def _mix(counts: Counter) -> str:
    total = sum(counts.values())
    return ", ".join(f"{100 * c / total:.0f}% {s.title()}" for s, c in counts.most_common(3))


def _codes_for(script: str) -> str:
    codes = [c for c, s in LANGUAGE_SCRIPT.items() if s == script][:3]
    return ", ".join(f"--lang {c}" for c in codes) or "--lang CODE"


def caption_language(captions: Iterable[str], given: str | None, where: str) -> tuple[str, str]:
    """(language code, how it was decided) for these captions; `given` is --lang (None: detect from the script).

    A given language whose script is known must match the captions' script; one line refuses it otherwise."""
    counts = script_shares(captions)
    script = _dominant(counts) if counts else None
    if given:
        expected = LANGUAGE_SCRIPT.get(given.lower().replace("_", "-").split("-")[0])
        if script and expected and expected != script:
            raise ScenecapError(f"{where}: --lang {given} is written in {expected.title()} script, but the captions "
                                f"are {script.title()}; pass the captions' language ({_codes_for(script)} ...)")
        return given, "given"
    if not counts:
        raise ScenecapError(f"{where}: the captions have no letters to tell their language by; pass --lang CODE")
    if script is None:
        raise ScenecapError(f"{where}: the captions mix scripts ({_mix(counts)}); pass --lang CODE to say which "
                            "language they are in (it picks the speech voice)")
    if script not in SCRIPT_LANGUAGE:
        raise ScenecapError(f"{where}: the captions are in {script.title()} script, which several languages "
                            f"write; pass --lang CODE ({_codes_for(script)} ...) to say which (it picks the "
                            "speech voice)")
    return SCRIPT_LANGUAGE[script], f"detected from the captions' {script.title()} script"
