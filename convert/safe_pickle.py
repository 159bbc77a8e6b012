"""Read the replaced system's pickled `keras_preprocessing.text.Tokenizer` without running anything from the file.

A pickle is a small program: every class or function it names (a "global") is looked up and may be called.
`pickle.load` would import and call whatever the file says (`os.system`, say). Here every global goes through
`_RestrictedUnpickler.find_class`, which admits only what a Tokenizer pickle contains and returns harmless
stand-ins for the Tokenizer class itself, so neither Keras nor anything else is imported or called:

- the Tokenizer class, under the module paths Keras has used over the years (-> `_TokenizerState`, a plain bag
  of attributes);
- `collections.OrderedDict` (word_counts) and `collections.defaultdict` (word_docs, index_docs);
- a few side-effect-free builtin constructors (`int` is the defaultdicts' default factory);
- `copyreg._reconstructor` with `builtins.object`, which protocol 0/1 pickles use to rebuild plain objects.

Anything else is refused with one line naming the file and the global, before it is called. (EXT opcodes also
resolve through `find_class`; persistent ids are refused by the base class.)

Before unpickling, every opcode is decoded (not run) with `pickletools` to refuse memo indices that would make
the C unpickler allocate far more memory than the file holds (see `_check_memo`).
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
import pickletools
import reprlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from scenecap import ScenecapError
from scenecap.edge.errors import first_line

# Where keras_preprocessing's Tokenizer has lived: the standalone package (TF <= 2.8 pickles), tf.keras and Keras 2
# (2.9-2.12), Keras 2.13+/tf_keras ("src"), and Keras 3's legacy module.
TOKENIZER_MODULES = (
    "keras_preprocessing.text",
    "keras.preprocessing.text",
    "tensorflow.keras.preprocessing.text",
    "tensorflow.python.keras.preprocessing.text",
    "keras.src.preprocessing.text",
    "tf_keras.src.preprocessing.text",
    "tf_keras.preprocessing.text",
    "keras.src.legacy.preprocessing.text",
    "keras.legacy.preprocessing.text",
)
# Python 2 / protocol < 3 names for the same globals (pickle itself writes builtins.int as __builtin__.long).
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_PY2_NAMES = {("builtins", "long"): ("builtins", "int"), ("builtins", "unicode"): ("builtins", "str")}
_MAX_BYTES = 256 * 1024 * 1024  # a real tokenizer is ~1 MB; refuse to slurp an arbitrary huge file
_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")
# Values from the file go into error messages through this: bounded in length and depth, so a deeply nested
# or huge value cannot make the message itself fail (RecursionError) or flood the terminal.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 40, 40


class _TokenizerState:
    """Stand-in for the Tokenizer class: NEWOBJ makes an empty one and BUILD fills its attributes, nothing else."""

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"Tokenizer state is a {type(state).__name__}; expected a dict")
        self.__dict__.update(state)


_ADMITTED = {
    **{(m, "Tokenizer"): _TokenizerState for m in TOKENIZER_MODULES},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("builtins", "object"): object,
    **{("builtins", t.__name__): t for t in (int, float, str, bool, list, dict, set, frozenset, tuple)},
}


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        key = (_PY2_MODULES.get(module, module), name)
        key = _PY2_NAMES.get(key, key)
        if key not in _ADMITTED:
            raise RefusedGlobal(f"{module}.{name}")
        return _ADMITTED[key]


@dataclass
class SeedTokenizer:
    """What scenecap needs from a keras_preprocessing Tokenizer, as plain data."""

    word_index: dict[str, int]
    index_word: dict[int, str]
    oov_token: str | None
    num_words: int | None = None
    lower: bool = True
    filters: str = ""
    split: str = " "
    extra: dict = field(default_factory=dict)  # the rest (word_counts, document_count...), for the curious

    @property
    def size(self) -> int:
        """Number of words in word_index (the seed's 26555 count includes '<pad>' at id 0)."""
        return len(self.word_index)


def _check_memo(data: bytes) -> None:
    """Decode every opcode (pickletools only parses; nothing is looked up or called) and refuse a memo index
    beyond the number of opcodes before it.

    The C unpickler grows its memo array to whatever index PUT names and zero-fills it: a 7-byte file with
    `LONG_BINPUT 2**31` makes it allocate and touch 16 GiB (fuzzing found this). A real pickle numbers its
    memo entries 0, 1, 2... as it goes, so an index can never exceed the opcodes seen so far.
    """
    for n, (op, arg, _pos) in enumerate(pickletools.genops(data)):
        if op.name in _MEMO_PUTS and arg > n:
            raise pickle.UnpicklingError(f"memo index {arg} at opcode {n} (a pickle numbers its memo from 0)")


def restricted_loads(data: bytes, where: str = "pickle"):
    """Unpickle `data` admitting only the globals a Tokenizer pickle uses; anything else raises ScenecapError."""
    try:
        with warnings.catch_warnings():  # an odd escape in a STRING opcode is the file's problem, not a warning
            warnings.simplefilter("ignore", DeprecationWarning)
            _check_memo(data)
            return _RestrictedUnpickler(io.BytesIO(data)).load()  # noqa: S301 - find_class admits only _ADMITTED
    except RefusedGlobal as e:
        raise ScenecapError(
            f"{where}: refused global {e.name} (a Tokenizer pickle only names the Tokenizer class, "
            "collections.OrderedDict/defaultdict and builtin types); nothing from the file was run"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
            MemoryError, RecursionError, UnicodeDecodeError, OverflowError) as e:
        raise ScenecapError(f"{where}: not a readable pickle ({first_line(e)}); expected a keras_preprocessing "
                            "Tokenizer saved with pickle") from None


def load_tokenizer(path: str | Path) -> SeedTokenizer:
    """Read a pickled keras_preprocessing Tokenizer safely and check it is one (word_index, index_word...)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > _MAX_BYTES:
            raise ScenecapError(f"{path}: {size} bytes; a tokenizer pickle is a few MB at most")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScenecapError(f"{path}: tokenizer file not found") from None
    except IsADirectoryError:
        raise ScenecapError(f"{path}: is a folder; expected the tokenizer .pickle file") from None
    except OSError as e:
        raise ScenecapError(f"{path}: cannot read ({e.strerror})") from None
    obj = restricted_loads(data, str(path))
    if not isinstance(obj, _TokenizerState):
        raise ScenecapError(f"{path}: holds a {type(obj).__name__}; expected a pickled keras_preprocessing Tokenizer")
    return _check_state(dict(obj.__dict__), path)


def _check_state(state: dict, path: Path) -> SeedTokenizer:
    word_index = state.pop("word_index", None)
    if not isinstance(word_index, dict) or not word_index:
        raise ScenecapError(f"{path}: Tokenizer has no word_index; expected a fitted tokenizer")
    short = _SHORT.repr
    for w, i in word_index.items():
        if not isinstance(w, str) or not w or not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise ScenecapError(f"{path}: word_index entry {short(w)}: {short(i)}; expected a word -> non-negative id")
        # Keras numbers the words 1..n (the seed also has '<pad>' at 0). A far larger id is not a tokenizer's,
        # and the vocabulary would be a list that long (id 10**10: tens of GB).
        if i > len(word_index):
            raise ScenecapError(f"{path}: word_index[{short(w)}] = {i}, beyond its {len(word_index)} words; "
                                "a Keras tokenizer numbers its words 1..n")
    index_word = state.pop("index_word", None)
    if index_word is None:  # old keras_preprocessing versions did not store it
        index_word = {i: w for w, i in word_index.items()}
    if not isinstance(index_word, dict):
        raise ScenecapError(f"{path}: index_word is a {type(index_word).__name__}; expected a dict")
    for i, w in index_word.items():
        found = word_index.get(w) if isinstance(w, str) else None  # a list or dict value cannot be looked up
        if found is None or found != i or isinstance(i, bool):
            raise ScenecapError(f"{path}: index_word[{short(i)}] = {short(w)} but word_index[{short(w)}] = "
                                f"{short(found)}; the tokenizer is inconsistent")
    if len(index_word) != len(word_index):
        raise ScenecapError(f"{path}: word_index has {len(word_index)} words but index_word {len(index_word)}; "
                            "two words share an id")
    oov = state.pop("oov_token", None)
    if oov is not None and not isinstance(oov, str):
        raise ScenecapError(f"{path}: oov_token is {short(oov)}; expected a string or None")
    num_words = state.pop("num_words", None)
    return SeedTokenizer(
        word_index=dict(word_index),
        index_word={int(i): w for i, w in index_word.items()},
        oov_token=oov,
        num_words=num_words if isinstance(num_words, int) else None,
        lower=bool(state.pop("lower", True)),
        filters=_text(state.pop("filters", "")),
        split=_text(state.pop("split", " ")),
        extra=state,
    )


def _text(value: object) -> str:
    """A Tokenizer attribute that should be a string, as one (str() of a deeply nested list would recurse)."""
    return value if isinstance(value, str) else _SHORT.repr(value)
