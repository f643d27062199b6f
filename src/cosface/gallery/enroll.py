"""Enrolling photos: one subject from a list of photos, or one subject per subfolder of a folder."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cosface.errors import CosfaceError
from cosface.gallery.gallery import Gallery
from cosface.gallery.photos import MAX_PIXELS, photo_faces, thumbnail_jpeg
from cosface.gallery.store import ModelIdentity
from cosface.inference.embedder import IMAGE_SUFFIXES


@dataclass
class EnrollReport:
    enrolled: dict[str, int] = field(default_factory=dict)       # subject -> faces added
    failures: list[tuple[str, str]] = field(default_factory=list)  # (photo, why it has no usable face)

    @property
    def faces(self) -> int:
        return sum(self.enrolled.values())


def open_gallery(db: str | os.PathLike, embedder, **kw) -> Gallery:
    """The gallery at `db` for this embedder's model (created when new; another model's file is refused)."""
    return Gallery(db, ModelIdentity.of(embedder), **kw)


def enroll_photos(gallery: Gallery, embedder, name: str, photos, *, metadata: dict | None = None,
                  max_pixels: int = MAX_PIXELS, report: EnrollReport | None = None) -> EnrollReport:
    """Add the largest face of each photo to subject `name` (created when new). Photos without a face are
    reported; if none of them has one, nothing is written and that is an error."""
    report = report if report is not None else EnrollReport()
    faces = photo_faces(embedder, [str(p) for p in photos], max_pixels=max_pixels)
    report.failures.extend(faces.failures)
    if not faces.crops:
        raise CosfaceError(f"no face to enrol for {name!r}: " + "; ".join(why for _, why in faces.failures[:3]))
    gallery.enroll(name, faces.embeddings, thumbnails=[thumbnail_jpeg(c) for c in faces.crops],
                   sources=faces.sources, metadata=metadata)
    report.enrolled[name] = report.enrolled.get(name, 0) + len(faces.crops)
    return report


def enroll_folder(gallery: Gallery, embedder, folder: str | os.PathLike, *, progress: bool = True,
                  max_pixels: int = MAX_PIXELS) -> EnrollReport:
    """One subject per subfolder of `folder` (its name), with every image file under it."""
    root = Path(folder)
    if not root.is_dir():
        raise CosfaceError(f"{root} is not a directory")
    people = sorted(d for d in root.iterdir() if d.is_dir())
    if not people:
        raise CosfaceError(f"{root} has no subfolders: --folder expects one subfolder of photos per person")
    report = EnrollReport()
    from tqdm import tqdm

    for person in tqdm(people, desc="enrol", unit="subject", disable=not progress, file=sys.stderr):
        photos = sorted(f for f in person.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            report.failures.append((str(person), "no image files"))
            continue
        try:
            enroll_photos(gallery, embedder, person.name, photos, max_pixels=max_pixels, report=report)
        except CosfaceError as e:
            if person.name in report.enrolled or not str(e).startswith("no face to enrol"):
                raise
    return report
