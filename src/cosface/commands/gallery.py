"""`cosface gallery enroll|identify|list|remove|rename`: a face gallery in one SQLite file, for 1:N identification."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from cosface.commands import device


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "gallery",
        help="enrol people and identify faces against them (1:N)",
        description="A gallery is one SQLite file of subjects (a name, optional metadata) with one or more face "
        "embeddings each, all from one model: the file records the model (backbone, sha256 of the model file, "
        "preprocessing) and refuses embeddings of another. A subject's score is the best cosine over its faces "
        "(--scoring max, the similarity `cosface verify` thresholds) or their mean (--scoring mean); below the "
        "model's verify threshold a photo is 'unknown'.",
    )
    sub = p.add_subparsers(dest="gallery_command", metavar="ACTION")
    sub.required = True

    def common(q, model_required: bool):
        q.add_argument("--db", required=True, metavar="G.sqlite", help="the gallery file")
        if model_required:
            q.add_argument("--model", required=True, metavar="MODEL", help="checkpoint, ONNX or TorchScript export")
            q.add_argument("--device", default="auto", type=device, help="auto (CUDA when available), cpu or cuda")

    e = sub.add_parser("enroll", help="add photos of a person (or a folder of people) to the gallery",
                       description="Enrol NAME with the largest face of each PHOTO, or with --folder DIR every "
                       "subfolder of DIR as one subject named after it. Photos with no usable face are listed at the "
                       "end; the others are enrolled.")
    common(e, True)
    e.add_argument("name", nargs="?", metavar="NAME")
    e.add_argument("photos", nargs="*", metavar="PHOTO")
    e.add_argument("--folder", metavar="DIR", help="one subject per subfolder of DIR")
    e.add_argument("--metadata", metavar="JSON", help="a JSON object stored with the subject (replaces its metadata)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run_enroll)

    i = sub.add_parser("identify", help="who is in these photos?",
                       description="For each PHOTO, the best-matching subjects and whether the best is above the "
                       "threshold (else: unknown). Exit status 0, or 1 when a photo had no usable face (listed on "
                       "stderr, or under \"failures\" with --json); 2 on an error.")
    common(i, True)
    i.add_argument("photos", nargs="+", metavar="PHOTO")
    i.add_argument("--top-k", type=int, default=5, metavar="K", help="subjects listed per photo (default 5)")
    i.add_argument("--threshold", type=float, metavar="T",
                   help="known when score > T (default: the model's verify threshold, as `cosface verify`)")
    i.add_argument("--scoring", choices=("max", "mean"), default="max",
                   help="a subject's score: best (default) or mean cosine over its faces")
    i.add_argument("--index", choices=("auto", "exact", "faiss"), default="auto",
                   help="search: exact numpy, FAISS, or auto (FAISS from 50,000 searched vectors when installed)")
    i.add_argument("--json", action="store_true", help="print one JSON document")
    i.set_defaults(func=run_identify)

    ls = sub.add_parser("list", help="subjects and their face counts",
                        description="Subjects in name order with their face counts: every one, or with --limit N "
                        "one page of N and the --after NAME that continues it.")
    common(ls, False)
    ls.add_argument("--limit", type=int, metavar="N", help="at most N subjects (default: all)")
    ls.add_argument("--after", metavar="NAME", help="start after this name (the 'next' of the previous page)")
    ls.add_argument("--prefix", metavar="P", help="only names that start with P (case-sensitive)")
    ls.add_argument("--json", action="store_true", help="print one JSON document: subjects, next, total")
    ls.set_defaults(func=run_list)

    rm = sub.add_parser("remove", help="delete subjects and their faces")
    common(rm, False)
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(func=run_remove)

    mv = sub.add_parser("rename", help="rename a subject")
    common(mv, False)
    mv.add_argument("name", metavar="NAME")
    mv.add_argument("new_name", metavar="NEW_NAME")
    mv.set_defaults(func=run_rename)


def _report_failures(failures, not_done: str) -> None:
    if failures:
        print(f"{len(failures)} photo(s) had no usable face and were not {not_done}:", file=sys.stderr)
        for photo, why in failures:
            print(f"  {photo}: {why}", file=sys.stderr)


def run_enroll(args: argparse.Namespace) -> int:
    from cosface.errors import CosfaceError
    from cosface.gallery import enroll_folder, enroll_photos, open_gallery
    from cosface.inference import Embedder

    if args.folder and (args.name or args.photos):
        raise CosfaceError("give either NAME PHOTO... or --folder DIR, not both")
    if not args.folder and not (args.name and args.photos):
        raise CosfaceError("give NAME and at least one PHOTO, or --folder DIR")
    metadata = None
    if args.metadata is not None:
        if args.folder:
            raise CosfaceError("--metadata goes with NAME PHOTO..., not --folder")
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as e:
            raise CosfaceError(f"--metadata is not JSON ({e})") from None
    embedder = Embedder(args.model, device=args.device, quiet=True)
    gallery = open_gallery(args.db, embedder)
    if args.folder:
        report = enroll_folder(gallery, embedder, args.folder, progress=not args.quiet)
    else:
        report = enroll_photos(gallery, embedder, args.name, args.photos, metadata=metadata)
    subjects, faces = gallery.store.counts()
    print(f"enrolled {report.faces} face(s) of {len(report.enrolled)} subject(s); {args.db} now holds "
          f"{subjects} subject(s), {faces} face(s)")
    _report_failures(report.failures, "enrolled")
    return 0


def run_identify(args: argparse.Namespace) -> int:
    from cosface.gallery import Gallery, ModelIdentity, photo_faces
    from cosface.inference import Embedder

    embedder = Embedder(args.model, device=args.device, quiet=True)
    gallery = Gallery(args.db, ModelIdentity.of(embedder), index=args.index, scoring=args.scoring, create=False)
    threshold, source = ((args.threshold, "--threshold") if args.threshold is not None
                         else embedder.default_threshold())
    faces = photo_faces(embedder, args.photos)
    results = gallery.identify(faces.embeddings, top_k=args.top_k, threshold=threshold) if faces.crops else []
    if args.json:
        doc = {"threshold": threshold, "threshold_source": source, "scoring": args.scoring,
               "index": gallery.index_kind(),
               "results": [{"photo": p, "identity": r.name, "known": r.known,
                            "matches": [{"name": m.name, "score": m.score} for m in r.matches]}
                           for p, r in zip(faces.sources, results)],
               "failures": [{"photo": p, "error": why} for p, why in faces.failures]}
        print(json.dumps(doc, indent=2))
    else:
        print(f"threshold {threshold:.4f} from {source}; scoring {args.scoring}; index {gallery.index_kind()}")
        for p, r in zip(faces.sources, results):
            print(f"{p}: {r.name if r.known else 'unknown'}")
            for rank, m in enumerate(r.matches, 1):
                print(f"  {rank}. {m.name}  {m.score:.4f}")
        _report_failures(faces.failures, "identified")
    return 0 if not faces.failures else 1


def _store(args):
    from cosface.gallery import GalleryStore

    return GalleryStore(args.db, create=False)


def run_list(args: argparse.Namespace) -> int:
    from cosface.gallery import PAGE_SIZE

    store = _store(args)
    if args.limit is not None:
        page = store.page(limit=args.limit, after=args.after, prefix=args.prefix)
        subjects, after, total = iter(page.subjects), page.next, page.total
    else:
        # Every subject, read a page at a time: a large gallery streams out instead of sitting in memory.
        def every():
            page = store.page(limit=PAGE_SIZE * 10, after=args.after, prefix=args.prefix)
            while True:
                yield from page.subjects
                if page.next is None:
                    return
                page = store.page(limit=PAGE_SIZE * 10, after=page.next, prefix=args.prefix)

        subjects, after, total = every(), None, store.page(limit=1, prefix=args.prefix).total
    if args.json:
        print(json.dumps({"model": store.model.__dict__, "total": total, "next": after,
                          "subjects": [{"name": s.name, "faces": s.faces, "metadata": s.metadata} for s in subjects]},
                         indent=2))
        return 0
    everyone, faces = store.counts()
    held = (f"{total} of {everyone} subject(s) start with {args.prefix!r}" if args.prefix
            else f"{total} subject(s), {faces} face(s)")
    print(f"{args.db}: {held}; model {store.model.describe()}")
    for s in subjects:
        meta = f"  {json.dumps(s.metadata)}" if s.metadata else ""
        print(f"{s.name}\t{s.faces}{meta}")
    if after is not None:
        print(f"more: --after {shlex.quote(after)}", file=sys.stderr)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    for name in args.names:
        print(f"removed {name!r} and {store.remove(name)} face(s)")
    return 0


def run_rename(args: argparse.Namespace) -> int:
    s = _store(args).update(args.name, new_name=args.new_name)
    print(f"renamed {args.name!r} to {s.name!r} ({s.faces} face(s))")
    return 0
