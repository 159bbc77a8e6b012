"""Property-based fuzzing of every reader that takes a file from outside the program.

Targets: the bundle manifest validator and reader (edge/bundle.py), the vocabulary reader (edge/vocab.py), the
safe tokenizer importer (convert/safe_pickle.py, and seed_import.seed_vocab that consumes it) and the dataset
parsers (train/datasets.py: COCO, Karpathy, Flickr token, CSV, JSONL and format detection).

The property everywhere: the reader returns, or raises ScenecapError with a one-line message. Anything else (a
KeyError, a TypeError, a RecursionError...) is a crash a user would see as a traceback. For the pickle reader
also: nothing from the file runs. An audit hook watches for any runtime event (import, open, os.system,
subprocess, exec, compile...) while a pickle is being read; a Tokenizer pickle read raises none. And no reader
may take GBs of memory for a file of a few kB.

Inputs are arbitrary bytes, and valid files (the demo bundle's manifest and vocabulary, a tokenizer pickle as
the original wrote it, well-formed dataset files) with structural mutations: a key deleted, a value replaced by
another type, an id made unhashable, a number made huge, nesting made deep, bytes flipped or spliced.

Profiles: "ci" (default; a few hundred examples per target) and "thorough" (3000+), chosen with
SCENECAP_FUZZ=thorough. The examples run per target are printed in pytest's terminal summary.

The "ci" profile is deterministic: derandomized (the same examples every run, so a submission fails only on a
bug it can reproduce) and with no example database (nothing read or written outside the test run). A fresh random
search is a deliberate run of the "thorough" profile, whose failures are kept in the clone's .hypothesis/.

Crashes fuzzing found are kept below (FOUND) with their smallest input, as regression tests, and replayed as
explicit @example cases of the fuzz target that found them.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import pickletools
import resource
import struct
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from scenecap import ScenecapError
from scenecap.convert.safe_pickle import TOKENIZER_MODULES, load_tokenizer
from scenecap.convert.seed_import import seed_vocab
from scenecap.convert.seed_layout import write_seed_tokenizer
from scenecap.edge.bundle import load_bundle, parse_manifest
from scenecap.edge.modelinfo import parse_model
from scenecap.edge.vocab import Vocab
from scenecap.train import datasets

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "bundle"

# Examples are cheap (microseconds to a few ms); the time goes into generating them. No deadline: a busy
# 2-core machine must not turn a slow example into a failure.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much], print_blob=True)
settings.register_profile("ci", max_examples=250, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=3000,
                          database=DirectoryBasedExampleDatabase(str(ROOT / ".hypothesis" / "examples")), **_COMMON)
PROFILE = os.environ.get("SCENECAP_FUZZ", "ci")
# Applied per test rather than loaded globally, so other test files' hypothesis settings are not changed.
FUZZ = settings(settings.get_profile(PROFILE))

RUNS: Counter[str] = Counter()  # examples run per target


class _CountsReport:
    """Prints the examples run per target in pytest's terminal summary (visible without -s)."""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if RUNS:
            terminalreporter.section(f"fuzz profile {PROFILE!r}: examples run per target")
            for name, n in sorted(RUNS.items()):
                terminalreporter.write_line(f"{n:6d}  {name}")


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    plugin = _CountsReport()
    if not request.config.pluginmanager.is_registered(plugin):
        request.config.pluginmanager.register(plugin, "scenecap-fuzz-counts")
    yield


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One folder reused by every example (hypothesis cannot use function-scoped fixtures like tmp_path)."""
    return tmp_path_factory.mktemp("fuzz")


# --- crashes fuzzing found, fixed in the readers: each must now be one ScenecapError line ----------------------

def _demo_manifest_with(change: Callable[[dict], object]) -> dict:
    doc = copy.deepcopy(DEMO_MANIFEST)
    change(doc)
    return doc


def _huge_number_manifest(d: Path) -> object:
    (d / "huge").mkdir(exist_ok=True)
    (d / "huge" / "manifest.json").write_bytes(b"9" * 5000)
    return load_bundle(d / "huge")


def _embedded(m: dict) -> dict:
    """The demo manifest as an embedding-input bundle's (Edge TPU, int16x8): its decoder takes the word's
    embedding row [1, embed_dim] instead of its id, from a table the bundle holds."""
    e, v = m["model"]["embed_dim"], m["model"]["vocab_size"]
    inputs = m["models"]["decoder_step"]["inputs"]
    inputs.pop("token")
    inputs["embedding"] = {"name": "embedding", "shape": [1, e], "dtype": "float32", "scale": 0.0, "zero_point": 0}
    m["decoder"]["embedding"] = {"file": "embedding.npy", "shape": [v, e], "dtype": "float32", "scale": 0.0,
                                 "zero_point": 0}
    m["files"]["embedding.npy"] = {"sha256": "0" * 64, "bytes": 128 + 4 * v * e}
    return m


def _embedding_input_shape(shape: list) -> dict:
    """An embedding-input manifest (from the demo's) with its decoder's embedding input given another shape."""
    return _demo_manifest_with(
        lambda m: _embedded(m)["models"]["decoder_step"]["inputs"]["embedding"].update(shape=shape))


FOUND = {  # input -> (call on a work folder, expected text of the ScenecapError)
    "manifest: the decoder's embedding input of shape [] (an IndexError in _check_shapes)":
        (lambda d: parse_manifest(_embedding_input_shape([])),
         r"models\.decoder_step input embedding has shape \[\]; expected \[1, embed_dim\]"),
    "manifest: a tokens entry that is not an integer id":
        (lambda d: parse_manifest(_demo_manifest_with(lambda m: m["tokens"].update(mask=None))),
         r"tokens\.mask is None; expected an integer id"),
    "manifest: decoder.embedding without a file, on a token decoder":
        (lambda d: parse_manifest(_demo_manifest_with(lambda m: m["decoder"].update(embedding={}))),
         r"decoder\.embedding\.file None; expected a plain file name"),
    "manifest: decoder.embedding with an unhashable file":
        (lambda d: parse_manifest(_demo_manifest_with(lambda m: m["decoder"].update(embedding={"file": []}))),
         r"decoder\.embedding\.file \[\]; expected a plain file name"),
    "manifest: an unknown preprocess key with a newline":
        (lambda d: parse_manifest(_demo_manifest_with(lambda m: m["preprocess"].update({"\n": None}))),
         r"preprocess has unknown key\(s\) '\\n'"),
    "manifest: a model name with a newline":
        (lambda d: parse_manifest(_demo_manifest_with(lambda m: m["models"].update({"a\nb": 1}))),
         r"models\['a\\nb'\] is int"),
    "manifest: a number of more than 4300 digits": (_huge_number_manifest, r"manifest\.json: invalid JSON: Exceeds"),
    "vocab: a number of more than 4300 digits":
        (lambda d: Vocab.load(_write(d / "huge_vocab.json", b'{"tokens": [' + b"9" * 5000 + b"]}")),
         r"huge_vocab\.json: invalid JSON: Exceeds"),
    "vocab: a path with a NUL byte (a manifest's vocab name, read with verify=False)":
        (lambda d: Vocab.load(d / "a\0b.json"), r"contains a NUL byte"),
    "datasets: a number of more than 4300 digits (JSON)":
        (lambda d: datasets.load_coco(_write(d / "huge.json", b'{"images": [' + b"9" * 5000 + b"]}")),
         r"huge\.json: invalid JSON: Exceeds"),
    "datasets: a number of more than 4300 digits (JSON lines)":
        (lambda d: datasets.load_jsonl(_write(d / "huge.jsonl", b'{"image": ' + b"9" * 5000 + b"}\n")),
         r"huge\.jsonl: line 1: invalid JSON: Exceeds"),
    "datasets: karpathy_splits with an unhashable split":
        (lambda d: datasets.karpathy_splits(_write(d / "k.json", b'{"images": [{"split": []}]}')),
         r"images\[0\] needs 'split'"),
    "datasets: a Karpathy file name with a newline":
        (lambda d: datasets.load_karpathy(_write(d / "k.json", b'{"images": [{"filename": "a\\nb.jpg"}]}')),
         r"images\[0\] \('a\\nb\.jpg'\) needs 'split'"),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_a_crash_fuzzing_found_is_one_line(name, workdir):
    call, message = FOUND[name]
    with pytest.raises(ScenecapError, match=message) as e:
        call(workdir)
    assert "\n" not in str(e.value), str(e.value)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _must_be_ours(call: Callable[[], object]) -> object | None:
    """Run a reader: its result, or None if it raised ScenecapError with a one-line message.

    Also: reading a file of a few kB must not take GBs. A pickle's memo index once made the unpickler allocate
    16 GiB; where that ends in a MemoryError it would pass as "not a readable pickle (MemoryError)", so neither
    the error nor a jump of the peak memory is accepted."""
    before = _peak_rss_mb()
    try:
        return call()
    except ScenecapError as e:
        assert "\n" not in str(e), f"a ScenecapError message must be one line: {str(e)!r}"
        assert "MemoryError" not in str(e), str(e)
        return None
    finally:
        assert _peak_rss_mb() - before < 1024, f"peak memory grew by {_peak_rss_mb() - before:.0f} MB"


# --- generic strategies --------------------------------------------------------------------------------------

# What a JSON parser can hand back, including NaN/Infinity (Python's json module reads them).
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
                | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=10)
# Values a file's author gets wrong: wrong type, empty, negative, path-like, unhashable where a key is expected.
CONFUSING = st.sampled_from([None, True, False, 0, -1, 1, 2**31, 2**64, 1.5, -0.0, float("nan"), float("inf"), "",
                             "0", "../escape", "/etc/passwd", "a/b", "~x", "C:x", ".", "\x00", "\ud800", [], [0],
                             [[]], {}, {"": None}, [None, None]])


def _value_for(old: object) -> st.SearchStrategy:
    """A replacement close to the old value's type as often as an arbitrary one: mutations then get past the
    first type check and reach the deeper ones."""
    near: list[st.SearchStrategy] = [CONFUSING, JSON_VALUES]
    if isinstance(old, bool):
        near.append(st.just(not old))
    elif isinstance(old, int):
        near.append(st.sampled_from([old + 1, old - 1, -old, old * 1000, float(old), str(old), [old]]))
    elif isinstance(old, float):
        near.append(st.sampled_from([int(old) if math.isfinite(old) else 0, -old, old * 1e6, str(old), [old]]))
    elif isinstance(old, str):
        near.append(st.sampled_from([old + "x", old.upper(), old * 2, [old], {old: old}, old[:1]]))
    elif isinstance(old, list):
        near.append(st.sampled_from([old[:-1], old + old[-1:], list(reversed(old)), [old], old * 2]))
    elif isinstance(old, dict):
        near.append(st.sampled_from([{}, [old], dict(list(old.items())[:-1])]))
    return st.one_of(near)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: object, path: tuple) -> object:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated_json(draw, base: object, most: int = 4) -> object:
    """`base` (a JSON document) with 1..most structural mutations at drawn places."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, most))):
        path = draw(st.sampled_from(_paths(doc)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add_key", "retype_key"]))
        if not path:  # the root itself
            if op == "replace":
                doc = copy.deepcopy(draw(_value_for(doc)))
            continue
        parent, last = _get(doc, path[:-1]), path[-1]
        # Copies: a drawn value may be a shared constant (CONFUSING) that a later mutation would change.
        if op == "replace":
            parent[last] = copy.deepcopy(draw(_value_for(parent[last])))
        elif op == "delete":
            del parent[last]
        elif op == "add_key" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = copy.deepcopy(draw(JSON_VALUES))
        elif op == "add_key":
            parent.insert(draw(st.integers(0, len(parent))), copy.deepcopy(draw(JSON_VALUES)))
        elif isinstance(parent, dict):  # retype_key: the same value under a near-miss key
            parent[draw(st.sampled_from([last.upper(), last + " ", last[:-1] or "x"]))] = parent.pop(last)
    return doc


# Byte sequences readers choke on: BOMs, NULs, lone surrogates, quotes, separators, deep nesting, huge numbers.
TOKENS = [b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"\xed\xa0\x80", b'"', b"\\", b"\\ud800", b"\n", b"\r", b"\r\n",
          b"\t", b"#", b",", b"|", b";", b":", b"{", b"}", b"[", b"]", b"NaN", b"-Infinity", b"1e999", b"-0",
          b"null", b"true", b'""', b"[]", b"{}", b"9" * 5000, b"[" * 5000, b'{"a":' * 3000]


@st.composite
def mutated_bytes(draw, base: bytes, most: int = 6) -> bytes:
    """`base` with 1..most byte-level mutations: flip, insert (random or a known troublemaker), delete, splice."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, most))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "token", "token", "delete", "dup", "truncate"]))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "dup":
            end = min(len(data), pos + draw(st.integers(1, 256)))
            data[pos:pos] = data[pos:end]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _dump(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- bundle manifest -----------------------------------------------------------------------------------------

DEMO_MANIFEST = json.loads((DEMO / "manifest.json").read_text(encoding="utf-8"))
DEMO_VOCAB = json.loads((DEMO / "vocab.json").read_text(encoding="utf-8"))


def test_the_valid_inputs_the_mutations_start_from_are_accepted(workdir):
    """Otherwise every mutation would be rejected at the first check and the fuzzing would test nothing."""
    assert parse_manifest(copy.deepcopy(DEMO_MANIFEST)).models["encoder"].file == "encoder.tflite"
    assert len(Vocab.load(DEMO / "vocab.json")) == DEMO_MANIFEST["model"]["vocab_size"]
    tok = load_tokenizer(write_seed_tokenizer(workdir / "ok.pickle", SMALL_WORDS))
    assert len(seed_vocab(tok)) == len(SMALL_WORDS) + 1  # Keras: len(word_index) + 1 ids


@FUZZ
@given(st.one_of(JSON_VALUES, mutated_json(DEMO_MANIFEST)))
@example(_embedding_input_shape([]))  # found in a plain `make test`: IndexError in _check_shapes
@example(_embedding_input_shape([1]))
@example(_demo_manifest_with(lambda m: _embedded(m)["decoder"]["embedding"].update(shape=[])))
@example(_demo_manifest_with(lambda m: m.update(max_length=10**9)))
def test_manifest_validator(data):
    RUNS["manifest: parse_manifest (arbitrary JSON + mutated demo manifest)"] += 1
    _must_be_ours(lambda: parse_manifest(data))


@pytest.fixture(scope="module")
def bundle_dir(workdir) -> Path:
    """A bundle folder whose models and vocabulary are the demo bundle's (linked), manifest.json per example."""
    d = workdir / "bundle"
    d.mkdir()
    for f in DEMO.iterdir():
        if f.name != "manifest.json":  # models, vocabulary and the decoder's embedding table, as shipped
            (d / f.name).write_bytes(f.read_bytes())  # copies: a bundle refuses links
    return d


@FUZZ
@given(st.one_of(st.binary(max_size=256), mutated_bytes((DEMO / "manifest.json").read_bytes()),
                 mutated_json(DEMO_MANIFEST).map(_dump)))
def test_bundle_loader_on_manifest_bytes(bundle_dir, raw):
    RUNS["manifest: load_bundle (manifest.json bytes: arbitrary, byte- and structure-mutated)"] += 1
    _write(bundle_dir / "manifest.json", raw)
    _must_be_ours(lambda: load_bundle(bundle_dir))


# --- .tflite flatbuffers (scenecap inspect, convert's model checks) -------------------------------------------

DEMO_DECODER = (DEMO / "decoder_step.tflite").read_bytes()


def _shared_inputs_model() -> bytes:
    from catalogue_helpers import tflite_with_shared_inputs

    return tflite_with_shared_inputs(8000, 20000)


@FUZZ
@given(st.one_of(st.binary(max_size=256).map(lambda b: b[:4] + b"TFL3" + b[4:]), mutated_bytes(DEMO_DECODER)))
@example(_shared_inputs_model())  # 176 kB naming one tensor 160 million times: once gigabytes, now refused
def test_flatbuffer_reader(raw):
    RUNS["tflite: parse_model (arbitrary and byte-mutated flatbuffers)"] += 1
    info = _must_be_ours(lambda: parse_model(raw))
    if info is not None:  # what it read, inspect and convert index freely
        for op in info.operators:
            for t in (*op.inputs, *op.outputs):
                assert t == -1 or info.tensor(t) is not None


# --- vocabulary ----------------------------------------------------------------------------------------------

@FUZZ
@given(st.one_of(st.binary(max_size=256), mutated_bytes((DEMO / "vocab.json").read_bytes()),
                 mutated_json(DEMO_VOCAB).map(_dump)),
       st.lists(st.integers(-(2**63), 2**63), max_size=8), st.lists(st.text(max_size=6), max_size=8))
def test_vocabulary_reader(workdir, raw, ids, words):
    RUNS["vocab: Vocab.load (+ encode/decode of what it read)"] += 1
    vocab = _must_be_ours(lambda: Vocab.load(_write(workdir / "vocab.json", raw)))
    if vocab is not None:  # what the reader accepts must be usable by the captioner
        assert all(isinstance(w, str) for w in vocab.decode(ids))
        assert len(vocab.encode(words)) == len(words) + 2


# --- tokenizer pickle ----------------------------------------------------------------------------------------

SMALL_WORDS = {0: "<pad>", 1: "<unk>", 2: "<start>", 3: "<end>", 4: "a", 5: "b"}
_WATCHING = threading.local()
_EVENTS: list[str] = []


def _audit(event: str, args: tuple) -> None:
    watched = getattr(_WATCHING, "path", None)
    if watched is None:
        return
    if event == "open" and str(args[0]) == watched and args[1] in ("r", "rb"):
        return  # the importer reading the file it was given: the one event that may happen
    _EVENTS.append(f"{event}{args!r}"[:200])


sys.addaudithook(_audit)  # cannot be removed; it records only while a pickle is being read in this thread


def tripwire(*args) -> None:
    """Named by the hostile pickles below: if anything ever called it, the importer ran code from a file."""
    _EVENTS.append("tripwire called")


# Globals a pickle may name: what a Tokenizer pickle uses (admitted) and what an attacker would (refused).
ADMITTED = [(m, "Tokenizer") for m in TOKENIZER_MODULES] + [
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("copyreg", "_reconstructor"),
    ("copy_reg", "_reconstructor"), ("builtins", "object"), ("builtins", "int"), ("__builtin__", "long"),
    ("builtins", "dict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "str"), ("builtins", "list")]
HOSTILE = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
           ("builtins", "getattr"), ("builtins", "__import__"), ("builtins", "open"), ("subprocess", "Popen"),
           ("__builtin__", "eval"), ("pickle", "loads"), ("copyreg", "add_extension"), (__name__, "tripwire"),
           ("collections", "namedtuple"), ("shutil", "rmtree")]
GLOBALS = st.sampled_from(ADMITTED + HOSTILE)
SHORT_TEXT = st.text(max_size=10)


def _arg_bytes(kind: str, draw) -> bytes:
    """A well-formed argument for a pickle opcode of this argument kind (pickletools' names)."""
    def sized(fmt: str, payload: bytes) -> bytes:
        return struct.pack(fmt, len(payload)) + payload

    if kind in ("uint1", "uint2", "int4", "uint4", "uint8"):
        n = {"uint1": 1, "uint2": 2, "int4": 4, "uint4": 4, "uint8": 8}[kind]
        return draw(st.integers(0, 2 ** (8 * n) - 1)).to_bytes(n, "little")
    if kind == "decimalnl_short":
        return draw(st.sampled_from([b"00", b"01"]) | st.integers(-(2**40), 2**40).map(lambda i: str(i).encode())) \
            + b"\n"
    if kind == "decimalnl_long":
        return str(draw(st.integers(-(2**80), 2**80))).encode() + b"L\n"
    if kind == "floatnl":
        return repr(draw(st.floats())).encode() + b"\n"
    if kind == "float8":
        return struct.pack(">d", draw(st.floats()))
    if kind in ("long1", "long4"):
        v = draw(st.integers(-(2**100), 2**100))
        payload = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True) if v else b""
        return sized("<B" if kind == "long1" else "<i", payload)
    if kind in ("stringnl", "stringnl_noescape", "unicodestringnl"):
        text = draw(SHORT_TEXT).replace("\n", " ")
        if kind == "stringnl":
            return repr(text.encode("ascii", "replace").decode()).encode() + b"\n"
        return text.encode("raw_unicode_escape") + b"\n"
    if kind == "stringnl_noescape_pair":
        module, name = draw(GLOBALS)
        return f"{module}\n{name}\n".encode()
    payload = draw(SHORT_TEXT).encode("utf-8", "surrogatepass")
    fmt = {"string1": "<B", "bytes1": "<B", "unicodestring1": "<B", "string4": "<i", "bytes4": "<I",
           "unicodestring4": "<I", "bytes8": "<Q", "bytearray8": "<Q", "unicodestring8": "<Q"}[kind]
    return sized(fmt, payload)


OPCODES = [op for op in pickletools.opcodes if op.name not in ("STOP", "PROTO", "FRAME")]


@st.composite
def opcode_programs(draw) -> bytes:
    """A pickle assembled from opcodes with well-formed arguments: gets past the byte-level checks and exercises
    the unpickler's stack machine, memo, globals and object building. Sometimes deep nesting or a huge length."""
    out = [b"\x80" + bytes([draw(st.integers(0, 5))])] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 30))):
        choice = draw(st.integers(0, 20))
        if choice == 0:  # nesting a reader may recurse into: ]]]...aaa builds a 3000-deep list in 6 kB
            depth = draw(st.sampled_from([50, 3000]))
            out.append(b"]" * depth + b"a" * (depth - 1))
        elif choice == 1:  # a length far beyond the data
            out.append(draw(st.sampled_from([b"X", b"B", b"\x8d", b"\x8e", b"\x96"])) + b"\xff" * 8)
        elif choice == 2:  # a memo index far past the opcodes (the C unpickler sizes its memo by it)
            index = draw(st.sampled_from([2**20, 2**28, 2**31 - 1, 2**32 - 1]))
            out.append(b"N" + draw(st.sampled_from([b"r" + struct.pack("<I", index), b"p%d\n" % index])))
        elif choice == 3:  # STACK_GLOBAL with strings pushed first
            module, name = draw(GLOBALS)
            out.append(b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)])
                       + name.encode() + b"\x93")
        else:
            op = draw(st.sampled_from(OPCODES))
            out.append(op.code.encode("latin-1") + (_arg_bytes(op.arg.name, draw) if op.arg else b""))
    if draw(st.integers(0, 9)):
        out.append(b".")
    return b"".join(out)


