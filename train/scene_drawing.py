"""Drawing one synthetic scene: a background, the objects (each in its own grid cell), and what a cheap camera adds.
The styles are described in synthetic.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from scenecap.train.scene_captions import CELLS, COLOURS, SHAPES, SIZES, SceneObject

STYLES = ("varied", "broad", "shifted", "classic")
DEFAULT_STYLE = "varied"
MIN_VISIBLE = 0.6  # an object less visible than this (occluded by later ones) is not drawn, so never named


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
# broad spans every size a shape can have in its cell, from the smallest a 128 px model input still resolves to
# one that spills into its neighbours: trained on varied's narrow bands, the demo model missed smaller shapes and
# split larger ones in two (shifted scenes redrawn at varied's sizes: 60.5% -> 80.5% named exactly right). At a
# 96 px input a radius of 0.1 is 3 pixels: a model trained down to it named small triangles right in 45% of cases.
SIZE_BANDS = {
    "varied": {"small": (0.15, 0.25), "large": (0.33, 0.48)},
    "broad": {"small": (0.12, 0.25), "large": (0.33, 0.6)},
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


def _broad_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """varied's backgrounds, plain ones from near-black to near-white (a dark room, a white wall), and fractal
    noise, smooth or cut into two tones (stone, foliage, carpet): all desaturated."""
    kind = int(rng.integers(0, 8))
    if kind == 6:
        return np.broadcast_to(_muted(rng, 10, 246), (size, size, 3)).astype(np.float32)
    if kind == 7:
        return _fractal(rng, size)
    return _varied_background(rng, size)


def _fractal(rng: np.random.Generator, size: int) -> np.ndarray:
    noise = np.zeros((size, size), np.float32)
    for octave in range(int(rng.integers(2, 5))):
        cells = 2 ** (octave + 2)
        layer = rng.normal(0, 1, size=(cells, cells)).astype(np.float32)
        noise += np.asarray(Image.fromarray(layer).resize((size, size), Image.BICUBIC)) / 1.6 ** octave
    t = (noise > np.median(noise)).astype(np.float32) if rng.random() < 0.5 else \
        np.clip(0.5 + noise / (4 * noise.std() + 1e-6), 0, 1)
    a, b = _muted(rng, 20, 236), _muted(rng, 20, 236)
    return a * (1 - t[..., None]) + b * t[..., None]


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


def _pose(rng: np.random.Generator, style: str, word: str) -> tuple[int, float, bool]:
    """(supersampling, rotation in radians, outlined) of one object. varied: sharp, upright, filled. broad: any
    rotation, a third of the large ones outlined, half anti-aliased (none changes what the shape is called).
    shifted: always anti-aliased, tilted by up to 0.5 rad, half the large ones outlined."""
    if style == "broad":
        return (4 if rng.random() < 0.5 else 1), rng.uniform(-math.pi, math.pi), \
            bool(rng.random() < 1 / 3 and word == "large")  # a small outline is too faint to name
    if style == "shifted":
        return 4, rng.uniform(-0.5, 0.5), bool(rng.random() < 0.5 and word == "large")
    return 1, 0.0, False


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
    k, rotation, hollow = _pose(rng, style, word)
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
    img = {"shifted": _shifted_background, "broad": _broad_background}.get(style, _varied_background)(rng, img_size)
    placed = _visible([_place(rng, style, int(c), img_size) for c in cells])
    for p in placed:
        a = p.alpha[..., None]
        img = img * (1 - a) + p.colour * a
    return _camera(rng, img, style), [p.obj for p in placed]

