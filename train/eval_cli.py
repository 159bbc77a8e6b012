"""`scenecap eval`: how good are these bundles (or this SavedModel) on a held-out set, and what did
quantisation cost? Captions with the edge runtime per bundle and writes report.md/json/png + COCO results."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="caption a held-out set with bundles or a SavedModel and report quality, size and speed",
        description="Caption a held-out set with each bundle (edge runtime, as on the device) and with the float "
        "SavedModel, then write report.json, report.md, report.png and results/NAME.json (COCO results format): "
        "BLEU-4 and CIDEr-D against the references, token-exact agreement with the float SavedModel, model "
        "sizes, median encoder and decoder-step latency. The report says in words which variants miss the "
        "target (>= 95% identical captions, <= 0.01 BLEU-4 lost), and which do not beat trivial baselines (the "
        "best constant caption's BLEU-4 and CIDEr-D, the count of distinct captions): such a model never meets "
        "the target. For synthetic scenes (scenes_SPLIT.json beside captions_SPLIT.json) it counts objects "
        "invented and missing: object precision, recall and the share of scenes named exactly right.",
        epilog="examples:\n  scenecap eval bundles/synth/int8 bundles/synth/edgetpu --reference exports/synth "
        "--out reports/synth\n  scenecap eval exports/synth --annotations data/synth/captions_test.json "
        "--out reports/float --beam 3\n  scenecap eval bundles/synth-int8 "
        "--annotations own=data/synth/captions_test.json "
        "--annotations shifted=data/shifted/captions_test.json --out reports/shift",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("items", nargs="+", metavar="BUNDLE|SAVEDMODEL",
                   help="bundle folders and/or a SavedModel export folder")
    p.add_argument("--out", required=True, help="report folder to write")
    p.add_argument("--reference", help="float SavedModel export to compare with (default: the export among the "
                   "items, else the one the bundles were converted from)")
    p.add_argument("--annotations", action="append", metavar="[NAME=]FILE",
                   help="held-out captions (COCO JSON or any format 'scenecap train' reads; default: the validation "
                   "split recorded at training). Repeat it for several sets, reported side by side, e.g. "
                   "--annotations own=data/synth/captions_test.json --annotations shifted=data/shifted/"
                   "captions_test.json; the first set's figures are the ones held to the target")
    p.add_argument("--images", help="image folder for --annotations (default: beside each file)")
    p.add_argument("--count", type=int, default=200, help="held-out images to caption (default 200)")
    p.add_argument("--beam", type=int, default=1, help="beam width (1 = greedy, the default)")
    p.add_argument("--length-penalty", type=float, default=0.0, help="GNMT length penalty for beam search")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from scenecap.convert.report import ReportOptions, write_report

    paths = write_report(ReportOptions(
        items=args.items, out=args.out, reference=args.reference, annotations=args.annotations,
        images=args.images, count=args.count, beam=args.beam, length_penalty=args.length_penalty,
        threads=args.threads))
    print(paths["md"].read_text(encoding="utf-8"))
    return 0
