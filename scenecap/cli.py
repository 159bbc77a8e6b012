"""The `scenecap` command: one sub-command per stage. Stage modules import their heavy libraries lazily,
so `scenecap caption` on a Pi never touches TensorFlow."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from scenecap import ScenecapError, __version__

# One module per command (or small group), each with register(subparsers). A module whose extra is not
# installed (convert/ on a Pi without TensorFlow, say) is skipped and its commands are simply absent.
COMMAND_MODULES = [
    "scenecap.train.cli",  # synth, train, export
    "scenecap.train.eval_cli",  # eval
    "scenecap.convert.cli",  # convert
    "scenecap.convert.seed_cli",  # import-seed
    "scenecap.edge.caption_cli",  # caption
    "scenecap.edge.inspect_cli",  # inspect
    "scenecap.benchmarks.cli",  # bench
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenecap",
        description="Train an attention image captioner (train/), convert it to small LiteRT models (convert/), "
        "and caption live on a Raspberry Pi or Coral (edge/).",
        epilog="Run 'scenecap COMMAND --help' for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"scenecap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name).register(sub)
        except ImportError:  # e.g. convert/ on a Pi without TensorFlow: its commands are simply absent
            continue
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter out of users' logs
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ScenecapError as e:
        print(f"scenecap: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
