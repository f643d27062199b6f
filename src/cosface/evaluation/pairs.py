"""LFW pair lists: `pairs.txt` plus an image folder -> index arrays over the distinct images.

Layout (docs/data.md, "LFW-style folders"): `DIR/lfw_align_112/<Name>/<Name>_<n:04d>.jpg` and
`DIR/pairs.txt`; a folder whose `<Name>/` directories sit directly under DIR is accepted too.
`pairs.txt` lines are `name n1 n2` (same person) or `name1 n1 name2 n2` (different people), separated
by tabs or spaces. An optional first line `F P` says the file holds F folds of P same + P different
pairs, in that order, and pair k belongs to fold k // (2P). A first line holding one number `N` is
LFW's View 1 layout (`pairsDevTrain.txt`, `pairsDevTest.txt`): N same pairs, then N different pairs,
with no folds of their own; the i-th pair of each kind goes to fold i * 10 // N, so each of the 10 folds
holds about N/10 of each. Without a header the pairs are cut into 10 equal folds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError
from cosface.fsio import read_text

IMAGE_SUBDIR = "lfw_align_112"
PAIRS_FILE = "pairs.txt"
DEFAULT_FOLDS = 10
_SHOW_MISSING = 5


@dataclass(frozen=True)
class PairList:
    """Pairs as indices into `images`, the distinct image paths in order of first use."""

    images: list[str]
    left: np.ndarray      # (N,) int64 index into images
    right: np.ndarray     # (N,) int64
    issame: np.ndarray    # (N,) bool
    fold: np.ndarray      # (N,) int64, 0 .. n_folds-1
    source: str           # the pairs file, for messages and reports

    def __len__(self) -> int:
        return len(self.issame)

    @property
    def flag(self) -> np.ndarray:
        """The reference's encoding of issame: +1 same person, -1 different."""
        return np.where(self.issame, 1, -1).astype(np.int64)

    @property
    def n_folds(self) -> int:
        return int(self.fold.max()) + 1 if len(self.fold) else 0


def image_name(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


def read_lfw(root: str | os.PathLike, pairs_file: str | os.PathLike | None = None) -> PairList:
    """Parse `root/pairs.txt` (or `pairs_file`) and check that every referenced image exists."""
    root = Path(root)
    if not root.is_dir():
        raise CosfaceError(f"LFW directory {root} does not exist or is not a directory")
    pairs_path = Path(pairs_file) if pairs_file is not None else root / PAIRS_FILE
    if not pairs_path.is_file():
        raise CosfaceError(f"LFW pairs file {pairs_path} not found (expected DIR/{PAIRS_FILE})")
    image_root = root / IMAGE_SUBDIR if (root / IMAGE_SUBDIR).is_dir() else root

    names_l, names_r, issame, fold = parse_pairs(pairs_path)
    index: dict[str, int] = {}
    left = np.array([index.setdefault(n, len(index)) for n in names_l], dtype=np.int64)
    right = np.array([index.setdefault(n, len(index)) for n in names_r], dtype=np.int64)
    images = [str(image_root / rel) for rel in index]

    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:_SHOW_MISSING])
        more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
        raise CosfaceError(
            f"{len(missing)} of {len(images)} images named in {pairs_path} are missing under {image_root}: "
            f"{shown}{more}"
        )
    return PairList(images, left, right, issame, fold, str(pairs_path))


