"""`cosface verify --model M IMG1 IMG2`: cosine similarity of two faces and the same/different verdict."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="compare two face images",
        description="Print the cosine similarity of the two images' L2-normalised flip-concatenated features and "
        "whether it exceeds the threshold: by default the mean fold threshold of the evaluation stored with the "
        "model (checkpoint or export metadata), else a fallback of 0.3. The threshold's source is printed.",
    )
    p.add_argument("--model", required=True, metavar="MODEL", help="checkpoint, ONNX or TorchScript export")
    p.add_argument("image1", metavar="IMG1")
    p.add_argument("image2", metavar="IMG2")
    p.add_argument("--threshold", type=float, metavar="T", help="same person when similarity > T")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.inference import Embedder

    v = Embedder(args.model, device=args.device).verify(args.image1, args.image2, args.threshold)
    source = "--threshold" if args.threshold is not None else v.threshold_source
    print(f"similarity: {v.similarity:.4f} (cosine of L2-normalised flip-concatenated features)")
    print(f"threshold:  {v.threshold:.4f} from {source}")
    print(f"verdict:    {'same person' if v.same else 'different people'}")
    return 0
