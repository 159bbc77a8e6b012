"""Write the demo's sample frames and video (run once; the outputs are committed in demo/frames, demo/video).

Scenes come from the synthetic generator with a seed the demo model never trained on, in the style it was trained
on (build_bundle.STYLE: rerun this when the bundle is rebuilt on another style). The video holds four scenes of
three seconds each, so a scene-change detector should fire at 0 s, 3 s, 6 s and 9 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from build_bundle import STYLE  # the shipped bundle's training style: the frames are drawn in it

from scenecap.train.synthetic import captions_for, make_scene

HERE = Path(__file__).resolve().parent
SEED = 20261125


def main() -> None:
    rng = np.random.default_rng(SEED)
    frames = HERE / "frames"
    frames.mkdir(exist_ok=True)
    truth = {}
    for i in range(6):
        img, objects = make_scene(rng, img_size=320, style=STYLE)
        name = f"scene_{i + 1}.jpg"
        img.save(frames / name, quality=90)
        truth[name] = {"objects": [o.__dict__ for o in objects], "references": captions_for(objects, "en", rng)}
    video_dir = HERE / "video"
    video_dir.mkdir(exist_ok=True)
    fps, seconds, size = 10, 3, 240
    writer = cv2.VideoWriter(str(video_dir / "walk.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    cuts = []
    for k in range(4):
        img, objects = make_scene(rng, img_size=size, style=STYLE)
        cuts.append({"start_s": k * seconds, "objects": [o.__dict__ for o in objects]})
        base = np.asarray(img)[:, :, ::-1]
        for f in range(fps * seconds):
            # A slight camera shake and sensor noise: the scene must not "change" between cuts.
            shift = np.float32([[1, 0, np.sin(f / 3.0) * 2], [0, 1, np.cos(f / 4.0) * 2]])
            moved = cv2.warpAffine(base, shift, (size, size), borderMode=cv2.BORDER_REFLECT)
            noisy = np.clip(moved + rng.normal(0, 3, moved.shape), 0, 255).astype(np.uint8)
            writer.write(noisy)
    writer.release()
    (HERE / "samples.json").write_text(json.dumps({"frames": truth, "video": {"walk.mp4": cuts}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
