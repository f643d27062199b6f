"""`cosface unpack PACKED_DIR -o IMAGE_DIR`: write the images of train.rec + train.idx as an image folder."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "unpack",
        help="unpack train.rec + train.idx into an image folder",
        description="Write every image record of PACKED_DIR (insightface RecordIO) to IMAGE_DIR/<class>/<key>.<ext>, "
        "bytes unchanged. Class folders are named from classes.txt when present, else by label number "
        "(zero-padded, so the folder sorts into the same class indices).",
    )
    p.add_argument("packed_dir", metavar="PACKED_DIR", help="directory holding train.rec and train.idx")
    p.add_argument("-o", "--out", required=True, metavar="IMAGE_DIR", help="output folder (new or empty)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.data.pack import unpack_records

    r = unpack_records(args.packed_dir, args.out, progress=not args.quiet)
    for line in r.skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"unpacked {r.images} images of {r.classes} classes into {r.out_dir} ({len(r.skipped)} skipped)")
    return 0
