"""`scenecap caption`: caption images, folders, videos, cameras and streams with a bundle. Never imports TensorFlow."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from scenecap.edge.arg_types import add_command, float_in, int_in, seconds
from scenecap.edge.gating import EVERY, MIN_INTERVAL, THRESHOLD, WHEN

log = logging.getLogger("scenecap.edge.caption")

# Option ranges. A beam of 10,000 or 10,000 threads is accepted by nothing useful: one caption took 88 s.
MAX_BEAM = 16  # beyond ~8 the captions stop changing; the cost grows with the width
MAX_THREADS = 64  # more interpreter threads than a Pi or a workstation has cores only adds contention
MAX_LENGTH_PENALTY = 5.0  # GNMT alpha: 0.6-1 is the useful range; large values overflow the score

EXAMPLES = """examples:
  scenecap caption demo/frames --bundle demo/bundle
  scenecap caption walk.mp4 --bundle demo/bundle --when change --jsonl walk.jsonl
  scenecap caption --source picam --bundle /opt/scenecap/bundle --speak
  scenecap caption --source 0 --bundle demo/bundle --save-annotated seen/ --attention
  scenecap caption --source rtsp://192.0.2.7:8554/cam --bundle demo/bundle --device edgetpu

Sources: image files, folders and globs, video files (positional); or --source with a camera index (0),
a device path (/dev/video0), 'picam' (Raspberry Pi camera via picamera2), an rtsp:// or http:// URL, or a file.
A camera or stream that is lost is reopened (with backoff) and the run goes on. Ctrl-C, SIGTERM or SIGHUP (the
ssh terminal closed) stops the caption in progress (unfinished, so not said), finishes the outputs, releases the
camera and prints a summary (exit status 0); a second one cuts speech short. An output that fails (a full disk,
a read-only folder) is reported in one line and the others go on (exit status 2). Annotated frames of x.jpg are
written as DIR/NNNNNN_x.jpg (NNNNNN counts the captions)."""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 320x240") from None
    if w < 16 or h < 16 or w > 8192 or h > 8192:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size between 16x16 and 8192x8192")
    return w, h


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "caption",
        help="caption images, videos, cameras or streams with a bundle (edge runtime, no TensorFlow)",
        description="Caption images, video frames, a camera or a network stream with a bundle, using LiteRT. "
        "Prints 'source<TAB>caption' per caption on stdout ('source<TAB>(unsure) caption' below the confidence "
        "threshold) (or JSON lines with --jsonl -). Unreadable files "
        "and bad frames are reported on stderr, one line each, and skipped; for files the exit status is then 1. "
        "A summary (frames read, captions, median latency per stage) goes to stderr at the end.",
        examples=EXAMPLES,
    )
    p.add_argument("sources", nargs="*", help="image files, folders, globs or video files")
    p.add_argument("--source", metavar="SRC",
                   help="live source: camera index or /dev/videoN, 'picam', rtsp:// or http:// URL (or a file)")
    p.add_argument("--bundle", required=True, help="bundle folder (from 'scenecap convert')")
    _when_options(p.add_argument_group("when to caption"))
    _model_options(p.add_argument_group("model"))
    _output_options(p.add_argument_group("outputs"))
    p.set_defaults(func=run_caption)


def _when_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--when", choices=WHEN,
                   help="change: when the scene changes (default with --source); every: one frame every --every "
                   "seconds (default for files); all: every frame")
    g.add_argument("--every", type=seconds(), default=None, metavar="SECONDS",
                   help=f"with --when every: the period (default {EVERY:g}; 0 = every frame). With --when change: "
                   "also re-caption after SECONDS without a change (default: never)")
    g.add_argument("--min-interval", type=seconds(), default=MIN_INTERVAL, metavar="SECONDS",
                   help=f"with --when change: at least SECONDS between captions (default {MIN_INTERVAL:g})")
    g.add_argument("--threshold", type=float_in(0, 255, "the score is a mean difference of 0-255 values"),
                   default=THRESHOLD, metavar="SCORE",
                   help="scene-change score that counts as a new scene, as PySceneDetect's ContentDetector "
                   f"(mean HSV difference, 0-255; default {THRESHOLD:g}; lower = more sensitive)")
    g.add_argument("--max-frames", type=int_in(1), default=None, metavar="N",
                   help="stop after looking at N frames")


def _model_options(m: argparse._ArgumentGroup) -> None:
    m.add_argument("--beam", type=int_in(1, MAX_BEAM, "wider beams stop changing the caption and only cost time"),
                   default=1, metavar="N", help=f"beam width, 1-{MAX_BEAM}; 1 = greedy (default). Each caption "
                   "costs about N times greedy's decoder time, and beyond ~8 the captions stop changing")
    m.add_argument("--length-penalty", default=0.0, metavar="ALPHA",
                   type=float_in(0, MAX_LENGTH_PENALTY, "0.6-1 is the useful range"),
                   help=f"GNMT length penalty alpha for beam search, 0-{MAX_LENGTH_PENALTY:g} (0 = raw "
                   "log-probability; 0.6-1 favours longer captions)")
    m.add_argument("--threads", default=None, metavar="N",
                   type=int_in(1, MAX_THREADS, "more threads than cores only adds contention"),
                   help=f"interpreter threads, 1-{MAX_THREADS} (default: the runtime's choice; more than the "
                   "machine's cores only slows each caption)")
    m.add_argument("--device", choices=("cpu", "edgetpu"), default="cpu",
                   help="edgetpu: run the bundle's *_edgetpu.tflite models on a Coral through libedgetpu")
    m.add_argument("--min-confidence", type=float_in(0, 1, "a confidence is a number from 0 to 1"), default=None,
                   metavar="X", help="mark captions below confidence X unsure (default: the threshold 'scenecap "
                   "calibrate' stored in the bundle; a bundle without one marks none unsure)")
    m.add_argument("--second-look", action="store_true",
                   help="before trusting a caption, read its words again on the image zoomed in 5%%: a caption the "
                   "model would not say of that view too is marked unsure (on the demo bundle, confidently wrong "
                   "captions of an unfamiliar drawing style 6.1%% -> 4.4%%), at about twice the caption's time "
                   "(none for a caption already unsure). "
                   "Needs a bundle calibrated with 'scenecap calibrate --second-look'")
    m.add_argument("--camera-size", type=_size, default=None, metavar="WxH",
                   help="frame size to ask the camera for (picam low-res stream default 320x240)")


def _output_options(o: argparse._ArgumentGroup) -> None:
    o.add_argument("--jsonl", metavar="FILE", help="append one JSON object per caption to FILE ('-' = stdout)")
    o.add_argument("--save-annotated", metavar="DIR|VIDEO",
                   help="DIR: one JPEG per caption with the caption drawn; a .mp4/.avi/.mkv/.mov file: every "
                   "frame looked at, with the latest caption drawn")
    o.add_argument("--attention", action="store_true",
                   help="with --save-annotated: also write each caption's attention heat-map per word (a grid)")
    o.add_argument("--unsure", choices=("say", "silent", "caption"), default="say",
                   help="what speech does with an unsure caption: say a short phrase in the bundle's language "
                   "('not sure what is ahead'; default), stay silent, or say the caption anyway. On stdout an "
                   "unsure caption is 'source<TAB>(unsure) caption'; JSON lines carry confidence and unsure")
    o.add_argument("--speak", action="store_true",
                   help="speak each caption with espeak-ng (voice from the bundle's language)")
    o.add_argument("--voice", help="espeak-ng voice instead of the bundle language's (see 'espeak-ng --voices')")
    o.add_argument("--speak-to", metavar="DIR",
                   help="write each spoken caption to DIR/NNNNNN.wav instead of the sound card (implies --speak)")


def run_caption(args: argparse.Namespace) -> int:
    from scenecap.edge.captioner import Captioner
    from scenecap.edge.live import run
    from scenecap.edge.sources import describe_source

    _check_args(args)
    use_stdout = _stdout_usable(args)
    if args.source:
        describe_source(args.source)  # an unsupported URL scheme is refused before the bundle loads
    captioner = Captioner.load(args.bundle, threads=args.threads, device=args.device, beam=args.beam,
                               length_penalty=args.length_penalty, min_confidence=args.min_confidence,
                               second_look=args.second_look, attention=args.attention)
    outputs = _open_outputs(args, captioner.bundle.manifest.language, use_stdout)
    try:
        stats = run(captioner, args.source or list(args.sources), outputs, options=_loop_options(args))
    finally:  # a reader of stdout that has gone (`| head -1`) ends the run in the front door, quietly, as cat does
        if outputs.jsonl is not None and outputs.jsonl is not sys.stdout:
            outputs.jsonl.close()
        _settle_stdout()
    if outputs.failed:  # an output that stopped part-way (reported when it happened): the run is incomplete
        return 2
    # Unreadable files are the user's to fix (exit 1); a bad frame from a live camera is routine.
    return 1 if stats.skipped and not stats.live else 0


def _check_args(args: argparse.Namespace) -> None:
    """One error line for options that cannot go together, before the bundle is loaded and outputs are opened."""
    from scenecap.edge.errors import ScenecapError

    if args.source and args.sources:
        raise ScenecapError("give files as arguments or one --source, not both")
    if not args.source and not args.sources:
        raise ScenecapError("nothing to caption: give image/video files, or --source (camera, picam, URL)")
    if args.attention and not args.save_annotated:
        raise ScenecapError("--attention needs --save-annotated DIR|VIDEO to write the heat-maps to")


def _loop_options(args: argparse.Namespace):
    """The caption loop's options from the command line (a scenecap.edge.live.LoopOptions)."""
    from scenecap.edge.live import LoopOptions

    # --source means "watch this": scene changes by default, even for a recording given as --source.
    when = args.when or ("change" if args.source else "every")
    return LoopOptions(when=when, every=args.every, min_interval=args.min_interval, threshold=args.threshold,
                       camera_size=args.camera_size, max_frames=args.max_frames)


