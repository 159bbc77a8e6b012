"""Bad-input catalogue, image files: every reader a user's image reaches gets each awkward file.

Readers: scenecap.edge.images.load_image (the Python API, and what `scenecap caption` reads files with, through
edge/sources.py), train/validate.check_image (the decode check before training), and `scenecap caption DIR`.
Each case either decodes to RGB uint8 (any mode becomes RGB) or is refused in one line naming the file and what
was expected; on the command line a bad file is skipped with one 'scenecap: PATH: ...' line and the run goes on.
A header that claims too many pixels is refused from the header alone, before anything is decoded, with the
project's own message (never Pillow's DecompressionBombError or its two-line warning).
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from catalogue_helpers import one_line_error, scenecap, unprivileged, write_catalogue
from edge_helpers import scene
from PIL import Image

from scenecap import ScenecapError
from scenecap.edge.images import MAX_PIXELS, load_image
from scenecap.train.validate import check_image

GOOD = scene(6)  # a 160x160 synthetic scene, the kind the tiny model was trained on
OK = "ok"  # decodes to RGB uint8
EITHER = "either"  # damaged JPEG body: PIL may decode what is left; either outcome, but exactly one


def _jpeg(img: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    return buf.getvalue()


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR (CRC fixed) claims width x height: some 70 bytes that say 'I am huge'."""
    data = bytearray(_encoded(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature, length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _exif_jpeg(orientation: int, damage: bool = False) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = bytearray(_jpeg(Image.fromarray(GOOD[:, :120]), exif=exif.tobytes()))
    if damage:  # the first IFD's offset points far past the end: Pillow warns "Corrupt EXIF data"
        at = data.find(b"Exif\x00\x00") + 6
        data[at + 4:at + 8] = b"\xff\xff\xff\x7f"
    return bytes(data)


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _noise(seed: int, n: int) -> bytes:
    return bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))


def _bad_crc(png: bytes) -> bytes:
    bad = bytearray(png)
    bad[60] ^= 0xFF
    return bytes(bad)


def _corrupt_body(jpeg: bytes) -> bytes:
    corrupt = bytearray(jpeg)
    corrupt[200:1200] = _noise(0, 1000)
    return bytes(corrupt)


def _bmp_claiming(width: int, height: int) -> bytes:
    bmp = bytearray(_encoded(Image.new("RGB", (4, 4)), "BMP"))
    bmp[18:26] = struct.pack("<ii", width, height)
    return bytes(bmp)


def _heic_start() -> bytes:
    """An iPhone photo's first bytes: ISO-BMFF ftyp, brand heic."""
    box = b"ftypheic" + b"\0\0\0\0" + b"mif1heic"
    return struct.pack(">I", len(box) + 4) + box + bytes(256)


IMG = Image.fromarray(GOOD)
JPEG, PNG, PROGRESSIVE = _jpeg(IMG, quality=90), _encoded(IMG, "PNG"), _jpeg(IMG, progressive=True, quality=85)

# Catalogue files given as their bytes: name -> the bytes.
CONTENT: dict[str, Callable[[], bytes]] = {
    "empty.jpg": lambda: b"",
    "truncated.jpg": lambda: _half(JPEG),  # a download that stopped halfway
    "truncated_header.jpg": lambda: JPEG[:20],
    "truncated.png": lambda: _half(PNG),
    "truncated.webp": lambda: _half(_encoded(IMG, "WEBP")),
    "bad_crc.png": lambda: _bad_crc(PNG),
    "corrupt_body.jpg": lambda: _corrupt_body(PROGRESSIVE),
    "random_bytes.jpg": lambda: _noise(1, 4000),
    # what a browser saves when the link was a web page
    "html_page.jpg": lambda: b"<!DOCTYPE html><html><head><title>404</title></head><body>Not Found</body></html>\n",
    "notes.png": lambda: b"not a picture",
    "png_named.jpg": lambda: PNG,  # the suffix lies, the content decides
    "progressive.jpg": lambda: PROGRESSIVE,
    "photo.heic": _heic_start,
    "exif_rotated.jpg": lambda: _exif_jpeg(6),  # orientation 6: stored landscape, shown portrait
    "corrupt_exif.jpg": lambda: _exif_jpeg(6, damage=True),
    "header_bomb.png": lambda: _png_claiming(20000, 20000),  # 400 megapixels: Pillow itself refuses it in open
    "header_over_limit.png": lambda: _png_claiming(9000, 9000),  # 81 megapixels: over our limit, under Pillow's
    "header_bomb.bmp": lambda: _bmp_claiming(30000, 30000),
    "zero_width.png": lambda: _png_claiming(0, 10),
}


