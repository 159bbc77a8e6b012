"""`scenecap bench`: latency per stage, size and memory of every bundle variant against the naive eager way."""

from __future__ import annotations

import argparse
import sys

from scenecap import ScenecapError
from scenecap.benchmarks.bench import BenchOptions, default_variants  # light: the help is built from its defaults


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,2,4") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _csv(values) -> str:
    return ",".join(map(str, values))


def _add_parser(sub: argparse._SubParsersAction, full: BenchOptions, quick: BenchOptions) -> argparse.ArgumentParser:
    """The subcommand, with its description and examples (the defaults quoted are BenchOptions')."""
    return sub.add_parser(
        "bench", help="benchmark latency per stage, size and memory of each bundle variant vs naive eager Keras",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure, after warm-up and over N runs each (p50/p90/p99/mean): preprocessing, the encoder,\n"
        "one decoder step, a whole greedy caption and a whole beam-3 caption, for every bundle variant\n"
        f"({', '.join(default_variants(False))}; edgetpu when a Coral is attached), and for two baselines on\n"
        "the same Keras model: "
        "the naive eager step-by-step loop of the replaced system,\nand tf.function-compiled encoder and step.\n"
        "Also: model sizes, peak RSS and cold start of an edge-only process vs a TensorFlow one, and the installed\n"
        "size of the edge vs the training environment. Targets are computed as ratios from the same run.\n\n"
        "Two model sets: 'synth' (the synthetic-scenes model; --synth-run, else one trained here in minutes) and\n"
        "'original' (the replaced system's dimensions with random weights). They are built once into --work and\n"
        "reused while their recipe is unchanged (converting 'original' takes minutes).\n\n"
        f"Writes NAME.json (every figure, the machine), NAME.md (tables) and NAME.png (chart) into --out: {full.out}\n"
        f"for a full run, {quick.out} (not tracked by git) for --quick.\n"
        "See benchmarks/README.md for a Raspberry Pi or a Coral USB Accelerator.",
        epilog="examples:\n"
        "  scenecap bench --quick                      # small model, 3 runs, 1 thread (first run: trains it)\n"
        "  scenecap bench                              # everything (first time: conversions take minutes)\n"
        "  scenecap bench --dims original --threads 4 --runs 50\n"
        "  scenecap bench --synth-run build/demo/run   # the demo's trained model instead of a quick one\n"
        "  scenecap bench --prepare-only               # build the models only (then copy build/bench to a Pi)",
    )


def _add_run_options(p: argparse.ArgumentParser, full: BenchOptions, quick: BenchOptions) -> None:
    """What is measured and how often."""
    p.add_argument("--quick", action="store_true",
                   help=f"CI mode: {_csv(quick.dims)} dims only, a tiny model, {quick.runs} runs after {quick.warmup} "
                   f"warm-up, {_csv(quick.threads)} thread, {quick.cold_runs} cold start, results in {quick.out}")
    p.add_argument("--dims", type=_names,
                   help=f"model sets: synth and/or original (default {_csv(full.dims)}; --quick: {_csv(quick.dims)})")
    p.add_argument("--variants", type=_names, metavar="V[,V...]",
                   help=f"bundle variants (default {_csv(default_variants(False))}, plus edgetpu when a TPU is "
                   "attached)")
    p.add_argument("--threads", type=_ints, metavar="N[,N...]",
                   help=f"interpreter/TensorFlow threads (default {_csv(full.threads)}; --quick {_csv(quick.threads)})")
    p.add_argument("--runs", type=int, help=f"measured runs per stage (default {full.runs}; --quick {quick.runs})")
    p.add_argument("--warmup", type=int,
                   help=f"warm-up runs per stage, not measured (default {full.warmup}; --quick {quick.warmup})")
    p.add_argument("--beam", type=int, default=3, help="beam width of the beam caption (default 3)")
    p.add_argument("--cold-runs", type=int,
                   help=f"cold-start processes of each kind (default {full.cold_runs}; --quick {quick.cold_runs})")