def _valid_tokenizer_bytes(workdir: Path, module: str, words: dict[int, str]) -> bytes:
    return write_seed_tokenizer(workdir / "base.pickle", words, module=module).read_bytes()


@st.composite
def mutated_tokenizers(draw, workdir: Path) -> bytes:
    """A tokenizer pickle as the original wrote it (random small vocabulary, any Keras module path), mutated:
    bytes flipped or spliced, an opcode program inserted, or a hostile global put where the Tokenizer was."""
    extra = draw(st.lists(st.text(min_size=1, max_size=5), max_size=4, unique=True))
    words = dict(SMALL_WORDS)
    for w in extra:
        if w not in words.values():
            words[len(words)] = w
    base = _valid_tokenizer_bytes(workdir, draw(st.sampled_from(TOKENIZER_MODULES)), words)
    how = draw(st.sampled_from(["bytes", "program", "global"]))
    if how == "bytes":
        return draw(mutated_bytes(base))
    if how == "program":
        pos = draw(st.integers(2, len(base) - 1))
        return base[:pos] + draw(opcode_programs()).rstrip(b".") + base[pos:]
    module, name = draw(st.sampled_from(HOSTILE))
    start = base.index(b"\nTokenizer\n")
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + base[start + len(b"\nTokenizer\n"):]


