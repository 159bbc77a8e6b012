"""The replaced system's weight files, as data: every per-layer .npy name and shape, for any dimensions.

The original saved each Keras layer's weights as `weights/{encoder,decoder}_layer_weights/
layer_{i}_{name}_weights_{j}.npy` (see ../shared/seed/README.md), and the same arrays as Keras 2 `.h5` weight
files. This module knows that layout (parametrised, so tests can use a 500-word vocabulary), reads either form
without loading anything it does not need, and writes random seeded arrays in exactly that layout (the trained
arrays are not public; the parity tests and size measurements use these).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenecap import ScenecapError
from scenecap.edge.errors import first_line

ENCODER_DIR = "encoder_layer_weights"
DECODER_DIR = "decoder_layer_weights"
ENCODER_H5 = "encoder_weights_100k_ar.h5"
DECODER_H5 = "decoder_weights_100k_ar.h5"
NPY_NAME = re.compile(r"^layer_(\d+)_(.+)_weights_(\d+)$")


@dataclass(frozen=True)
class SeedDims:
    """The original's dimensions (the defaults); tests shrink the vocabulary and the backbone."""

    vocab_size: int = 26556
    alpha: float = 1.4  # MobileNetV2 width
    image_size: int = 224
    embed_dim: int = 256  # encoder Dense and word embedding
    units: int = 512  # GRU
    attention_units: int = 512
    fc_units: int = 512
    max_length: int = 46  # words the original predicts at most after <start> (its loop: range(max_length))

    @property
    def backbone_channels(self) -> int:
        """MobileNetV2's last 1x1 conv: 1280 channels, widened with alpha only above 1.0 (1792 at 1.4)."""
        if self.alpha <= 1.0:
            return 1280
        c = 1280 * self.alpha
        return max(8, int(c + 4) // 8 * 8)  # keras' _make_divisible(c, 8)

    @property
    def locations(self) -> int:
        side = -(-self.image_size // 32)  # five stride-2 stages, 'same' padding
        return side * side


@dataclass(frozen=True)
class ArraySpec:
    folder: str  # ENCODER_DIR or DECODER_DIR
    name: str  # file stem, e.g. layer_1_gru_weights_0
    shape: tuple[int, ...]
    role: str  # what it is, for error messages
    layer: str  # ShowAttendTell attribute it goes into
    index: int  # position in that layer's get_weights()

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.name}"


def seed_layout(dims: SeedDims = SeedDims()) -> list[ArraySpec]:
    """Every array of the original model, in file order."""
    d = dims
    gates = 3 * d.units  # GRU gates z, r, h side by side
    gru_in = d.embed_dim + d.embed_dim  # [context (encoder features), word embedding]

    def dec(i: int, lname: str, j: int, shape, role: str, layer: str, index: int) -> ArraySpec:
        return ArraySpec(DECODER_DIR, f"layer_{i}_{lname}_weights_{j}", tuple(shape), role, layer, index)

    return [
        ArraySpec(ENCODER_DIR, "layer_0_dense_weights_0", (d.backbone_channels, d.embed_dim), "encoder Dense kernel",
                  "encoder_fc", 0),
        ArraySpec(ENCODER_DIR, "layer_0_dense_weights_1", (d.embed_dim,), "encoder Dense bias", "encoder_fc", 1),
        dec(0, "embedding", 0, (d.vocab_size, d.embed_dim), "word embedding", "embedding", 0),
        dec(1, "gru", 0, (gru_in, gates), "GRU kernel", "gru", 0),
        dec(1, "gru", 1, (d.units, gates), "GRU recurrent kernel", "gru", 1),
        dec(1, "gru", 2, (2, gates), "GRU bias (input, recurrent)", "gru", 2),
        dec(2, "dense_1", 0, (d.units, d.fc_units), "fc1 kernel", "fc1", 0),
        dec(2, "dense_1", 1, (d.fc_units,), "fc1 bias", "fc1", 1),
        dec(3, "dense_2", 0, (d.fc_units, d.vocab_size), "fc2 kernel", "fc2", 0),
        dec(3, "dense_2", 1, (d.vocab_size,), "fc2 bias", "fc2", 1),
        dec(4, "bahdanau_attention", 0, (d.embed_dim, d.attention_units), "attention W1 kernel", "W1", 0),
        dec(4, "bahdanau_attention", 1, (d.attention_units,), "attention W1 bias", "W1", 1),
        dec(4, "bahdanau_attention", 2, (d.units, d.attention_units), "attention W2 kernel", "W2", 0),
        dec(4, "bahdanau_attention", 3, (d.attention_units,), "attention W2 bias", "W2", 1),
        dec(4, "bahdanau_attention", 4, (d.attention_units, 1), "attention V kernel", "V", 0),
        dec(4, "bahdanau_attention", 5, (1,), "attention V bias", "V", 1),
    ]


def keep_vocab_ids(arrays: dict[str, np.ndarray], ids: list[int], dims: SeedDims) -> dict[str, np.ndarray]:
    """The arrays with only these vocabulary ids: embedding rows, fc2 kernel columns and bias entries.

    Id i is the embedding's row i and fc2's last axis entry i (kernel column, bias); every other array is the
    same object as before.
    """
    take = np.asarray(ids, dtype=np.int64)
    out = dict(arrays)
    for spec in seed_layout(dims):
        if spec.layer in ("embedding", "fc2"):
            axis = 0 if spec.layer == "embedding" else len(spec.shape) - 1
            out[spec.key] = np.ascontiguousarray(np.take(arrays[spec.key], take, axis=axis))
    return out


# --- reading ----------------------------------------------------------------------------------------------


@dataclass
class FoundArray:
    """One array present in the user's files: where, its shape and dtype (read from headers), and a loader."""

    where: str  # file (and dataset) for messages
    shape: tuple[int, ...]
    dtype: np.dtype
    load: Callable[[], np.ndarray]


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _fortran, dtype = read(f)
    except (ValueError, OSError, EOFError) as e:
        raise ScenecapError(f"{path}: not a readable .npy array ({first_line(e)})") from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _npy_loader(path: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)  # object arrays would need pickle: refused
        except (ValueError, OSError, EOFError) as e:
            raise ScenecapError(f"{path}: not a readable .npy array ({first_line(e)})") from None

    return load


def read_npy_tree(weights_dir: Path) -> dict[str, FoundArray]:
    """{folder/stem: FoundArray} for every .npy under the encoder and decoder folders (headers only)."""
    found = {}
    for folder in (ENCODER_DIR, DECODER_DIR):
        for p in sorted((weights_dir / folder).glob("*.npy")):
            shape, dtype = _npy_header(p)
            found[f"{folder}/{p.stem}"] = FoundArray(str(p), shape, dtype, _npy_loader(p))
    return found


def _decode(names) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _attr_list(obj, name: str) -> list[str] | None:
    """An h5 list attribute; Keras splits one over 64 KB into name0, name1, ..."""
    if name in obj.attrs:
        return _decode(obj.attrs[name])
    if f"{name}0" not in obj.attrs:
        return None
    out, k = [], 0
    while f"{name}{k}" in obj.attrs:
        out += _decode(obj.attrs[f"{name}{k}"])
        k += 1
    return out


def read_keras_h5(path: Path, folder: str) -> dict[str, FoundArray]:
    """A Keras 2 `save_weights(...h5)` file -> arrays named as the .npy files would be.

    Keras stores `layer_names` (in layer order) and per layer `weight_names` (in get_weights() order); the .npy
    names are exactly `layer_{position}_{layer name}_weights_{position}`, so this mapping is the original's own.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ScenecapError(f"{path}: not a readable HDF5 file ({first_line(e)})") from None
    found = {}
    with f:
        root = f["model_weights"] if "model_weights" in f else f  # a full model.save() keeps weights here
        layer_names = _attr_list(root, "layer_names")
        if layer_names is None:
            raise ScenecapError(f"{path}: no 'layer_names' attribute; expected Keras weights saved with "
                                "save_weights('....h5')")
        for i, lname in enumerate(layer_names):
            if lname not in root:
                raise ScenecapError(f"{path}: layer {lname!r} is listed but has no group; the file is damaged")
            group = root[lname]
            for j, wname in enumerate(_attr_list(group, "weight_names") or []):
                ds = group[wname]
                where = f"{path}:{lname}/{wname}"

                def load(p=path, r=root.name, ln=lname, wn=wname) -> np.ndarray:
                    with h5py.File(p, "r") as g:
                        return np.asarray(g[r][ln][wn])

                found[f"{folder}/layer_{i}_{lname}_weights_{j}"] = FoundArray(where, tuple(ds.shape),
                                                                               np.dtype(ds.dtype), load)
    return found


def locate_weights(weights: str | Path) -> tuple[str, dict[str, FoundArray]]:
    """Find the seed's weights in DIR: the .npy tree (DIR = the `weights` folder or its parent) or the .h5 pair.

    Returns (description, arrays found).
    """
    root = Path(weights)
    if not root.is_dir():
        raise ScenecapError(f"{root}: no such folder; expected the original 'weights' folder (with "
                            f"{ENCODER_DIR}/ and {DECODER_DIR}/) or a folder with {ENCODER_H5} and {DECODER_H5}")
    for d in (root, root / "weights"):
        if (d / DECODER_DIR).is_dir() or (d / ENCODER_DIR).is_dir():
            return f"{d} (.npy per layer)", read_npy_tree(d)
    enc, dec = _one_h5(root, "encoder"), _one_h5(root, "decoder")
    if enc and dec:
        return f"{enc.name} + {dec.name}", {**read_keras_h5(enc, ENCODER_DIR), **read_keras_h5(dec, DECODER_DIR)}
    raise ScenecapError(f"{root}: no seed weights found; expected {ENCODER_DIR}/ and {DECODER_DIR}/ with "
                        f"layer_*_weights_*.npy files (or a weights/ folder holding them), or {ENCODER_H5} and "
                        f"{DECODER_H5}")


def _one_h5(root: Path, part: str) -> Path | None:
    exact = root / (ENCODER_H5 if part == "encoder" else DECODER_H5)
    if exact.is_file():
        return exact
    cands = sorted(p for p in root.glob(f"{part}*.h5") if p.is_file())
    if len(cands) > 1:
        raise ScenecapError(f"{root}: several {part} .h5 files ({', '.join(p.name for p in cands)}); keep one")
    return cands[0] if cands else None


# --- writing (tests, measurements) ------------------------------------------------------------------------


def random_seed_arrays(dims: SeedDims = SeedDims(), seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays of the original names and shapes: kernels ~ N(0, 1/fan_in), small biases."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in seed_layout(dims):
        if spec.role == "word embedding":
            a = rng.normal(0.0, 1.0, spec.shape)
        elif len(spec.shape) == 2 and spec.shape[0] > 2:
            a = rng.normal(0.0, 1.0 / np.sqrt(spec.shape[0]), spec.shape)
        else:
            a = rng.normal(0.0, 0.1, spec.shape)
        arrays[spec.key] = a.astype(np.float32)
    return arrays


def write_npy_tree(root: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays as root/weights/{encoder,decoder}_layer_weights/<stem>.npy, as the original did."""
    weights = Path(root) / "weights"
    for key, a in arrays.items():
        p = weights / f"{key}.npy"
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, a)
    return weights


