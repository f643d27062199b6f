"""`cosface verify --model M IMG1 IMG2`: cosine similarity of two faces and the same/different verdict."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="compare two face images",
        description="Print the cosine similarity of the two images' L2-normalised flip-concatenated features and "
        "whether it exceeds the threshold: by default the mean fold threshold of the evaluation stored with the "
        "model (checkpoint or export metadata), else a fallback of 0.3. The threshold's source is printed. "
        "A 112x112 image is taken as an aligned face; any other photo is searched for faces and the largest is "
        "aligned to the model's template (a photo without a face is an error); how each image was prepared is "
        "printed.",
    )
    p.add_argument("--model", required=True, metavar="MODEL", help="checkpoint, ONNX or TorchScript export")
    p.add_argument("image1", metavar="IMG1")
    p.add_argument("image2", metavar="IMG2")
    p.add_argument("--threshold", type=float, metavar="T", help="same person when similarity > T")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--no-detect", action="store_true",
                   help="no face detection: resize each image to the model's size (for crops aligned elsewhere)")
    p.add_argument("--detector", default="retinaface", help="face detector for photos (default retinaface)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.inference import Embedder

    v = Embedder(args.model, device=args.device, detect=not args.no_detect,
                 detector=args.detector).verify(args.image1, args.image2, args.threshold)
    for label, how in zip(("image 1", "image 2"), v.alignments):
        print(f"{label}:    {how}")
    source = "--threshold" if args.threshold is not None else v.threshold_source
    print(f"similarity: {v.similarity:.4f} (cosine of L2-normalised flip-concatenated features)")
    print(f"threshold:  {v.threshold:.4f} from {source}")
    print(f"verdict:    {'same person' if v.same else 'different people'}")
    return 0
