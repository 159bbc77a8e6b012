"""The models a benchmark run measures, built once and kept in a work folder (default build/bench/).

Two model sets ("dims"), each a Keras model for the baselines plus one bundle per quantisation:
  synth     the synthetic-scenes captioner: a training run you pass (--synth-run), else a small one trained here
            in minutes (800 scenes, 3 epochs) at the demo model's dimensions (MobileNetV2 alpha 1.0 at 128 px, GRU 256)
  original  the replaced system's dimensions (MobileNetV2 alpha 1.4 at 224 px, 49x1792 features, embedding 256,
            GRU 512, vocabulary 26556) with random weights in its original file layout, imported with
            `scenecap import-seed`'s code and converted with `scenecap convert`'s (`scenecap bench --vocab-limit N`:
            imported again with `--vocab-limit N`, in a folder of its own, and measured beside the full bundles)

Each set's folder holds recipe.json (everything that determines its contents); a later run with the same recipe
reuses the folder, so the slow conversions happen once, and the folder can be copied to a Raspberry Pi to measure
the same bundles there without TensorFlow. Its bundles are converted again when the converter's code has changed
since (bundles/converter.sha256: a bench after a converter change measures what `scenecap convert` now writes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenecap import ScenecapError, __version__
from scenecap.edge.fileio import atomic_write_text

log = logging.getLogger("scenecap.bench")

DIMS = ("synth", "original")
# ENC-DEC names a mixed pair: int8-dynamic (the recommended CPU bundle, the demo's) or int8-int16x8.
CPU_VARIANTS = ("float32", "float16", "dynamic", "int8", "int8-dynamic", "int8-int16x8")
# The demo bundle's dimensions (demo/build_bundle.py): what the synthetic-scenes model ships as.
SYNTH_MODEL = dict(image_size=128, alpha=1.0, feature_stride=8, embed_dim=128, units=256, attention_units=128,
                   fc_units=256, max_length=40)
# --quick: the test suite's tiny model, 64 scenes, 1 epoch.
QUICK_MODEL = dict(image_size=64, alpha=0.35, feature_stride=8, embed_dim=64, units=128, attention_units=64,
                   fc_units=128, max_length=16)
RECIPE = "recipe.json"
DONE = ".done"
CONVERTER_STAMP = "converter.sha256"


@dataclass
class ModelSet:
    """One set of models at one set of dimensions: what the workers need to load them."""

    dims: str  # synth | original
    folder: Path
    bundles: dict[str, Path]  # variant -> bundle folder
    keras: dict | None  # how the TensorFlow worker rebuilds the Keras model ({"kind": "run"|"seed", ...}); None: none
    frame: Path  # the camera-sized frame every stage is measured on (JPEG)
    files: dict[str, list[Path]] = field(default_factory=dict)  # baseline name -> its weight files (for sizes)
    notes: list[str] = field(default_factory=list)  # e.g. why a variant is missing

    def to_json(self) -> dict:
        return {"dims": self.dims, "folder": str(self.folder), "bundles": {k: str(v) for k, v in self.bundles.items()},
                "keras": self.keras, "frame": str(self.frame),
                "files": {k: [str(p) for p in v] for k, v in self.files.items()}, "notes": self.notes}


# --- shared helpers ---------------------------------------------------------------------------------------------


def write_frame(path: Path, seed: int = 0, size: tuple[int, int] = (640, 480)) -> Path:
    """A camera-sized (640x480) synthetic street-like scene as JPEG: what a Pi camera hands the captioner."""
    import cv2

    from scenecap.train.synthetic import make_scene  # PIL and numpy only

    rng = np.random.default_rng(seed)
    img = np.asarray(make_scene(rng, 480)[0])
    w, h = size
    frame = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ScenecapError(f"{path}: could not encode the benchmark frame")
    path.write_bytes(buf.tobytes())
    return path


def _recipe_matches(folder: Path, recipe: dict) -> bool:
    try:
        old = json.loads((folder / RECIPE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return old == recipe and (folder / DONE).exists()


def _need_tensorflow(folder: Path, what: str) -> None:
    if importlib.util.find_spec("tensorflow") is None:
        raise ScenecapError(
            f"{folder}: {what} and TensorFlow is not installed here; build it on a workstation with "
            "'scenecap bench --prepare-only' (same --dims and --variants) and copy the work folder here"
        )


def _base_ready(folder: Path, recipe: dict, rebuild: bool) -> bool:
    """True if the folder holds this recipe's model (else it is emptied for a new one, TensorFlow permitting)."""
    if not rebuild and _recipe_matches(folder, recipe):
        log.info("%s: reusing its model (same recipe; --rebuild to make it again)", folder)
        return True
    _need_tensorflow(folder, "no model for this recipe yet" if not rebuild else "--rebuild asked")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_write_text(folder / RECIPE, json.dumps(recipe, indent=2))
    return False


