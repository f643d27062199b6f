"""`cosface export --ckpt CKPT -o FILE`: the backbone as one ONNX or TorchScript file, parity-checked."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint's backbone to ONNX or TorchScript",
        description="Write the backbone (eval mode, no head) as one self-contained file with the preprocessing, "
        "embedding size and evaluation threshold in its metadata, then run it and the eager model on the same "
        "random images; a difference above tolerance fails the export and leaves no file.",
    )
    p.add_argument("--ckpt", required=True, metavar="CKPT", help="training checkpoint (.pt from `cosface train`)")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="output file (e.g. model.onnx, model.ts.pt)")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="default: onnx")
    p.add_argument("--batch", default="dynamic", type=_batch, metavar="dynamic|N",
                   help="ONNX batch dimension: dynamic (default) or fixed to N (the reference deploys N=1)")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: the exporter's)")
    p.add_argument("--tolerance", type=float, metavar="T", default=None,
                   help="largest allowed |exported - eager|, relative to max(1, max |eager|) (default 1e-4)")
    p.set_defaults(func=run)


def _batch(text: str):
    if text == "dynamic":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or an integer, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from cosface.export import TOLERANCE, export_model

    r = export_model(args.ckpt, args.out, fmt=args.format, batch=args.batch, opset=args.opset,
                     tolerance=TOLERANCE if args.tolerance is None else args.tolerance)
    shape = "dynamic batch" if r.batch is None else f"batch fixed to {r.batch}"
    opset = f", opset {r.opset}" if r.opset is not None else ""
    size_mb = r.path.stat().st_size / 1e6
    print(f"wrote {r.path} ({r.format}{opset}, {shape}, {size_mb:.1f} MB) in {r.seconds:.1f} s")
    print(f"parity: max |exported - eager| = {r.max_abs_diff:.3g} on {r.parity_batch} random images "
          f"(max |eager| {r.scale:.3g}; tolerance {r.tolerance:g} x max(1, that))")
    i, p = r.info, r.info.preprocessing
    threshold = f"threshold {i.threshold:.4f}" if i.threshold is not None else "no evaluation threshold"
    print(f"metadata: {i.backbone}, {i.embedding_size}-d, {i.num_classes} classes, input {p.size}x{p.size} "
          f"{p.channel_order} {p.layout}, (x - {p.mean:g}) / {p.std:g}, {threshold}")
    return 0
