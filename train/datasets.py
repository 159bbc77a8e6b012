"""Captioning datasets in the formats users already have, read into one shape: a list of Samples."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from scenecap import ScenecapError


@dataclass
class Sample:
    image: Path
    captions: list[str]
    image_id: int | str = 0
    split: str = "train"
    extra: dict = field(default_factory=dict)


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ScenecapError(f"{path}: annotation file not found") from None
    except UnicodeDecodeError as e:
        raise ScenecapError(f"{path}: not UTF-8 (byte {e.start}); expected a JSON annotation file") from None
    except json.JSONDecodeError as e:
        raise ScenecapError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def default_images_dir(annotations: Path) -> Path:
    """images/ beside the annotation file if it exists, else the annotation file's folder."""
    beside = annotations.parent / "images"
    return beside if beside.is_dir() else annotations.parent


def load_coco(path: str | Path, images_dir: str | Path | None = None, split: str = "train") -> list[Sample]:
    """COCO captions JSON: images[{id, file_name}], annotations[{image_id, caption}]."""
    path = Path(path)
    root = Path(images_dir) if images_dir else default_images_dir(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise ScenecapError(f"{path}: expected a COCO captions object with 'images' and 'annotations' lists")
    by_id: dict = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise ScenecapError(f"{path}: images[{i}] needs 'id' and 'file_name' (string)")
        by_id[im["id"]] = Sample(root / im["file_name"], [], im["id"], split)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise ScenecapError(f"{path}: annotations[{i}] needs 'image_id' and 'caption' (string)")
        sample = by_id.get(ann["image_id"])
        if sample is None:
            raise ScenecapError(f"{path}: annotations[{i}] refers to image_id {ann['image_id']!r}, not in 'images'")
        sample.captions.append(ann["caption"])
    return list(by_id.values())
