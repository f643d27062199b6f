"""Pair features in the reference's MATLAB `.mat` layout.

`fl`, `fr`: (N, D) features of the left and right image of each pair; `fold`: 1×N fold index;
`flag`: 1×N, +1 same person / -1 different. Files the reference wrote keep fold and flag as int64
or float64 row vectors; column vectors are accepted too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from cosface.errors import CosfaceError
from cosface.fsio import atomic_write

KEYS = ("fl", "fr", "fold", "flag")


@dataclass(frozen=True)
class PairFeatures:
    fl: np.ndarray     # (N, D) float, dtype as stored
    fr: np.ndarray     # (N, D)
    fold: np.ndarray   # (N,) int64
    flag: np.ndarray   # (N,) int64, +-1


def save_features(path: str | os.PathLike, fl, fr, fold, flag) -> None:
    import scipy.io

    data = {
        "fl": np.asarray(fl),
        "fr": np.asarray(fr),
        "fold": np.asarray(fold, dtype=np.int64).reshape(1, -1),
        "flag": np.asarray(flag, dtype=np.int64).reshape(1, -1),
    }
    # Atomically: a half-written .mat (disk full, Ctrl-C) would read back as other features or not at all.
    atomic_write(path, lambda f: scipy.io.savemat(f, data), "features file")


def load_features(path: str | os.PathLike) -> PairFeatures:
    import scipy.io

    try:
        data = scipy.io.loadmat(os.fspath(path))
    except FileNotFoundError:
        raise CosfaceError(f"features file {path} not found") from None
    except (OSError, ValueError, TypeError, NotImplementedError) as e:
        raise CosfaceError(f"{path} is not a readable MATLAB .mat file ({e})") from None
    for key in KEYS:
        if key not in data:
            raise CosfaceError(f"{path} has no '{key}' array (a features file needs {', '.join(KEYS)})")

    fl, fr = data["fl"], data["fr"]
    if fl.ndim != 2 or fl.shape != fr.shape or fl.shape[0] == 0:
        raise CosfaceError(f"{path}: 'fl' and 'fr' must be (N, D) arrays of one shape, got {fl.shape} and {fr.shape}")
    if not np.issubdtype(fl.dtype, np.floating):
        fl = fl.astype(np.float64)
    if fr.dtype != fl.dtype:
        fr = fr.astype(fl.dtype)
    n = fl.shape[0]
    fold = _vector(path, "fold", data["fold"], n)
    flag = _vector(path, "flag", data["flag"], n)
    if not np.all(fold == np.round(fold)) or fold.min() < 0:
        raise CosfaceError(f"{path}: 'fold' must hold whole numbers >= 0")
    if not np.all((flag == 1) | (flag == -1)):
        raise CosfaceError(f"{path}: 'flag' must hold +1 (same person) or -1 (different) only")
    return PairFeatures(fl, fr, fold.astype(np.int64), flag.astype(np.int64))


def _vector(path, key: str, a: np.ndarray, n: int) -> np.ndarray:
    if a.ndim != 2 or 1 not in a.shape or a.size != n:
        raise CosfaceError(f"{path}: '{key}' must be a 1×{n} or {n}×1 vector, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)):
        raise CosfaceError(f"{path}: '{key}' must be numeric, got {a.dtype}")
    return a.reshape(-1)
