"""The k-fold verification protocols, in numpy alone.

`reference_kfold` is the reference's LFW protocol (docs/protocol.md, "The reference protocol") to
the last bit. For each test fold: mu = mean of the validation folds' left and right features; subtract mu from every feature;
L2-normalise; score = dot product; on the grid t = i/10000, i = -10000..10000, the validation
accuracy is (#same with score > t + #different with score < t) / #pairs, ties counting as errors;
the fold's threshold is the mean of every t that reaches the best validation accuracy, and the
fold's accuracy is the same formula on its test pairs at that threshold.

Exactness. Features keep their dtype (float32 when they come from a network or a reference `.mat`)
and go through the same numpy operations, in the same order, as the reference, so the scores are
bitwise the reference's. Each comparison `score > t` is made in the scores' dtype, t rounded to it:
that is what the reference did under the NumPy 1.x it ran with (value-based casting turns a float64
scalar compared with a float32 array into float32). NumPy >= 2 would compare in float64 instead;
the two differ only for a score that equals a rounded grid point, and agree for float64 features.

Speed. Instead of 20,001 passes over the scores per fold, the counts for the whole grid come from
one np.searchsorted of the (rounded) grid into the sorted scores: #same > t is n_same minus the
number of same scores <= t, #different < t the number of different scores < t.

`insightface_kfold` is the protocol insightface's verification code applies to `.bin` sets; the
two give numbers that are not comparable, and reports name the one they used.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cosface.errors import CosfaceError

GRID_STEPS = 10000
# i / 10000.0 for integer i, exactly the reference's np.arange(-n, n + 1) * 1.0 / n.
THRESHOLDS = np.arange(-GRID_STEPS, GRID_STEPS + 1) * 1.0 / GRID_STEPS

# insightface: squared euclidean distance of L2-normalised embeddings, same person when dist < t.
INSIGHTFACE_THRESHOLDS = np.arange(0, 4, 0.01)


@dataclass(frozen=True)
class FoldResult:
    accuracies: np.ndarray   # (F,) test accuracy of each fold, fraction in [0, 1]
    thresholds: np.ndarray   # (F,) threshold chosen on the other folds


def reference_scores(fl: np.ndarray, fr: np.ndarray, val: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Cosine scores after subtracting the mean of the validation pairs' features (both sides).

    The reference's operations, row for row; rows go in chunks that stay in cache, which changes
    no result since every step after the mean is per row. np.square is what np.power(x, 2) does.
    """
    mu = np.expand_dims(np.mean(np.concatenate((fl[val, :], fr[val, :]), 0), 0), 0)
    scores = np.empty(len(fl), dtype=np.result_type(fl.dtype, mu.dtype))
    for s in range(0, len(fl), chunk):
        l = fl[s : s + chunk] - mu
        r = fr[s : s + chunk] - mu
        l = l / np.expand_dims(np.sqrt(np.sum(np.square(l), 1)), 1)
        r = r / np.expand_dims(np.sqrt(np.sum(np.square(r), 1)), 1)
        scores[s : s + chunk] = np.sum(np.multiply(l, r), 1)
    return scores


def accuracy(scores: np.ndarray, issame: np.ndarray, threshold: float) -> float:
    """(#same with score > t + #different with score < t) / #pairs, t rounded to the scores' dtype."""
    t = scores.dtype.type(threshold)
    correct = np.sum(scores[issame] > t) + np.sum(scores[~issame] < t)
    return 1.0 * correct / len(scores)


def best_threshold(scores: np.ndarray, issame: np.ndarray, grid: np.ndarray = THRESHOLDS) -> float:
    """Mean of all grid thresholds that reach the best accuracy (the reference's rule), without a loop."""
    grid_cmp = grid.astype(scores.dtype)
    # NaN scores (from a zero feature) sort last: a different pair's never counts as below t, as in
    # the reference; a same pair's counts as above every t, a constant that moves no maximum.
    same = np.sort(scores[issame])
    diff = np.sort(scores[~issame])
    correct = (len(same) - np.searchsorted(same, grid_cmp, side="right")) + np.searchsorted(diff, grid_cmp, side="left")
    return float(np.mean(grid[correct == correct.max()]))


