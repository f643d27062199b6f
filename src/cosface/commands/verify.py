"""`cosface verify --model M IMG1 IMG2`: cosine similarity of two faces and the same/different verdict.

Exit status: 0 same person, 1 different people, 2 an error (bad input, or anything unexpected).
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from cosface.commands import device

EPILOG = """\
exit status: 0 same person, 1 different people, 2 error (a script can branch on it).
--json prints one object: {"same": bool, "similarity": float, "threshold": float, "threshold_source": str,
"images": [IMG1, IMG2], "model": MODEL,
"alignments": [how image 1 was prepared, how image 2 was prepared]}."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="compare two face images (exit status 0 same, 1 different, 2 error)",
        description="""\
Print the cosine similarity of the two images' L2-normalised flip-concatenated features, the threshold,
and whether the similarity exceeds it (strictly). The threshold is, in this order:
  --threshold T                 if given;
  --far F                       the threshold the model's evaluation stored for false accept rate F;
  the model's stored one        the best threshold for this similarity over all pairs of the LFW
                                evaluation run when the checkpoint was saved (exports carry it); for an
                                evaluation without it, the mean of its fold thresholds;
  0.3                           a fallback, when the model holds no evaluation.
Where the threshold came from is printed. An image of the model's input size (112x112) is taken as an
aligned face; any other photo is searched for faces and the largest is aligned to the model's template
(a photo without a face is an error, exit 2); how each image was prepared is printed.""",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="MODEL", help="checkpoint, ONNX or TorchScript export")
    p.add_argument("image1", metavar="IMG1")
    p.add_argument("image2", metavar="IMG2")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--threshold", type=float, metavar="T", help="same person when similarity > T")
    how.add_argument("--far", type=float, metavar="F",
                     help="use the model's stored threshold for false accept rate F (e.g. 0.01, 0.001)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text lines")
    p.add_argument("--device", default="auto", type=device, help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--no-detect", action="store_true",
                   help="no face detection: resize each image to the model's size (for crops aligned elsewhere)")
    p.add_argument("--detector", default="retinaface", help="face detector for photos (default retinaface)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.errors import CosfaceError
    from cosface.inference import Embedder

    try:
        emb = Embedder(args.model, device=args.device, detect=not args.no_detect, detector=args.detector)
        threshold = args.threshold
        if args.far is not None:
            threshold = emb.threshold_at_far(args.far)
        v = emb.verify(args.image1, args.image2, threshold)
    except CosfaceError:
        raise                      # the CLI prints it in one line, exit 2
    except Exception:              # a bug must not read as "different people" (exit 1)
        traceback.print_exc()
        return 2
    if args.threshold is not None:
        source = "--threshold"
    elif args.far is not None:
        source = f"--far {args.far:g}: the model's stored threshold for that false accept rate"
    else:
        source = v.threshold_source
    if args.json:
        print(json.dumps({"same": v.same, "similarity": v.similarity, "threshold": v.threshold,
                          "threshold_source": source, "images": [args.image1, args.image2], "model": args.model,
                          "alignments": list(v.alignments)}))
    else:
        for label, how in zip(("image 1", "image 2"), v.alignments):
            print(f"{label}:    {how}")
        print(f"similarity: {v.similarity:.4f} (cosine of L2-normalised flip-concatenated features)")
        print(f"threshold:  {v.threshold:.4f} from {source}")
        print(f"verdict:    {'same person' if v.same else 'different people'}")
    sys.stdout.flush()
    return 0 if v.same else 1
