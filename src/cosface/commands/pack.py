"""`cosface pack IMAGE_DIR -o OUT_DIR`: write an image folder as insightface RecordIO (train.rec + train.idx)."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pack",
        help="pack an image folder into train.rec + train.idx",
        description="Write IMAGE_DIR/<class>/<image> into OUT_DIR as MXNet RecordIO files in insightface's layout "
        "(train.rec, train.idx, property) plus classes.txt (line i = name of class i). 112x112 JPEGs are "
        "stored unchanged; other images are resized and JPEG-encoded.",
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", help="folder of class folders")
    p.add_argument("-o", "--out", required=True, metavar="OUT_DIR",
                   help="output directory (must not hold train.rec or train.idx yet)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes reading and encoding images (default: one per CPU; 0 = this process)")
    p.add_argument("--quality", type=int, default=95, metavar="Q",
                   help="JPEG quality for images that must be re-encoded (1-100, default 95)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.data.pack import pack_folder

    r = pack_folder(args.image_dir, args.out, workers=args.workers, quality=args.quality, progress=not args.quiet)
    for line in r.skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"packed {r.images} images of {r.classes} classes into {r.out_dir} "
          f"({r.copied} stored unchanged, {r.reencoded} re-encoded, {len(r.skipped)} skipped)")
    return 0
