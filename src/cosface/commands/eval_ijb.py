"""The parts of `cosface eval` beyond LFW/.bin/.mat: --ijb, --suite, and --model (any exported model)."""
from __future__ import annotations

import argparse
import json
import sys


def add_ijb_arguments(p: argparse.ArgumentParser, what) -> None:
    what.add_argument("--ijb", metavar="DIR", help="IJB-B/IJB-C release folder: loose_crop/ (or images/) and meta/")
    what.add_argument("--suite", metavar="DIR",
                      help="evaluate every set in DIR (LFW folders, *.bin, IJB folders) and print one table")
    p.add_argument("--model", metavar="MODEL",
                   help="an exported model (.onnx, TorchScript) or checkpoint, instead of --ckpt")
    p.add_argument("--target", choices=["IJBC", "IJBB"], help="with --ijb: which release (default: what meta/ holds)")
    p.add_argument("--no-flip", action="store_true",
                   help="IJB: embed the image alone (default: image + mirror embeddings summed, insightface's F1)")
    p.add_argument("--no-detector-score", action="store_true",
                   help="IJB: do not weight images by their detector score (insightface's D0)")
    p.add_argument("--normalize-images", action="store_true",
                   help="IJB: L2-normalise each image's feature before pooling (insightface's N0)")


def _embed_fn(args):
    if args.model:
        from cosface.evaluation.suite import model_embed_fn

        return model_embed_fn(args.model, args.device)
    from cosface.evaluation import checkpoint_embed_fn

    return checkpoint_embed_fn(args.ckpt, args.device)


def run_ijb_or_suite(args: argparse.Namespace) -> int:
    parser = args._parser
    if args.model and args.ckpt:
        parser.error("give --ckpt or --model, not both")
    if args.features and args.model:
        parser.error("--features evaluates saved features; it takes no --model")
    if not (args.model or args.ckpt):
        parser.error("--ijb and --suite need --ckpt CKPT or --model MODEL")
    if args.features_out and not args.lfw:
        parser.error("--features-out goes with --lfw")
    if args.protocol and not (args.bin or args.suite):
        parser.error("--protocol applies to --bin sets and the .bin files of a --suite")
    from cosface.commands.report_options import check_extras, print_reports

    check_extras(args)     # --plot: before any embedding starts

    from cosface.evaluation import evaluate_bin, evaluate_lfw
    from cosface.evaluation.ijb import evaluate_ijb
    from cosface.evaluation.suite import evaluate_suite, plot_compare, suite_json, suite_table

    embed_fn, prep = _embed_fn(args)
    opts = dict(batch_size=args.batch_size, progress=not args.no_progress, workers=args.workers, size=prep.size)
    ijb_options = dict(flip=not args.no_flip, detector=not args.no_detector_score, normalize=args.normalize_images)
    if args.suite:
        reports = evaluate_suite(embed_fn, args.suite, bin_protocol=args.protocol or "insightface",
                                 ijb_options=ijb_options, log=None if args.json else _log, **opts)
        if args.plot:
            plot_compare({args.model or args.ckpt: reports}, args.plot)
            print(f"ROC curves written to {args.plot}", file=sys.stderr)
        print(json.dumps(suite_json(reports), indent=2) if args.json else suite_table(reports))
        return 0
    if args.ijb:
        reports = {args.ijb: evaluate_ijb(embed_fn, args.ijb, args.target, **ijb_options, **opts)}
    elif args.lfw:
        reports = {args.lfw: evaluate_lfw(embed_fn, args.lfw, features_out=args.features_out, **opts)}
    else:
        reports = {b: evaluate_bin(embed_fn, b, protocol_name=args.protocol or "insightface", **opts) for b in args.bin}
    print_reports(args, reports)
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr)