def _float_nan(p: Path) -> None:
    a = np.asarray(IMG.convert("L"), np.float32).copy()
    a[3, 3] = np.nan
    Image.fromarray(a).save(p)


def _animated(p: Path) -> None:
    frames = [Image.fromarray(GOOD), Image.fromarray(GOOD[::-1].copy())]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)


# Catalogue files an encoder writes (the format from the suffix): name -> how.
SAVED: dict[str, Callable[[Path], object]] = {
    "cmyk.jpg": lambda p: IMG.convert("CMYK").save(p),
    "grey.jpg": lambda p: IMG.convert("L").save(p),
    "grey16.png": lambda p: Image.fromarray(GOOD[:, :, 1].astype(np.uint16) * 257).save(p),
    "rgb48.png": lambda p: cv2.imwrite(str(p), GOOD[:, :, ::-1].astype(np.uint16) * 257),  # 16 bits a channel
    "palette.png": lambda p: IMG.convert("P").save(p),
    "palette_transparent.png": lambda p: IMG.convert("P").save(p, transparency=0),
    "alpha.png": lambda p: Image.fromarray(np.dstack([GOOD, np.full(GOOD.shape[:2], 128, np.uint8)]), "RGBA").save(p),
    "grey_alpha.png": lambda p: IMG.convert("LA").save(p),
    "bilevel.png": lambda p: IMG.convert("1").save(p),
    "int32.tif": lambda p: IMG.convert("I").save(p),
    "float.tif": lambda p: IMG.convert("F").save(p),  # float32 holding 0-255, as most tools write them
    # float32 in 0-1, as scientific tools write them
    "float01.tif": lambda p: Image.fromarray(np.asarray(IMG.convert("L"), np.float32) / 255.0).save(p),
    # neither 0-1 nor 0-255: refused, not guessed
    "float_range.tif": lambda p: Image.fromarray(np.asarray(IMG.convert("L"), np.float32) * 4.0 - 400.0).save(p),
    "float_nan.tif": _float_nan,
    # a 12-bit sensor's data in a 16-bit TIFF (max 4095)
    "grey12.tif": lambda p: Image.fromarray(GOOD[:, :, 1].astype(np.uint16) * 16).save(p),
    "photo.jfif": lambda p: IMG.save(p, "JPEG"),  # JPEG under the name browsers give it
    "photo.avif": lambda p: IMG.save(p, "AVIF"),
    "one_pixel.png": lambda p: Image.new("RGB", (1, 1), (200, 10, 10)).save(p),
    "animated.gif": _animated,
    "huge.png": lambda p: Image.new("L", (10000, 10000)).save(p),  # 100 megapixels in ~100 kB: a decompression bomb
    "folder.jpg": lambda p: p.mkdir(),
    "missing.jpg": lambda p: None,  # never written
}


def _make(d: Path, name: str) -> Path:
    """Write the catalogue file `name` into d."""
    p = d / name
    if name in CONTENT:
        p.write_bytes(CONTENT[name]())
    else:
        SAVED[name](p)
    return p


