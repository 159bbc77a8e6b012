"""Synthetic scenes: coloured shapes on textured backgrounds, with captions that say what is where.

No captioning dataset can be downloaded here, so tests and the demo train on these. Deterministic by seed;
written in the COCO captions format, so they go through the same loader as a user's data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {  # name -> RGB
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 40, 190),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
# 3 x 3 grid cells, row-major; objects take distinct cells.
CELLS = ("top left", "top", "top right", "left", "middle", "right", "bottom left", "bottom", "bottom right")

LEXICON = {
    "en": {
        "colour": {c: c for c in COLOURS},
        "shape": {s: s for s in SHAPES},
        "size": {s: s for s in SIZES},
        "where": {
            "top left": "at the top left", "top": "at the top", "top right": "at the top right",
            "left": "on the left", "middle": "in the middle", "right": "on the right",
            "bottom left": "at the bottom left", "bottom": "at the bottom", "bottom right": "at the bottom right",
        },
        "and": "and",
        "templates": ["a {objs}", "there is a {objs}", "a picture of a {objs}", "an image showing a {objs}"],
        "join": " and a ",
    },
    "ar": {
        # Arabic puts adjectives after the noun and makes them agree in gender.
        "colour": {
            "red": ("أحمر", "حمراء"), "green": ("أخضر", "خضراء"), "blue": ("أزرق", "زرقاء"),
            "yellow": ("أصفر", "صفراء"), "purple": ("بنفسجي", "بنفسجية"),
        },
        "shape": {"circle": ("دائرة", "f"), "square": ("مربع", "m"), "triangle": ("مثلث", "m"), "star": ("نجمة", "f")},
        "size": {"small": ("صغير", "صغيرة"), "large": ("كبير", "كبيرة")},
        "where": {
            "top left": "في أعلى اليسار", "top": "في الأعلى", "top right": "في أعلى اليمين",
            "left": "على اليسار", "middle": "في الوسط", "right": "على اليمين",
            "bottom left": "في أسفل اليسار", "bottom": "في الأسفل", "bottom right": "في أسفل اليمين",
        },
        "templates": ["{objs}", "يوجد {objs}", "صورة فيها {objs}", "نرى {objs}"],
        "join": " و ",
    },
}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    cell: str


def phrase(obj: SceneObject, lang: str, with_size: bool = True) -> str:
    lex = LEXICON[lang]
    if lang == "ar":
        noun, gender = lex["shape"][obj.shape]
        g = 1 if gender == "f" else 0
        parts = [noun, lex["colour"][obj.colour][g]] + ([lex["size"][obj.size][g]] if with_size else [])
        return " ".join(parts) + " " + lex["where"][obj.cell]
    parts = ([lex["size"][obj.size]] if with_size else []) + [lex["colour"][obj.colour], lex["shape"][obj.shape]]
    return " ".join(parts) + " " + lex["where"][obj.cell]


def captions_for(objects: list[SceneObject], lang: str, rng: np.random.Generator, n: int = 5) -> list[str]:
    """n reference captions from different phrasings; objects in reading order (top-left first)."""
    lex = LEXICON[lang]
    ordered = sorted(objects, key=lambda o: CELLS.index(o.cell))
    caps = []
    templates = list(lex["templates"])
    for i in range(n):
        tpl = templates[i % len(templates)]
        with_size = i != n - 1  # one reference leaves sizes out, as people often do
        objs = ordered if i < 3 or len(ordered) < 2 else list(reversed(ordered)) if i == 3 else ordered
        caps.append(tpl.format(objs=lex["join"].join(phrase(o, lang, with_size) for o in objs)))
    rng.shuffle(caps)
    return caps


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Muted textured background: gradient, stripes or blotches, plus noise. Never a saturated colour."""
    base = rng.integers(60, 200, size=3).astype(np.float32)
    base = base.mean() + (base - base.mean()) * 0.35  # desaturate so objects' colours stand out
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.integers(0, 3)
    if kind == 0:
        angle = rng.uniform(0, math.pi)
        tex = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(-60, 60)
    elif kind == 1:
        freq = rng.uniform(4, 14)
        tex = (np.sin(2 * math.pi * freq * (xx if rng.random() < 0.5 else yy)) * rng.uniform(8, 25))[..., None]
    else:
        small = rng.normal(0, 25, size=(6, 6, 1)).astype(np.float32)
        tex = np.asarray(Image.fromarray(small[..., 0]).resize((size, size), Image.BILINEAR))[..., None]
    img = base + tex + rng.normal(0, 6, size=(size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _draw(draw: ImageDraw.ImageDraw, obj: SceneObject, rng: np.random.Generator, img_size: int) -> None:
    cell = img_size / 3
    r_idx = CELLS.index(obj.cell)
    row, col = divmod(r_idx, 3)
    radius = cell * (0.42 if obj.size == "large" else 0.2) * rng.uniform(0.9, 1.05)
    cx = (col + 0.5) * cell + rng.uniform(-0.5, 0.5) * (cell / 2 - radius)
    cy = (row + 0.5) * cell + rng.uniform(-0.5, 0.5) * (cell / 2 - radius)
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[obj.colour])
    if obj.shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif obj.shape == "square":
        s = radius * 0.88
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=colour)
    elif obj.shape == "triangle":
        angles = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        pts = [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]
        draw.polygon(pts, fill=colour)
    else:  # star
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = radius if k % 2 == 0 else radius * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        draw.polygon(pts, fill=colour)


