"""`cosface embed --model M IMAGE_OR_DIR ... -o OUT.npy`: L2-normalised embeddings and their file list."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed images into a .npy file",
        description="Write one L2-normalised embedding per image to OUT.npy (float32, one row per image) and the "
        "image paths, one per line in the same order, to OUT.txt. Directories are searched recursively for "
        "image files. Rows are [f(image), f(mirror)] (2 x the embedding size), the features the LFW protocol "
        "and `cosface verify` compare; --no-flip writes f(image) alone.",
    )
    p.add_argument("--model", required=True, metavar="MODEL", help="checkpoint, ONNX or TorchScript export")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("-o", "--out", required=True, metavar="OUT.npy")
    p.add_argument("--no-flip", action="store_true", help="embed the image alone, without its mirror")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default 64)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.inference import embed_to_file

    npy, listing, shape = embed_to_file(args.model, args.inputs, args.out, flip=not args.no_flip,
                                        batch_size=args.batch_size, device=args.device)
    print(f"wrote {shape[0]} embeddings of {shape[1]} values to {npy}; file list in {listing}")
    return 0