def _watched(call: Callable[[], object], path: Path) -> object:
    """`call()` with the audit hook recording (only while it runs: the checks after it use tracebacks)."""
    _EVENTS.clear()
    _WATCHING.path = str(path)
    try:
        return call()
    finally:
        _WATCHING.path = None


def _read_tokenizer(path: Path) -> None:
    """The importer's whole reading side: the pickle, its checks, and the vocabulary made from it."""
    try:
        tok = _must_be_ours(lambda: _watched(lambda: load_tokenizer(path), path))
    finally:
        assert _EVENTS == [], f"reading the pickle ran something: {_EVENTS}"
    if tok is not None:
        vocab = _must_be_ours(lambda: seed_vocab(tok, str(path)))
        assert vocab is None or len(vocab) >= len(tok.word_index)


def test_a_memo_index_past_the_file_is_refused_before_anything_is_allocated(workdir):
    """Found by fuzzing: 7 bytes (None, LONG_BINPUT 2**31 - 1) made the C unpickler allocate and zero 16 GiB."""
    path = _write(workdir / "memo.pickle", b"Nr\xff\xff\xff\x7f.")
    before = _peak_rss_mb()
    with pytest.raises(ScenecapError, match=r"not a readable pickle \(memo index 2147483647 at opcode 1"):
        load_tokenizer(path)
    assert _peak_rss_mb() - before < 100


