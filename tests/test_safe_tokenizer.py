"""The original's tokenizer.pickle is read without executing anything from it; hostile pickles run nothing."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from seed_helpers import real_tokenizer

from scenecap import ScenecapError
from scenecap.convert.safe_pickle import TOKENIZER_MODULES, load_tokenizer
from scenecap.convert.seed_import import seed_vocab
from scenecap.convert.seed_layout import write_seed_tokenizer

SMALL_WORDS = {0: "<pad>", 1: "<unk>", 2: "<start>", 3: "<end>", 4: "رجل", 5: "يركب", 6: "دراجة"}


def test_the_real_seed_tokenizer_imports():
    tok = load_tokenizer(real_tokenizer())
    assert tok.size == 26555
    assert (tok.word_index["<unk>"], tok.word_index["<start>"], tok.word_index["<end>"]) == (1, 2, 3)
    assert tok.oov_token == "<unk>" and tok.num_words == 8000 and tok.lower
    assert type(tok.extra["word_counts"]).__name__ == "OrderedDict"
    assert type(tok.extra["word_docs"]).__name__ == "defaultdict"
    vocab = seed_vocab(tok)
    assert len(vocab) == 26556  # the model's Embedding(26556, 256): len(word_index) + 1
    assert vocab.ids == {"pad": 0, "unk": 1, "start": 2, "end": 3}
    assert vocab.tokens[4] == "على" and vocab.tokens[26554] == tok.index_word[26554]
    assert vocab.tokens[26555] == "<unused-26555>"  # an id the tokenizer never gave out
    assert vocab.decode([vocab.start, 8, 4, 5, vocab.end, 9]) == ["رجل", "على", "في"]


class RunsACommand:
    """What an attacker puts in a .pickle: unpickling calls os.system(...) (or eval, or Popen)."""

    def __init__(self, marker: Path, how: str = "system"):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "eval":
            return (eval, (f"__import__('os').system('touch {self.marker}')",))
        if self.how == "popen":
            return (subprocess.Popen, (["touch", str(self.marker)],))
        return (os.system, (f"touch {self.marker}",))


def _evil_tokenizers(marker: Path) -> dict[str, bytes]:
    evil = RunsACommand(marker)
    # The command hidden inside a genuine-looking tokenizer, as one attribute among the real ones.
    inner = pickle.dumps({"word_index": {"<unk>": 1}, "oov_token": evil}, protocol=2)[2:-1]
    disguised = b"\x80\x02ckeras_preprocessing.text\nTokenizer\n)\x81" + inner + b"b."
    return {
        "os.system protocol 4": pickle.dumps(evil, protocol=4),
        "os.system protocol 0": pickle.dumps(evil, protocol=0),
        "inside a Tokenizer": disguised,
        "builtins.eval": pickle.dumps(RunsACommand(marker, "eval")),
        "subprocess.Popen": pickle.dumps(RunsACommand(marker, "popen")),
    }


@pytest.mark.parametrize("kind", ["os.system protocol 4", "os.system protocol 0", "inside a Tokenizer",
                                  "builtins.eval", "subprocess.Popen"])
def test_a_pickle_that_would_run_a_command_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(_evil_tokenizers(marker)[kind])
    with pytest.raises(ScenecapError) as e:
        load_tokenizer(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "refused global" in msg, msg
    assert not marker.exists()


def test_the_command_line_refuses_it_too_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(RunsACommand(marker)))
    r = subprocess.run([sys.executable, "-m", "scenecap", "import-seed", "--weights", str(tmp_path),
                        "--tokenizer", str(path), "--out", str(tmp_path / "bundle"), "--backbone-weights", "none"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("scenecap: error:") and str(path) in err and "refused global posix.system" in err
    assert "Traceback" not in r.stderr
    assert not marker.exists() and not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("module", TOKENIZER_MODULES)
def test_the_tokenizer_class_is_admitted_under_its_old_and_newer_module_paths(tmp_path, module):
    tok = load_tokenizer(write_seed_tokenizer(tmp_path / "t.pickle", SMALL_WORDS, module=module))
    assert tok.word_index["دراجة"] == 6 and tok.index_word[4] == "رجل"
    # Like the seed: '<pad>' is among the words and the model has len(word_index) + 1 ids.
    assert seed_vocab(tok).tokens == [*SMALL_WORDS.values(), "<unused-7>"]


def test_a_class_of_the_same_name_elsewhere_is_refused(tmp_path):
    path = write_seed_tokenizer(tmp_path / "t.pickle", SMALL_WORDS, module="evil.text")
    with pytest.raises(ScenecapError, match=r"refused global evil\.text\.Tokenizer"):
        load_tokenizer(path)


@pytest.mark.parametrize("content,expected", [
    (pickle.dumps({"word_index": {"a": 1}}), "holds a dict; expected a pickled keras_preprocessing Tokenizer"),
    (pickle.dumps([1, 2, 3])[:-4], "not a readable pickle"),
    (b"", "not a readable pickle"),
    ("مرحبا".encode(), "not a readable pickle"),
])
def test_something_else_than_a_tokenizer_is_one_line(tmp_path, content, expected):
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(content)
    with pytest.raises(ScenecapError) as e:
        load_tokenizer(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and expected in str(e.value)


def test_missing_file_and_folder_are_one_line(tmp_path):
    with pytest.raises(ScenecapError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "nope.pickle")
    with pytest.raises(ScenecapError, match="is a folder"):
        load_tokenizer(tmp_path)


def test_a_tokenizer_without_start_and_end_cannot_be_the_seeds(tmp_path):
    words = {1: "<unk>", 2: "رجل", 3: "يركب"}
    tok = load_tokenizer(write_seed_tokenizer(tmp_path / "t.pickle", words))
    with pytest.raises(ScenecapError, match="no '<start>' in word_index"):
        seed_vocab(tok, "t.pickle")
