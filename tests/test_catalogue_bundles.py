"""Bad-input catalogue, bundles: each way a bundle folder can be wrong, fed to Captioner.load (manifest, files,
hashes, vocabulary, then the .tflite models themselves) and, for a few, to `scenecap caption --bundle`.

Every case is refused in one line naming the file (manifest.json, the model, the vocabulary or the folder) and
what was expected. The 'hash updated' cases rewrite the manifest's sha256 and size, so that only the check
behind the hash (the tensor shapes, the flatbuffer, the vocabulary) can catch them. No TensorFlow needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from catalogue_helpers import (
    DELETE,
    cli_error,
    edit_manifest,
    manifest_set,
    one_line_error,
    scenecap,
    tflite_with_shared_inputs,
)

from scenecap.edge.captioner import Captioner

MANIFEST = "manifest.json"


def _set(*keys_value):
    """A case that changes one manifest key (see manifest_set)."""
    change = manifest_set(*keys_value)
    return lambda b, demo: edit_manifest(b, change)


def _rehash(bundle: Path, name: str) -> None:
    """Record the file's current sha256 and size in the manifest, as if the bundle had been written so."""
    data = (bundle / name).read_bytes()
    edit_manifest(bundle, lambda d: d["files"].__setitem__(name, {"sha256": hashlib.sha256(data).hexdigest(),
                                                                  "bytes": len(data)}))


def _write(name: str, content: Callable[[Path, Path], bytes], rehash: bool = False):
    """A damage that replaces a file of the bundle with content(bundle, demo bundle)."""
    def damage(b: Path, demo: Path) -> None:
        data = content(b, demo)
        (b / name).write_bytes(data)
        if rehash:
            _rehash(b, name)
    return damage


def _remove(name: str, then_mkdir: bool = False):
    def damage(b: Path, demo: Path) -> None:
        (b / name).unlink()
        if then_mkdir:
            (b / name).mkdir()
    return damage


