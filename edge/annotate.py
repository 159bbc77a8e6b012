"""Frames with their caption drawn on them, and attention heat-maps per word, for `--save-annotated`.

Arabic is shaped (letters take their joined forms, with arabic-reshaper) and laid out right to left (python-bidi)
before drawing; the font is loaded with Pillow's basic layout so Pillow does not shape it a second time. The
shipped font, DejaVu Sans, has Latin and Arabic glyphs.
"""

from __future__ import annotations

import logging
import math
import os
import unicodedata
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scenecap.edge.errors import ScenecapError
from scenecap.edge.fileio import OutputError, atomic_write_bytes
from scenecap.edge.images import IMAGE_SUFFIXES
from scenecap.edge.preprocess import to_rgb_uint8
from scenecap.edge.video import VIDEO_SUFFIXES

log = logging.getLogger("scenecap.edge.annotate")

FONT_PATH = Path(__file__).resolve().parent / "fonts" / "DejaVuSans.ttf"
VIDEO_OUT_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov"}
IMAGE_OUT_SUFFIXES = {".jpg", ".jpeg", ".png"}
TILE = 160  # pixels per attention tile
MAX_SIDE = 1280  # annotated frames are scaled down to this, so a 4K camera does not write 4K JPEGs


@lru_cache(maxsize=16)
def load_font(size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(str(FONT_PATH), size, layout_engine=ImageFont.Layout.BASIC)
    except OSError:
        raise ScenecapError(f"{FONT_PATH}: font missing or unreadable; reinstall scenecap") from None


def is_rtl(text: str) -> bool:
    """True if the first strong character is right-to-left (Arabic, Hebrew...)."""
    for ch in text:
        d = unicodedata.bidirectional(ch)
        if d in ("R", "AL"):
            return True
        if d == "L":
            return False
    return False


def visual_text(text: str) -> str:
    """Logical-order text -> the glyph order to draw left to right: shaped and reordered when it is RTL."""
    if not any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in text):
        return text
    import arabic_reshaper
    from bidi.algorithm import get_display

    return get_display(arabic_reshaper.reshape(text), base_dir="R" if is_rtl(text) else "L")


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap in logical order (each line is reordered for display on its own)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(visual_text(trial)) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    if line:
        lines.append(line)
    return lines or [""]


