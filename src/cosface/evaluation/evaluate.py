"""The entry points the trainer and the CLI call: LFW folder, insightface `.bin`, saved features."""
from __future__ import annotations

import os

import numpy as np

from cosface.errors import CosfaceError
from cosface.evaluation import metrics, protocol
from cosface.evaluation.binset import load_bin
from cosface.evaluation.extract import EmbedFn, embed_images
from cosface.evaluation.matio import load_features, save_features
from cosface.evaluation.pairs import read_lfw
from cosface.evaluation.report import Report
from cosface.preprocess import DEFAULT


def evaluate_features(fl, fr, fold, flag, *, source: str = "features") -> Report:
    """The reference protocol on pair features fl, fr (N, D), fold (N,), flag (N,) = +-1."""
    result = protocol.reference_kfold(fl, fr, fold, flag)
    issame = np.asarray(flag).reshape(-1) == 1
    return Report.build("reference", source, result, metrics.cosine(fl, fr), issame)


def evaluate_mat(path: str | os.PathLike) -> Report:
    """The reference protocol on a features file in the reference's `.mat` layout."""
    f = load_features(path)
    return evaluate_features(f.fl, f.fr, f.fold, f.flag, source=os.fspath(path))


def evaluate_lfw(
    embed_fn: EmbedFn,
    lfw_dir: str | os.PathLike,
    *,
    batch_size: int = 64,
    progress: bool = True,
    features_out: str | os.PathLike | None = None,
    workers: int | None = None,
    size: int = DEFAULT.size,
) -> Report:
    """Embed an LFW folder (pairs.txt + images) and run the reference protocol.

    Pair features are [emb(image), emb(mirror)] for each side, as the reference builds them;
    `features_out` saves them in the reference's `.mat` layout. Images are decoded at `size` (the
    model's input size; resized when they differ).
    """
    pairs = read_lfw(lfw_dir)
    emb = embed_images(
        embed_fn, pairs.images, batch_size=batch_size, size=size, progress=progress, workers=workers, desc="LFW"
    )
    fl, fr = emb[pairs.left], emb[pairs.right]
    if features_out is not None:
        save_features(features_out, fl, fr, pairs.fold, pairs.flag)
    return evaluate_features(fl, fr, pairs.fold, pairs.flag, source=pairs.source)


def _insightface(emb: np.ndarray, issame: np.ndarray, source: str) -> Report:
    dim = emb.shape[1] // 2
    e = protocol.insightface_embeddings(emb[:, :dim], emb[:, dim:])
    e1, e2 = e[0::2], e[1::2]
    result = protocol.insightface_kfold(e1, e2, issame)
    return Report.build("insightface", source, result, metrics.cosine(e1, e2), issame)


def _reference(emb: np.ndarray, issame: np.ndarray, source: str) -> Report:
    # A .bin carries no folds; 10 contiguous ones, as insightface cuts it (pairs.txt order for lfw.bin).
    fold = protocol.kfold_splits(len(issame))
    return evaluate_features(emb[0::2], emb[1::2], fold, np.where(issame, 1, -1), source=source)


BIN_PROTOCOLS = {"insightface": _insightface, "reference": _reference}


def evaluate_bin(
    embed_fn: EmbedFn,
    path: str | os.PathLike,
    *,
    protocol_name: str = "insightface",
    batch_size: int = 64,
    progress: bool = True,
    workers: int | None = None,
    size: int = DEFAULT.size,
) -> Report:
    """Embed an insightface verification `.bin` and evaluate it, by default with insightface's protocol."""
    if protocol_name not in BIN_PROTOCOLS:
        raise CosfaceError(f"unknown protocol {protocol_name!r}; choose one of {sorted(BIN_PROTOCOLS)}")
    binset = load_bin(path)
    emb = embed_images(
        embed_fn, binset, batch_size=batch_size, size=size, progress=progress, workers=workers,
        desc=os.path.basename(binset.path),
    )
    return BIN_PROTOCOLS[protocol_name](emb, binset.issame, binset.path)