# name -> (load_image expectation, what check_image says). Expectations: OK with the decoded shape, EITHER, or
# the words the one-line error must hold (the file's path is always checked too).
H, W = GOOD.shape[:2]
CASES: dict[str, tuple] = {
    "empty.jpg": ("empty file (0 bytes); expected an image", "empty file (0 bytes)"),
    "truncated.jpg": ("corrupt or truncated image", "corrupt"),
    "truncated_header.jpg": ("not an image file PIL can read; expected JPEG, PNG", "not an image"),
    "truncated.png": ("corrupt or truncated image", "corrupt"),
    "truncated.webp": ("corrupt or truncated image", "corrupt"),
    "bad_crc.png": ("corrupt or truncated image", "corrupt"),
    "corrupt_body.jpg": (EITHER, EITHER),
    "random_bytes.jpg": ("not an image file PIL can read", "not an image"),
    "html_page.jpg": ("not an image file PIL can read; expected JPEG, PNG", "not an image"),
    "notes.png": ("not an image file PIL can read", "not an image"),
    "png_named.jpg": ((OK, (H, W)), "RGB"),
    "progressive.jpg": ((OK, (H, W)), "RGB"),
    "cmyk.jpg": ((OK, (H, W)), "CMYK"),
    "grey.jpg": ((OK, (H, W)), "L"),
    "grey16.png": ((OK, (H, W)), "I;16"),
    "rgb48.png": ((OK, (H, W)), "RGB"),
    "palette.png": ((OK, (H, W)), "P"),
    "palette_transparent.png": ((OK, (H, W)), "P"),
    "alpha.png": ((OK, (H, W)), "RGBA"),
    "grey_alpha.png": ((OK, (H, W)), "LA"),
    "bilevel.png": ((OK, (H, W)), "1"),
    "int32.tif": ((OK, (H, W)), "I"),
    "float.tif": ((OK, (H, W)), "F"),
    "float01.tif": ((OK, (H, W)), "F"),
    "float_range.tif": ("float pixels range from -112 to 272; expected values in 0-1 or 0-255", "F"),
    "float_nan.tif": ("float pixels include NaN or infinity; expected values in 0-1 or 0-255", "F"),
    "grey12.tif": ((OK, (H, W)), "I;16"),
    "photo.jfif": ((OK, (H, W)), "RGB"),
    "photo.avif": ((OK, (H, W)), "RGB"),
    "photo.heic": ("HEIC images need pillow-heif (pip install pillow-heif); or convert it to JPEG or PNG",
                   "HEIC images need pillow-heif"),
    "one_pixel.png": ((OK, (1, 1)), "RGB"),
    "animated.gif": ((OK, (H, W)), "P"),
    "exif_rotated.jpg": ((OK, (120, H)), "RGB"),  # turned upright: 160 wide x 120 high stored, shown 120 x 160
    "corrupt_exif.jpg": ((OK, (H, 120)), "RGB"),  # orientation unreadable: kept as stored, no warning printed
    "header_bomb.png": (f"header claims 400000000 pixels, over the limit of {MAX_PIXELS}", "header claims 400000000"),
    "header_over_limit.png": (f"9000x9000 pixels is over the limit of {MAX_PIXELS}", "9000x9000 pixels is over"),
    "header_bomb.bmp": (f"header claims 900000000 pixels, over the limit of {MAX_PIXELS}", "header claims 900000000"),
    "huge.png": (f"10000x10000 pixels is over the limit of {MAX_PIXELS}", "10000x10000 pixels is over"),
    "zero_width.png": ("not an image file PIL can read", "not an image"),
    "folder.jpg": ("is a folder; expected an image file", "missing"),
    "missing.jpg": ("file not found", "missing"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_catalogue(tmp_path_factory, "bad_images", _make, CASES)


def _no_warnings(call):
    """Run call with every warning recorded: Pillow's multi-line warnings must not reach the user."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return call()
        finally:
            assert not caught, [str(w.message) for w in caught]


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_image(files, name):
    path, expect = files[name], CASES[name][0]
    if expect == EITHER:
        try:
            img = _no_warnings(lambda: load_image(path))
        except Exception as e:  # noqa: BLE001 - the assertion below says what was raised
            msg = str(e)
            assert type(e).__name__ == "ScenecapError" and "\n" not in msg and str(path) in msg, msg
        else:
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        return
    if isinstance(expect, tuple):
        img = _no_warnings(lambda: load_image(path))
        assert img.dtype == np.uint8 and img.shape == (*expect[1], 3) and img.flags.c_contiguous
        return
    msg = _no_warnings(lambda: one_line_error(lambda: load_image(path), str(path), expect))
    assert "DecompressionBomb" not in msg and "DOS attack" not in msg  # ours, not Pillow's words


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_image_check(files, name):
    path, expect = files[name], CASES[name][1]
    mode, reason = _no_warnings(lambda: check_image(path))
    if expect == EITHER:
        assert (mode is None) != (reason is None)
    elif reason is None:
        assert mode == expect, (mode, reason)
    else:
        assert mode is None and expect in reason and "\n" not in reason, reason


def test_what_alpha_and_16_bit_become(files):
    """Alpha is composited on black (as a camera sees it); 16-bit grey keeps its brightness."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:, :, :3] = 255  # white, fully transparent
    p = files["alpha.png"].parent / "clear_white.png"
    Image.fromarray(rgba, "RGBA").save(p)
    assert load_image(p).max() == 0
    grey16 = load_image(files["grey16.png"])
    assert abs(int(grey16[..., 0].mean()) - int(GOOD[:, :, 1].mean())) <= 1


@pytest.mark.parametrize("name, expected", [
    ("float.tif", "L"), ("float01.tif", "L"), ("grey12.tif", "G"), ("int32.tif", "L"),
])
def test_wide_and_float_images_keep_their_brightness(files, name, expected):
    """Scaled by the data's range: a 0-255 float TIFF is not clipped to white, a 0-1 one not read as black, and
    a 12-bit image in a 16-bit TIFF is scaled by 4095, not 65535 (near black)."""
    ref = np.asarray(Image.fromarray(GOOD).convert("L")) if expected == "L" else GOOD[:, :, 1]
    img = load_image(files[name])
    assert np.abs(img[..., 0].astype(int) - ref.astype(int)).max() <= 1, (name, img.mean(), ref.mean())


def test_pixel_bombs_are_refused_from_the_header_before_decoding(files, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError(f"{self.size} decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name in ("header_bomb.png", "header_over_limit.png", "header_bomb.bmp", "huge.png"):
        one_line_error(lambda n=name: load_image(files[n]), str(files[name]), "over the limit")
        assert check_image(files[name])[0] is None
    one_line_error(lambda: load_image(files["grey.jpg"], max_pixels=100), f"{W}x{H} pixels is over the limit of 100")


def test_caption_command_captions_the_good_and_skips_each_bad_file_with_one_line(float_bundle, files):
    """`scenecap caption FOLDER MISSING`: every decodable file captioned, every bad one skipped with exactly one
    line naming it, no traceback, no Pillow warning, exit status 1 (files the user has to fix), a summary."""
    folder = files["empty.jpg"].parent
    r = scenecap("caption", str(folder), str(files["missing.jpg"]), "--bundle", str(float_bundle))
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr[-3000:]
    captioned = {line.split("\t")[0].rsplit("/", 1)[-1] for line in r.stdout.splitlines()}
    assert all(line.split("\t")[1] for line in r.stdout.splitlines())
    errors = [line for line in r.stderr.splitlines() if line.startswith("scenecap:")]
    for name, (expect, _) in CASES.items():
        said = [e for e in errors if f"/{name}:" in e]
        if name == "folder.jpg":  # inside a folder it is a subfolder, walked (and empty), not an image file
            assert name not in captioned and not said, said
        elif isinstance(expect, tuple):
            assert name in captioned and not said, (name, said)
        elif expect == EITHER:
            assert (name in captioned) != (len(said) == 1), (name, said)
        else:
            assert name not in captioned and len(said) == 1, (name, said)
            assert str(files[name]) in said[0] and expect in said[0], said[0]
    assert not [e for e in errors if e.startswith("scenecap: error:")]  # skipped, not fatal
    assert r.returncode == 1  # unreadable files are reported in the exit status
    assert "summary:" in r.stderr


# -- files that are not regular files, and files the reader may not read ------------------------------------------
# name -> the words of the one line load_image and `scenecap caption` give. Read in a child process: a FIFO
# or /dev/zero must be refused without being opened (a test that hung would show it), and permission denied
# needs a process that file modes apply to (as root: setpriv without CAP_DAC_OVERRIDE).
SPECIAL = {
    "fifo.jpg": "is a FIFO (named pipe), not a regular file; expected an image file",
    "device": "is a character device, not a regular file; expected an image file",
    "piped_stdin": "is a FIFO (named pipe), not a regular file; expected an image file",
    "permission_denied.jpg": "permission denied",
}


def _special(d: Path, name: str) -> str:
    if name == "fifo.jpg":
        os.mkfifo(d / name)
    elif name == "device":
        return "/dev/zero"
    elif name == "piped_stdin":
        return "/dev/stdin"
    elif name == "permission_denied.jpg":
        Image.fromarray(GOOD).save(d / name)
        (d / name).chmod(0)
    return str(d / name)


@pytest.fixture(scope="module")
def specials(tmp_path_factory) -> dict[str, str]:
    return write_catalogue(tmp_path_factory, "special_images", _special, SPECIAL)


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_special_and_unreadable_files(specials, name):
    path, words = specials[name], SPECIAL[name]
    code = ("import sys\nfrom scenecap import ScenecapError\nfrom scenecap.edge.images import load_image\n"
            "try:\n    load_image(sys.argv[1])\nexcept ScenecapError as e:\n    print(e)\n")
    r = subprocess.run(unprivileged([sys.executable, "-c", code, path]), capture_output=True, text=True,
                       timeout=60, stdin=subprocess.PIPE)
    assert r.stdout.strip() == f"{path}: {words}", (r.stdout, r.stderr)
    r = subprocess.run(unprivileged([sys.executable, "-m", "scenecap", "caption", path, "--bundle",
                                          str(Path(__file__).resolve().parents[1] / "demo" / "bundle")]),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.PIPE)
    lines = [line for line in r.stderr.splitlines() if line.startswith("scenecap:")]
    assert lines == [f"scenecap: {path}: {words}"] and r.returncode == 1, r.stderr[-2000:]


# -- numpy arrays through the Python API ----------------------------------------------------------------------------
# What an app's own camera may hand over: array -> None (captioned, the same pixels as GOOD within a level) or the
# words of the one-line refusal.
ARRAYS = {
    "float32 0-255": (GOOD.astype(np.float32), None),
    "float64 0-1": (GOOD / 255.0, None),
    "float 0-1000": (GOOD * 3.9, "float pixels range from 78 to 893.1; expected values in 0-1 or 0-255"),
    "float nan": (np.where(GOOD == GOOD.max(), np.nan, GOOD / 255.0), "float pixels include NaN"),
    "uint16 12-bit": (GOOD.astype(np.uint16) * 16, None),
    "uint16 16-bit": (GOOD.astype(np.uint16) * 257, None),
    "int32 negative": (GOOD.astype(np.int32) - 128, "integer pixels range from -108 to 101; expected values >= 0"),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_numpy_frames(name):
    from scenecap.edge.sources import open_source

    array, words = ARRAYS[name]
    frame = next(open_source([array]).frames())
    if words is None:
        assert frame.error is None and frame.image.dtype == np.uint8
        assert np.abs(frame.image.astype(int) - GOOD.astype(int)).max() <= 1
    else:
        assert frame.image is None and frame.error.startswith("frames#frame=0: ") and words in frame.error
        assert "\n" not in frame.error


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_numpy_frames_given_straight_to_the_captioner(name, demo_bundle):
    # Captioner.caption(array) (and the gate, and annotate) prepare frames themselves, not through a source.
    from scenecap.edge.captioner import Captioner

    array, words = ARRAYS[name]
    captioner = Captioner.load(demo_bundle)
    if words is None:
        assert captioner.caption(array).text == captioner.caption(GOOD).text
    else:
        with pytest.raises(ScenecapError, match=re.escape(words)):
            captioner.caption(array)


# Catalogue size: 41 image files, each through load_image, check_image and `scenecap caption` = 123 cases; 4
# special or unreadable files through load_image and the CLI; 7 numpy arrays through the Python API's source and
# straight to Captioner.caption.
def test_catalogue_size():
    assert len(CASES) == 41 and set(CONTENT) | set(SAVED) == set(CASES)
    assert len(SPECIAL) == 4
    assert len(ARRAYS) == 7