def make_scene(rng: np.random.Generator, img_size: int = 160,
               max_objects: int = 3) -> tuple[Image.Image, list[SceneObject]]:
    n = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(len(CELLS), size=n, replace=False)
    objects = [
        SceneObject(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(SIZES)), CELLS[c])
        for c in cells
    ]
    img = _background(rng, img_size)
    draw = ImageDraw.Draw(img)
    for o in objects:
        _draw(draw, o, rng, img_size)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8)))
    return img, objects


def generate(out_dir: str | Path, n_train: int = 2000, n_val: int = 200, n_test: int = 200, seed: int = 0,
             lang: str = "en", img_size: int = 160, max_objects: int = 3, progress: bool = False) -> Path:
    """Write images/ and captions_{train,val,test}.json (COCO captions format) plus scenes_{split}.json."""
    if lang not in LEXICON:
        raise ValueError(f"language {lang!r} unknown; expected one of {sorted(LEXICON)}")
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
            img, objects = make_scene(rng, img_size, max_objects)
            name = f"{split}_{image_id:06d}.jpg"
            img.save(out / "images" / name, quality=92)
            images.append({"id": image_id, "file_name": name, "width": img_size, "height": img_size})
            for cap in captions_for(objects, lang, rng):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": cap})
            scenes.append({"image_id": image_id, "objects": [o.__dict__ for o in objects]})
            if bar:
                bar.update()
        coco = {"info": {"description": f"scenecap synthetic scenes ({lang}), seed {seed}"},
                "images": images, "annotations": annotations}
        (out / f"captions_{split}.json").write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
        (out / f"scenes_{split}.json").write_text(json.dumps(scenes, ensure_ascii=False), encoding="utf-8")
    if bar:
        bar.close()
    return out


def parse_objects(caption: str, lang: str = "en") -> list[tuple[str, str]]:
    """The (colour, shape) pairs a caption names. English puts the colour before the shape, Arabic after."""
    lex = LEXICON[lang]
    colour_of = {}
    for name, forms in lex["colour"].items():
        for f in forms if isinstance(forms, tuple) else (forms,):
            colour_of[f] = name
    shape_of = {(v[0] if isinstance(v, tuple) else v): k for k, v in lex["shape"].items()}
    words = caption.split()
    pairs = []
    for i, w in enumerate(words):
        if w not in shape_of:
            continue
        rng_ = range(i + 1, len(words)) if lang == "ar" else range(i - 1, -1, -1)
        for j in rng_:
            if words[j] in shape_of:
                break
            if words[j] in colour_of:
                pairs.append((colour_of[words[j]], shape_of[w]))
                break
    return pairs


def colour_shape_accuracy(captions: dict[int, str], scenes: list[dict], lang: str = "en") -> float:
    """Share of objects whose colour and shape are both named right (each named pair used once)."""
    total = right = 0
    for scene in scenes:
        want = [(o["colour"], o["shape"]) for o in scene["objects"]]
        got = parse_objects(captions.get(scene["image_id"], ""), lang)
        total += len(want)
        for pair in want:
            if pair in got:
                got.remove(pair)
                right += 1
    return right / total if total else 0.0


def attribute_accuracy(captions: dict[int, str], scenes: list[dict], attribute: str, lang: str = "en") -> float:
    """Share of objects whose colour (attribute="colour") or shape ("shape") the caption names, whatever it is
    paired with: tells a model that sees colours but not shapes (colour+shape ~ 1 in 4) from one that sees
    neither (~ 1 in 20)."""
    k = {"colour": 0, "shape": 1}[attribute]
    total = right = 0
    for scene in scenes:
        got = [pair[k] for pair in parse_objects(captions.get(scene["image_id"], ""), lang)]
        for o in scene["objects"]:
            total += 1
            if o[attribute] in got:
                got.remove(o[attribute])
                right += 1
    return right / total if total else 0.0


def position_accuracy(captions: dict[int, str], scenes: list[dict], lang: str = "en") -> float:
    """Share of objects whose position phrase ("at the top left", "في الوسط") the caption contains."""
    where = LEXICON[lang]["where"]
    total = right = 0
    for scene in scenes:
        text = " " + captions.get(scene["image_id"], "") + " "
        for o in scene["objects"]:
            total += 1
            right += f" {where[o['cell']]} " in text
    return right / total if total else 0.0
