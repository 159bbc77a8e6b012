"""Reading a synthetic scene's objects back out of a caption, to score a model: which (colour, shape) pairs and
places a caption names, against what the scene (scenes_SPLIT.json) holds."""

from __future__ import annotations

from pathlib import Path

from scenecap.train.scene_captions import LEXICON


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
