"""Images the demo model never trained on, and what the cane's confidence gate makes of them.

Two out-of-distribution sets, both offline: real photographs and micrographs that scikit-image's wheel ships
(each also as four corner crops), and procedural non-scenes (noise, rendered text, gradients, 1/f textures, flat
colours). `outlier_exposure` gives other real pictures, disjoint from both, for `scenecap calibrate
--outlier-images`. The figures made of them (the share unsure, confidently wrong, the familiarity AUROC) are the
quality report's: scenecap.convert.report_trust.
"""

from __future__ import annotations

import importlib.resources

import numpy as np
from PIL import Image, ImageDraw

PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg", "coins.png", "moon.png", "ihc.png", "clock_motion.png",
          "page.png", "horse.png", "cell.png", "microaneurysms.png"]
PROCEDURAL = ("noise", "text", "gradient", "texture", "flat")


def photographs() -> dict[str, np.ndarray]:
    """scikit-image's photographs (RGB), each whole and as its four corner crops of half the short side."""
    root = importlib.resources.files("skimage") / "data"
    out = {}
    for name in PHOTOS:
        with importlib.resources.as_file(root / name) as p:
            im = np.asarray(Image.open(p).convert("RGB"))
        h, w = im.shape[:2]
        s = min(h, w) // 2
        out[name] = im
        for i, (y, x) in enumerate([(0, 0), (0, w - s), (h - s, 0), (h - s, w - s)]):
            out[f"{name}#crop{i}"] = im[y:y + s, x:x + s]
    return out


# Outlier exposure (`scenecap calibrate --outlier-images`): real pictures for the gate to learn "not a scene" from,
# none of them in PHOTOS (what the gate is judged on) and none procedural (the non-scenes it is judged on).
OUTLIER_SOURCES = ["brick.png", "grass.png", "gravel.png", "color.png"]  # scikit-image's, beside matplotlib's photo


def outlier_exposure(crops: int = 40, faces: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Pictures the demo bundle must be unsure of, disjoint from photographs() and procedural(): random square
    crops (a quarter of the short side to all of it, half of them mirrored) of scikit-image's brick, grass,
    gravel and colour-wheel pictures and of matplotlib's portrait of Grace Hopper, and `faces` of the
    scikit-image wheel's Labeled Faces in the Wild thumbnails."""
    rng = np.random.default_rng(seed)
    root = importlib.resources.files("skimage") / "data"
    sources = {}
    for name in OUTLIER_SOURCES:
        with importlib.resources.as_file(root / name) as p:
            sources[name] = np.asarray(Image.open(p).convert("RGB"))
    hopper = importlib.resources.files("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    with importlib.resources.as_file(hopper) as p:
        sources["grace_hopper.jpg"] = np.asarray(Image.open(p).convert("RGB"))
    out = {}
    for name, im in sources.items():
        h, w = im.shape[:2]
        for k in range(crops):
            s = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crop = im[y:y + s, x:x + s]
            out[f"{name}#crop{k}"] = np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)
    with importlib.resources.as_file(root / "lfw_subset.npy") as p:
        thumbs = np.load(p, allow_pickle=False)
    for k, face in enumerate(thumbs[:faces]):
        grey = (np.clip(face, 0, 1) * 255).astype(np.uint8)
        out[f"lfw_{k:03d}"] = np.repeat(grey[:, :, None], 3, axis=2)
    return out


def _text(rng: np.random.Generator) -> np.ndarray:
    img = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(150, 256, 3)))
    draw = ImageDraw.Draw(img)
    for line in range(6):
        words = "".join(rng.choice(list("abcdefghij klmnop")) for _ in range(14))
        draw.text((2, 2 + 15 * line), words, fill=tuple(int(v) for v in rng.integers(0, 100, 3)))
    return np.asarray(img)


def _gradient(rng: np.random.Generator, vertical: bool) -> np.ndarray:
    a, b = rng.integers(0, 256, (2, 3))
    t = np.linspace(0, 1, 96)[:, None, None] if vertical else np.linspace(0, 1, 96)[None, :, None]
    return np.broadcast_to(a + (b - a) * t, (96, 96, 3)).astype(np.uint8)


def _texture(rng: np.random.Generator) -> np.ndarray:
    """1/f noise: the spectrum of natural images, with nothing in it."""
    f = np.fft.fft2(rng.normal(size=(96, 96, 3)), axes=(0, 1))
    ky, kx = np.meshgrid(np.fft.fftfreq(96), np.fft.fftfreq(96), indexing="ij")
    t = np.real(np.fft.ifft2(f / (np.sqrt(kx ** 2 + ky ** 2) + 0.02)[..., None] ** 1.2, axes=(0, 1)))
    return ((t - t.min()) / (t.max() - t.min()) * 255).astype(np.uint8)


def procedural(n: int = 40, seed: int = 5) -> dict[str, np.ndarray]:
    """n non-scenes, the kinds in turn."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        kind = PROCEDURAL[i % len(PROCEDURAL)]
        if kind == "noise":
            im = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        elif kind == "text":
            im = _text(rng)
        elif kind == "gradient":
            im = _gradient(rng, vertical=i % 2 == 0)
        elif kind == "texture":
            im = _texture(rng)
        else:
            im = np.full((96, 96, 3), rng.integers(0, 256, 3), np.uint8)
        out[f"{kind}_{i:02d}"] = im
    return out
