"""Check a dataset before training starts: every image exists and decodes, every caption has words, every image
has a caption. A clear summary; missing or unreadable images stop training unless --skip-missing says to go on.

Images are decoded for real (JPEG at a reduced scale via PIL's draft mode, which reads the whole stream but
is several times faster), so a truncated file is found here, not an hour into training.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from scenecap import ScenecapError
from scenecap.edge.errors import first_line
from scenecap.edge.images import open_image, quiet_pil_warnings
from scenecap.train.datasets import Sample
from scenecap.train.text import TextOptions, tokenize

log = logging.getLogger("scenecap.train")
SHOW = 5  # names listed in a summary


@dataclass
class ValidationReport:
    source: str
    images: int = 0
    captions: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "name (reason)"
    empty_captions: int = 0
    no_captions: list[str] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)  # PIL modes seen: CMYK, L, RGBA... all converted to RGB

    @property
    def bad_images(self) -> int:
        return len(self.missing) + len(self.unreadable)

    def bad_image_parts(self) -> list[str]:
        return [_some(names, what) for names, what in ((self.missing, "missing"), (self.unreadable, "unreadable"))
                if names]

    def summary(self) -> str:
        parts = [f"{self.source}: {self.images} images, {self.captions} captions", *self.bad_image_parts()]
        if self.empty_captions:
            parts.append(f"{self.empty_captions} empty captions dropped")
        if self.no_captions:
            parts.append(_some(self.no_captions, "images without captions dropped"))
        converted = {m: n for m, n in self.modes.items() if m != "RGB"}
        if converted:
            parts.append("converted to RGB: " + ", ".join(f"{n} {m}" for m, n in sorted(converted.items())))
        return "; ".join(parts)


def _some(names: list[str], what: str) -> str:
    return f"{len(names)} {what} (e.g. {', '.join(names[:SHOW])})"


def check_image(path) -> tuple[str | None, str | None]:
    """(PIL mode, None) if the image decodes, else (None, reason)."""
    if not os.path.isfile(path):
        return None, "missing"
    # The edge reader's header check: an image over MAX_PIXELS is refused before decoding, with Pillow's
    # own bomb warning kept off the terminal.
    with quiet_pil_warnings():
        try:
            with open_image(path) as im:
                w, h = im.size
                mode = im.mode
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))  # JPEG: decode at 1/8 scale; others: no-op
                im.load()
                return mode, None
        except ScenecapError as e:
            return None, str(e).removeprefix(f"{Path(path)}: ")  # the report names the file itself
        except (OSError, ValueError, SyntaxError) as e:
            return None, f"corrupt ({first_line(e, limit=60)})"


def validate(samples: list[Sample], source: str, text: TextOptions, skip_missing: bool = False,
             check_images: bool = True, progress: bool = True, workers: int = 4) -> tuple[list[Sample],
                                                                                          ValidationReport]:
    """(the samples fit to train on, the report). Raises ScenecapError when images are missing or unreadable
    and skip_missing is False, or when nothing is left."""
    report = ValidationReport(source, images=len(samples), captions=sum(len(s.captions) for s in samples))
    kept = []
    for s in samples:
        caps = [c for c in s.captions if tokenize(c, text)]
        report.empty_captions += len(s.captions) - len(caps)
        if not caps:
            report.no_captions.append(s.image.name)
            continue
        s.captions = caps
        kept.append(s)
    if check_images and kept:
        good = _decoding(kept, report, progress, workers)
        if report.bad_images and not skip_missing:
            raise ScenecapError(f"{source}: {' and '.join(report.bad_image_parts())} of {len(kept)} images under "
                                f"{kept[0].image.parent}; fix the paths (--images DIR) or pass --skip-missing to "
                                "train without them")
        kept = good
    log.info("%s", report.summary())
    if not kept:
        raise ScenecapError(f"{source}: no usable images with captions left after validation")
    return kept, report


def _decoding(samples: list[Sample], report: ValidationReport, progress: bool, workers: int) -> list[Sample]:
    """The samples whose image decodes; the others are counted in the report as missing or unreadable."""
    good = []
    results = _check_all([s.image for s in samples], progress, workers, report.source)
    for s, (mode, reason) in zip(samples, results, strict=True):
        if reason == "missing":
            report.missing.append(s.image.name)
        elif reason:
            report.unreadable.append(f"{s.image.name} ({reason})")
        else:
            report.modes[mode] = report.modes.get(mode, 0) + 1
            good.append(s)
    return good


def _check_all(paths, progress: bool, workers: int, source: str):
    # Decoding releases the GIL, so a few threads keep the disk and the cores busy.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        it = pool.map(check_image, paths, chunksize=32)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(paths), desc=f"checking {os.path.basename(source)}", unit="img",
                      disable=None, leave=False)
        return list(it)
