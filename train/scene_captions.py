"""What a synthetic scene holds and how it is said: the colours, shapes, sizes and places an object can have,
and the reference captions in each language (English and Arabic), worded from the objects drawn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

