"""`cosface align RAW_DIR -o ALIGNED_DIR`: detect, align and write 112x112 crops in the training layout."""
from __future__ import annotations

import argparse
import os


def add_parser(subparsers) -> None:
    from cosface.commands.detect import add_detection_options

    p = subparsers.add_parser(
        "align",
        help="turn a raw photo folder into an aligned training folder (or a raw LFW release into lfw_align_112)",
        description="RAW_DIR/<class>/<photo> (any sizes) becomes ALIGNED_DIR/<class>/<photo>.jpg: each photo's face "
        "(--keep) is detected, its five landmarks are mapped onto the template by a least-squares similarity, and "
        "the crop is written as a JPEG. Runs on several processes with a progress bar; a rerun skips photos "
        "already done (an interrupted run leaves no half-written file). ALIGNED_DIR/align_report.json lists the "
        "photos without a face and those with several (which one was kept and why). --lfw aligns a raw LFW "
        "release into the layout `cosface eval --lfw` reads, copying pairs.txt; a photo without a detected face "
        "falls back to the conventional centre crop, and the report lists it.",
    )
    p.add_argument("raw", metavar="RAW_DIR")
    p.add_argument("-o", "--out", required=True, metavar="ALIGNED_DIR")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="processes (default: min(4, CPUs))")
    p.add_argument("--size", type=int, default=112, metavar="PX", help="crop size (default 112; the template scales)")
    p.add_argument("--keep", choices=["largest", "center", "all"], default=None,
                   help="which face of a photo with several: largest (default), center (default with --lfw), all")
    p.add_argument("--template", choices=["arcface", "cosface"], default="arcface",
                   help="arcface 112x112 (default) or the CosFace paper's 96x112 (crops are then 96 wide)")
    p.add_argument("--lfw", action="store_true", help="RAW_DIR is a raw LFW release (<Name>/<Name>_0001.jpg)")
    p.add_argument("--pairs", metavar="FILE", help="LFW pairs.txt (default: RAW_DIR/pairs.txt or next to RAW_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_detection_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from cosface.faces.folder import REPORT, AlignOptions, align_folder

    keep = args.keep or ("center" if args.lfw else "largest")
    opts = AlignOptions(detector=args.detector, size=args.size, keep=keep, min_face=args.min_face,
                        max_side=args.max_side, template=args.template, score_threshold=args.threshold, lfw=args.lfw)
    try:
        r = align_folder(args.raw, args.out, opts, workers=args.workers, progress=not args.quiet, pairs=args.pairs)
    except KeyboardInterrupt:
        print(f"cosface align: stopped; every crop written so far is complete, and rerunning the same command "
              f"continues where this run stopped", file=sys.stderr)
        raise
    print(f"{r['images']} images: {r['aligned']} aligned, {r['skipped_already_done']} skipped as done by an earlier run, "
          f"{r['crops_written']} crops, {r['faces_found']} faces found, {len(r['none_found'])} without a face, "
          f"{len(r['several_found'])} with several (kept: {keep}), {len(r['errors'])} unreadable"
          + (f", {len(r['centre_crop_fallback'])} centre-crop fallbacks" if args.lfw else ""))
    if r["processed_this_run"]:
        print(f"this run: {r['processed_this_run']} images in {r['seconds_this_run']:.1f} s "
              f"({r['processed_this_run'] / max(r['seconds_this_run'], 1e-9):.1f} images/s, {args.workers} workers)")
    print(f"report: {os.path.join(args.out, REPORT)}")
    return 0