def draw_caption(frame: np.ndarray, text: str, max_side: int = MAX_SIDE) -> np.ndarray:
    """RGB frame -> a copy with the caption in a dark band at the bottom (right-aligned if RTL)."""
    rgb = to_rgb_uint8(frame)
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        h, w = rgb.shape[:2]
    size = max(12, min(36, w // 22))
    font = load_font(size)
    pad = max(4, size // 3)
    lines = wrap(text, font, w - 2 * pad)
    line_h = int(size * 1.35)
    band = min(h, len(lines) * line_h + 2 * pad)
    img = Image.fromarray(rgb)
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).rectangle([0, h - band, w, h], fill=(0, 0, 0, 170))
    img = Image.alpha_composite(img.convert("RGBA"), overlay)
    draw = ImageDraw.Draw(img)
    rtl = is_rtl(text)
    y = h - band + pad
    for line in lines:
        shown = visual_text(line)
        x = w - pad - font.getlength(shown) if rtl else pad
        draw.text((x, y), shown, font=font, fill=(255, 255, 255, 255))
        y += line_h
    return np.asarray(img.convert("RGB"))


def heatmap(frame: np.ndarray, weights: np.ndarray, size: int = TILE) -> np.ndarray:
    """One word's attention over the feature grid, upsampled and blended over the frame (RGB, size x size)."""
    base = cv2.resize(to_rgb_uint8(frame), (size, size), interpolation=cv2.INTER_AREA)
    w = np.asarray(weights, np.float32).ravel()
    side = int(round(math.sqrt(w.size)))
    grid = w.reshape(side, side) if side * side == w.size else w.reshape(1, -1)
    rng = float(grid.max() - grid.min())
    norm = (grid - grid.min()) / rng if rng > 1e-12 else np.zeros_like(grid)
    up = cv2.resize(norm, (size, size), interpolation=cv2.INTER_CUBIC if min(grid.shape) > 1 else cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(up * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return (0.55 * base + 0.45 * colour).astype(np.uint8)


def attention_grid(frame: np.ndarray, words: list[str], attention: np.ndarray, tile: int = TILE,
                   columns: int = 4) -> np.ndarray:
    """The frame, then one heat-map tile per word with the word under it, in reading order (RTL for Arabic)."""
    attention = np.asarray(attention)
    n = min(len(words), len(attention))
    tiles = [(cv2.resize(to_rgb_uint8(frame), (tile, tile), interpolation=cv2.INTER_AREA), "")]
    tiles += [(heatmap(frame, attention[i], tile), words[i]) for i in range(n)]
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    label_h = max(18, tile // 7)
    font = load_font(label_h - 4)
    canvas = Image.new("RGB", (cols * tile, rows * (tile + label_h)), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    rtl = is_rtl(" ".join(words))
    for k, (img, word) in enumerate(tiles):
        r, c = divmod(k, cols)
        if rtl:
            c = cols - 1 - c
        x, y = c * tile, r * (tile + label_h)
        canvas.paste(Image.fromarray(img), (x, y))
        shown = visual_text(word)
        draw.text((x + (tile - font.getlength(shown)) / 2, y + tile + 1), shown, font=font, fill=(255, 255, 255))
    return np.asarray(canvas)


def encode_image(rgb: np.ndarray, suffix: str = ".jpg") -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ScenecapError(f"cannot encode an annotated frame as {suffix}")
    return buf.tobytes()


def safe_stem(source: str) -> str:
    """A file name (no extension) from a frame's source: 'cam/x.jpg' -> 'x', 'walk.mp4#frame=12' -> 'walk_frame12',
    'camera:0#frame=3' -> 'camera_0_frame3'. The image's own extension is dropped, so the annotated JPEG of
    x.jpg is NNNNNN_x.jpg (not x.jpg.jpg); the running number keeps x.jpg and x.png apart."""
    base, _, frame = source.replace("\\", "/").rstrip("/").split("/")[-1].partition("#frame=")
    suffix = Path(base).suffix
    if suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:  # the frame's own extension
        base = base[: -len(suffix)]
    name = f"{base}_frame{frame}" if frame else base
    keep = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name).lstrip(".")
    return keep[:120] or "frame"


class AnnotatedWriter:
    """`--save-annotated DIR`: one JPEG per caption (plus an attention grid per caption with `attention`).
    `--save-annotated out.mp4`: every frame the loop sees, with the latest caption drawn, as a video, written to a
    temporary name beside it and moved into place only once it is complete and plays back with every frame, so a
    full disk or a crash never replaces a good earlier video with a broken one.

    A write that fails raises OutputError (one line naming the target); the loop reports it and captions on."""

    def __init__(self, target: str | Path, attention: bool = False, fps: float | None = None):
        self.target = Path(target)
        self.attention = attention
        self.fps = fps or 10.0
        self.video = self.target.suffix.lower() in VIDEO_OUT_SUFFIXES
        self.count = 0
        self.frames_written = 0
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._last_text = ""
        self._tmp: Path | None = None
        if self.video:
            if not self.target.parent.is_dir():
                raise ScenecapError(f"--save-annotated {self.target}: folder {self.target.parent} does not exist")
            self.grid_dir = self.target.with_name(self.target.stem + "_attention")
        else:
            if self.target.suffix.lower() in IMAGE_OUT_SUFFIXES:
                raise ScenecapError(f"--save-annotated {self.target}: expected a folder or a video file "
                                    f"({', '.join(sorted(VIDEO_OUT_SUFFIXES))})")
            self.grid_dir = self.target
        folders = ([] if self.video else [self.target]) + ([self.grid_dir] if attention else [])
        for folder in folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ScenecapError(f"--save-annotated {self.target}: cannot create the folder {folder} "
                                    f"({e.strerror})") from None

    def _write(self, path: Path, data: bytes) -> None:
        try:
            atomic_write_bytes(path, data)
        except OSError as e:  # a full disk or a read-only card: nothing half-written is left (atomic)
            raise OutputError(f"--save-annotated {self.target}: cannot write {path.name} "
                              f"({(e.strerror or type(e).__name__).lower()}); {self.count} written before") from None

    def captioned(self, frame_source: str, frame: np.ndarray, caption) -> None:
        """A frame that was just captioned: saved (folder) or starts showing the new caption (video)."""
        self._last_text = caption.text
        stem = f"{self.count:06d}_{safe_stem(frame_source)}"
        if not self.video:
            self._write(self.target / f"{stem}.jpg", encode_image(draw_caption(frame, caption.text)))
        if self.attention and len(caption.words):
            grid = attention_grid(frame, caption.words, caption.attention)
            self._write(self.grid_dir / f"{stem}_attention.jpg", encode_image(grid))
        self.count += 1

    def seen(self, frame: np.ndarray) -> None:
        """Every frame the loop looked at: a video gets it with the latest caption drawn."""
        if not self.video:
            return
        img = draw_caption(frame, self._last_text) if self._last_text else to_rgb_uint8(frame)
        if self._writer is None:
            self._open(img.shape[1], img.shape[0])
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(img[:, :, ::-1]))
        self.frames_written += 1

    def _open(self, w: int, h: int) -> None:
        self._size = (w - w % 2, h - h % 2)  # most codecs want even sizes
        self._tmp = self.target.with_name(f".{self.target.stem}.partial{self.target.suffix}")
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.target.suffix.lower() in (".mp4", ".mov") else "MJPG"))
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(self.fps), self._size)
        if not self._writer.isOpened():
            self._writer = None
            why = "the folder is not writable" if not os.access(self.target.parent, os.W_OK) else \
                "OpenCV cannot write this video format here"
            _remove(self._tmp)
            self._tmp = None
            raise OutputError(f"--save-annotated {self.target}: cannot start the video ({why})")

    def close(self) -> None:
        """Finish the video: moved into place only if it reads back whole; else the earlier file stays."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        tmp, self._tmp = self._tmp, None
        try:
            problem = _video_problem(tmp, self.frames_written)
            if problem is None:
                os.replace(tmp, self.target)
                return
        except OSError as e:
            problem = (e.strerror or type(e).__name__).lower()
        _remove(tmp)
        kept = "the earlier file is kept" if self.target.exists() else "nothing was written"
        raise OutputError(f"--save-annotated {self.target}: the video could not be completed ({problem}); {kept}")

    def abandon(self) -> None:
        """Stop without finishing: the partial video is removed, an earlier one at the target is left alone."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None:
            _remove(self._tmp)
            self._tmp = None


def _remove(path: Path) -> None:
    """Remove a partial file if it is there; on a read-only or failing disk there is nothing more to do."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _video_problem(path: Path, frames: int) -> str | None:
    """None if `path` is a video that plays back with all `frames` frames (synced to disk), else what is wrong.
    OpenCV's writer does not report a full disk: reading the file back is the only way to know."""
    if not path.is_file() or path.stat().st_size == 0:
        return "the file is empty: is the disk full?"
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # on the card before it replaces the earlier video
    finally:
        os.close(fd)
    cap = cv2.VideoCapture(str(path))
    try:
        found = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        ok = cap.isOpened() and cap.read()[0]
    finally:
        cap.release()
    if not ok or found != frames:
        return f"it reads back with {found} of {frames} frames: is the disk full?"
    return None
