"""Captioning datasets in the formats users already have, read into one shape: a list of Samples.

Formats (detected from the file when not given):
  coco      COCO captions JSON: images[{id, file_name}], annotations[{image_id, caption}]
  karpathy  Karpathy split JSON: images[{filename, filepath?, split, sentences[{raw}]}]; 'restval' is training data
  flickr    Flickr8k/30k token file: `name.jpg#N<TAB>caption`, one caption a line
  csv       CSV/TSV with a header naming the image and caption columns (Flickr8k's captions.txt, Flickr30k's
            results.csv with '|', or your own); several rows per image are grouped
  jsonl     one JSON object a line: {"image": ..., "caption": ...} or {"image": ..., "captions": [...]}
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from scenecap import ScenecapError
from scenecap.edge.fileio import parse_json


@dataclass
class Sample:
    image: Path
    captions: list[str]
    image_id: int | str = 0
    split: str = "train"
    extra: dict = field(default_factory=dict)


FORMATS = ("coco", "karpathy", "flickr", "csv", "jsonl")
# Column names people use for the image and the caption in their own CSV/JSONL files.
IMAGE_KEYS = ("image", "image_name", "file_name", "filename", "file", "path", "image_path", "img", "image_file")
CAPTION_KEYS = ("caption", "captions", "comment", "text", "sentence", "description", "raw")
# Folders datasets ship their images in, tried in order beside the annotation file.
IMAGE_DIR_NAMES = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k_images", "train2014",
                   "val2014")
_FLICKR_LINE = re.compile(r"^(?P<name>[^\t#]+)#(?P<n>\d+)\t(?P<caption>.*)$")


def _read_text(path: Path, what: str = "annotation file") -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")  # -sig: spreadsheet exports start with a BOM
    except FileNotFoundError:
        raise ScenecapError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ScenecapError(f"{path}: is a folder; expected an {what}") from None
    except UnicodeDecodeError as e:
        raise ScenecapError(f"{path}: not UTF-8 text (byte {e.start}); save the annotations as UTF-8") from None


def _read_json(path: Path, text: str | None = None):
    """The annotation file's JSON value; `text` when it was read already (by _read_text: UTF-8 checked, BOM off)."""
    text = _read_text(path) if text is None else text
    return parse_json(text.encode("utf-8"), path, "annotation file")


def _is_id(x) -> bool:
    """An image id: an integer or a string (a list or object would fail later as a dict key)."""
    return isinstance(x, (int, str)) and not isinstance(x, bool)


def default_images_dir(annotations: Path) -> Path:
    """A usual image folder beside the annotation file if one exists, else the annotation file's folder."""
    for name in IMAGE_DIR_NAMES:
        beside = annotations.parent / name
        if beside.is_dir():
            return beside
    return annotations.parent


def _root(path: Path, images_dir) -> Path:
    return Path(images_dir) if images_dir else default_images_dir(path)


# --- format detection ----------------------------------------------------------------------------------------

def detect_format(path: str | Path) -> str:
    """coco | karpathy | flickr | csv | jsonl, from the file's content (the suffix only breaks ties)."""
    path = Path(path)
    text = _read_text(path)
    head = text.lstrip()[:1]
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    if not first_line:
        raise ScenecapError(f"{path}: empty annotation file")
    if head == "{" and path.suffix.lower() == ".jsonl" or _looks_like_jsonl(text):
        return "jsonl"
    if head in "{[":
        data = _read_json(path, text)
        if isinstance(data, dict) and isinstance(data.get("annotations"), list):
            return "coco"
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            first = next((im for im in data["images"] if isinstance(im, dict)), {})
            if "sentences" in first or "filename" in first:
                return "karpathy"
        if isinstance(data, list):
            return "jsonl"  # a JSON list of {image, caption} records reads like JSON lines
        raise ScenecapError(f"{path}: JSON that is neither COCO captions (images + annotations) nor a Karpathy "
                            "split (images[].sentences); pass --dataset-format")
    if _FLICKR_LINE.match(first_line):
        return "flickr"
    return "csv"