def _bundle_dirs(folder: Path, variants: list[str]) -> dict[str, Path]:
    return {v: folder / "bundles" / v for v in variants}


def _notes(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / "notes.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def converter_code() -> str:
    """sha256 over the converter's source (scenecap.convert): bundles it wrote differ when it differs."""
    import scenecap.convert

    h = hashlib.sha256()
    for f in sorted(Path(scenecap.convert.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _drop_stale_bundles(folder: Path) -> None:
    """Remove folder/bundles if another converter wrote them and this machine can convert again (a folder copied
    to a Pi, with no TensorFlow, keeps its bundles: they are what it was copied to measure)."""
    bundles, code = folder / "bundles", converter_code()
    try:
        stamp = (bundles / CONVERTER_STAMP).read_text(encoding="utf-8").strip()
    except OSError:
        stamp = None
    if not bundles.is_dir() or stamp == code:
        return
    if importlib.util.find_spec("tensorflow") is None:
        log.warning("%s: its bundles were converted by other converter code; measuring them as they are", folder)
        return
    log.info("%s: its bundles were converted by other converter code; converting them again", folder)
    shutil.rmtree(bundles)


def ensure_variants(folder: Path, export: Path, variants: list[str], calibration: str | None, count: int) -> None:
    """Convert the variants that are not in folder/bundles yet (all of them after a converter change), each model
    once; Edge TPU notes to notes.json."""
    _drop_stale_bundles(folder)
    missing = [v for v in variants if not (folder / "bundles" / v / "manifest.json").is_file()]
    if not missing:
        return
    _need_tensorflow(folder, f"no {', '.join(missing)} bundle yet")
    from scenecap.convert.run import ConvertOptions, convert_variants

    t0 = time.perf_counter()
    log.info("%s: converting %s (the first time only; minutes at the original dimensions)", folder,
             ", ".join(missing))
    tmp = folder / "bundles.new"
    shutil.rmtree(tmp, ignore_errors=True)
    results = convert_variants(ConvertOptions(export=str(export), out=str(tmp), calibration_images=calibration,
                                              calibration_count=count, force=True, progress=False),
                               [tuple(v.split("-")) if "-" in v else (v, v) for v in missing])
    (folder / "bundles").mkdir(exist_ok=True)
    notes = _notes(folder)
    for v, res in zip(missing, results, strict=True):
        dest = folder / "bundles" / v
        shutil.rmtree(dest, ignore_errors=True)
        res.path.rename(dest)  # tmp/<variant>, or tmp itself when it is the only one
        if res.edgetpu:
            notes[v] = res.edgetpu
    shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(folder / "notes.json", json.dumps(notes, indent=2))
    atomic_write_text(folder / "bundles" / CONVERTER_STAMP, converter_code() + "\n")
    log.info("%s: converted in %.0f s", folder, time.perf_counter() - t0)


# --- synthetic-scenes model ------------------------------------------------------------------------------------


def synth_set(work: Path, variants: list[str], quick: bool, run: str | None, export: str | None,
              rebuild: bool = False) -> ModelSet:
    folder = work / ("synth-quick" if quick else "synth")
    model = QUICK_MODEL if quick else SYNTH_MODEL
    recipe = {"dims": "synth", "scenecap": __version__, "quick": quick,
              "run": str(Path(run).resolve()) if run else None,
              "export": str(Path(export).resolve()) if export else None,
              "train": None if run else {"model": model, "images": 64 if quick else 800, "epochs": 1 if quick else 3}}
    run_dir = Path(run) if run else folder / "run"
    if run and not (run_dir / "config.json").is_file():
        raise ScenecapError(f"--synth-run {run}: no config.json; expected a training run folder from 'scenecap train'")
    export_dir = Path(export) if export else folder / "export"
    ms = ModelSet("synth", folder, _bundle_dirs(folder, variants), {"kind": "run", "run": str(run_dir.resolve())},
                  folder / "frame.jpg")
    if not _base_ready(folder, recipe, rebuild):
        t0 = time.perf_counter()
        write_frame(ms.frame, seed=1)
        if not run:
            _train_small(folder, model, recipe["train"]["images"], recipe["train"]["epochs"])
        if not export:
            from scenecap.train.export import export_run

            export_run(run_dir, export_dir, decoder_batches=(1,), force=True)
        (folder / DONE).touch()
        log.info("synth: model ready in %.0f s", time.perf_counter() - t0)
    ensure_variants(folder, export_dir, variants, None, 16 if quick else 100)
    ms.notes = [f"{k}: {v}" for k, v in _notes(folder).items() if k in variants]
    ckpt = run_dir / "checkpoints" / "best.weights.h5"
    ms.files["keras"] = [ckpt if ckpt.is_file() else run_dir / "checkpoints" / "last.weights.h5"]
    return ms


def _train_small(folder: Path, model: dict, images: int, epochs: int) -> None:
    """A captioner trained on synthetic scenes briefly: the right dimensions, rough captions."""
    from scenecap.train.config import TrainConfig
    from scenecap.train.model import ModelConfig
    from scenecap.train.synthetic import generate
    from scenecap.train.trainer import run

    data = generate(folder / "data", n_train=images, n_val=0, n_test=0, seed=3)
    log.info("synth: training a small model (%d images, %d epoch%s) at %s", images, epochs, "s" * (epochs > 1),
             ", ".join(f"{k} {v}" for k, v in model.items()))
    cfg = TrainConfig(train=str(data / "captions_train.json"), out=str(folder / "run"), epochs=epochs,
                      batch_size=32, learning_rate=3e-3, seed=3, tensorboard=False, val_caption_images=0,
                      model=ModelConfig(vocab_size=0, **model))
    run(cfg, force=True, progress=False)


# --- the original system's dimensions, random weights ----------------------------------------------------------


def _arabic_words(n: int, seed: int = 0) -> list[str]:
    """n distinct Arabic-letter words (3-8 letters), so vocab.json weighs what the original's would."""
    rng = np.random.default_rng(seed)
    letters = [chr(c) for c in range(0x0627, 0x064B) if c not in range(0x063B, 0x0641)]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        w = "".join(rng.choice(letters, int(rng.integers(3, 9))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def original_set(work: Path, variants: list[str], tokenizer: str | None = None, rebuild: bool = False,
                 calibration_count: int = 32, vocab_limit: int | None = None) -> ModelSet:
    """The original's dimensions with random weights; `vocab_limit` imports them with `--vocab-limit N` (a
    folder of its own, original-vocabN)."""
    from scenecap.convert.seed_layout import SeedDims

    dims = SeedDims()
    folder = work / ("original" if vocab_limit is None else f"original-vocab{vocab_limit}")
    recipe = {"dims": "original", "scenecap": __version__, "seed_dims": dims.__dict__,
              "tokenizer": str(Path(tokenizer).resolve()) if tokenizer else "synthetic (26555 Arabic-letter words)",
              "weights": "random, seed 11", "backbone": "random MobileNetV2 1.4 with BatchNorm statistics, seed 12",
              "calibration_images": calibration_count}
    if vocab_limit is not None:  # only then: the full set's recipe, and so its folder, stays as it was
        recipe["vocab_limit"] = vocab_limit
    weights, backbone = folder / "canesee" / "weights", folder / "mobilenet_v2_1.4_224.weights.h5"
    tok = Path(tokenizer) if tokenizer else folder / "canesee" / "tokenizer.pickle"
    cal, export_dir = folder / "calibration", folder / "export"
    # The TensorFlow baselines rebuild the full model from the seed files: a limited set has none of its own and
    # is measured beside the full one, against its baselines (add_vocab_limited).
    keras = None if vocab_limit is not None else {"kind": "seed", "weights": str(weights.resolve()),
                                                  "backbone": str(backbone.resolve()), "tokenizer": str(tok.resolve())}
    ms = ModelSet("original", folder, _bundle_dirs(folder, variants), keras, folder / "frame.jpg")
    if not _base_ready(folder, recipe, rebuild):
        from scenecap.convert.seed_import import SeedImportOptions, import_seed

        t0 = time.perf_counter()
        write_frame(ms.frame, seed=1)
        _write_original_seed(folder, dims, None if tokenizer else tok, backbone)
        for k in range(calibration_count):
            write_frame(cal / f"scene_{k:03d}.jpg", seed=100 + k, size=(dims.image_size, dims.image_size))
        log.info("original: importing the seed layout at full size: float32 bundle and SavedModel (minutes)")
        import_seed(SeedImportOptions(
            weights=str(weights), tokenizer=str(tok), out=str(folder / "bundles" / "float32"),
            backbone_weights=str(backbone), keep_export=str(export_dir), force=True, vocab_limit=vocab_limit))
        (folder / DONE).touch()
        log.info("original: model ready in %.0f s", time.perf_counter() - t0)
    ensure_variants(folder, export_dir, variants, str(cal), calibration_count)
    ms.notes = [f"{k}: {v}" for k, v in _notes(folder).items() if k in variants]
    ms.files["keras"] = sorted(p for p in weights.rglob("*.npy")) + [backbone]
    return ms


def vocab_limited_name(variant: str, limit: int) -> str:
    """The name a --vocab-limit bundle is measured under beside the full set's: int8-dynamic-vocab4000."""
    return f"{variant}-vocab{limit}"


def vocab_limited_parts(name: str) -> tuple[str, int] | None:
    """(variant, limit) of a vocab_limited_name, else None: int8-dynamic-vocab4000 -> ('int8-dynamic', 4000)."""
    base, sep, limit = name.rpartition("-vocab")
    return (base, int(limit)) if sep and base and limit.isdigit() else None


def add_vocab_limited(full: ModelSet, limited: ModelSet, limit: int) -> None:
    """`limited`'s bundles measured with `full`'s, in the same worker and rounds, so their speed-up is a ratio to
    the same naive eager loop: the replaced system's, with every id (what --vocab-limit is measured against)."""
    for v, path in limited.bundles.items():
        full.bundles[vocab_limited_name(v, limit)] = path
    full.notes += limited.notes  # why a variant is missing


def _write_original_seed(folder: Path, dims, write_tok: Path | None, backbone: Path) -> None:
    """The seed's files at the original dimensions: random arrays, a random backbone, a made-up tokenizer
    (write_tok) unless the real one is given."""
    from scenecap.convert.seed_layout import (
        random_seed_arrays,
        write_npy_tree,
        write_random_backbone,
        write_seed_tokenizer,
    )

    if write_tok is not None:
        specials = ["<unk>", "<start>", "<end>"]
        words = specials + _arabic_words(dims.vocab_size - 1 - len(specials))
        write_seed_tokenizer(write_tok, {i + 1: w for i, w in enumerate(words)})
    write_npy_tree(folder / "canesee", random_seed_arrays(dims, seed=11))
    log.info("original: writing a random MobileNetV2 alpha 1.4 backbone (BatchNorm statistics from images)")
    write_random_backbone(backbone, dims, seed=12, images=4)


# --- bundles the user gives ------------------------------------------------------------------------------------


def parse_bundle_args(items: list[str]) -> dict[str, Path]:
    """['int8=bundles/a', 'bundles/b'] -> {name: folder}; an unnamed bundle is named by its quantisation."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        folder = Path(path)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            raise ScenecapError(f"--bundle {path}: no manifest.json; expected a bundle folder from 'scenecap convert'")
        if not name:
            try:
                q = {k: v["quant"] for k, v in json.loads(manifest.read_text(encoding="utf-8"))["models"].items()}
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise ScenecapError(f"{manifest}: not a scenecap bundle manifest (no models.*.quant)") from None
            enc, dec = q.get("encoder", "?"), q.get("decoder_step", "?")
            name = enc if enc == dec else f"{enc}-{dec}"
        if name in out:
            raise ScenecapError(f"--bundle: two bundles named {name!r}; name them: --bundle NAME=DIR")
        out[name] = folder
    return out


def given_set(work: Path, bundles: dict[str, Path], run: str | None) -> ModelSet:
    """The synth set made of bundles the user converted; the baselines need the training run they came from."""
    folder = work / "given"
    keras = None
    if run:
        cfg_path = Path(run) / "config.json"
        if not cfg_path.is_file():
            raise ScenecapError(f"--synth-run {run}: no config.json; expected a training run folder")
        model = json.loads(cfg_path.read_text(encoding="utf-8")).get("model", {})
        for name, b in bundles.items():
            dims = json.loads((b / "manifest.json").read_text(encoding="utf-8")).get("model", {})
            for key in ("image_size", "units", "embed_dim", "alpha"):
                if key in dims and key in model and dims[key] != model[key]:
                    raise ScenecapError(f"--bundle {name}={b}: {key} {dims[key]}, but --synth-run {run} has "
                                        f"{model[key]}; the baselines must run the model the bundles came from")
        keras = {"kind": "run", "run": str(Path(run).resolve())}
    ms = ModelSet("synth", folder, dict(bundles), keras, folder / "frame.jpg")
    if not ms.frame.is_file():
        write_frame(ms.frame, seed=1)
    if run:
        ckpt = Path(run) / "checkpoints" / "best.weights.h5"
        ms.files["keras"] = [ckpt if ckpt.is_file() else Path(run) / "checkpoints" / "last.weights.h5"]
    else:
        ms.notes.append("baselines: no --synth-run given for the bundles, so there is no Keras model to run")
    return ms
