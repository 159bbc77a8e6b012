"""Synthetic scenes: coloured shapes on textured backgrounds, with captions that say what is where.

No captioning dataset can be downloaded here, so tests and the demo train on these. Deterministic by seed;
written in the COCO captions format, so they go through the same loader as a user's data.

Styles (`scenecap synth --style`):
  varied   (default) randomises what must not matter, so a model learns shapes and colours rather than one
           drawing program: plain, noise, gradient, stripe, blotch and clutter backgrounds; continuous sizes and
           places; hue and brightness jitter around each named colour; blur, sensor noise, JPEG artefacts;
           1-4 objects that may overlap (an object too hidden to name is not drawn, so captions stay true).
  broad    varied, and also what a shape's name does not depend on: any rotation, a third of the large shapes
           drawn as outlines, half of them anti-aliased; sizes from the smallest legible to ones that spill into
           the next cell, plain backgrounds from near-black to near-white, fractal-noise textures. The demo
           bundle trains on it.
  shifted  held-out evidence, never trained on by the demo: checkerboard, dot, ring and very pale or very dark
           backgrounds, sizes beyond both ends of varied's bands (inside broad's), darker colours, every edge
           anti-aliased, tilted shapes and half the large ones outlined.
  classic  the first demo bundle's generator (filled shapes, textured backgrounds).
Caption words come from the drawn geometry: the cell holding an object's centre, "small"/"large" from its radius
(two bands with a gap between them, so no size is borderline).

This module writes the dataset; scene_drawing.py draws a scene, scene_captions.py words its captions and
scene_scores.py reads objects back out of a model's captions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scenecap.train.scene_captions import CELLS, COLOURS, LEXICON, SHAPES, SIZES, SceneObject, captions_for, phrase
from scenecap.train.scene_drawing import DEFAULT_STYLE, MIN_VISIBLE, SIZE_BANDS, STYLES, make_scene
from scenecap.train.scene_scores import (
    attribute_accuracy,
    colour_shape_accuracy,
    object_scores,
    parse_objects,
    position_accuracy,
    scenes_beside,
)

# The public names, wherever they live: tests, the demo scripts and convert/report.py import them from here.
__all__ = ["CELLS", "COLOURS", "DEFAULT_STYLE", "LEXICON", "MIN_VISIBLE", "SHAPES", "SIZES", "SIZE_BANDS", "STYLES",
           "SceneObject", "attribute_accuracy", "captions_for", "colour_shape_accuracy", "generate", "make_scene",
           "object_scores", "parse_objects", "phrase", "position_accuracy", "scenes_beside"]


def generate(out_dir: str | Path, n_train: int = 2000, n_val: int = 200, n_test: int = 200, seed: int = 0,
             lang: str = "en", img_size: int = 160, max_objects: int | None = None, progress: bool = False,
             style: str = DEFAULT_STYLE) -> Path:
    """Write images/ and captions_{train,val,test}.json (COCO captions format) plus scenes_{split}.json."""
    if lang not in LEXICON:
        raise ValueError(f"language {lang!r} unknown; expected one of {sorted(LEXICON)}")
    if style not in STYLES:
        raise ValueError(f"style {style!r} unknown; expected one of {STYLES}")
    splits = {"train": n_train, "val": n_val, "test": n_test}
    bar = None
    if progress:  # before the folder exists: without the train extra, nothing is written
        from tqdm import tqdm

        bar = tqdm(total=sum(splits.values()), desc="synthetic scenes", unit="img")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image_id = 0
    for split, count in splits.items():
        images, annotations, scenes = [], [], []
        for _ in range(count):
            image_id += 1
            img, objects = make_scene(rng, img_size, max_objects, style)
            name = f"{split}_{image_id:06d}.jpg"
            img.save(out / "images" / name, quality=92)
            images.append({"id": image_id, "file_name": name, "width": img_size, "height": img_size})
            for cap in captions_for(objects, lang, rng):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": cap})
            scenes.append({"image_id": image_id, "objects": [o.__dict__ for o in objects]})
            if bar:
                bar.update()
        coco = {"info": {"description": f"scenecap synthetic scenes ({lang}, {style} style), seed {seed}"},
                "images": images, "annotations": annotations}
        (out / f"captions_{split}.json").write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
        (out / f"scenes_{split}.json").write_text(json.dumps(scenes, ensure_ascii=False), encoding="utf-8")
    if bar:
        bar.close()
    return out