def _looks_like_jsonl(text: str) -> bool:
    lines = [line for line in text.splitlines()[:3] if line.strip()]
    if len(lines) < 2 or not all(line.lstrip().startswith("{") for line in lines):
        return False
    try:
        json.loads(lines[0])
        return True
    except ValueError:  # a JSONDecodeError, or an integer past the 4300-digit limit (the loader reports it)
        return False


# --- loaders -------------------------------------------------------------------------------------------------

def load_coco(path: str | Path, images_dir: str | Path | None = None, split: str = "train") -> list[Sample]:
    """COCO captions JSON: images[{id, file_name}], annotations[{image_id, caption}]."""
    path = Path(path)
    root = _root(path, images_dir)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise ScenecapError(f"{path}: expected a COCO captions object with 'images' and 'annotations' lists")
    by_id: dict = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not _is_id(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise ScenecapError(f"{path}: images[{i}] needs 'id' (integer or string) and 'file_name' (string)")
        by_id[im["id"]] = Sample(root / im["file_name"], [], im["id"], split)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_id(ann.get("image_id")) or not isinstance(ann.get("caption"), str):
            raise ScenecapError(f"{path}: annotations[{i}] needs 'image_id' (integer or string) and 'caption' "
                                "(string)")
        sample = by_id.get(ann["image_id"])
        if sample is None:
            raise ScenecapError(f"{path}: annotations[{i}] refers to image_id {ann['image_id']!r}, not in 'images'")
        sample.captions.append(ann["caption"])
    return list(by_id.values())


KARPATHY_SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


def load_karpathy(path: str | Path, images_dir: str | Path | None = None, split: str = "train") -> list[Sample]:
    """Karpathy split JSON (dataset_coco/flickr8k/flickr30k.json): one file, all splits; 'restval' joins train."""
    path = Path(path)
    root = _root(path, images_dir)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ScenecapError(f"{path}: expected a Karpathy split object with an 'images' list")
    wanted = KARPATHY_SPLITS.get(split, (split,))
    out = []
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("filename"), str):
            raise ScenecapError(f"{path}: images[{i}] needs 'filename' (string)")
        if not isinstance(im.get("split"), str):
            raise ScenecapError(f"{path}: images[{i}] ({im['filename']!r}) needs 'split' (train/val/test/restval)")
        if im["split"] not in wanted:
            continue
        sentences = im.get("sentences")
        if not isinstance(sentences, list):
            raise ScenecapError(f"{path}: images[{i}] ({im['filename']!r}) needs a 'sentences' list")
        caps = []
        for j, s in enumerate(sentences):
            if isinstance(s, dict) and isinstance(s.get("raw"), str):
                caps.append(s["raw"])
            elif isinstance(s, dict) and isinstance(s.get("tokens"), list):
                caps.append(" ".join(map(str, s["tokens"])))
            else:
                raise ScenecapError(f"{path}: images[{i}].sentences[{j}] needs 'raw' (string) or 'tokens'")
        if not isinstance(im.get("filepath") or "", str):
            raise ScenecapError(f"{path}: images[{i}] ({im['filename']!r}): 'filepath' must be a string (a folder)")
        rel = Path(im.get("filepath") or "") / im["filename"]
        image_id = im.get("cocoid", im.get("imgid", i))
        if not _is_id(image_id):
            raise ScenecapError(f"{path}: images[{i}] ({im['filename']!r}): cocoid/imgid {image_id!r}; expected an "
                                "integer or string")
        out.append(Sample(root / rel, caps, image_id, split, {"karpathy_split": im["split"]}))
    return out


