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
    add_report_options(p, device_help="auto (CUDA execution provider when available), cpu or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_extras(args)
    from cosface.inference import infer_lfw

    report = infer_lfw(args.model, args.lfw, batch_size=args.batch_size, progress=not args.no_progress,
                       features_out=args.features_out, workers=args.workers, device=args.device)
    print_reports(args, {args.lfw: report})
    return 0
