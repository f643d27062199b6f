"""`cosface synth OUT`: write a synthetic face dataset (CASIA-style training folder + LFW-style evaluation set)."""
from __future__ import annotations

import argparse
import os
import time


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic faces: a training folder and an open-set LFW-style evaluation set",
        description="Write procedurally drawn 112x112 faces: OUT/train/<class>/<image>.jpg (CASIA-WebFace layout) "
        "and OUT/lfw/lfw_align_112/<Name>/<Name>_<n>.jpg with OUT/lfw/pairs.txt (LFW layout, 10 identity-disjoint "
        "folds) for people who are not in the training set, plus OUT/manifest.json. The same seed writes the "
        "same bytes whatever the number of workers.",
    )
    p.add_argument("out", metavar="OUT", help="output directory (new or empty)")
    p.add_argument("--identities", type=int, default=500, metavar="N", help="training identities (default 500)")
    p.add_argument("--images-per-identity", type=int, default=20, metavar="K",
                   help="images of each training identity (default 20)")
    p.add_argument("--lfw-identities", type=int, default=200, metavar="M",
                   help="evaluation identities, at least 20 (default 200)")
    p.add_argument("--lfw-images-per-identity", type=int, default=4, metavar="J",
                   help="images of each evaluation identity, at least 2 (default 4)")
    p.add_argument("--pairs-per-fold", type=int, default=None, metavar="P",
                   help="same (and different) pairs in each of the 10 folds (default: as many as the set "
                   "supports, at most 300)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="processes drawing images (default: one per CPU)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a synthetic set already in OUT (one with a manifest.json)")
    p.add_argument("--ijb", action="store_true",
                   help="instead, write a small IJB-shaped set to OUT (loose crops with five landmarks and detector "
                   "scores, templates of several media, 1:1 pairs, 1:N galleries and probes) for `cosface eval --ijb`")
    p.add_argument("--subjects", type=int, default=40, metavar="N", help="with --ijb: subjects (default 40)")
    p.add_argument("--templates-per-subject", type=int, default=3, metavar="T",
                   help="with --ijb: templates of each subject (default 3)")
    p.add_argument("--target", choices=["IJBC", "IJBB"], default="IJBC",
                   help="with --ijb: file names of this release (default IJBC)")
    p.add_argument("--baseline", action="store_true",
                   help="also print the raw-pixel verification accuracy on the evaluation set")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosface.data.synthetic import generate, raw_pixel_baseline

    start = time.perf_counter()
    if args.ijb:
        return _run_ijb(args, start)
    m = generate(
        args.out,
        identities=args.identities,
        images_per_identity=args.images_per_identity,
        lfw_identities=args.lfw_identities,
        lfw_images_per_identity=args.lfw_images_per_identity,
        pairs_per_fold=args.pairs_per_fold,
        seed=args.seed,
        workers=args.workers if args.workers is not None else (os.cpu_count() or 1),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    train, lfw = m["train"], m["lfw"]
    print(f"wrote {train['images']} training images of {train['identities']} identities to "
          f"{os.path.join(args.out, train['dir'])}")
    print(f"wrote {lfw['images']} evaluation images of {lfw['identities']} other people and {lfw['pairs']} pairs "
          f"({lfw['folds']} folds of {lfw['pairs_per_fold']} same + {lfw['pairs_per_fold']} different) to "
          f"{os.path.join(args.out, lfw['dir'])}")
    print(f"seed {m['seed']}, generator version {m['version']}, {time.perf_counter() - start:.1f} s")
    if args.baseline:
        acc = raw_pixel_baseline(os.path.join(args.out, lfw["dir"]))
        print(f"raw-pixel baseline (reference protocol): {acc * 100:.2f} %")
    return 0


def _run_ijb(args: argparse.Namespace, start: float) -> int:
    from cosface.data.synthetic.ijb import generate_ijb

    m = generate_ijb(args.out, subjects=args.subjects, templates_per_subject=args.templates_per_subject,
                     target=args.target, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)["ijb"]
    print(f"wrote {m['images']} loose crops of {m['subjects']} subjects in {m['templates']} templates "
          f"({m['media']} media) to {os.path.join(args.out, m['dir'])}")
    print(f"{m['target']} metadata in {os.path.join(args.out, 'meta')}: {m['pairs']} template pairs "
          f"({m['same_pairs']} same), 1:N galleries " + " + ".join(f"{g} {n}" for g, n in m["gallery_templates"].items())
          + f" templates, {m['probe_templates']} probe templates")
    print(f"seed {args.seed}, {time.perf_counter() - start:.1f} s")
    return 0
