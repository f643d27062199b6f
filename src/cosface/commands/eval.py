"""`cosface eval`: verification accuracy of a checkpoint on LFW or insightface `.bin` sets, or of saved features."""
from __future__ import annotations

import argparse

from cosface.commands.report_options import add_report_options, check_extras, print_reports

EPILOG = """\
  cosface eval --ckpt CKPT --lfw DIR [--features-out F.mat] [--plot ROC.png] [--json]
  cosface eval --features F.mat [--json]
  cosface eval --ckpt CKPT --bin lfw.bin [cfp_fp.bin ...] [--protocol insightface|reference] [--json]
  cosface eval --ckpt CKPT|--model M.onnx --ijb DIR [--target IJBC|IJBB] [--json] [--plot ROC.png]
  cosface eval --ckpt CKPT|--model M.onnx --suite DIR [--json] [--plot ROC.png]

LFW folders and .mat features are scored with the reference's 10-fold protocol (docs/protocol.md);
.bin sets with insightface's protocol unless --protocol reference. Every output names its protocol: the
two give numbers that are not comparable. --json prints one JSON object on stdout (keys: protocol, folds,
thresholds, mean, std, tar_at_far (null for a FAR the pairs cannot measure), min_measurable_far, auc,
pairs, ...); with several .bin files, an object with one such entry per file, keyed by the path as given.
The model is never selected on these sets: evaluate the checkpoint you chose.

--ijb scores an IJB-B/IJB-C release in insightface's layout (loose_crop/, meta/ijbc_*.txt): TAR at
FAR 1e-6 ... 1e-1 over the template pairs, and 1:N rank-1/5/10 and TPIR at FPIR 1e-2/1e-1 when the
gallery/probe CSVs are there. --suite runs every set found in DIR (LFW folders, .bin files, IJB folders)
and prints one table."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="verification accuracy on LFW, insightface .bin sets or saved features",
        description="Embed every image and its mirror with the checkpoint's backbone and report the 10-fold "
        "verification accuracy (x100, like the reference), then our own metrics: std, fold thresholds, "
        "ROC AUC and TAR at FAR 1e-1/1e-2/1e-3.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt", metavar="CKPT", help="cosface checkpoint (needed with --lfw and --bin)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--lfw", metavar="DIR", help="LFW folder: pairs.txt and lfw_align_112/<Name>/<Name>_NNNN.jpg")
    what.add_argument("--bin", nargs="+", metavar="FILE.bin", help="insightface verification set(s)")
    what.add_argument("--features", metavar="FILE.mat", help="pair features in the reference's .mat layout")
    from cosface.commands.eval_ijb import add_ijb_arguments

    add_ijb_arguments(p, what)
    p.add_argument("--protocol", choices=["insightface", "reference"],
                   help="protocol for --bin sets (default: insightface)")
    add_report_options(p, device_help="auto (CUDA when available), cpu or cuda")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    parser = args._parser
    if args.features and args.ckpt:
        parser.error("--features evaluates saved features; it takes no --ckpt")
    if args.target and not args.ijb:
        parser.error("--target goes with --ijb (a --suite recognises each IJB folder's release itself)")
    ijb_only = [flag for flag, given in (("--no-flip", args.no_flip), ("--no-detector-score", args.no_detector_score),
                                         ("--normalize-images", args.normalize_images)) if given]
    if ijb_only and not (args.ijb or args.suite):
        parser.error(f"{', '.join(ijb_only)}: IJB options, for --ijb or the IJB folders of a --suite "
                     "(LFW folders and .bin sets are always scored on image + mirror)")
    if args.ijb or args.suite or args.model:
        from cosface.commands.eval_ijb import run_ijb_or_suite

        return run_ijb_or_suite(args)
    if not args.features and not args.ckpt:
        parser.error("--lfw and --bin need --ckpt CKPT")
    if args.features_out and not args.lfw:
        parser.error("--features-out goes with --lfw")
    if args.protocol and not args.bin:
        parser.error("--protocol applies to --bin sets (LFW folders and .mat features use the reference protocol)")
    check_extras(args)

    from cosface.evaluation import checkpoint_embed_fn, evaluate_bin, evaluate_lfw, evaluate_mat

    opts = dict(batch_size=args.batch_size, progress=not args.no_progress, workers=args.workers)
    if args.features:
        reports = {args.features: evaluate_mat(args.features)}
    else:
        embed_fn, prep = checkpoint_embed_fn(args.ckpt, args.device)
        if args.lfw:
            report = evaluate_lfw(embed_fn, args.lfw, features_out=args.features_out, size=prep.size, **opts)
            reports = {args.lfw: report}
        else:
            protocol = args.protocol or "insightface"
            reports = {b: evaluate_bin(embed_fn, b, protocol_name=protocol, size=prep.size, **opts) for b in args.bin}

    print_reports(args, reports)
    return 0