def _open_outputs(args: argparse.Namespace, language: str, use_stdout: bool):
    """The outputs asked for (a scenecap.edge.sinks.Outputs); the ones already open are closed if one fails."""
    from scenecap.edge.sinks import Outputs
    from scenecap.edge.speech import unsure_phrase

    outputs = Outputs(unsure=args.unsure, unsure_phrase=unsure_phrase(language))
    try:
        if args.jsonl:
            outputs.jsonl = sys.stdout if args.jsonl == "-" else _open_append(args.jsonl)
        if args.jsonl != "-" and use_stdout:
            outputs.text = sys.stdout
        if args.save_annotated:
            from scenecap.edge.annotate import AnnotatedWriter

            outputs.annotated = AnnotatedWriter(args.save_annotated, attention=args.attention)
        if args.speak or args.speak_to:
            outputs.speaker = _speaker(args, language)
    except BaseException:
        outputs.close()
        raise
    return outputs


def _speaker(args: argparse.Namespace, language: str):
    from scenecap.edge.speech import Speaker, check_voice, voice_for
    from scenecap.edge.terminal import escape

    voice = check_voice(args.voice) if args.voice else voice_for(language)
    speaker = Speaker(voice, wav_dir=args.speak_to)
    log.info("speech: espeak-ng voice %s%s", escape(voice), f", to {escape(args.speak_to)}" if args.speak_to else "")
    return speaker