def reference_kfold(
    fl: np.ndarray, fr: np.ndarray, fold: np.ndarray, flag: np.ndarray, *, workers: int | None = None
) -> FoldResult:
    """The reference 10-fold protocol (docs/protocol.md) on pair features fl, fr (N, D), fold (N,), flag (N,) = +-1.

    Folds are the distinct values of `fold`, in increasing order; every other fold validates.
    Folds are independent, so they run on `workers` threads (default: one per core, up to one per
    fold); numpy releases the GIL for the array work, and the result does not depend on the count.
    """
    fl, fr, fold, issame = _check_pairs(fl, fr, fold, flag)
    fold_ids = np.unique(fold)
    if len(fold_ids) < 2:
        raise CosfaceError(f"the protocol needs at least 2 folds, got {len(fold_ids)}")

    def one_fold(k) -> tuple[float, float]:
        val, test = fold != k, fold == k
        scores = reference_scores(fl, fr, val)
        t = best_threshold(scores[val], issame[val])
        return accuracy(scores[test], issame[test], t), t

    workers = workers or min(len(fold_ids), os.cpu_count() or 1)
    if workers == 1:
        results = [one_fold(k) for k in fold_ids]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one_fold, fold_ids))
    accs, thrs = zip(*results)
    return FoldResult(np.array(accs), np.array(thrs))


def _check_pairs(fl, fr, fold, flag):
    fl, fr = np.asarray(fl), np.asarray(fr)
    if fl.ndim != 2 or fl.shape != fr.shape:
        raise CosfaceError(f"pair features must be two (N, D) arrays of one shape, got {fl.shape} and {fr.shape}")
    if not (np.issubdtype(fl.dtype, np.floating) and fl.dtype == fr.dtype):
        raise CosfaceError(f"pair features must share one float dtype, got {fl.dtype} and {fr.dtype}")
    fold = np.asarray(fold).reshape(-1)
    flag = np.asarray(flag).reshape(-1)
    n = fl.shape[0]
    if fold.shape != (n,) or flag.shape != (n,):
        raise CosfaceError(f"fold and flag need {n} values each (one per pair), got {fold.size} and {flag.size}")
    if not np.all((flag == 1) | (flag == -1)):
        bad = flag[(flag != 1) & (flag != -1)][0]
        raise CosfaceError(f"flag values must be +1 (same person) or -1 (different), found {bad}")
    if not np.all(fold == np.round(fold)):
        raise CosfaceError("fold values must be whole numbers")
    return fl, fr, fold.astype(np.int64), flag == 1


def kfold_splits(n: int, n_folds: int = 10) -> np.ndarray:
    """Fold of each of n items as sklearn's KFold(n_folds, shuffle=False) cuts them: contiguous,
    the first n % n_folds folds one item longer."""
    if n < n_folds:
        raise CosfaceError(f"{n} pairs cannot be split into {n_folds} folds")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def insightface_embeddings(plain: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """insightface's flip test: embeddings of an image and its mirror summed in float64, then
    L2-normalised the way sklearn.preprocessing.normalize does it (a zero vector stays zero)."""
    emb = np.asarray(plain, dtype=np.float64) + np.asarray(mirrored, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", emb, emb))
    norms[norms == 0.0] = 1.0
    return emb / norms[:, np.newaxis]


def insightface_kfold(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray, n_folds: int = 10) -> FoldResult:
    """insightface's verification protocol on L2-normalised embeddings emb1, emb2 (N, D)."""
    # insightface gathers embeddings in float64 arrays; so do we, for the same distances.
    emb1 = np.asarray(emb1, dtype=np.float64)
    emb2 = np.asarray(emb2, dtype=np.float64)
    return insightface_kfold_dist(np.sum(np.square(np.subtract(emb1, emb2)), 1), issame, n_folds)


def insightface_kfold_dist(dist: np.ndarray, issame: np.ndarray, n_folds: int = 10) -> FoldResult:
    """insightface's folds on squared distances: contiguous folds (KFold without shuffle); on the
    training folds the threshold is the first of np.arange(0, 4, 0.01) with the best accuracy of
    the rule "same when dist < t"; the fold's accuracy is that rule on its test pairs."""
    issame = np.asarray(issame, dtype=bool)
    fold = kfold_splits(len(dist), n_folds)
    accs, thrs = [], []
    for k in range(n_folds):
        train, test = fold != k, fold == k
        d_same = np.sort(dist[train & issame])
        d_diff = np.sort(dist[train & ~issame])
        correct = (
            np.searchsorted(d_same, INSIGHTFACE_THRESHOLDS, side="left")
            + len(d_diff) - np.searchsorted(d_diff, INSIGHTFACE_THRESHOLDS, side="left")
        )
        t = INSIGHTFACE_THRESHOLDS[np.argmax(correct)]
        predict = dist[test] < t
        accs.append(float(np.sum(predict == issame[test])) / np.sum(test))
        thrs.append(float(t))
    return FoldResult(np.array(accs), np.array(thrs))
