"""`cosface detect PHOTO... [--json] [-o annotated.png]`: faces, scores and five landmarks per photo."""
from __future__ import annotations

import argparse


def add_detection_options(p: argparse.ArgumentParser) -> None:
    """The detector options `detect` and `align` share."""
    p.add_argument("--detector", default="retinaface", metavar="NAME",
                   help="face detector: retinaface (default) or mtcnn (needs pip install 'cosface[mtcnn]')")
    p.add_argument("--max-side", type=int, default=640, metavar="PX",
                   help="the detector sees the photo shrunk to this long side at most (default 640)")
    p.add_argument("--threshold", type=float, metavar="S", help="minimum face score (default: the detector's)")
    p.add_argument("--min-face", type=float, default=0.0, metavar="PX",
                   help="ignore faces whose box is narrower or shorter than PX pixels of the photo")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "detect",
        help="find faces and their five landmarks in photos",
        description="Detect the faces in each photo: box (x1, y1, x2, y2), score and five landmarks (eye on the "
        "image's left, eye on the image's right, nose tip, mouth corner left, mouth corner right) in the photo's "
        "pixels. -o writes a copy of the photo with the boxes and points drawn on it, so you can check them.",
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("-o", "--out", metavar="OUT.png",
                   help="annotated picture (one photo), or a directory of PHOTO_NAME.faces.png (several; "
                   "a repeated name gets -2, -3, ...)")
    add_detection_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cosface.errors import CosfaceError
    from cosface.faces import detect_faces, read_photo

    results = []
    out = Path(args.out) if args.out else None
    if out is not None and len(args.photos) > 1:
        if out.exists() and not out.is_dir():
            raise CosfaceError(f"-o {out}: with several photos, -o names a directory")
        out.mkdir(parents=True, exist_ok=True)
    elif out is not None:      # checked before any detection runs
        if out.is_dir():
            raise CosfaceError(f"-o {out} is a directory; with one photo, -o names the picture (e.g. faces.png)")
        _picture_format(out)
    drawn = _annotated_names(args.photos)
    for name, drawn_name in zip(args.photos, drawn):
        image = read_photo(name)
        faces = detect_faces(image, args.detector, args.max_side, min_face=args.min_face,
                             score_threshold=args.threshold)
        results.append({"file": str(name), "width": image.shape[1], "height": image.shape[0],
                        "faces": [f.to_dict() for f in faces]})
        if out is not None:
            from PIL import Image

            from cosface.faces.draw import annotate
            from cosface.fsio import atomic_write

            target = out / drawn_name if len(args.photos) > 1 else out
            picture = Image.fromarray(annotate(image, faces))
            atomic_write(target, lambda f: picture.save(f, format=_picture_format(target)), "annotated picture")
            results[-1]["annotated"] = str(target)
        if not args.json:
            _print(results[-1])
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0


def _picture_format(path) -> str:
    """Pillow's format for the annotated picture's name (faces.png: PNG)."""
    from PIL import Image

    from cosface.errors import CosfaceError

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise CosfaceError(f"-o {path}: not a picture name Pillow can write; end it in .png (or .jpg)")
    return fmt


def _annotated_names(photos: list[str]) -> list[str]:
    """PHOTO_NAME.faces.png for each photo; a name already taken (a/001.jpg, b/001.jpg) gets -2, -3, ...,
    never one another photo has as its own, so no picture overwrites another."""
    from pathlib import Path

    reserved = {f"{Path(p).stem}.faces.png" for p in photos}
    used: set[str] = set()
    names = []
    for p in photos:
        stem = Path(p).stem
        name, k = f"{stem}.faces.png", 1
        while name in used or (k > 1 and name in reserved):
            k += 1
            name = f"{stem}-{k}.faces.png"
        used.add(name)
        names.append(name)
    return names


def _print(r: dict) -> None:
    n = len(r["faces"])
    print(f"{r['file']}: {r['width']}x{r['height']}, {n} face{'s' if n != 1 else ''}")
    for i, f in enumerate(r["faces"], 1):
        box = ", ".join(f"{v:.0f}" for v in f["box"])
        pts = [f"({x:.1f}, {y:.1f})" for x, y in f["landmarks"]]
        print(f"  face {i}: score {f['score']:.3f}, box ({box}); eyes {pts[0]} {pts[1]}, nose {pts[2]}, "
              f"mouth {pts[3]} {pts[4]}")
    if "annotated" in r:
        print(f"  annotated picture: {r['annotated']}")
