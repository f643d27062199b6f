"""`cosface import-insightface BACKBONE.pth --arch iresnet100 -o ckpt.pt`: insightface weights as a cosface checkpoint."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "import-insightface",
        help="convert an insightface arcface_torch backbone.pth into a cosface checkpoint",
        description="Read an insightface arcface_torch backbone state dict (tensors only), check every key and shape "
        "against the named IResNet, and write a cosface checkpoint with insightface's preprocessing (RGB, "
        "(x - 127.5) / 127.5) that eval, export, embed, verify and fine-tuning accept. A file that does not fit "
        "the architecture is refused, naming the first mismatched key.",
    )
    p.add_argument("weights", metavar="BACKBONE.pth", help="insightface backbone weights (or its checkpoint_gpu_0.pt)")
    p.add_argument("--arch", required=True, metavar="NAME", help="iresnet18, iresnet34, iresnet50, iresnet100 or iresnet200")
    p.add_argument("-o", "--out", required=True, metavar="CKPT", help="checkpoint to write (e.g. r100.pt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.insightface import import_insightface

    r = import_insightface(args.weights, args.arch, args.out)
    print(f"wrote {r.path}: {r.arch}, {r.embedding_size}-d, {r.parameters:,} parameters in {r.tensors} tensors, "
          f"preprocessing RGB (x - 127.5) / 127.5 (sha256 of the source {r.sha256[:12]}...)")
    return 0