def test_a_word_id_far_past_the_vocabulary_is_refused(workdir):
    """Found by fuzzing: word id 10**10 became a vocabulary list of 10**10 entries (tens of GB) in seed_vocab."""
    words = {**SMALL_WORDS, 10**10: "far"}
    with pytest.raises(ScenecapError, match=r"word_index\['far'\] = 10000000000, beyond its 7 words"):
        load_tokenizer(write_seed_tokenizer(workdir / "far.pickle", words))


def test_a_deeply_nested_value_is_named_in_a_short_message(workdir):
    """Found by fuzzing: the message quoted the value with repr(), which recursed past Python's limit."""
    base = _valid_tokenizer_bytes(workdir, TOKENIZER_MODULES[0], SMALL_WORDS)
    # The original's oov_token replaced by the nested list, spliced in at the opcode level.
    nested = b"]" * 5001 + b"a" * 5000
    raw = base.replace(b"X\x05\x00\x00\x00<unk>q\x16", nested, 1)
    assert raw != base
    with pytest.raises(ScenecapError, match=r"oov_token is \[\[\[\[\.\.\.\]\]\]\]; expected a string or None$"):
        load_tokenizer(_write(workdir / "deep.pickle", raw))


@FUZZ
@given(st.binary(max_size=512))
def test_tokenizer_importer_on_arbitrary_bytes(workdir, raw):
    RUNS["tokenizer pickle: arbitrary bytes"] += 1
    _read_tokenizer(_write(workdir / "tokenizer.pickle", raw))


