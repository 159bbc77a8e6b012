"""Synthetic scenes: coloured shapes on textured backgrounds, with captions that say what is where.

No captioning dataset can be downloaded here, so tests and the demo train on these. Deterministic by seed;
written in the COCO captions format, so they go through the same loader as a user's data.

Styles (`scenecap synth --style`):
  varied   (default) randomises what must not matter, so a model learns shapes and colours rather than one
           drawing program: plain, noise, gradient, stripe, blotch and clutter backgrounds; continuous sizes and
           places; hue and brightness jitter around each named colour; blur, sensor noise, JPEG artefacts;
           1-4 objects that may overlap (an object too hidden to name is not drawn, so captions stay true).
  shifted  held-out evidence, never trained on by the demo: anti-aliased, half the large shapes drawn as outlines,
           rotated, on checkerboard, dot, ring and pale or dark backgrounds, with another size distribution.
  classic  the generator the shipped demo bundle was trained on (filled shapes, textured backgrounds).
Caption words come from the drawn geometry: the cell holding an object's centre, "small"/"large" from its radius
(two bands with a gap between them, so no size is borderline).
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


STYLES = ("varied", "shifted", "classic")
DEFAULT_STYLE = "varied"
MIN_VISIBLE = 0.6  # an object less visible than this (occluded by later ones) is not drawn, so never named


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    cell: str
    visible: float = 1.0  # share of its own pixels not covered by objects drawn over it


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


def _classic_scene(rng: np.random.Generator, img_size: int, max_objects: int) -> tuple[Image.Image, list]:
    """The original generator, unchanged (same images for the same seed): the demo bundle's training data."""
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


# Radius as a share of a cell's side, per size word and style: two bands with a gap, so the word is never moot.
SIZE_BANDS = {
    "varied": {"small": (0.15, 0.25), "large": (0.33, 0.48)},
    "shifted": {"small": (0.12, 0.2), "large": (0.4, 0.55)},
}


def _jitter_colour(rng: np.random.Generator, name: str, hue: float, value: tuple[float, float]) -> np.ndarray:
    """The named colour with its hue moved by at most `hue` of the circle (small enough to keep its name) and
    its saturation and brightness scaled."""
    import colorsys

    r, g, b = (c / 255 for c in COLOURS[name])
    h, sat, v = colorsys.rgb_to_hsv(r, g, b)
    h = (h + rng.uniform(-hue, hue)) % 1.0
    sat = min(1.0, sat * rng.uniform(0.75, 1.1))
    v = min(1.0, v * rng.uniform(*value))
    return np.array(colorsys.hsv_to_rgb(h, sat, v), np.float32) * 255


def _muted(rng: np.random.Generator, lo: int = 60, hi: int = 200) -> np.ndarray:
    base = rng.integers(lo, hi, size=3).astype(np.float32)
    return base.mean() + (base - base.mean()) * 0.3  # desaturated: never mistaken for a named colour


def _varied_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Plain, noise, gradient, stripes, blotches or clutter (grey lines and blobs), all desaturated."""
    kind = int(rng.integers(0, 6))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.broadcast_to(_muted(rng), (size, size, 3)).astype(np.float32)
    if kind == 1:
        img = img + rng.normal(0, rng.uniform(8, 25), size=(size, size, 1))
    elif kind == 2:
        angle = rng.uniform(0, 2 * math.pi)
        img = img + (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(-80, 80)
    elif kind == 3:
        freq, angle = rng.uniform(3, 16), rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        img = img + wave[..., None] * rng.uniform(8, 30)
    elif kind == 4:
        small = rng.normal(0, 30, size=(int(rng.integers(3, 9)),) * 2).astype(np.float32)
        img = img + np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR))[..., None]
    elif kind == 5:
        img = _clutter(rng, img, size)
    return img


def _clutter(rng: np.random.Generator, img: np.ndarray, size: int) -> np.ndarray:
    """Grey lines and blobs: things in the scene that are not named objects (they have no named colour)."""
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 10))):
        grey = int(rng.integers(30, 230))
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        if rng.random() < 0.6:
            draw.line([x0, y0, x1, y1], fill=(grey,) * 3, width=int(rng.integers(1, max(2, size // 40))))
        else:
            r = rng.uniform(0.02, 0.06) * size
            draw.ellipse([x0 - r, y0 - r * rng.uniform(0.4, 1), x0 + r, y0 + r], fill=(grey,) * 3)
    return np.asarray(pil).astype(np.float32)


def _shifted_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Backgrounds the varied style never draws: checkerboards, dot grids, rings, very pale or very dark."""
    kind = int(rng.integers(0, 4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b = _muted(rng, 40, 230), _muted(rng, 40, 230)
    if kind == 0:
        n = rng.uniform(3, 10)
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2)[..., None]
    elif kind == 1:
        n = rng.uniform(6, 14)
        t = ((((xx * n) % 1 - 0.5) ** 2 + ((yy * n) % 1 - 0.5) ** 2) < 0.04)[..., None].astype(np.float32)
    elif kind == 2:
        cx, cy, n = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(4, 12)
        t = (0.5 + 0.5 * np.sin(2 * math.pi * n * np.hypot(xx - cx, yy - cy)))[..., None]
    else:
        pale = rng.random() < 0.5
        a = b = np.full(3, rng.uniform(215, 245) if pale else rng.uniform(10, 40), np.float32)
        t = np.zeros((size, size, 1), np.float32)
    return a * (1 - t) + b * t


def _outline(shape: str, cx: float, cy: float, radius: float,
             rotation: float) -> list[tuple[float, float]]:
    if shape == "square":
        angles, radii = [math.pi / 4 + k * math.pi / 2 for k in range(4)], [radius * 0.88 * math.sqrt(2)] * 4
    elif shape == "triangle":
        angles, radii = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)], [radius] * 3
    else:  # star
        angles = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
        radii = [radius if k % 2 == 0 else radius * 0.45 for k in range(10)]
    pairs = zip(angles, radii, strict=True)
    return [(cx + r * math.cos(a + rotation), cy + r * math.sin(a + rotation)) for a, r in pairs]


