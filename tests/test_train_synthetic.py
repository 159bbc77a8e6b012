"""The synthetic generator's styles and the training augmentation: what must not matter varies, captions stay true
(place and size words from the drawn geometry), the shifted style differs from the training one, and a flip
swaps left and right only where the language says how."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from scenecap.train.synthetic import CELLS, LEXICON, SIZE_BANDS, STYLES, generate, make_scene


def _objects(style: str, seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    return [make_scene(rng, 96, style=style) for _ in range(n)]


@pytest.mark.parametrize("style", STYLES)
def test_every_style_is_deterministic_by_seed(style):
    a, b = _objects(style, 3, 5), _objects(style, 3, 5)
    for (img_a, obj_a), (img_b, obj_b) in zip(a, b, strict=True):
        assert np.array_equal(np.asarray(img_a), np.asarray(img_b)) and obj_a == obj_b
    assert not np.array_equal(np.asarray(a[0][0]), np.asarray(_objects(style, 4, 1)[0][0]))


def test_varied_scenes_hold_one_to_four_visible_objects_in_distinct_cells():
    counts = set()
    for _, objects in _objects("varied", 1, 120):
        counts.add(len(objects))
        assert len({o.cell for o in objects}) == len(objects)
        assert all(o.visible >= 0.6 for o in objects)  # an object too hidden to name is not drawn
    assert counts == {1, 2, 3, 4}


def _hue(rgb) -> tuple[np.ndarray, np.ndarray]:
    """(hue in [0, 1), saturation) per pixel."""
    from PIL import Image

    hsv = np.asarray(Image.fromarray(np.asarray(rgb, np.uint8)).convert("HSV")).astype(float) / 255
    return hsv[..., 0], hsv[..., 1]


def test_each_named_object_is_drawn_where_its_words_say():
    """Pixels of the named colour's hue (saturated: backgrounds are muted) are in the object's cell; size words
    come from two radius bands with a gap between them."""
    import colorsys

    from scenecap.train.synthetic import COLOURS

    for style in ("varied", "broad", "shifted"):
        for img, objects in _objects(style, 5, 40):
            a = np.asarray(img)
            cell = a.shape[0] / 3
            for o in objects:
                row, col = divmod(CELLS.index(o.cell), 3)
                patch = a[int(row * cell):int((row + 1) * cell), int(col * cell):int((col + 1) * cell)]
                hue, sat = _hue(patch)
                want = colorsys.rgb_to_hsv(*(c / 255 for c in COLOURS[o.colour]))[0]
                near = (np.minimum(abs(hue - want), 1 - abs(hue - want)) < 0.05) & (sat > 0.4)
                assert near.mean() > 0.005, (style, o)  # it is drawn in the cell its place word names
    for style in ("varied", "broad", "shifted"):
        assert SIZE_BANDS[style]["small"][1] < SIZE_BANDS[style]["large"][0]  # a gap: no borderline size


def test_broad_style_spans_the_sizes_and_backgrounds_a_camera_meets():
    """Sizes from tiny to spilling into the next cell (shifted's included), and backgrounds from near-black to
    near-white, every one of them desaturated so it is never taken for a named colour."""
    for word in ("small", "large"):
        lo, hi = SIZE_BANDS["broad"][word]
        assert lo <= SIZE_BANDS["shifted"][word][0] and SIZE_BANDS["shifted"][word][1] <= hi
    brightness, chroma = [], []
    for img, objects in _objects("broad", 9, 300):
        a = np.asarray(img).astype(float)
        cell = a.shape[0] // 3
        free = [c for c in range(9) if CELLS[c] not in {o.cell for o in objects}]
        row, col = divmod(free[0], 3)  # scenes hold at most 4 objects: a cell of pure background
        patch = a[row * cell + 8:(row + 1) * cell - 8, col * cell + 8:(col + 1) * cell - 8]
        brightness.append(patch.mean())
        chroma.append(np.median(patch.max(axis=-1) - patch.min(axis=-1)))
    assert min(brightness) < 40 and max(brightness) > 215
    assert max(chroma) < 90  # a named colour's is 150-210 levels, about 100 at its darkest


def test_shifted_style_draws_differently_from_the_training_style():
    """Outlines: many shifted objects leave their centre the background's colour; varied ones are filled."""
    def hollow_share(style, n=60):
        from scenecap.train.synthetic import COLOURS

        hollow = total = 0
        for img, objects in _objects(style, 8, n):
            a = np.asarray(img).astype(float)
            cell = a.shape[0] / 3
            for o in objects:
                if o.size != "large" or len(objects) > 1:
                    continue
                total += 1
                row, col = divmod(CELLS.index(o.cell), 3)
                cy, cx = int((row + 0.5) * cell), int((col + 0.5) * cell)
                centre = a[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
                hollow += np.linalg.norm(centre - np.array(COLOURS[o.colour], float)) > 90
        return hollow / max(1, total)

    assert hollow_share("shifted") > hollow_share("varied") + 0.2
    # broad trains on outlines too (a third of the large shapes): seen over more scenes, since it has fewer
    assert hollow_share("broad", 400) > hollow_share("varied", 400) + 0.05


def test_synth_command_writes_the_style_and_the_truth(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "scenecap", "synth", str(tmp_path / "s"), "--train", "0", "--val",
                        "0", "--test", "4", "--style", "shifted", "--size", "64"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-1000:]
    info = json.loads((tmp_path / "s" / "captions_test.json").read_text(encoding="utf-8"))["info"]
    assert "shifted style" in info["description"]
    scenes = json.loads((tmp_path / "s" / "scenes_test.json").read_text(encoding="utf-8"))
    assert len(scenes) == 4 and all(s["objects"] for s in scenes)
    bad = subprocess.run([sys.executable, "-m", "scenecap", "synth", str(tmp_path / "t"), "--style", "cartoon"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid choice: 'cartoon'" in bad.stderr
    helptext = subprocess.run([sys.executable, "-m", "scenecap", "synth", "--help"], capture_output=True, text=True)
    assert all(style in helptext.stdout for style in STYLES)


def test_classic_style_is_the_demo_bundle_s_generator(tmp_path):
    """The shipped bundle's training images are reproducible: classic draws what the generator drew before."""
    d = generate(tmp_path / "c", n_train=0, n_val=0, n_test=3, seed=1, style="classic", img_size=64)
    scenes = json.loads((d / "scenes_test.json").read_text(encoding="utf-8"))
    assert all(1 <= len(s["objects"]) <= 3 for s in scenes)


# --- augmentation ---------------------------------------------------------------------------------------------

def test_flip_swaps_left_and_right_in_english_and_arabic():
    from scenecap.train.pipeline import can_flip, flip_words
    from scenecap.train.text import TextOptions, tokenize

    en = tokenize("A red circle on the left and a blue star at the top right.", TextOptions())
    assert flip_words(en, "en") == "a red circle on the right and a blue star at the top left".split()
    # The Arabic words the synthetic captions use for left and right, as tokenised
    where = LEXICON["ar"]["where"]
    ar = tokenize(f"دائرة حمراء {where['left']} و نجمة زرقاء {where['top right']}", TextOptions())
    flipped = flip_words(ar, "ar")
    assert " ".join(flipped) == f"دائرة حمراء {where['right']} و نجمة زرقاء {where['top left']}"
    assert flip_words(flipped, "ar") == ar
    assert not can_flip("fr") and not can_flip(None)


def test_augmentation_is_off_by_default():
    from scenecap.train.config import AugmentConfig, TrainConfig

    cfg = TrainConfig(train="x.json")
    assert cfg.augment == AugmentConfig() and not (cfg.augment.colour or cfg.augment.crop or cfg.augment.flip)
    assert cfg.to_dict()["augment"] == {"colour": False, "crop": False, "flip": False}


def test_train_options_turn_augmentation_on_and_config_files_too():
    import argparse

    from scenecap.train.cli import register, resolve_train_config
    from scenecap.train.config import build_config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "t.json", "--augment-flip", "--augment-colour"])
    cfg = resolve_train_config(args)
    assert cfg.augment.flip and cfg.augment.colour and not cfg.augment.crop
    assert build_config({"train": "t.json", "augment": {"crop": True}}).augment.crop


def test_flipped_batches_mirror_the_image_and_swap_the_words(tmp_path, caplog):
    """Through the real tf.data pipeline: a mirrored image comes with its caption read the mirrored way."""
    from PIL import Image

    from scenecap.edge.preprocess import PreprocessSpec
    from scenecap.train.config import AugmentConfig
    from scenecap.train.datasets import Sample
    from scenecap.train.pipeline import CaptionData, encode_captions, flipped_captions
    from scenecap.train.text import TextOptions, build_vocab, tokenize

    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :8] = 255  # white on the left
    samples = []
    for i in range(16):
        path = tmp_path / f"{i}.png"
        Image.fromarray(img).save(path)
        samples.append(Sample(path, ["a white bar on the left"], i))
    vocab = build_vocab([tokenize("a white bar on the left"), tokenize("on the right")])
    enc = encode_captions(samples, vocab, 10, TextOptions())
    aug = AugmentConfig(flip=True)
    flipped = flipped_captions(samples, vocab, 10, TextOptions(), aug, "en")
    spec = PreprocessSpec(32, 32, "area")
    data = CaptionData(len(samples), enc, 16, seed=3, shuffle=False, drop_remainder=False, paths=[str(s.image)
                       for s in samples], spec=spec, augment=aug, flipped=flipped)
    (images, _), targets = next(iter(data.epoch(0)))
    specials = set(vocab.ids.values())
    words = [" ".join(vocab.decode([t for t in row if t not in specials])) for row in targets.numpy()]
    mirrored = images.numpy()[:, :, -8:].mean(axis=(1, 2, 3)) > 200
    assert 0 < mirrored.sum() < len(samples)  # some flipped, some not
    for m, w in zip(mirrored, words, strict=True):
        assert w == ("a white bar on the right" if m else "a white bar on the left")
    plain = CaptionData(len(samples), enc, 16, seed=3, shuffle=False, drop_remainder=False,
                        paths=[str(s.image) for s in samples], spec=spec)
    (images, _), _ = next(iter(plain.epoch(0)))
    assert (images.numpy()[:, :, :8].mean(axis=(1, 2, 3)) > 200).all()  # off: nothing mirrored
    with caplog.at_level(logging.INFO, logger="scenecap.train"):
        assert flipped_captions(samples, vocab, 10, TextOptions(), aug, "fr") is None
    assert "augment.flip skipped: no left/right lexicon for language 'fr'" in caplog.text