@FUZZ
@given(opcode_programs())
def test_tokenizer_importer_on_opcode_programs(workdir, raw):
    RUNS["tokenizer pickle: opcode programs (hostile and admitted globals)"] += 1
    _read_tokenizer(_write(workdir / "tokenizer.pickle", raw))


@FUZZ
@given(st.data())
def test_tokenizer_importer_on_mutated_tokenizers(workdir, data):
    RUNS["tokenizer pickle: mutated valid tokenizers"] += 1
    _read_tokenizer(_write(workdir / "tokenizer.pickle", data.draw(mutated_tokenizers(workdir))))


# --- datasets ------------------------------------------------------------------------------------------------

SPLITS = st.sampled_from(["train", "val", "test", "restval"])
NAMES = st.sampled_from(["a.jpg", "b.png", "sub/c.jpg", "1000_x.jpg", " d.jpg"]) | SHORT_TEXT
CAPTIONS = st.text(max_size=20)


def _load(fmt: str, path: Path, split: str) -> None:
    """Read as the trainer does: the named format's loader, and auto-detection (+ the Karpathy split list)."""
    _must_be_ours(lambda: datasets.LOADERS[fmt](path, path.parent, split))
    detected = _must_be_ours(lambda: datasets.detect_format(path))
    if detected is not None:
        _must_be_ours(lambda: datasets.load_dataset(path, None, split, "auto"))
    if detected == "karpathy":
        _must_be_ours(lambda: datasets.karpathy_splits(path))


