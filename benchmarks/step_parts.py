"""Where a decoder step's time goes: the attention and the rest (GRU, output layers), timed apart per recipe.

The model's own ShowAttendTell.attend and .advance (train/model.py), at a bundle's dimensions (its manifest's
`model` section) with random weights, each converted to float32 and dynamic-range TFLite like the whole step,
then invoked in turn on the edge runtime (1 thread, interleaved rounds, median microseconds per invoke). It
answers why a recipe's step is as fast as it is: the part a recipe cannot make cheaper bounds its speed-up.

    python benchmarks/step_parts.py                       # the demo bundle's dimensions
    python benchmarks/step_parts.py --bundle build/bench/original/bundles/int8-dynamic --rounds 7

Writes benchmarks/results/step_parts.md (or --out). Not a test: about a minute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("float32", "dynamic")
PARTS = ("attention", "rest", "whole step")


def model_config(bundle: Path):
    """The bundle's dimensions as a ModelConfig (random weights: timing does not depend on their values)."""
    from scenecap.edge.bundle import load_bundle
    from scenecap.train.model_config import ModelConfig

    manifest = load_bundle(bundle).manifest
    m = manifest.model
    side = int(round(m.locations ** 0.5))
    return ModelConfig(vocab_size=m.vocab_size, backbone=m.backbone, alpha=m.alpha, image_size=m.image_size,
                       embed_dim=m.embed_dim, units=m.units, attention_units=m.attention_dim, fc_units=m.fc_units,
                       feature_stride=m.image_size // side, decoder_state=manifest.decoder_state)


def part_functions(model) -> dict:
    """Each part as a tf.function of fixed, batch-1 shapes."""
    import tensorflow as tf

    cfg, L = model.cfg, model.locations
    hidden = tf.TensorSpec((1, cfg.units), tf.float32, name="hidden")
    features = tf.TensorSpec((1, L, cfg.embed_dim), tf.float32, name="features")
    keys = tf.TensorSpec((1, L, cfg.attention_units), tf.float32, name="keys")
    token = tf.TensorSpec((1,), tf.int32, name="token")
    context = tf.TensorSpec((1, cfg.embed_dim), tf.float32, name="context")

    @tf.function(input_signature=[hidden, features, keys])
    def attention(hidden, features, keys):
        ctx, att = model.attend(hidden, features, keys)
        return {"context": ctx, "attention": att}

    @tf.function(input_signature=[context, token, hidden])
    def rest(context, token, hidden):
        logits, new_hidden = model.advance(context, model.embedding(token), hidden)
        return {"logits": logits, "new_hidden": new_hidden}

    @tf.function(input_signature=[token, hidden, features, keys])
    def whole_step(token, hidden, features, keys):
        logits, new_hidden, att = model.step(token, hidden, features, keys)
        return {"logits": logits, "new_hidden": new_hidden, "attention": att}

    return {"attention": attention, "rest": rest, "whole step": whole_step}


def convert(fn, recipe: str) -> bytes:
    """As `scenecap convert` writes it: its one-unit dense layers (the attention score) as MUL+SUM, its embedding
    lookup without the negative-id wrap."""
    import tensorflow as tf

    from scenecap.convert.single_output_dense import reduce_single_output_dense
    from scenecap.convert.token_lookup import drop_negative_index_wrap

    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if recipe == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return drop_negative_index_wrap(reduce_single_output_dense(conv.convert())[0])[0]


def time_models(models: dict[tuple[str, str], Path], rounds: int, invokes: int) -> dict[tuple[str, str], float]:
    """Median microseconds per invoke of each model, taking turns within every round."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    its = {}
    for key, path in models.items():
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        for d in it.get_input_details():
            value = np.ones(d["shape"], np.int32) if d["dtype"] == np.int32 else rng.random(d["shape"], np.float32)
            it.set_tensor(d["index"], value)
        its[key] = it
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in its}
    for _ in range(rounds):
        for key, it in its.items():
            for _ in range(invokes // 10):  # warm: the caches hold this model, as inside a caption
                it.invoke()
            t0 = time.perf_counter()
            for _ in range(invokes):
                it.invoke()
            samples[key].append((time.perf_counter() - t0) / invokes * 1e6)
    return {k: float(np.median(v)) for k, v in samples.items()}


def markdown(bundle: Path, cfg, locations: int, us: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = (f"# Where a decoder step's time goes ({bundle})\n\n"
            f"`python benchmarks/step_parts.py --bundle {bundle}`, {when}:"
            f" {locations} locations, features {cfg.embed_dim}, attention {cfg.attention_units}, GRU {cfg.units}, "
            f"fc {cfg.fc_units}, vocabulary {cfg.vocab_size}; random weights, 1 thread, median us per invoke "
            "with the model's weights in cache.\n\n"
            "| part | " + " | ".join(RECIPES) + " | float32 / dynamic |\n|---|" + "---:|" * (len(RECIPES) + 1) + "\n")
    rows = [f"| {p} | " + " | ".join(f"{us[(p, r)]:.1f}" for r in RECIPES) +
            f" | {us[(p, 'float32')] / us[(p, 'dynamic')]:.2f}x |\n" for p in PARTS]
    a, s = (us[("attention", "dynamic")], us[("whole step", "float32")])
    tail = (f"\nDynamic-range quantises weight matrices only: the attention's element-wise work (the tanh over "
            f"locations x attention units, the softmax, the weighted sum) stays float32, so a dynamic step cannot be "
            f"faster than its attention: at most {s / a:.2f}x the float32 step here, were the rest free.\n")
    return head + "".join(rows) + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "demo" / "bundle", help="dimensions from this bundle")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--invokes", type=int, default=300, help="invokes timed per model per round")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "step_parts.md")
    args = ap.parse_args(argv)
    from scenecap.train.model import build

    cfg = model_config(args.bundle)
    model = build(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for part, fn in part_functions(model).items():
            for recipe in RECIPES:
                models[(part, recipe)] = Path(tmp) / f"{part.replace(' ', '_')}-{recipe}.tflite"
                models[(part, recipe)].write_bytes(convert(fn, recipe))
        us = time_models(models, args.rounds, args.invokes)
    shown = args.bundle.resolve()
    text = markdown(shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown, cfg, model.locations, us)
    from scenecap.edge.fileio import atomic_write_text

    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