@dataclass
class _Placed:
    obj: SceneObject
    colour: np.ndarray
    alpha: np.ndarray  # [S, S] coverage 0..1


def _place(rng: np.random.Generator, style: str, cell_index: int, size: int) -> _Placed:
    """One object drawn on its own coverage mask: continuous radius and centre inside its cell (with a margin,
    so the place word is never borderline); the shifted style supersamples (anti-aliasing), rotates, outlines."""
    shape, colour, word = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(SIZES))
    cell = size / 3
    row, col = divmod(cell_index, 3)
    radius = cell * rng.uniform(*SIZE_BANDS[style][word])
    cx, cy = (col + rng.uniform(0.25, 0.75)) * cell, (row + rng.uniform(0.25, 0.75)) * cell
    shifted = style == "shifted"
    k = 4 if shifted else 1
    rotation = rng.uniform(-0.5, 0.5) if shifted else 0.0
    hollow = shifted and rng.random() < 0.5 and word == "large"  # a small outline is too faint to name
    width = max(2, int(round(radius * k * 0.3)))
    mask = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        box = [(cx - radius) * k, (cy - radius) * k, (cx + radius) * k, (cy + radius) * k]
        draw.ellipse(box, fill=None if hollow else 255, outline=255 if hollow else None, width=width)
    else:
        pts = [(x * k, y * k) for x, y in _outline(shape, cx, cy, radius, rotation)]
        draw.polygon(pts, fill=None if hollow else 255, outline=255 if hollow else None, width=width)
    if k > 1:
        mask = mask.resize((size, size), Image.BOX)
    rgb = _jitter_colour(rng, colour, 0.025, (0.65, 1.0) if shifted else (0.75, 1.1))
    obj = SceneObject(shape, colour, word, CELLS[cell_index])
    return _Placed(obj, rgb, np.asarray(mask, np.float32) / 255)


def _visible(placed: list[_Placed]) -> list[_Placed]:
    """Drop objects that later ones hide too much (backwards: the last drawn is always whole)."""
    kept: list[_Placed] = []
    cover = np.zeros_like(placed[-1].alpha, bool)
    for p in reversed(placed):
        own = p.alpha > 0.5
        share = float((own & ~cover).sum() / max(1, own.sum()))
        if share >= MIN_VISIBLE:
            kept.append(_Placed(SceneObject(**{**p.obj.__dict__, "visible": round(share, 2)}), p.colour, p.alpha))
            cover |= own
    return kept[::-1]


def _camera(rng: np.random.Generator, img: np.ndarray, style: str) -> Image.Image:
    """Blur, sensor noise and JPEG artefacts, as a cheap camera adds them."""
    import io

    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < (0.3 if style == "shifted" else 0.5):
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0)))
    noisy = np.asarray(out, np.float32) + rng.normal(0, rng.uniform(0, 8), size=img.shape)
    out = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=int(rng.integers(60 if style == "shifted" else 30, 90)))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return out


def make_scene(rng: np.random.Generator, img_size: int = 160, max_objects: int | None = None,
               style: str = DEFAULT_STYLE) -> tuple[Image.Image, list[SceneObject]]:
    """One scene and the objects it shows (max_objects: 3 for classic, else 4)."""
    if style not in STYLES:
        raise ValueError(f"style {style!r} unknown; expected one of {STYLES}")
    if style == "classic":
        return _classic_scene(rng, img_size, max_objects or 3)
    n = int(rng.integers(1, (max_objects or 4) + 1))
    cells = rng.choice(len(CELLS), size=n, replace=False)
    img = (_shifted_background if style == "shifted" else _varied_background)(rng, img_size)
    placed = _visible([_place(rng, style, int(c), img_size) for c in cells])
    for p in placed:
        a = p.alpha[..., None]
        img = img * (1 - a) + p.colour * a
    return _camera(rng, img, style), [p.obj for p in placed]


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


def object_scores(captions: dict, scenes: list[dict], lang: str = "en") -> dict:
    """Object-level truth of the captions against what the scenes hold, each object a (colour, shape) pair:
    precision (1 - share of named objects that are not there: invented, or named with the wrong colour or
    shape), recall (share of the scene's objects named) and the share of scenes named exactly right (nothing
    missing, nothing invented). A scene with no caption names nothing."""
    named = matched = total = exact = 0
    for scene in scenes:
        want = [(o["colour"], o["shape"]) for o in scene["objects"]]
        got = parse_objects(captions.get(scene["image_id"], ""), lang)
        left = list(want)
        hits = 0
        for pair in got:
            if pair in left:
                left.remove(pair)
                hits += 1
        named, matched, total = named + len(got), matched + hits, total + len(want)
        exact += hits == len(want) == len(got)
    return {"scenes": len(scenes), "objects": total, "named": named, "invented": named - matched,
            "missing": total - matched, "precision": matched / named if named else 0.0,
            "recall": matched / total if total else 0.0, "exact_scenes": exact / len(scenes) if scenes else 0.0}


def scenes_beside(annotations: str | Path) -> Path | None:
    """scenes_SPLIT.json next to captions_SPLIT.json (what `scenecap synth` writes), if it is there."""
    p = Path(annotations)
    if not p.name.startswith("captions_"):
        return None
    scenes = p.with_name("scenes_" + p.name[len("captions_"):])
    return scenes if scenes.is_file() else None