def _add_model_options(p: argparse.ArgumentParser, full: BenchOptions) -> None:
    """Which models: a training run, given bundles, the original's tokenizer, where they are built."""
    p.add_argument("--synth-run", metavar="RUN", help="training run folder for the synth model (default: train one)")
    p.add_argument("--synth-export", metavar="DIR", help="an export of --synth-run, to skip exporting it again")
    p.add_argument("--bundle", action="append", default=[], metavar="[NAME=]DIR",
                   help="measure this bundle (repeatable) as the synth set instead of converting; with --synth-run "
                   "(the run it came from) the baselines run too. NAME defaults to its quantisation")
    p.add_argument("--seed-tokenizer", metavar="PICKLE",
                   help="the original's tokenizer.pickle for the original-dims vocabulary (default: 26555 made-up "
                   "Arabic words, the same count)")
    p.add_argument("--vocab-limit", type=int, metavar="N",
                   help="also import the original dims with 'import-seed --vocab-limit N' (the N most frequent ids; "
                   "its own folder in --work) and measure those bundles beside the full ones as VARIANT-vocabN, "
                   "against the same naive eager loop with every id (default: every id only)")
    p.add_argument("--work", default=full.work, help=f"folder for the models and worker files (default {full.work})")


def _add_output_options(p: argparse.ArgumentParser, full: BenchOptions, quick: BenchOptions) -> None:
    """Where results go, and the parts of a run that can be skipped."""
    p.add_argument("--out", help=f"results folder (default {full.out}; --quick: {quick.out})")
    p.add_argument("--name", help=f"results file name stem (default {full.name}; --quick: {quick.name})")
    p.add_argument("--rebuild", action="store_true", help="rebuild the models even if --work has them")
    p.add_argument("--prepare-only", action="store_true", help="build the models into --work, measure nothing")
    p.add_argument("--no-baselines", action="store_true", help="skip the TensorFlow baselines (edge only)")
    p.add_argument("--no-memory", action="store_true", help="skip cold start, peak RSS and install sizes")
    p.add_argument("--edge-python", metavar="PYTHON",
                   help="interpreter for the edge cold-start process (default .venv-edge/bin/python if present, "
                   "else this one with TensorFlow blocked)")


def register(sub: argparse._SubParsersAction) -> None:
    full, quick = BenchOptions(), BenchOptions.quick_defaults()
    p = _add_parser(sub, full, quick)
    _add_run_options(p, full, quick)
    _add_model_options(p, full)
    _add_output_options(p, full, quick)
    p.set_defaults(func=run_bench_cli)


def bench_options(args: argparse.Namespace) -> BenchOptions:
    """The command line's options over the full or the quick defaults."""
    given = {k: v for k, v in {
        "dims": args.dims, "variants": args.variants, "threads": args.threads, "runs": args.runs,
        "warmup": args.warmup, "cold_runs": args.cold_runs, "name": args.name, "out": args.out}.items()
        if v is not None}
    opts_kw = dict(beam=args.beam, synth_run=args.synth_run, synth_export=args.synth_export, bundles=args.bundle,
                   seed_tokenizer=args.seed_tokenizer, vocab_limit=args.vocab_limit, work=args.work,
                   rebuild=args.rebuild, prepare_only=args.prepare_only, baselines=not args.no_baselines,
                   memory=not args.no_memory, edge_python=args.edge_python, **given)
    return BenchOptions.quick_defaults(**opts_kw) if args.quick else BenchOptions(**opts_kw)


def run_bench_cli(args: argparse.Namespace) -> int:
    from scenecap.benchmarks.bench import run_bench
    from scenecap.benchmarks.publish import write_report

    opts = bench_options(args)
    if opts.beam < 1:
        raise ScenecapError(f"--beam {opts.beam}; expected a positive beam width")
    results = run_bench(opts)
    if opts.prepare_only:
        for d in results["dims"].values():
            print(d["models"]["folder"])
        return 0
    paths = write_report(results, opts.out, opts.name)
    from scenecap.benchmarks.publish import markdown

    sys.stdout.write(markdown(results))
    for p in paths.values():
        print(p, file=sys.stderr)
    return 0