def _flip_byte(at: int | None):
    """One byte of the decoder changed: at `at`, or in the middle."""
    def content(b: Path, demo: Path) -> bytes:
        data = bytearray((b / "decoder_step.tflite").read_bytes())
        data[len(data) // 2 if at is None else at] ^= 0xFF
        return bytes(data)
    return content


def _vocab(change: Callable[[dict], None]):
    def content(b: Path, demo: Path) -> bytes:
        data = json.loads((b / "vocab.json").read_text(encoding="utf-8"))
        change(data)
        return json.dumps(data).encode()
    return content


def _swap_models(b: Path, demo: Path) -> None:
    enc, dec = (b / "encoder.tflite").read_bytes(), (b / "decoder_step.tflite").read_bytes()
    (b / "encoder.tflite").write_bytes(dec)
    (b / "decoder_step.tflite").write_bytes(enc)
    _rehash(b, "encoder.tflite")
    _rehash(b, "decoder_step.tflite")


def _swap_tokens(d: dict) -> None:
    t = d["tokens"]
    t[2], t[3] = t[3], t[2]  # <start> and <end> change places: the vocabulary disagrees with the manifest


def _is_a_file(b: Path, demo: Path) -> Path:
    f = b.parent / "bundle.zip"
    f.write_bytes(b"PK\x03\x04 a zipped bundle, not unpacked")
    return f


def _nowhere(b: Path, demo: Path) -> Path:
    return b.parent / "no_such_bundle"


def _link_out(name: str, target: Callable[[Path], Path]):
    """`name` replaced by a symbolic link to target(bundle) outside the bundle, holding the same bytes: its hash
    matches, so only the refusal of links can catch it."""
    def damage(b: Path, demo: Path) -> None:
        dest = target(b)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(b / name, dest)
        (b / name).unlink()
        (b / name).symlink_to(dest)
    return damage


def _fifo(name: str):
    """`name` replaced by a named pipe nobody writes to: an open() for reading would wait for a writer forever."""
    def damage(b: Path, demo: Path) -> None:
        (b / name).unlink()
        os.mkfifo(b / name)
    return damage


def _in_embedded(change: Callable[[Path], None]):
    """A damage to a copy of an embedding-input bundle (int16x8: its decoder takes embeddings, from embedding.npy):
    the tiny model's, which the tests pass in the demo's place for these cases (see _source)."""
    def damage(b: Path, demo: Path) -> Path:
        d = b.parent / "embedded"
        shutil.copytree(demo, d)
        change(d)
        return d
    return damage


def _npy_claiming(shape: tuple) -> Callable[[Path], None]:
    """embedding.npy with a header claiming `shape` and hardly any data (its hash updated)."""
    def change(d: Path) -> None:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
        (d / "embedding.npy").write_bytes(header.getvalue() + b"\0" * 64)
        _rehash(d, "embedding.npy")
    return change


def _many_tokens(b: Path, demo: Path) -> None:
    """A vocab.json of 200,000 tokens (2 MB) for a decoder scoring far fewer: refused by its size, unparsed."""
    data = json.loads((b / "vocab.json").read_text(encoding="utf-8"))
    data["tokens"] += [f"w{i}" for i in range(200_000)]
    (b / "vocab.json").write_text(json.dumps(data), encoding="utf-8")
    _rehash(b, "vocab.json")
    edit_manifest(b, manifest_set("model", "vocab_size", DELETE))


def _vocab_short_no_size(b: Path, demo: Path) -> None:
    """One token fewer than the logits, and no model.vocab_size to compare with: the logits' shape still tells."""
    _write("vocab.json", _vocab(lambda d: d["tokens"].pop()), True)(b, demo)
    edit_manifest(b, manifest_set("model", "vocab_size", DELETE))


def _token_with(text: str):
    def change(d: dict) -> None:
        d["tokens"][-1] = text
    return _vocab(change)


# case -> (damage(bundle, demo) returning the folder to load if not the bundle, what the error names, words it
# must hold). The first 15 and the files checks came from test_convert_bundle_format.py, 'no manifest' and
# 'model hash wrong' from test_end_to_end.py (moved here; the catalogue is the place for bad bundles).
CASES: dict[str, tuple] = {
    # the manifest's content: required keys, types, shapes that fit together, names, versions
    "missing tokens": (_set("tokens", DELETE), MANIFEST, "missing required key 'tokens'"),
    "max_length text": (_set("max_length", "24"), MANIFEST, "'max_length' is str; expected int"),
    "no decoder model": (_set("models", "decoder_step", DELETE), MANIFEST, "models.decoder_step missing"),
    "quant unknown": (_set("models", "encoder", "quant", "int4"), MANIFEST, "models.encoder.quant 'int4'"),
    "shape not ints": (_set("models", "encoder", "outputs", "features", "shape", [1, "4", 64]), MANIFEST,
                       "expected a list of positive integers"),
    "batch vs hidden": (_set("decoder", "batch", 2), MANIFEST, "input hidden (decoder.batch 2) has shape"),
    "image vs preprocess": (_set("preprocess", "height", 32), MANIFEST, "preprocess says [1, 32,"),
    "vocab size": (_set("model", "vocab_size", 999), MANIFEST, "model.vocab_size is 999 but the models use"),
    "token outside vocab": (_set("tokens", "end", 5000), MANIFEST, "tokens.end = 5000 is outside the vocabulary"),
    "escaping file name": (_set("models", "encoder", "file", "../../etc/passwd"), MANIFEST, "plain file name"),
    "bad sha": (_set("files", "vocab.json", "sha256", "abc"), MANIFEST, "64 hex digits"),
    "negative scale": (_set("models", "decoder_step", "inputs", "hidden", "scale", -1.0), MANIFEST, "scale -1.0"),
    "bad op entry": (_set("models", "encoder", "ops", ["CONV_2D"]), MANIFEST, "'OP_NAME:vN'"),
    "newer major": (_set("format_version", "2.0"), MANIFEST, "bundle format 2.0 is newer than this runtime reads"),
    "not a bundle": (_set("format", "something-else"), MANIFEST, "'format' is 'something-else'"),
    "no format_version": (_set("format_version", DELETE), MANIFEST, "missing required key 'format_version'"),
    "format_version a number": (_set("format_version", 1.1), MANIFEST, "format_version 1.1; expected 'MAJOR.MINOR'"),
    "older major": (_set("format_version", "0.9"), MANIFEST, "format_version '0.9'; expected 1.x"),
    "preprocess height text": (_set("preprocess", "height", "64"), MANIFEST,
                               "preprocess.height is '64'; expected a positive integer"),
    "preprocess resize unknown": (_set("preprocess", "resize", "lanczos"), MANIFEST, "resize method 'lanczos'"),
    "decoder state unknown": (_set("decoder", "state", "zero"), MANIFEST, "decoder.state 'zero'; expected one of"),
    "model entry a list": (_set("models", "encoder", ["encoder.tflite"]), MANIFEST,
                           "models.encoder is list; expected an object"),
    "tensor dtype unknown": (_set("models", "encoder", "outputs", "keys", "dtype", "float64"), MANIFEST,
                             "dtype 'float64'; expected one of"),
    "vocab name escapes": (_set("vocab", "../vocab.json"), MANIFEST, "vocab '../vocab.json'; expected a plain file"),
    "no hash for the vocab": (_set("files", "vocab.json", DELETE), MANIFEST, "files has no hash for vocab.json"),
    "files a list": (_set("files", []), MANIFEST, "'files' is list; expected dict"),
    # the manifest as a file
    "no manifest": (_remove(MANIFEST), MANIFEST, "missing; a bundle folder needs a manifest.json"),
    "manifest a folder": (_remove(MANIFEST, then_mkdir=True), MANIFEST, "a bundle folder needs a manifest.json"),
    "manifest invalid JSON": (_write(MANIFEST, lambda b, demo: (b / MANIFEST).read_bytes()[:-40]), MANIFEST,
                              "invalid JSON at line"),
    "manifest empty": (_write(MANIFEST, lambda b, demo: b""), MANIFEST, "invalid JSON at line 1 column 1"),
    "manifest not UTF-8": (_write(MANIFEST, lambda b, demo: '{"language": "français"}'.encode("latin-1")),
                           MANIFEST, "not UTF-8 text; expected JSON"),
    "manifest nested too deep": (_write(MANIFEST, lambda b, demo: b"[" * 100_000), MANIFEST, "nested too deeply"),
    "manifest a list": (_write(MANIFEST, lambda b, demo: b"[]"), MANIFEST, "expected a JSON object"),
    # the folder
    "bundle is a file": (_is_a_file, "bundle.zip", "is a file; expected a bundle folder"),
    "no such folder": (_nowhere, "no_such_bundle", "not a bundle folder (no such directory)"),
    # the listed files: present, of the recorded size and hash
    "model file missing": (_remove("encoder.tflite"), "encoder.tflite", "missing from the bundle"),
    "vocab file missing": (_remove("vocab.json"), "vocab.json", "missing from the bundle"),
    "model hash wrong": (_write("decoder_step.tflite", _flip_byte(-10)), "decoder_step.tflite",
                         "does not match the manifest"),
    "model byte flipped": (_write("decoder_step.tflite", _flip_byte(None)), "decoder_step.tflite",
                           "does not match the manifest"),
    "model truncated": (_write("decoder_step.tflite", lambda b, demo: (b / "decoder_step.tflite").read_bytes()[:1000]),
                        "decoder_step.tflite", "1000 bytes; the manifest says"),
    "listed extra file missing": (_set("files", "notes.txt", {"sha256": "0" * 64, "bytes": 3}), "notes.txt",
                                  "missing from the bundle"),
    # hash updated: only the check behind it can tell
    "other model's tflite": (_write("encoder.tflite", lambda b, demo: (demo / "encoder.tflite").read_bytes(), True),
                             "encoder.tflite", "input 'image' is uint8[1, 128, 128, 3]; the manifest expects uint8["),
    "models swapped": (_swap_models, "encoder.tflite", "has no input named 'image'"),
    "truncated flatbuffer": (_write("encoder.tflite", lambda b, demo: (b / "encoder.tflite").read_bytes()[:50_000],
                                    True), "encoder.tflite", "cannot load this model"),
    "text named .tflite": (_write("encoder.tflite", lambda b, demo: b"this is not a model\n", True), "encoder.tflite",
                           "cannot load this model"),
    "empty .tflite": (_write("decoder_step.tflite", lambda b, demo: b"", True), "decoder_step.tflite",
                      "cannot load this model"),
    "vocab invalid JSON": (_write("vocab.json", lambda b, demo: b'{"format": "scenecap-vocab", "tokens": [', True),
                           "vocab.json", "invalid JSON at line 1"),
    "vocab special ids differ": (_write("vocab.json", _vocab(_swap_tokens), True), "vocab.json",
                                 "special token ids"),
    "vocab shorter": (_write("vocab.json", _vocab(lambda d: d["tokens"].pop()), True), "vocab.json",
                      "tokens; the manifest says"),
    # not a regular file inside the bundle: links (which may point anywhere), FIFOs, folders
    "model a link out of the bundle": (_link_out("encoder.tflite", lambda b: b.parent / "elsewhere" / "enc.tflite"),
                                       "encoder.tflite", "is a symbolic link; expected a regular bundle file"),
    "vocab a link to /etc/passwd": (_link_out("vocab.json", lambda b: Path("/etc/passwd")), "vocab.json",
                                    "is a symbolic link"),
    "manifest a link": (_link_out(MANIFEST, lambda b: b.parent / "elsewhere" / MANIFEST), MANIFEST,
                        "is a symbolic link; expected a regular manifest file"),
    "vocab a FIFO": (_fifo("vocab.json"), "vocab.json", "not a regular file (a FIFO, socket or device)"),
    "manifest a FIFO": (_fifo(MANIFEST), MANIFEST, "not a regular file (a FIFO, socket or device)"),
    "model a folder": (_remove("decoder_step.tflite", then_mkdir=True), "decoder_step.tflite",
                       "is a folder; expected a regular bundle file"),
    # small files asking for huge allocations: bounded by what the manifest and the models already say
    "word table header claims 1e7 x 1e7": (_in_embedded(_npy_claiming((10**7, 10**7))), "embedding.npy",
                                           "float32[10000000, 10000000]; the manifest says float32["),
    "word table data short": (_in_embedded(_npy_claiming((33, 64))), "embedding.npy", "bytes of data; float32["),
    "vocab far longer than the logits": (_many_tokens, "vocab.json",
                                         "bytes; expected at most 99328 for a vocabulary of 33 tokens"),
    "max_length 10**9": (_set("max_length", 10**9), MANIFEST, "max_length 1000000000; expected 2 to 1024"),
    "tensor of 2**40 elements": (_set("models", "encoder", "outputs", "keys", "shape", [1, 2**20, 2**20]), MANIFEST,
                                 "has more than 268435456 elements"),
    # what the models say, when the manifest's optional copy of it is absent
    "vocab shorter, no model.vocab_size": (_vocab_short_no_size, "vocab.json",
                                           "32 tokens; the decoder's logits score 33"),
    "embedding input of shape []": (_in_embedded(lambda d: edit_manifest(d, manifest_set(
        "models", "decoder_step", "inputs", "embedding", "shape", []))), MANIFEST,
        "input embedding has shape []; expected [1, embed_dim]"),
    "word table for a token decoder": (_set("decoder", "embedding", {"file": "vocab.json", "shape": [33, 4],
                                                                     "dtype": "float32"}), MANIFEST,
                                       "takes a token input"),
    # preprocess fields: type and allowed values
    "preprocess color banana": (_set("preprocess", "color", "banana"), MANIFEST, "color 'banana'; expected one of RGB"),
    "preprocess keep_aspect a string": (_set("preprocess", "keep_aspect", "false"), MANIFEST,
                                        "keep_aspect 'false'; expected true or false"),
    "preprocess width a bool": (_set("preprocess", "width", True), MANIFEST, "preprocess.width is True"),
    # vocabulary tokens are printed as words
    "vocab token forging a record": (_write("vocab.json", _token_with("red\n/etc/x.jpg\ta forged caption"), True),
                                     "vocab.json", "expected no control characters"),
    "vocab token with an escape sequence": (_write("vocab.json", _token_with("\x1b]0;pwned\x07"), True),
                                            "vocab.json", "expected no control characters"),
}


@pytest.fixture(scope="module")
def embedded_bundle(make_bundle) -> Path:
    return make_bundle("int8:int16x8")


def _source(case: str, demo_bundle: Path, request) -> Path:
    """The bundle a case's damage starts from, when not the float one: the demo's, or an embedding-input one."""
    return request.getfixturevalue("embedded_bundle") if CASES[case][0].__qualname__.startswith("_in_embedded") \
        else demo_bundle


@pytest.mark.parametrize("case", sorted(CASES))
def test_captioner_load(copy_bundle, float_bundle, demo_bundle, case, request):
    damage, named, expected = CASES[case]
    bundle = copy_bundle(float_bundle)
    folder = damage(bundle, _source(case, demo_bundle, request)) or bundle
    path = folder if named == folder.name else folder / named
    one_line_error(lambda: Captioner.load(folder), str(path), expected)


CLI_CASES = ["no manifest", "model hash wrong", "newer major", "other model's tflite", "truncated flatbuffer",
             "bundle is a file", "vocab a link to /etc/passwd", "manifest a FIFO", "max_length 10**9",
             "word table header claims 1e7 x 1e7", "vocab token forging a record"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_caption_command(copy_bundle, float_bundle, demo_bundle, tmp_path, case, request):
    """`scenecap caption ... --bundle BAD`: exit 2, one 'scenecap: error:' line naming the file, no traceback."""
    damage, named, expected = CASES[case]
    bundle = copy_bundle(float_bundle)
    folder = damage(bundle, _source(case, demo_bundle, request)) or bundle
    r = scenecap("caption", str(tmp_path / "x.jpg"), "--bundle", str(folder))
    line = cli_error(r, named, expected)
    if case == "newer major":
        assert "upgrade scenecap" in line


def _inspected(change: Callable[[dict], None]):
    """A manifest change `scenecap inspect` must show, not crash on (the bundle still loads)."""
    return lambda b, demo: edit_manifest(b, change)


def _shared_inputs_tflite(b: Path, demo: Path) -> Path:
    f = b.parent / "shared.tflite"
    f.write_bytes(tflite_with_shared_inputs(8000, 20000))  # 176 kB; once past 2 GB and a MemoryError
    return f


ESC = "\x1b]0;pwned\x07\u202e"  # retitles the terminal; reverses what follows

# `scenecap inspect`: case -> (damage returning what to inspect if not the bundle, exit status, words the output
# (exit 0) or the one error line (exit 2) must hold). Strings from the manifest are shown escaped.
INSPECT_CASES: dict[str, tuple] = {
    "provenance.changes a number": (_inspected(manifest_set("provenance", "changes", 5)), 0, "changed: 5"),
    "provenance.changes a string": (_inspected(manifest_set("provenance", "changes", "requantised")), 0,
                                    "changed: requantised"),
    "provenance fields of other types": (_inspected(manifest_set("provenance", {
        "target_runtime": ["litert"], "calibration_count": {"n": 1}, "changes": [None, {"a": 1}]})), 0,
        "converted for: ['litert']; calibrated on {'n': 1} images"),
    "escapes in manifest strings": (_inspected(lambda d: d.update(scenecap_version=ESC, language=ESC)), 0,
                                    "scenecap \\x1b]0;pwned\\x07\\u202e, language"),
    "escapes in a runtime note": (_inspected(manifest_set("models", "encoder", "runtimes", {"litert": ESC})), 0,
                                  "litert: \\x1b]0;pwned"),
    "a flatbuffer naming one tensor 160 million times": (_shared_inputs_tflite, 2,
                                                         "corrupt TFLite flatbuffer (its tables overlap"),
    "vocab a link to /etc/passwd": (CASES["vocab a link to /etc/passwd"][0], 2, "is a symbolic link"),
    "model a folder": (CASES["model a folder"][0], 2, "is a folder"),
}


@pytest.mark.parametrize("case", sorted(INSPECT_CASES))
def test_inspect_command(copy_bundle, float_bundle, demo_bundle, case):
    damage, status, expected = INSPECT_CASES[case]
    bundle = copy_bundle(float_bundle)
    target = damage(bundle, demo_bundle) or bundle
    r = scenecap("inspect", str(target))
    if status == 2:
        cli_error(r, expected)
        return
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert expected in r.stdout, r.stdout
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout  # nothing raw reaches the terminal


# Catalogue size: 68 damaged bundles through Captioner.load, 11 of them also through `scenecap caption`, and 8
# bundles or models through `scenecap inspect` = 87 cases.
def test_catalogue_size():
    assert (len(CASES), len(CLI_CASES), len(INSPECT_CASES)) == (68, 11, 8)
