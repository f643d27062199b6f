"""The raw-pixel baseline: how well comparing images pixel by pixel verifies an LFW-style set.

A face model is only learning something if it beats this. Features are the flattened images,
normalised as the model's input is; the scores and thresholds follow the reference protocol
(docs/protocol.md). The reference concatenates each image's features with its mirror's; for raw
pixels that changes no score (the mirror half repeats the same sums in another order, the fold mean too), so
the pixels are used alone and the pair features are never materialised: at 37,632 values an
image, a few thousand pairs would otherwise take gigabytes.
"""
from __future__ import annotations

import os

import numpy as np

from cosface.preprocess import DEFAULT, decode_image, normalize_numpy


def raw_pixel_baseline(lfw_dir: str | os.PathLike) -> float:
    """Mean 10-fold accuracy (a fraction) of raw-pixel cosine similarity on LFW_DIR (pairs.txt + images)."""
    from cosface.evaluation.pairs import read_lfw
    from cosface.evaluation.protocol import accuracy, best_threshold

    pairs = read_lfw(lfw_dir)
    feats = np.empty((len(pairs.images), 3 * DEFAULT.size * DEFAULT.size), np.float32)
    for i, path in enumerate(pairs.images):
        with open(path, "rb") as f:
            img = decode_image(f.read(), DEFAULT.size)
        feats[i] = normalize_numpy(img[None]).reshape(-1)
    # Centring by the fold mean mu only shifts dot products: (a - mu).(b - mu) = a.b - mu.a - mu.b + mu.mu,
    # so the pairs' dot products are computed once and each fold costs one matrix-vector product.
    dots = np.concatenate([
        np.einsum("ij,ij->i", feats[pairs.left[s:s + 256]], feats[pairs.right[s:s + 256]], dtype=np.float64)
        for s in range(0, len(pairs), 256)
    ])
    sq = np.einsum("ij,ij->i", feats, feats, dtype=np.float64)
    accs = []
    for k in range(pairs.n_folds):
        val, test = pairs.fold != k, pairs.fold == k
        # Each image counts once per side of each validation pair it is in, as in the reference's mean.
        weight = np.bincount(np.concatenate([pairs.left[val], pairs.right[val]]), minlength=len(feats))
        mu = (weight @ feats.astype(np.float64)) / weight.sum()
        proj = feats @ mu
        mm = mu @ mu
        pl, pr = proj[pairs.left], proj[pairs.right]
        norm_l = sq[pairs.left] - 2 * pl + mm
        norm_r = sq[pairs.right] - 2 * pr + mm
        scores = (dots - pl - pr + mm) / np.sqrt(norm_l * norm_r)
        t = best_threshold(scores[val], pairs.issame[val])
        accs.append(accuracy(scores[test], pairs.issame[test], t))
    return float(np.mean(accs))
