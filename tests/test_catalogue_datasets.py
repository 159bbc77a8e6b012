"""Bad-input catalogue, dataset annotation files: each format train/datasets.py reads (COCO captions JSON,
Karpathy split JSON, Flickr token file, captions.txt/CSV/TSV, JSON lines), format detection, image lists, and the
validation before training (train/validate.py), plus one `scenecap train` run for the command-line contract.

Every case is refused in one line naming the file and the line, index or key that is wrong and what was
expected, or recovers cleanly (a BOM is read through; empty captions are dropped and counted).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from catalogue_helpers import cli_error, one_line_error, scenecap, write_image

from scenecap import ScenecapError
from scenecap.train.datasets import load_dataset
from scenecap.train.language import caption_language
from scenecap.train.text import TextOptions
from scenecap.train.validate import validate


def _j(d) -> str:
    return json.dumps(d)


COCO_OK = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "caption": "a cat"}]}


def _coco(**changes) -> str:
    return _j({**COCO_OK, **changes})


def _karpathy(**image) -> str:
    return _j({"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a cat"}], **image}]})


# case -> (file name, content (str, or bytes as is), format (None: detected), words of the one-line error).
# The first eight came from test_train_datasets.py (moved here: the catalogue is the place for bad datasets).
CASES: dict[str, tuple] = {
    "coco: annotation of a missing image id": (
        "bad.json", '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}',
        "coco", "annotations[0] refers to image_id 2, not in 'images'"),
    "coco: invalid JSON": ("bad.json", '{"images": [], "annotations": [', "coco", "invalid JSON at line 1"),
    "karpathy: raw not a string": (
        "bad.json", '{"images": [{"filename": "a.jpg", "sentences": [{"raw": 1}], "split": "train"}]}', "karpathy",
        "images[0].sentences[0] needs 'raw'"),
    "flickr: no tab": ("bad.token.txt", "a.jpg#0\tone\nthis line has no tab\n", "flickr",
                       "line 2: expected 'IMAGE#N<TAB>caption'"),
    "csv: short row": ("bad.csv", "image,caption,extra\na.jpg,x,1\nb.jpg\n", "csv",
                       "line 3: 1 fields; the header has 3"),
    "csv: no image column": ("bad.csv", "picture,words\na.jpg,x\n", "csv",
                             "line 1: header ['picture', 'words'] has no image column; expected one of"),
    "jsonl: broken line": ("bad.jsonl", '{"image": "a.jpg", "caption": "x"}\n{"image": "b.jpg", "caption": \n', "jsonl",
                           "line 2: invalid JSON"),
    "jsonl: no caption key": ("bad.jsonl", '{"image": "a.jpg", "caption": "x"}\n{"image": "b.jpg", "label": "y"}\n',
                              "jsonl", "line 2: no caption key; expected one of"),
    # COCO
    "coco: no annotations list": ("c.json", _j({"images": []}), "coco",
                                  "expected a COCO captions object with 'images' and 'annotations' lists"),
    "coco: a list, not an object": ("c.json", _j([COCO_OK]), "coco", "expected a COCO captions object"),
    "coco: image without file_name": ("c.json", _coco(images=[{"id": 1}]), None,
                                      "images[0] needs 'id' (integer or string) and 'file_name' (string)"),
    "coco: file_name a number": ("c.json", _coco(images=[{"id": 1, "file_name": 7}]), None, "images[0] needs"),
    "coco: id a list": ("c.json", _coco(images=[{"id": [1], "file_name": "a.jpg"}]), None,
                        "images[0] needs 'id' (integer or string)"),
    "coco: caption a number": ("c.json", _coco(annotations=[{"image_id": 1, "caption": 5}]), None,
                               "annotations[0] needs 'image_id' (integer or string) and 'caption' (string)"),
    "coco: image_id a list": ("c.json", _coco(annotations=[{"image_id": [1], "caption": "x"}]), None,
                              "annotations[0] needs 'image_id' (integer or string)"),
    "coco: annotation a string": ("c.json", _coco(annotations=["a cat"]), None, "annotations[0] needs"),
    "coco: no images at all": ("c.json", _j({"images": [], "annotations": []}), None,
                               "no captioned images; expected coco annotations with at least one image"),
    "coco: nested too deep": ("c.json", "[" * 100_000, "coco", "JSON nested too deeply"),
    # Karpathy
    "karpathy: no images list": ("k.json", _j({"dataset": "coco"}), "karpathy",
                                 "expected a Karpathy split object with an 'images' list"),
    "karpathy: no filename": ("k.json", _j({"images": [{"split": "train", "sentences": []}]}), "karpathy",
                              "images[0] needs 'filename' (string)"),
    "karpathy: no split": ("k.json", _j({"images": [{"filename": "a.jpg", "sentences": []}]}), None,
                           "images[0] ('a.jpg') needs 'split' (train/val/test/restval)"),
    "karpathy: sentences not a list": ("k.json", _karpathy(sentences="a cat"), None,
                                       "images[0] ('a.jpg') needs a 'sentences' list"),
    "karpathy: filepath a number": ("k.json", _karpathy(filepath=2014), None,
                                    "images[0] ('a.jpg'): 'filepath' must be a string"),
    "karpathy: cocoid a list": ("k.json", _karpathy(cocoid=[1]), None,
                                "images[0] ('a.jpg'): cocoid/imgid [1]; expected an integer or string"),
    "karpathy: nothing in the split": ("k.json", _karpathy(split="test"), None, "no images of split 'train'"),
    # Flickr token file
    "flickr: no #N": ("f.token.txt", "a.jpg#0\ta cat\nb.jpg\ta dog\n", "flickr",
                      "line 2: expected 'IMAGE#N<TAB>caption', got 'b.jpg\\ta dog'"),
    "flickr: space for the tab": ("f.token.txt", "a.jpg#0 a cat\n", "flickr", "line 1: expected 'IMAGE#N<TAB>"),
    "flickr: empty image name": ("f.token.txt", "a.jpg#0\ta cat\n  #1\ta dog\n", "flickr",
                                 "line 2: empty image name; expected a file name"),
    # CSV / captions.txt
    "csv: no caption column": ("c.csv", "image,label\na.jpg,x\n", "csv",
                               "line 1: header ['image', 'label'] has no caption column"),
    "csv: no header row": ("c.csv", "a.jpg,A cat on a mat\nb.jpg,A dog\n", None,
                           "line 1: header ['a.jpg', 'A cat on a mat'] has no image column"),
    "csv: header only": ("c.csv", "image,caption\n", "csv", "no captioned images"),
    "csv: empty image cell": ("c.csv", "image,caption\na.jpg,a cat\n,a dog\n", None,
                              "line 3: empty image name; expected a file name"),
    "csv: extra field, caption not last": ("c.csv", "caption,image\na cat,a.jpg\nx,y,b.jpg\n", "csv",
                                           "line 3: 3 fields; the header has 2 (quote captions"),
    "csv: field over the csv limit": ("c.csv", "image,caption\na.jpg," + "x" * 200_000 + "\n", "csv",
                                      "line 2: field larger than field limit"),
    "csv: a quote never closed": ("c.csv", 'image,caption\na.jpg,a cat\nb.jpg,"a dog\nc.jpg,a cow\n', None,
                                  'line 3: a quote (") opened on this line is never closed'),
    "csv: text after a closing quote": ("c.csv", 'image,caption\na.jpg,"a cat" on a mat\n', None,
                                        "line 2: text after a closing quote; expected ','"),
    "csv: Latin-1 bytes": ("latin1.csv", "image,caption\na.jpg,café\n".encode("latin-1"), None,
                           "not UTF-8 text (byte 23); save the annotations as UTF-8"),
    # JSON lines and JSON lists
    "jsonl: a list on a line": ("j.jsonl", '{"image": "a.jpg", "caption": "x"}\n["b.jpg", "y"]\n', "jsonl",
                                "line 2: expected a JSON object with 'image' and 'caption'"),
    "jsonl: image a number": ("j.jsonl", '{"image": "a.jpg", "caption": "x"}\n{"image": 5, "caption": "y"}\n',
                              None, "line 2: 'image' is 5; expected the image file name (a string)"),
    "jsonl: captions with a number": ("j.jsonl", '{"image": "a.jpg", "captions": ["x", 2]}\n', "jsonl",
                                      "line 1: 'captions' must be a string or a list of strings"),
    "jsonl: a line nested too deep": ("j.jsonl", '{"image": "a.jpg", "caption": "x"}\n' + "[" * 100_000 + "\n",
                                      "jsonl", "line 2: JSON nested too deeply"),
    "jsonl: empty image name": ("j.jsonl", '{"image": "", "caption": "x"}\n', "jsonl",
                                "line 1: empty image name"),
    "json list: item not an object": ("j.json", _j([{"image": "a.jpg", "caption": "x"}, "b.jpg"]), None,
                                      "item 1: expected a JSON object"),
    # any format: the file itself
    "missing file": ("nope.json", None, None, "annotation file not found"),
    "a folder": ("folder.json", "folder", None, "is a folder; expected an annotation file"),
    "empty file": ("e.csv", "", None, "empty annotation file"),
    "blank lines only": ("e.txt", "\n  \n\t\n", None, "empty annotation file"),
    "JSON of no known kind": ("o.json", _j({"captions": {"a.jpg": "a cat"}}), None,
                              "neither COCO captions (images + annotations) nor a Karpathy split"),
    "a JPEG given as annotations": ("photo.json", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", None, "not UTF-8 text"),
}


def _write(path: Path, content) -> None:
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_dataset(tmp_path, case):
    name, content, fmt, expected = CASES[case]
    path = tmp_path / name
    _write(path, content)
    one_line_error(lambda: load_dataset(path, fmt=fmt), str(path), expected)


def test_format_names_and_image_lists(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(_coco())
    one_line_error(lambda: load_dataset(f, fmt="xml"), "dataset format 'xml' unknown; expected auto or one of")
    one_line_error(lambda: load_dataset(f, image_list=tmp_path / "list.txt"), str(tmp_path / "list.txt"),
                   "image list not found")
    (tmp_path / "list.txt").write_text("b.jpg\nc.jpg\n")
    one_line_error(lambda: load_dataset(f, image_list=tmp_path / "list.txt"), str(tmp_path / "list.txt"),
                   f"none of its 2 names are images of {f}")


def test_a_spreadsheet_bom_and_windows_line_ends_are_read_through(tmp_path):
    f = tmp_path / "captions.csv"
    f.write_bytes(b"\xef\xbb\xbfimage,caption\r\na.jpg,a cat\r\na.jpg,the cat\r\n")
    samples = load_dataset(f)
    assert [(s.image.name, s.captions) for s in samples] == [("a.jpg", ["a cat", "the cat"])]


# --- validation before training: missing and unreadable images, empty captions ---------------------------------

def test_validation_reports_missing_unreadable_empty_and_captionless(flickr_dir, caplog):
    (flickr_dir / "Images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    good = write_image(flickr_dir / "Images" / "good.jpg")
    data = good.read_bytes()
    (flickr_dir / "Images" / "cut.jpg").write_bytes(data[: len(data) // 2])  # a download that stopped halfway
    f = flickr_dir / "captions.csv"
    f.write_text("image,caption\n1000_a.jpg,a cat\n1000_a.jpg,...\ngone1.jpg,x\ngone2.jpg,y\nbroken.jpg,z\n"
                 "cut.jpg,w\n1001_b.jpg, !! \n1002_c.jpg,a dog\n")
    samples = load_dataset(f)
    with pytest.raises(ScenecapError) as e:
        validate(samples, str(f), TextOptions(), progress=False)
    msg = str(e.value)
    assert "2 missing (e.g. gone1.jpg, gone2.jpg)" in msg and "2 unreadable" in msg and "broken.jpg" in msg
    assert "cut.jpg" in msg and "--skip-missing" in msg and "\n" not in msg
    kept, report = validate(load_dataset(f), str(f), TextOptions(), skip_missing=True, progress=False)
    assert [s.image.name for s in kept] == ["1000_a.jpg", "1002_c.jpg"]
    assert kept[0].captions == ["a cat"]  # the punctuation-only caption was dropped
    assert report.empty_captions == 2 and report.no_captions == ["1001_b.jpg"]
    assert "images without captions dropped" in report.summary()


def test_only_empty_captions_leave_nothing_to_train_on(flickr_dir):
    f = flickr_dir / "captions.csv"
    f.write_text("image,caption\n1000_a.jpg,\n1001_b.jpg,...\n1002_c.jpg, - \n")
    one_line_error(lambda: validate(load_dataset(f), str(f), TextOptions(), progress=False), str(f),
                   "no usable images with captions left after validation")


def test_train_command_stops_on_missing_images_with_one_line(tmp_path):
    f = tmp_path / "captions.txt"
    f.write_text("image,caption\nnowhere.jpg,a cat on a mat\n")
    r = scenecap("train", str(f), "--out", str(tmp_path / "run"))
    line = cli_error(r, str(f), "1 missing (e.g. nowhere.jpg)", "--skip-missing")
    assert line.startswith("scenecap: error:")
    assert not (tmp_path / "run" / "checkpoints" / "last.weights.h5").exists()


def test_a_quoted_caption_over_two_lines_is_one_caption_and_later_lines_keep_their_numbers(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text('image,caption\na.jpg,"a cat,\non a mat"\nb.jpg,"a dog\n', encoding="utf-8")
    one_line_error(lambda: load_dataset(f), str(f), "line 4: a quote")
    f.write_text('image,caption\na.jpg,"a cat,\non a mat"\nb.jpg,"a ""big"" dog"\n', encoding="utf-8")
    assert [s.captions for s in load_dataset(f)] == [["a cat,\non a mat"], ['a "big" dog']]


# --- the captions' language against --lang (it picks the speech voice) -----------------------------------------

# case -> (captions, --lang (None: not given), words of the one-line error, which names the annotation file)
LANGUAGE_CASES = {
    "Arabic captions, --lang en": (["دائرة حمراء", "مربع أزرق"], "en",
                                   "--lang en is written in Latin script, but the captions are Arabic; pass the "
                                   "captions' language (--lang ar"),
    "English captions, --lang ar": (["a red circle"], "ar", "--lang ar is written in Arabic script, but the "
                                    "captions are Latin"),
    "Chinese captions, --lang ja": (["一只猫在桌子上"], "ja", "--lang ja is written in Kana script, but the captions "
                                    "are Han"),
    "Cyrillic, not told which language": (["кошка на столе"], None, "the captions are in Cyrillic script, which "
                                          "several languages write; pass --lang CODE (--lang ru"),
    "Devanagari, not told": (["एक कुत्ता घास पर"], None, "Devanagari script, which several languages write"),
    "half Arabic, half Latin": (["a red circle", "دائرة حمراء"], None, "the captions mix scripts ("),
    "no letters at all": (["123", "..."], None, "the captions have no letters to tell their language by; pass "
                          "--lang CODE"),
}


@pytest.mark.parametrize("case", sorted(LANGUAGE_CASES))
def test_caption_language(case):
    captions, given, expected = LANGUAGE_CASES[case]
    one_line_error(lambda: caption_language(captions, given, "captions.csv"), "captions.csv: ", expected)


def test_train_command_refuses_a_language_the_captions_contradict(tmp_path):
    f = tmp_path / "captions.csv"
    f.write_text("image,caption\nnowhere.jpg,دائرة حمراء في الأعلى\n", encoding="utf-8")
    r = scenecap("train", str(f), "--lang", "en", "--out", str(tmp_path / "run"))
    cli_error(r, str(f), "--lang en is written in Latin script, but the captions are Arabic")
    assert not (tmp_path / "run").exists()  # refused before the images were even looked at


# Catalogue size: 49 bad annotation files through load_dataset, 3 bad format/list values, 1 BOM read through,
# 1 multi-line quoted caption, 2 validations (missing/unreadable/empty, all empty), 7 languages the captions
# contradict or do not tell, and 2 `scenecap train` runs = 65 cases.
def test_catalogue_size():
    assert (len(CASES), len(LANGUAGE_CASES)) == (49, 7)