def parse_pairs(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """pairs.txt -> (left image names, right image names, issame, fold), names relative to the image root."""
    path = Path(path)
    lines = [ln.rstrip() for ln in read_text(path, "pairs file").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise CosfaceError(f"{path} is empty")

    header = _parse_header(path, lines[0])
    view1 = None if header else _parse_view1_header(path, lines[0])
    first = 2 if header or view1 else 1          # 1-based line number of the first pair
    body = lines[first - 1:]

    names_l: list[str] = []
    names_r: list[str] = []
    same: list[bool] = []
    for lineno, text in enumerate(body, start=first):
        fields = text.split()
        try:
            if len(fields) == 3:
                name, a, b = fields
                pair = (image_name(name, _number(a)), image_name(name, _number(b)), True)
            elif len(fields) == 4:
                na, a, nb, b = fields
                pair = (image_name(na, _number(a)), image_name(nb, _number(b)), False)
            else:
                raise ValueError
        except ValueError:
            raise CosfaceError(
                f"{path}:{lineno}: malformed pair line {text!r} (expected 'name n1 n2' or 'name1 n1 name2 n2')"
            ) from None
        names_l.append(pair[0])
        names_r.append(pair[1])
        same.append(pair[2])

    issame = np.array(same, dtype=bool)
    fold = _view1_folds(path, view1, issame, first) if view1 else _folds(path, header, issame, first)
    return names_l, names_r, issame, fold


def _number(text: str) -> int:
    n = int(text)
    if n < 0:
        raise ValueError
    return n


def _parse_header(path: Path, line: str) -> tuple[int, int] | None:
    """`F P` -> (F, P); a line that is not two integers is the first pair, not a header."""
    fields = line.split()
    if len(fields) != 2:
        return None
    try:
        n_folds, per = int(fields[0]), int(fields[1])
    except ValueError:
        raise CosfaceError(
            f"{path}:1: malformed header {line!r} (expected '<folds> <pairs per class per fold>', e.g. '10 300')"
        ) from None
    if n_folds < 2 or per < 1:
        raise CosfaceError(f"{path}:1: header {line!r} needs at least 2 folds of at least 1 pair each")
    return n_folds, per


def _parse_view1_header(path: Path, line: str) -> int | None:
    """`N` (pairsDevTest.txt's `500`) -> N; a line that is not one integer is not this header."""
    fields = line.split()
    if len(fields) != 1 or not fields[0].isdigit():
        return None
    n = int(fields[0])
    if n < DEFAULT_FOLDS:
        raise CosfaceError(f"{path}:1: header {line!r} announces {n} same + {n} different pairs; "
                           f"the protocol's {DEFAULT_FOLDS} folds need at least {DEFAULT_FOLDS} of each")
    return n


def _view1_folds(path: Path, n: int, issame: np.ndarray, first: int) -> np.ndarray:
    if len(issame) != 2 * n:
        raise CosfaceError(
            f"{path}: header says {n} same + {n} different pairs ({2 * n} pairs) but the file has {len(issame)}"
        )
    wrong = np.flatnonzero(issame != (np.arange(2 * n) < n))
    if len(wrong):
        i = int(wrong[0])
        raise CosfaceError(
            f"{path}:{first + i}: a {'same' if issame[i] else 'different'}-person pair, but with the header "
            f"'{n}' lines {first}-{first + n - 1} are same-person pairs and lines {first + n}-{first + 2 * n - 1} "
            "different-person pairs"
        )
    k = np.arange(n, dtype=np.int64) * DEFAULT_FOLDS // n
    return np.concatenate([k, k])


def _folds(path: Path, header: tuple[int, int] | None, issame: np.ndarray, first: int) -> np.ndarray:
    n = len(issame)
    if header is None:
        if n == 0 or n % DEFAULT_FOLDS:
            raise CosfaceError(
                f"{path} has no header and {n} pairs, which do not split into {DEFAULT_FOLDS} equal folds; "
                "add a first line '<folds> <same pairs per fold>'"
            )
        return np.arange(n, dtype=np.int64) // (n // DEFAULT_FOLDS)

    n_folds, per = header
    if n != n_folds * 2 * per:
        raise CosfaceError(
            f"{path}: header says {n_folds} folds of {per} same + {per} different pairs "
            f"({n_folds * 2 * per} pairs) but the file has {n}"
        )
    fold = np.arange(n, dtype=np.int64) // (2 * per)
    for k in range(n_folds):
        n_same = int(issame[fold == k].sum())
        if n_same != per:
            lo = first + 2 * per * k
            raise CosfaceError(
                f"{path}: fold {k} (lines {lo}-{lo + 2 * per - 1}) has {n_same} same-person pairs, header says {per}"
            )
    return fold