@FUZZ
@given(fmt=st.sampled_from(datasets.FORMATS), raw=st.binary(max_size=300) | st.text(max_size=200).map(
    lambda t: t.encode("utf-8", "surrogatepass")), split=SPLITS)
def test_dataset_parsers_on_arbitrary_files(workdir, fmt, raw, split):
    RUNS["datasets: arbitrary bytes/text, each loader + auto-detection"] += 1
    _load(fmt, _write(workdir / "annotations", raw), split)


@st.composite
def coco_docs(draw) -> dict:
    n = draw(st.integers(1, 4))
    images = [{"id": i, "file_name": draw(NAMES), "height": 480} for i in range(n)]
    anns = [{"id": j, "image_id": draw(st.integers(0, n - 1)), "caption": draw(CAPTIONS)}
            for j in range(draw(st.integers(0, 6)))]
    return {"info": {}, "images": images, "annotations": anns}


@st.composite
def karpathy_docs(draw) -> dict:
    images = []
    for i in range(draw(st.integers(1, 4))):
        sentences = [{"raw": draw(CAPTIONS), "tokens": draw(st.lists(SHORT_TEXT, max_size=3))}
                     for _ in range(draw(st.integers(0, 3)))]
        images.append({"filepath": draw(st.sampled_from(["val2014", "", "x/y"])), "filename": draw(NAMES),
                       "split": draw(SPLITS), "cocoid": i, "imgid": i, "sentences": sentences})
    return {"dataset": "coco", "images": images}