def write_keras_h5(root: str | Path, arrays: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """Write the same arrays as Keras 2 save_weights() .h5 files (layer_names / weight_names attributes)."""
    import h5py

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for folder, fname in ((ENCODER_DIR, ENCODER_H5), (DECODER_DIR, DECODER_H5)):
        layers: dict[int, tuple[str, dict[int, np.ndarray]]] = {}
        for key, a in arrays.items():
            f, stem = key.split("/")
            if f != folder:
                continue
            m = NPY_NAME.match(stem)
            i, lname, j = int(m.group(1)), m.group(2), int(m.group(3))
            layers.setdefault(i, (lname, {}))[1][j] = a
        path = root / fname
        with h5py.File(path, "w") as h5:
            h5.attrs["layer_names"] = [layers[i][0].encode() for i in sorted(layers)]
            h5.attrs["backend"] = b"tensorflow"
            h5.attrs["keras_version"] = b"2.2.4-tf"
            for i in sorted(layers):
                lname, ws = layers[i]
                g = h5.create_group(lname)
                names = [f"{lname}/w{j}:0".encode() for j in sorted(ws)]
                g.attrs["weight_names"] = names
                for j, n in zip(sorted(ws), names, strict=True):
                    g.create_dataset(n.decode(), data=ws[j])
        out.append(path)
    return out[0], out[1]


def write_random_backbone(path: str | Path, dims: SeedDims = SeedDims(), seed: int = 0, images: int = 8) -> Path:
    """A random MobileNetV2 (no top) whose BatchNorm statistics are set from one batch of seeded images.

    Stands in for the ImageNet weights where there is no network (tests, size measurements): plain random init
    shrinks the feature map to ~1e-11 through 17 blocks, so every image would look alike; with BatchNorm
    statistics from real activations the features stay O(1) and differ between images. Saved as a Keras
    .weights.h5 that `--backbone-weights PATH` loads.
    """
    import keras

    keras.utils.set_random_seed(seed)
    s = dims.image_size
    net = keras.applications.MobileNetV2(input_shape=(s, s, 3), alpha=dims.alpha, include_top=False, weights=None)
    rng = np.random.default_rng(seed)
    # Smooth colour fields, noise and stripes: varied statistics, like photos rather than white noise.
    coarse = rng.uniform(-1, 1, (images, 4, 4, 3)).astype(np.float32)
    x = keras.ops.image.resize(coarse, (s, s), interpolation="bilinear")
    x = np.asarray(x) * 0.7 + rng.normal(0, 0.2, (images, s, s, 3)).astype(np.float32)
    x[: images // 2, :, ::8] = 1.0
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one training-mode pass copies this batch's statistics into the moving ones
    net(np.clip(x, -1, 1), training=True)
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ScenecapError(f"{path}: Keras saves weights only to a name ending in .weights.h5")
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save_weights(path)
    return path


def write_seed_tokenizer(path: str | Path, index_word: dict[int, str], oov_token: str = "<unk>",
                         num_words: int | None = 8000, module: str = "keras_preprocessing.text",
                         counts: dict[str, int] | None = None) -> Path:
    """A pickled Tokenizer as the original wrote it, without Keras: the same globals and attributes.

    The pickle is assembled from opcodes (protocol 2): GLOBAL `module.Tokenizer`, NEWOBJ, then BUILD with the
    attribute dict, which is how pickle saves a Tokenizer. Tests use it for small vocabularies and other module
    paths; nothing ever loads it with `pickle.load`. `counts` are its word_counts (default: 1 for every word).
    """
    import collections
    import pickle

    word_index = {w: i for i, w in index_word.items()}
    words = [w for _, w in sorted(index_word.items()) if w not in ("<pad>", oov_token)]
    state = {
        "word_counts": collections.OrderedDict((w, (counts or {}).get(w, 1)) for w in words),
        "word_docs": collections.defaultdict(int, {w: 1 for w in words}),
        "filters": '!"#$%&()*+.,-/:;=?@[\\]^_`{|}~ ',
        "split": " ",
        "lower": True,
        "num_words": num_words,
        "document_count": len(words),
        "char_level": False,
        "oov_token": oov_token,
        "index_docs": collections.defaultdict(int, {word_index[w]: 1 for w in words}),
        "word_index": word_index,
        "index_word": dict(index_word),
    }
    body = pickle.dumps(state, protocol=2)[2:-1]  # without its PROTO header and STOP
    data = b"\x80\x02c" + f"{module}\nTokenizer\n".encode() + b")\x81" + body + b"b."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