def karpathy_splits(path: str | Path) -> set[str]:
    """The splits a Karpathy file holds (train, val, test, restval)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ScenecapError(f"{path}: expected a Karpathy split object with an 'images' list")
    splits: set[str] = set()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            continue  # load_karpathy says what is wrong with it
        if not isinstance(im.get("split"), str):  # a list would be unhashable in the set
            raise ScenecapError(f"{path}: images[{i}] needs 'split' (train/val/test/restval)")
        splits.add(im["split"])
    return splits


def _group(path: Path, root: Path, rows, split: str) -> list[Sample]:
    """(line number, image name, caption) rows -> one Sample per image, in first-seen order."""
    by_name: dict[str, Sample] = {}
    for where, name, caption in rows:
        if not name:  # it would name the image folder itself
            where = f"line {where}" if isinstance(where, int) else where
            raise ScenecapError(f"{path}: {where}: empty image name; expected a file name")
        s = by_name.get(name)
        if s is None:
            s = by_name[name] = Sample(root / name, [], name, split)
        s.captions.append(caption)
    return list(by_name.values())


def load_flickr(path: str | Path, images_dir: str | Path | None = None, split: str = "train") -> list[Sample]:
    """Flickr8k/30k token file: `1000268201_693b08cb0e.jpg#0<TAB>A child in a pink dress ...`."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        m = _FLICKR_LINE.match(line)
        if not m:
            raise ScenecapError(f"{path}: line {lineno}: expected 'IMAGE#N<TAB>caption', got {line[:60]!r}")
        rows.append((lineno, m["name"].strip(), m["caption"]))
    return _group(path, _root(path, images_dir), rows, split)


def _pick(names: list[str], wanted: tuple[str, ...]) -> int | None:
    lowered = [n.strip().lower() for n in names]
    for key in wanted:
        if key in lowered:
            return lowered.index(key)
    return None


def load_csv(path: str | Path, images_dir: str | Path | None = None, split: str = "train") -> list[Sample]:
    """CSV/TSV/pipe-separated with a header; captions containing the separator unquoted (as in Flickr8k's
    captions.txt) are kept whole when the caption is the last column."""
    path = Path(path)
    text = _read_text(path)
    first = text.splitlines()[0] if text else ""
    delimiter = max(",\t|;", key=first.count) if first else ","
    # strict: a quote that is never closed would otherwise swallow every later line into one caption, silently
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ScenecapError(f"{path}: empty annotation file") from None
    except csv.Error as e:
        raise ScenecapError(f"{path}: line 1: {_csv_problem(e, delimiter)}") from None
    img_col, cap_col = _pick(header, IMAGE_KEYS), _pick(header, CAPTION_KEYS)
    if img_col is None or cap_col is None:
        raise ScenecapError(f"{path}: line 1: header {header[:6]} has no {'image' if img_col is None else 'caption'} "
                            f"column; expected one of {IMAGE_KEYS if img_col is None else CAPTION_KEYS}")
    rows = []
    start = reader.line_num + 1  # the line a row starts on: a quoted caption may span lines
    try:
        for row in reader:
            lineno, start = start, reader.line_num + 1
            if not any(c.strip() for c in row):
                continue
            if len(row) < len(header):
                raise ScenecapError(f"{path}: line {lineno}: {len(row)} fields; the header has {len(header)}")
            if len(row) > len(header):
                if cap_col != len(header) - 1:
                    raise ScenecapError(f"{path}: line {lineno}: {len(row)} fields; the header has {len(header)} "
                                        "(quote captions that contain the separator)")
                row = row[:cap_col] + [delimiter.join(row[cap_col:])]
            rows.append((lineno, row[img_col].strip(), row[cap_col].strip()))
    except csv.Error as e:
        raise ScenecapError(f"{path}: line {start}: {_csv_problem(e, delimiter)}") from None
    return _group(path, _root(path, images_dir), rows, split)


def _csv_problem(e: csv.Error, delimiter: str) -> str:
    """The csv module's terse errors in words a person editing the file can act on."""
    msg = str(e)
    if "unexpected end of data" in msg:
        return 'a quote (") opened on this line is never closed; expected a closing quote'
    if "expected after" in msg:
        return (f'text after a closing quote; expected {delimiter!r} or the end of the line (to keep quotes in a '
                'caption, quote it whole and double them: "a ""red"" car")')
    return msg


