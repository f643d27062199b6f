"""IJB-B / IJB-C in the layout of insightface's preprocessed release, read and checked line by line.

    DIR/loose_crop/<name>.jpg            (or DIR/images/)   the loose face crops
    DIR/meta/ijbc_face_tid_mid.txt       "<name> <template id> <media id>", one line per image
    DIR/meta/ijbc_name_5pts_score.txt    "<name> x1 y1 ... x5 y5 <detector score>", same images, same order
    DIR/meta/ijbc_template_pair_label.txt  "<template id> <template id> <1 same | 0 different>"
    DIR/meta/ijbc_1N_gallery_G1.csv, _G2.csv, ijbc_1N_probe_mixed.csv   (optional, 1:N)

IJB-B has the same files with `ijbb_` names; its 1:N galleries are `ijbb_1N_gallery_S1.csv` and `_S2`.
The 1:N files are NIST's protocol CSVs: a header, then one row per image whose first two columns
(TEMPLATE_ID, SUBJECT_ID by header name when present) are all that is read; other columns may be empty.
Landmarks are pixel coordinates of the loose crop with pixel centres at integers, in the order of the
alignment templates (left eye, right eye, nose, left and right mouth corner as seen in the image).

Every malformed line, image file that is not there, or template that a pair or a 1:N file names but
no image belongs to is an error naming the file and line. Nothing is skipped silently: as far as its
scripts and published counts show, insightface's release lists every image it ships and every template
its pairs use, with no documented gaps (the published
counts: IJB-B 227,630 images, 12,115 templates, 8,010,270 pairs; IJB-C 469,375 images, 23,124
templates, 15,658,489 pairs), so a gap means a damaged copy, not a known quirk.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field

import numpy as np

from cosface.errors import CosfaceError
from cosface.fsio import read_text

TARGETS = ("IJBC", "IJBB")
IMAGE_DIRS = ("loose_crop", "images")
# 1:N gallery file suffixes per target (NIST names the two disjoint galleries G1/G2 for IJB-C, S1/S2 for IJB-B).
GALLERIES = {"IJBC": ("G1", "G2"), "IJBB": ("S1", "S2")}


@dataclass(frozen=True)
class Identification:
    """One 1:N file: template ids (T,) and their subject ids (T,), each template once, in file order."""

    path: str
    templates: np.ndarray
    subjects: np.ndarray


@dataclass(frozen=True)
class IJBSet:
    target: str                     # "IJBC" or "IJBB"
    root: str
    image_dir: str
    names: list[str]                # (N,) image file names, relative to image_dir
    templates: np.ndarray           # (N,) int64 template id of each image
    medias: np.ndarray              # (N,) int64 media id of each image
    landmarks: np.ndarray           # (N, 5, 2) float32
    detector_scores: np.ndarray     # (N,) float32
    pairs: np.ndarray               # (P, 2) int64 template ids
    labels: np.ndarray              # (P,) bool, True for the same person
    galleries: dict[str, Identification] = field(default_factory=dict)
    probe: Identification | None = None

    @property
    def paths(self) -> list[str]:
        return [os.path.join(self.image_dir, n) for n in self.names]

    @property
    def has_identification(self) -> bool:
        return self.probe is not None and len(self.galleries) > 0


def meta_files(root: str | os.PathLike, target: str) -> dict[str, str]:
    """Paths of every metadata file of `target` under root/meta (whether they exist or not)."""
    t = target.lower()
    meta = os.path.join(os.fspath(root), "meta")
    files = {
        "tid_mid": os.path.join(meta, f"{t}_face_tid_mid.txt"),
        "5pts": os.path.join(meta, f"{t}_name_5pts_score.txt"),
        "pairs": os.path.join(meta, f"{t}_template_pair_label.txt"),
        "probe": os.path.join(meta, f"{t}_1N_probe_mixed.csv"),
    }
    for g in GALLERIES[target]:
        files[f"gallery_{g}"] = os.path.join(meta, f"{t}_1N_gallery_{g}.csv")
    return files


def detect_target(root: str | os.PathLike) -> str | None:
    """"IJBC" or "IJBB" when root/meta holds that target's image list, else None (both: IJBC)."""
    for target in TARGETS:
        if os.path.isfile(meta_files(root, target)["tid_mid"]):
            return target
    return None


