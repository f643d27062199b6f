"""`cosface embed --model M IMAGE_OR_DIR ... -o OUT.npy`: L2-normalised embeddings and their file list."""
from __future__ import annotations

import argparse

from cosface.commands import device


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed images into a .npy file",
        description="Write one L2-normalised embedding per image to OUT.npy (float32, one row per image) and the "
        "image paths, one per line in the same order, to OUT.txt. Directories are searched recursively for "
        "image files. Rows are [f(image), f(mirror)] (2 x the embedding size), the features the LFW protocol "
        "and `cosface verify` compare; --no-flip writes f(image) alone. A 112x112 image is taken as an aligned face; "
        "any other photo is searched for faces and the largest is aligned to the model's template (no face: "
        "error). --all-faces writes one row per face, with its box and score in OUT.txt.",
    )
    p.add_argument("--model", required=True, metavar="MODEL", help="checkpoint, ONNX or TorchScript export")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("-o", "--out", required=True, metavar="OUT.npy")
    p.add_argument("--no-flip", action="store_true", help="embed the image alone, without its mirror")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default 64)")
    p.add_argument("--device", default="auto", type=device, help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--all-faces", action="store_true", help="one row per face found in each photo")
    p.add_argument("--no-detect", action="store_true",
                   help="no face detection: resize every image to the model's size (for crops aligned elsewhere)")
    p.add_argument("--detector", default="retinaface", help="face detector for photos (default retinaface)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.inference import embed_to_file

    npy, listing, shape = embed_to_file(args.model, args.inputs, args.out, flip=not args.no_flip,
                                        batch_size=args.batch_size, device=args.device,
                                        detect=not args.no_detect, all_faces=args.all_faces, detector=args.detector)
    print(f"wrote {shape[0]} embeddings of {shape[1]} values to {npy}; file list in {listing}")
    return 0