def load_jsonl(path: str | Path, images_dir: str | Path | None = None, split: str = "train") -> list[Sample]:
    """One object a line (or a JSON list of objects): {"image": ..., "caption": "..."} or "captions": [...]."""
    path = Path(path)
    rows = [row for where, record in _json_records(path) for row in _record_rows(path, where, record)]
    return _group(path, _root(path, images_dir), rows, split)


def _json_records(path: Path) -> list[tuple[str, object]]:
    """(where, value) of each record, all parsed before any is checked: a JSON list's items, or one value a line."""
    text = _read_text(path)
    if text.lstrip().startswith("["):
        return [(f"item {i}", r) for i, r in enumerate(_read_json(path, text))]
    lines = enumerate(text.splitlines(), start=1)
    return [(f"line {n}", _json_line(path, n, line)) for n, line in lines if line.strip()]


def _json_line(path: Path, lineno: int, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ScenecapError(f"{path}: line {lineno}: invalid JSON: {e.msg}") from None
    except ValueError as e:  # not a JSONDecodeError: an integer past Python's 4300-digit limit
        raise ScenecapError(f"{path}: line {lineno}: invalid JSON: {str(e).split(':')[0]}") from None
    except RecursionError:
        raise ScenecapError(f"{path}: line {lineno}: JSON nested too deeply; expected an object") from None


def _record_rows(path: Path, where: str, rec) -> list[tuple[str, str, str]]:
    """(where, image name, caption) for each caption of one record."""
    if not isinstance(rec, dict):
        raise ScenecapError(f"{path}: {where}: expected a JSON object with 'image' and 'caption'")
    img_key = _image_key(path, where, rec)
    cap_key = next((k for k in CAPTION_KEYS if k in rec), None)
    if cap_key is None:
        raise ScenecapError(f"{path}: {where}: no caption key; expected one of {CAPTION_KEYS}")
    caps = [rec[cap_key]] if isinstance(rec[cap_key], str) else rec[cap_key]
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise ScenecapError(f"{path}: {where}: '{cap_key}' must be a string or a list of strings")
    return [(where, rec[img_key], c) for c in caps]


def _image_key(path: Path, where: str, rec: dict) -> str:
    """The record's image key: the first of IMAGE_KEYS holding a string."""
    key = next((k for k in IMAGE_KEYS if isinstance(rec.get(k), str)), None)
    if key is not None:
        return key
    given = next((k for k in IMAGE_KEYS if k in rec), None)
    if given is not None:
        raise ScenecapError(f"{path}: {where}: '{given}' is {rec[given]!r}; expected the image file name (a string)")
    raise ScenecapError(f"{path}: {where}: no image key; expected one of {IMAGE_KEYS}")


LOADERS = {"coco": load_coco, "karpathy": load_karpathy, "flickr": load_flickr, "csv": load_csv,
           "jsonl": load_jsonl}


def load_dataset(path: str | Path, images_dir: str | Path | None = None, split: str = "train",
                 fmt: str | None = None, image_list: str | Path | None = None) -> list[Sample]:
    """Any supported annotation file -> Samples. `image_list` (one file name a line, e.g. Flickr8k's
    Flickr_8k.trainImages.txt) keeps only those images."""
    fmt = fmt or "auto"
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in LOADERS:
        raise ScenecapError(f"dataset format {fmt!r} unknown; expected auto or one of {FORMATS}")
    samples = LOADERS[fmt](path, images_dir, split)
    if not samples:  # a header-only CSV, a Karpathy file without this split: say so, not train without it
        what = f"no images of split {split!r}" if fmt == "karpathy" else "no captioned images"
        raise ScenecapError(f"{path}: {what}; expected {fmt} annotations with at least one image and caption")
    if image_list:
        names = {line.strip() for line in _read_text(Path(image_list), "image list").splitlines() if line.strip()}
        samples = [s for s in samples if s.image.name in names or str(s.image_id) in names]
        if not samples:
            raise ScenecapError(f"{image_list}: none of its {len(names)} names are images of {path}")
    return samples