@st.composite
def jsonl_docs(draw) -> list:
    recs = []
    for _ in range(draw(st.integers(1, 5))):
        rec = {draw(st.sampled_from(datasets.IMAGE_KEYS)): draw(NAMES)}
        cap_key = draw(st.sampled_from(datasets.CAPTION_KEYS))
        rec[cap_key] = draw(CAPTIONS | st.lists(CAPTIONS, max_size=3))
        recs.append(rec)
    return recs


def _jsonl_bytes(recs: object, as_list: bool) -> bytes:
    if as_list or not isinstance(recs, list):
        return _dump(recs)
    return b"\n".join(_dump(r) for r in recs) + b"\n"


@st.composite
def flickr_files(draw) -> bytes:
    lines = [f"{draw(NAMES)}#{draw(st.integers(0, 9))}\t{draw(CAPTIONS)}" for _ in range(draw(st.integers(1, 6)))]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def csv_files(draw) -> bytes:
    delimiter = draw(st.sampled_from([",", "\t", "|", ";"]))
    header = draw(st.permutations([draw(st.sampled_from(datasets.IMAGE_KEYS)),
                                   draw(st.sampled_from(datasets.CAPTION_KEYS)), "comment_number"]))
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter)
    writer.writerow([h.upper() if draw(st.booleans()) else h for h in header])
    for _ in range(draw(st.integers(0, 5))):
        writer.writerow([draw(CAPTIONS) for _ in range(draw(st.integers(len(header) - 1, len(header) + 1)))])
    return buf.getvalue().encode("utf-8", "surrogatepass")


STRUCTURED = {
    "coco": coco_docs().flatmap(lambda d: mutated_json(d).map(_dump)),
    "karpathy": karpathy_docs().flatmap(lambda d: mutated_json(d).map(_dump)),
    "jsonl": st.tuples(jsonl_docs().flatmap(lambda d: mutated_json(d)), st.booleans()).map(
        lambda t: _jsonl_bytes(*t)),
    "flickr": flickr_files().flatmap(lambda b: st.just(b) | mutated_bytes(b)),
    "csv": csv_files().flatmap(lambda b: st.just(b) | mutated_bytes(b)),
}


@pytest.mark.parametrize("fmt", sorted(STRUCTURED))
def test_dataset_parsers_on_mutated_valid_files(workdir, fmt):
    @FUZZ
    @given(raw=STRUCTURED[fmt] | STRUCTURED[fmt].flatmap(mutated_bytes), split=SPLITS)
    def check(raw, split):
        RUNS[f"datasets: mutated well-formed {fmt} files"] += 1
        _load(fmt, _write(workdir / f"annotations.{fmt}", raw), split)

    check()