def _lines(path: str):
    """(line number, fields) of each non-blank line; a missing, unreadable or non-UTF-8 file is one
    error (cosface.fsio.read_text names the byte offset of bad UTF-8)."""
    for number, line in enumerate(read_text(path, "IJB metadata file").splitlines(), 1):
        parts = line.split()
        if parts:
            yield number, parts


def _int(text: str, path: str, number: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CosfaceError(f"{path}:{number}: {what} must be an integer, got {text!r}") from None


def _read_tid_mid(path: str):
    names, templates, medias, numbers = [], [], [], []
    for number, parts in _lines(path):
        numbers.append(number)
        if len(parts) != 3:
            raise CosfaceError(f"{path}:{number}: expected '<image> <template id> <media id>', got {len(parts)} fields")
        names.append(parts[0])
        templates.append(_int(parts[1], path, number, "template id"))
        medias.append(_int(parts[2], path, number, "media id"))
    if not names:
        raise CosfaceError(f"{path}: no images listed")
    return names, np.array(templates, np.int64), np.array(medias, np.int64), numbers


def _read_5pts(path: str, names: list[str], tid_path: str, tid_numbers: list[int]):
    landmarks = np.empty((len(names), 10), np.float32)
    scores = np.empty(len(names), np.float32)
    i = 0
    for number, parts in _lines(path):
        if len(parts) != 12:
            raise CosfaceError(f"{path}:{number}: expected '<image> x1 y1 ... x5 y5 <score>' (12 fields), "
                               f"got {len(parts)}")
        if i >= len(names):
            raise CosfaceError(f"{path}:{number}: more images than the {len(names)} of {tid_path}")
        if parts[0] != names[i]:
            raise CosfaceError(f"{path}:{number}: image {parts[0]!r}, but line {tid_numbers[i]} of {tid_path} is "
                               f"{names[i]!r} (the two files list the same images in the same order)")
        try:
            values = [float(v) for v in parts[1:]]
        except ValueError:
            raise CosfaceError(f"{path}:{number}: landmarks and score must be numbers") from None
        if not all(np.isfinite(values)):
            raise CosfaceError(f"{path}:{number}: landmarks and score must be finite numbers")
        landmarks[i] = values[:10]
        scores[i] = values[10]
        i += 1
    if i != len(names):
        raise CosfaceError(f"{path}: {i} images, but {tid_path} lists {len(names)}")
    return landmarks.reshape(-1, 5, 2), scores


def _read_pairs(path: str, known: set):
    rows, labels = [], []
    for number, parts in _lines(path):
        if len(parts) != 3:
            raise CosfaceError(f"{path}:{number}: expected '<template id> <template id> <label>', got {len(parts)} fields")
        a = _int(parts[0], path, number, "template id")
        b = _int(parts[1], path, number, "template id")
        if parts[2] not in ("0", "1"):
            raise CosfaceError(f"{path}:{number}: label must be 1 (same) or 0 (different), got {parts[2]!r}")
        for t in (a, b):
            if t not in known:
                raise CosfaceError(f"{path}:{number}: template {t} has no images in the image list")
        rows.append((a, b))
        labels.append(parts[2] == "1")
    if not rows:
        raise CosfaceError(f"{path}: no template pairs listed")
    return np.array(rows, np.int64), np.array(labels, bool)


def read_identification(path: str, known: set) -> Identification:
    """A NIST 1:N CSV: header, then TEMPLATE_ID, SUBJECT_ID, ... per image; one subject per template."""
    rows = list(csv.reader(io.StringIO(read_text(path, "IJB 1:N file"), newline="")))
    if not rows:
        raise CosfaceError(f"{path}: empty file (expected a header and one row per image)")
    header = [h.strip().upper() for h in rows[0]]
    ti = header.index("TEMPLATE_ID") if "TEMPLATE_ID" in header else 0
    si = header.index("SUBJECT_ID") if "SUBJECT_ID" in header else 1
    if len(header) > max(ti, si) and all(header[i].lstrip("+-").isdigit() for i in (ti, si)):
        # Two integers where the column names belong: a file without its header, whose first row would be lost.
        raise CosfaceError(f"{path}:1: expected a header row (TEMPLATE_ID,SUBJECT_ID,...), found {','.join(rows[0])!r}")
    subject_of: dict[int, int] = {}
    for number, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(ti, si):
            raise CosfaceError(f"{path}:{number}: expected TEMPLATE_ID and SUBJECT_ID columns, got {len(row)} fields")
        t = _int(row[ti].strip(), path, number, "TEMPLATE_ID")
        s = _int(row[si].strip(), path, number, "SUBJECT_ID")
        if t not in known:
            raise CosfaceError(f"{path}:{number}: template {t} has no images in the image list")
        if subject_of.setdefault(t, s) != s:
            raise CosfaceError(f"{path}:{number}: template {t} belongs to subject {subject_of[t]} on an earlier "
                               f"line, here to {s}")
    if not subject_of:
        raise CosfaceError(f"{path}: no templates listed")
    return Identification(path, np.fromiter(subject_of.keys(), np.int64), np.fromiter(subject_of.values(), np.int64))


def load_ijb(root: str | os.PathLike, target: str | None = None, *, check_images: bool = True) -> IJBSet:
    """Read and check an IJB folder; `target` "IJBC"/"IJBB" (default: whichever meta/ holds)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise CosfaceError(f"{root}: not a directory")
    if target is None:
        target = detect_target(root)
        if target is None:
            raise CosfaceError(f"{root}: no meta/ijbc_face_tid_mid.txt or meta/ijbb_face_tid_mid.txt")
    target = target.upper()
    if target not in TARGETS:
        raise CosfaceError(f"unknown IJB target {target!r}; expected one of {', '.join(TARGETS)}")
    image_dir = next((os.path.join(root, d) for d in IMAGE_DIRS if os.path.isdir(os.path.join(root, d))), None)
    if image_dir is None:
        raise CosfaceError(f"{root}: no image folder (expected {' or '.join(d + '/' for d in IMAGE_DIRS)})")
    files = meta_files(root, target)
    names, templates, medias, numbers = _read_tid_mid(files["tid_mid"])
    landmarks, scores = _read_5pts(files["5pts"], names, files["tid_mid"], numbers)
    if check_images:
        _check_images(image_dir, names, files["tid_mid"], numbers)
    known = set(np.unique(templates).tolist())
    pairs, labels = _read_pairs(files["pairs"], known)
    galleries = {}
    probe = None
    if os.path.isfile(files["probe"]):
        probe = read_identification(files["probe"], known)
        for g in GALLERIES[target]:
            if not os.path.isfile(files[f"gallery_{g}"]):
                raise CosfaceError(f"{files['probe']} is there but {files[f'gallery_{g}']} is not")
            galleries[g] = read_identification(files[f"gallery_{g}"], known)
    return IJBSet(target, root, image_dir, names, templates, medias, landmarks, scores, pairs, labels, galleries, probe)


def _check_images(image_dir: str, names: list[str], listed_in: str, numbers: list[int]) -> None:
    # One directory listing instead of one stat per image (469k for IJB-C); names with folders are stat'ed.
    try:
        present = set(os.listdir(image_dir))
    except OSError as e:
        raise CosfaceError(f"{image_dir}: cannot list ({e.strerror or e})") from None
    missing = [i for i, n in enumerate(names)
               if n not in present and not ("/" in n and os.path.isfile(os.path.join(image_dir, n)))]
    if missing:
        i = missing[0]
        more = f" ({len(missing)} listed images are missing in all)" if len(missing) > 1 else ""
        raise CosfaceError(f"{listed_in}:{numbers[i]}: image {names[i]} is not in {image_dir}{more}")