def stdout_closed() -> bool:
    """True when there is no stdout to write to: started with fd 1 closed (`>&-`; Python then has no sys.stdout,
    and the front door holds fd 1 with /dev/null)."""
    if sys.stdout is None:
        return True
    try:
        os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return True
    return False


def _stdout_usable(args: argparse.Namespace) -> bool:
    """Whether captions can go to stdout. A closed stdout would drop every caption while the summary counted
    them: refused when it is the only output, else said once."""
    from scenecap.edge.errors import ScenecapError

    if not stdout_closed():
        return True
    others = [name for name, given in (("--jsonl FILE", args.jsonl and args.jsonl != "-"),
                                       ("--save-annotated", args.save_annotated),
                                       ("--speak", args.speak or args.speak_to)) if given]
    if args.jsonl == "-":
        raise ScenecapError("--jsonl -: stdout is closed; give a file, or run with stdout open")
    if not others:
        raise ScenecapError("stdout is closed and no other output was asked for (--jsonl FILE, "
                            "--save-annotated, --speak): the captions would go nowhere")
    log.warning("stdout is closed: captions go to %s only", ", ".join(others))
    return False


def _settle_stdout() -> None:
    """Flush stdout while a failure can still be handled. One that cannot take more (a full disk, a reader gone)
    was already reported; /dev/null goes in its place so Python's own flush at exit does not print a traceback."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):
        _discard_stdout()


def _discard_stdout() -> None:
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _open_append(path: str):
    """The --jsonl file: appended to line by line, each line whole or not at all (a full disk stops this output
    with one line naming the file, the lines before stay valid JSON lines, and captioning goes on)."""
    from scenecap.edge.fileio import LineFile

    return LineFile(path, "--jsonl")
