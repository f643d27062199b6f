"""`cosface infer --model FILE.onnx --lfw DIR`: the deployment path, ONNX Runtime through the LFW protocol."""
from __future__ import annotations

import argparse


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
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    p.add_argument("--features-out", metavar="FILE.mat", help="save the pair features (reference layout)")
    p.add_argument("--plot", metavar="FILE.png", help="write the ROC curve to a PNG")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, metavar="N", help="image decoding threads (default: up to 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA execution provider when available), cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from cosface.inference import infer_lfw

    report = infer_lfw(args.model, args.lfw, batch_size=args.batch_size, progress=not args.no_progress,
                       features_out=args.features_out, workers=args.workers, device=args.device)
    if args.features_out:
        print(f"pair features written to {args.features_out}", file=sys.stderr)
    if args.plot:
        from cosface.evaluation import plot_roc

        plot_roc({f"{args.lfw} ({report.protocol})": report.roc()}, args.plot)
        print(f"ROC curve written to {args.plot}", file=sys.stderr)
    print(json.dumps(report.to_json_dict(), indent=2) if args.json else report.format())
    return 0
