"""`cosface infer --model FILE.onnx --lfw DIR`: the deployment path, ONNX Runtime through the LFW protocol."""
from __future__ import annotations

import argparse

from cosface.commands.report_options import add_report_options, check_extras, print_reports


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "infer",
        help="evaluate an ONNX export on LFW with ONNX Runtime",
        description="Prepare every image as the model's metadata says, run it and its mirror through ONNX Runtime "
        "(CUDA when available, else CPU), and score the flip-concatenated pair features with the reference "
        "protocol: the same table and JSON as `cosface eval --lfw`.",
    )
    p.add_argument("--model", required=True, metavar="FILE.onnx", help="ONNX model from `cosface export`")
    p.add_argument("--lfw", required=True, metavar="DIR", help="LFW folder: pairs.txt and lfw_align_112/<Name>/...")
    p.add_argument("--mean", type=float, metavar="M",
                   help="for an ONNX model without cosface metadata (e.g. insightface's w600k_r50.onnx): input "
                        "normalisation (x - M) / S on 0..255 pixels; insightface's is --mean 127.5 --std 127.5")
    p.add_argument("--std", type=float, metavar="S", help="see --mean (given together)")
    p.add_argument("--channel-order", choices=["RGB", "BGR"],
                   help="with --mean/--std: the model's channel order (default RGB, as insightface's)")
    add_report_options(p, device_help="auto (CUDA execution provider when available), cpu or cuda")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    check_extras(args)
    from cosface.inference import infer_lfw
    from cosface.preprocess import Preprocessing

    if (args.mean is None) != (args.std is None):
        args._parser.error("--mean and --std go together")
    if args.std == 0:
        args._parser.error("--std must not be 0")
    if args.channel_order is not None and args.mean is None:   # a cosface model states its own; not dropped silently
        args._parser.error("--channel-order goes with --mean and --std (for an ONNX model without cosface metadata)")
    prep = None if args.mean is None else Preprocessing(channel_order=args.channel_order or "RGB", mean=args.mean,
                                                        std=args.std)
    report = infer_lfw(args.model, args.lfw, batch_size=args.batch_size, progress=not args.no_progress,
                       features_out=args.features_out, workers=args.workers, device=args.device, preprocessing=prep)
    print_reports(args, {args.lfw: report})
    return 0
