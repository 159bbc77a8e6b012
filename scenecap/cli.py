"""The `scenecap` command: one sub-command per stage. Stage modules import their heavy libraries lazily,
so `scenecap caption` on a Pi never touches TensorFlow."""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import logging
import os
import re
import sys
import warnings

from scenecap import ScenecapError, __version__
from scenecap.native_stderr import caught_fd2

# One module per command (or small group), each with register(subparsers). Registering imports nothing heavy,
# so every command is listed on every install; a command whose extra is missing says so when it runs.
COMMAND_MODULES = [
    "scenecap.train.cli",  # synth, train, export
    "scenecap.train.eval_cli",  # eval
    "scenecap.convert.cli",  # convert
    "scenecap.convert.seed_cli",  # import-seed
    "scenecap.edge.caption_cli",  # caption
    "scenecap.edge.inspect_cli",  # inspect
    "scenecap.edge.calibrate_cli",  # calibrate
    "scenecap.benchmarks.cli",  # bench
]

# Third-party modules that only the `train` extra installs: a command needing one of them on an edge-only
# install (a Pi) gets one line saying what to install. Anything else that fails to import is a bug, and shows.
TRAIN_EXTRA_MODULES = {"tensorflow", "keras", "tf_keras", "pycocoevalcap", "pycocotools", "tqdm", "matplotlib",
                       "yaml", "tensorboard", "absl", "h5py"}
EDGE_EXTRA_MODULES = {"cv2", "ai_edge_litert", "tflite_runtime", "arabic_reshaper", "bidi"}

log = logging.getLogger("scenecap")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenecap",
        description="Train an attention image captioner (train/), convert it to small LiteRT models (convert/), "
        "and caption live on a Raspberry Pi or Coral (edge/).",
        epilog="Run 'scenecap COMMAND --help' for each command's options. Commands that train, export or "
        "convert need the train extra (pip install 'scenecap[train]'); caption and inspect need only the edge "
        "extra.",
    )
    parser.add_argument("--version", action="version", version=f"scenecap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and TensorFlow's own messages (hidden otherwise)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name).register(sub)
        except ModuleNotFoundError as e:
            if _top_module(e) not in TRAIN_EXTRA_MODULES | EDGE_EXTRA_MODULES:
                raise  # a real import bug in scenecap itself must not be hidden as a missing command
    return parser


def _top_module(e: ModuleNotFoundError) -> str:
    return (e.name or "").split(".")[0]


def missing_extra(e: ModuleNotFoundError, command: str | None) -> str | None:
    """The one line for a command that needs an extra this install lacks, or None if `e` is not that."""
    top = _top_module(e)
    what = f"scenecap {command}" if command else "this command"
    if top in TRAIN_EXTRA_MODULES:
        return (f"{what} needs {top} (the train extra), which is not installed here; on a workstation: "
                "pip install 'scenecap[train]' (a Pi needs only caption and inspect)")
    if top in EDGE_EXTRA_MODULES:
        return f"{what} needs {top} (the edge extra), which is not installed here: pip install 'scenecap[edge]'"
    return None


def quiet_tensorflow(verbose: bool) -> None:
    """TensorFlow's import-time chatter (cuInit on a machine without a GPU, oneDNN notices, tf.lite's deprecation
    warning) reads to a newcomer as failure: hidden unless -v. Set before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if not verbose:
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")  # absl's C++ logging (XLA's 'failed call to cuInit')
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        for pattern in (".*tf.lite.*deprecated.*", ".*np.bool8.*", ".*`tf.keras.*"):
            warnings.filterwarnings("ignore", message=pattern)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"tensorflow(\..*)?")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"tensorflow(\..*)?")


# Commands that import TensorFlow, and the lines it prints to fd 2 while being imported, before its own log
# level applies (absl is not initialised yet, so TF_CPP_MIN_LOG_LEVEL cannot hide them).
TENSORFLOW_COMMANDS = {"train", "export", "convert", "eval", "import-seed", "bench"}
_IMPORT_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} |To enable the "
                           r"following instructions|.*(cuda|cuInit|oneDNN|TensorRT|cpu_feature_guard))")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with fd 2 caught, then pass on whatever it printed that is not start-up noise."""
    if importlib.util.find_spec("tensorflow") is None:
        return  # the command itself will say that the train extra is missing
    with caught_fd2() as lines:
        import tensorflow  # noqa: F401
    kept = [line for line in lines if not _IMPORT_NOISE.match(line)]
    if kept and sys.stderr is not None:
        print("\n".join(kept), file=sys.stderr)


def guard_standard_streams() -> None:
    """Keep fds 0-2 taken: a program started with `>&-` or `2>&-` would otherwise give the next file it opens
    (a JSONL log, a model) the number 1 or 2, and print messages into it. A closed stdout stays sys.stdout
    None, so the commands can tell that nobody reads their output; a closed stderr sends messages nowhere."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


class EscapingFormatter(logging.Formatter):
    """Log lines quote file names, URLs and manifest strings: one line each, control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        from scenecap.edge.terminal import escape

        return escape(super().format(record))


def setup_logging(verbose: bool) -> None:
    handler: logging.Handler
    if sys.stderr is None:  # started with stderr closed: say nothing rather than write into another stream
        handler = logging.NullHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _say_error(message: str) -> None:
    from scenecap.edge.terminal import escape

    if sys.stderr is not None:
        try:
            print(f"scenecap: error: {escape(message)}", file=sys.stderr, flush=True)
        except OSError:
            pass  # stderr itself is gone: the exit status still tells


def _stdout_gone() -> int:
    """A reader that went away (`| head -1`): quit quietly, as cat does, and keep Python's exit-time flush of
    stdout from printing a BrokenPipeError of its own."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass
    return 141  # 128 + SIGPIPE, the status a shell shows for `cat` in the same place


def main(argv: list[str] | None = None) -> int:
    guard_standard_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_tensorflow(args.verbose)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if not args.verbose and args.command in TENSORFLOW_COMMANDS:
            import_tensorflow_quietly()
        code = int(args.func(args) or 0)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, so a closed pipe or full disk is caught below and not at exit
        return code
    except ScenecapError as e:
        _say_error(str(e))
        return 2
    except ModuleNotFoundError as e:
        line = missing_extra(e, args.command)
        if line is None:
            raise
        _say_error(line)
        return 2
    except BrokenPipeError:
        return _stdout_gone()
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO) or e.filename:
            raise
        _say_error(f"cannot write the output ({os.strerror(e.errno)})")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
