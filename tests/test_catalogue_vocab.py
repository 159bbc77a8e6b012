"""Bad-input catalogue, vocabulary files: edge/vocab.py's Vocab.load (the one reader: bundles, run folders and
exports all read vocab.json with it) and the training side's build_vocab, plus `scenecap caption` with a bundle
whose vocab.json is bad (its hash updated, so only the vocabulary check can catch it).

Every case is refused in one line naming the file (or the value) and what was expected, or loads cleanly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from catalogue_helpers import cli_error, one_line_error, scenecap

from scenecap.edge.vocab import DEFAULT_SPECIALS, Vocab
from scenecap.train.text import build_vocab

TOKENS = ["<pad>", "<unk>", "<start>", "<end>", "a", "cat", "on", "mat"]


def _vocab(**changes) -> dict:
    d = {"format": "scenecap-vocab", "version": 1, "specials": dict(DEFAULT_SPECIALS), "tokens": list(TOKENS)}
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


def _without(token: str) -> dict:
    return _vocab(tokens=[t for t in TOKENS if t != token])


def _json(d) -> bytes:
    return json.dumps(d, ensure_ascii=False).encode("utf-8")


# case -> (file content, or None for no file, or "folder"; the words of the one-line error)
CASES: dict[str, tuple] = {
    "missing file": (None, "vocabulary file not found"),
    "a folder": ("folder", "is a folder; expected a regular vocabulary file"),
    "empty file": (b"", "invalid JSON at line 1 column 1"),
    "non-UTF-8 bytes": ('{"tokens": ["café"]}'.encode("latin-1"), "not UTF-8 text (byte 16); expected a JSON vocab"),
    "UTF-8 BOM": (b"\xef\xbb\xbf" + _json(_vocab()), "invalid JSON at line 1 column 1: Unexpected UTF-8 BOM"),
    "invalid JSON": (_json(_vocab())[:-5], "invalid JSON at line 1"),
    "nested too deep": (b"[" * 100_000, "nested too deeply; expected a JSON vocabulary object"),
    "a JSON list": (_json(TOKENS), "expected a JSON object with format 'scenecap-vocab' and a tokens list"),
    "wrong format name": (_json(_vocab(format="keras-tokenizer")), "expected a JSON object with format"),
    "no format": (_json(_vocab(format=None)), "expected a JSON object with format"),
    "no tokens": (_json(_vocab(tokens=None)), "and a tokens list"),
    "tokens an object": (_json(_vocab(tokens={"a": 4})), "and a tokens list"),
    "tokens a string": (_json(_vocab(tokens="<pad> <unk> <start> <end>")), "and a tokens list"),
    "empty vocabulary": (_json(_vocab(tokens=[])), "vocabulary has no pad token '<pad>'; expected it among"),
    "duplicate tokens": (_json(_vocab(tokens=[*TOKENS, "cat"])), "vocabulary token 'cat' appears twice (ids 5 and 8)"),
    "duplicate special": (_json(_vocab(tokens=[*TOKENS, "<end>"])), "token '<end>' appears twice (ids 3 and 8)"),
    "no <pad>": (_json(_without("<pad>")), "vocabulary has no pad token '<pad>'"),
    "no <unk>": (_json(_without("<unk>")), "vocabulary has no unk token '<unk>'"),
    "no <start>": (_json(_without("<start>")), "vocabulary has no start token '<start>'"),
    "no <end>": (_json(_without("<end>")), "vocabulary has no end token '<end>'"),
    "token a number": (_json(_vocab(tokens=[*TOKENS[:4], 5])), "vocabulary entry 4 is 5; expected a non-empty str"),
    "token null": (_json(_vocab(tokens=[*TOKENS, None])), "vocabulary entry 8 is None; expected a non-empty string"),
    "token empty": (_json(_vocab(tokens=[*TOKENS, ""])), "vocabulary entry 8 is ''; expected a non-empty string"),
    "token a list": (_json(_vocab(tokens=[*TOKENS, ["a"]])), "vocabulary entry 8 is ['a']"),
    "specials a list": (_json(_vocab(specials=["<pad>"])), "'specials' must map pad/unk/start/end to token strings"),
    "special a number": (_json(_vocab(specials={**DEFAULT_SPECIALS, "end": 3})), "'specials' must map"),
    "special role missing": (_json(_vocab(specials={"pad": "<pad>", "start": "<start>", "end": "<end>"})),
                             "vocabulary specials have no 'unk' entry; expected pad, unk, start and end"),
    "extra role not a token": (_json(_vocab(specials={**DEFAULT_SPECIALS, "mask": "<mask>"})),
                               "vocabulary has no mask token '<mask>'; expected it among the tokens"),
    "special renamed, not in tokens": (_json(_vocab(specials={**DEFAULT_SPECIALS, "pad": "[PAD]"})),
                                       "vocabulary has no pad token '[PAD]'"),
    # tokens are printed as caption words: a newline or tab forges a stdout record, an escape rewrites the terminal
    "token with a newline and a tab": (_json(_vocab(tokens=[*TOKENS, "red\nphoto.jpg\tall clear"])),
                                       "vocabulary entry 8 is 'red\\nphoto.jpg\\tall clear'; expected no control"),
    "token with an escape sequence": (_json(_vocab(tokens=[*TOKENS, "\x1b[2J"])), "expected no control characters"),
    "token with a bidi override": (_json(_vocab(tokens=[*TOKENS, "\u202egpj.exe"])), "bidi overrides"),
    "special token with a control": (_json(_vocab(specials={**DEFAULT_SPECIALS, "end": "<end>\r"},
                                                  tokens=[*TOKENS[:3], "<end>\r", *TOKENS[4:]])),
                                     "vocabulary entry 3 is"),
    # not a regular file, or too large to be a vocabulary
    "a FIFO": ("fifo", "is not a regular file (a FIFO, socket or device); expected a regular vocabulary file"),
    "larger than any vocabulary": ("sparse", "bytes; expected at most 67108864 for a vocabulary file"),
}


def _write(path: Path, content) -> None:
    if content == "folder":
        path.mkdir()
    elif content == "fifo":  # nobody writes to it: opened for reading as a file, it would wait forever
        os.mkfifo(path)
    elif content == "sparse":  # 65 MB that take no disk space: refused by size, before a byte is read
        with open(path, "wb") as f:
            f.truncate(65 << 20)
    elif content is not None:
        path.write_bytes(content)


@pytest.mark.parametrize("case", sorted(CASES))
def test_vocab_load(tmp_path, case):
    content, expected = CASES[case]
    path = tmp_path / "vocab.json"
    _write(path, content)
    one_line_error(lambda: Vocab.load(path), str(path), expected)


# Clean recoveries: what loads, and what it means.
OK_CASES: dict[str, tuple[dict, dict[str, int]]] = {
    "specials in another order": (_vocab(tokens=["a", "<end>", "<start>", "<unk>", "<pad>"]),
                                  {"pad": 4, "unk": 3, "start": 2, "end": 1}),
    "own special names": (_vocab(specials={"pad": "[PAD]", "unk": "[UNK]", "start": "[CLS]", "end": "[SEP]"},
                                 tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]),
                          {"pad": 0, "unk": 1, "start": 2, "end": 3}),
    "no specials key: the defaults": (_vocab(specials=None), {"pad": 0, "unk": 1, "start": 2, "end": 3}),
    "unknown keys kept out of the way": (_vocab(comment="made by hand"),
                                         {"pad": 0, "unk": 1, "start": 2, "end": 3}),
}


@pytest.mark.parametrize("case", sorted(OK_CASES))
def test_vocab_load_recovers(tmp_path, case):
    data, ids = OK_CASES[case]
    path = tmp_path / "vocab.json"
    path.write_bytes(_json(data))
    v = Vocab.load(path)
    assert v.ids == ids and len(v) == len(data["tokens"])
    assert v.decode(v.encode(["a", "zebra"])) == ["a"]  # an unknown word becomes <unk>, which decode skips


# The training side builds the vocabulary from captions: its bad inputs are values.
BUILD_CASES: dict[str, tuple[dict, str]] = {
    "min_count 0": ({"min_count": 0}, "min_count 0; expected 1 or more"),
    "max_size 4": ({"max_size": 4}, "max vocabulary size 4; expected more than the 4 special tokens"),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_build_vocab(case):
    options, expected = BUILD_CASES[case]
    one_line_error(lambda: build_vocab([["a", "cat"]], **options), expected)


def test_build_vocab_keeps_special_tokens_once_when_captions_contain_them():
    v = build_vocab([["<pad>", "a", "<end>"], ["<start>", "cat", "<unk>"]])
    assert v.tokens[:4] == ["<pad>", "<unk>", "<start>", "<end>"] and sorted(v.tokens[4:]) == ["a", "cat"]


CLI_CASES = ["duplicate tokens", "no <end>"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_caption_command_with_a_bad_bundle_vocabulary(float_bundle, copy_bundle, tmp_path, case):
    b = copy_bundle(float_bundle)
    real = json.loads((b / "vocab.json").read_text(encoding="utf-8"))
    tokens = real["tokens"] + [real["tokens"][5]] if case == "duplicate tokens" else \
        [t for t in real["tokens"] if t != "<end>"]
    data = _json({**real, "tokens": tokens})
    (b / "vocab.json").write_bytes(data)
    manifest = json.loads((b / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["vocab.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (b / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    r = scenecap("caption", str(tmp_path / "x.jpg"), "--bundle", str(b))
    cli_error(r, str(b / "vocab.json"), "appears twice" if case == "duplicate tokens" else "has no end token")


# Catalogue size: 35 bad files through Vocab.load, 4 that load, 2 bad build_vocab values + 1 that recovers, and 2
# bad bundle vocabularies through `scenecap caption` = 44 cases.
def test_catalogue_size():
    assert (len(CASES), len(OK_CASES), len(BUILD_CASES), len(CLI_CASES)) == (35, 4, 2, 2)
