"""Our metrics beyond the reference's fold accuracies: ROC AUC, TAR at fixed FAR, the ROC curve.

These are computed over all pairs at once, from one similarity per pair: the plain cosine of the
L2-normalised pair features, with no mean subtracted (the protocol's mean subtraction depends on
the fold, so there is no single all-pairs score to take from it). A pair is accepted as "same
person" when its similarity is strictly greater than the threshold.
"""
from __future__ import annotations

import os

import numpy as np

from cosface.errors import CosfaceError

FARS = (1e-1, 1e-2, 1e-3)
SIMILARITY = "cosine of L2-normalised pair features, no mean subtraction"


def cosine(fl: np.ndarray, fr: np.ndarray) -> np.ndarray:
    """(N, D), (N, D) -> (N,) float64 cosine similarity; 0 for a zero vector."""
    fl = np.asarray(fl, dtype=np.float64)
    fr = np.asarray(fr, dtype=np.float64)
    nl = np.linalg.norm(fl, axis=1)
    nr = np.linalg.norm(fr, axis=1)
    denom = nl * nr
    dots = np.einsum("ij,ij->i", fl, fr)
    return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)


def _split(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    issame = np.asarray(issame, dtype=bool)
    same, diff = np.sort(scores[issame]), np.sort(scores[~issame])
    if len(same) == 0 or len(diff) == 0:
        raise CosfaceError("ROC metrics need both same-person and different-person pairs")
    return same, diff


def roc_auc(scores: np.ndarray, issame: np.ndarray) -> float:
    """P(score of a same pair > score of a different pair), ties counting one half."""
    same, diff = _split(scores, issame)
    below = np.searchsorted(diff, same, side="left")
    ties = np.searchsorted(diff, same, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(same) * len(diff)))


def _allowed(far: float, n_different: int) -> int:
    """How many different-person pairs a FAR of `far` lets through out of n (the 1e-9 absorbs 1e-3 * 1000 rounding)."""
    return int(np.floor(far * n_different + 1e-9))


def far_measurable(far: float, n_different: int) -> bool:
    """A FAR can be measured when it allows at least one of the different-person pairs at hand to be accepted:
    1e-3 needs at least 1,000 of them. Below that every threshold above the highest different score gives
    FAR 0, which says nothing about 1e-3."""
    return _allowed(far, n_different) >= 1


def check_cosine_threshold(value: float, what: str = "threshold") -> float:
    """`value` when it can be a cosine decision threshold (-1..1); else a CosfaceError. NaN, which every
    comparison fails, would call every pair different (or every face unknown) without a word."""
    if not -1.0 <= value <= 1.0:
        raise CosfaceError(f"{what} is a cosine, in -1..1; got {value}")
    return value


def threshold_at_far(scores, labels, far: float) -> float:
    """The lowest threshold at which at most floor(far * #different) different-person pairs score above it.

    `scores`: (N,) similarities, higher = more alike; a pair is accepted when its score is strictly greater
    than the threshold. `labels`: (N,) True / 1 for same-person pairs, False / 0 / -1 for different.
    Raises CosfaceError when `far` is not in (0, 1) or cannot be measured with the different pairs at hand.
    """
    scores = np.asarray(scores)
    issame = np.asarray(labels) > 0
    if scores.shape != issame.shape or scores.ndim != 1:
        raise CosfaceError(f"scores and labels must be two (N,) arrays, got {scores.shape} and {issame.shape}")
    if not 0 < far < 1:
        raise CosfaceError(f"target FAR must be in (0, 1), got {far:g}")
    diff = np.sort(scores[~issame])
    n = len(diff)
    if not far_measurable(far, n):
        raise CosfaceError(f"FAR {far:g} cannot be measured with {n} different-person pairs (the smallest "
                           f"measurable FAR is 1/{n} = {1 / n if n else float('nan'):.2g}; {far:g} needs at least "
                           f"{int(np.ceil(1 / far - 1e-9))})")
    # Accepting only scores above the (allowed+1)-th highest different score lets at most `allowed` through.
    return float(diff[n - 1 - _allowed(far, n)])


def thresholds_at_fars(scores, labels, fars=FARS) -> dict[str, float | None]:
    """{"1e-3": threshold_at_far(...), ...} keyed as JSON keys; None where the FAR is not measurable."""
    n_different = int(np.sum(np.asarray(labels) <= 0))
    return {f"{far:g}": threshold_at_far(scores, labels, far) if far_measurable(far, n_different) else None
            for far in fars}


def tar_at_far(scores: np.ndarray, issame: np.ndarray, fars=FARS) -> dict[float, float | None]:
    """For each target FAR f: the fraction of same pairs accepted at `threshold_at_far(f)`, or None when f
    cannot be measured with the different pairs at hand (see `far_measurable`)."""
    same, diff = _split(scores, issame)
    out: dict[float, float | None] = {}
    for far in fars:
        if not far_measurable(far, len(diff)):
            out[far] = None
            continue
        t = threshold_at_far(scores, issame, far)
        out[far] = float(np.sum(same > t) / len(same))
    return out


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false accept rates, true accept rates) at every distinct score as threshold, from (0, 0) to (1, 1)."""
    same, diff = _split(scores, issame)
    thresholds = np.unique(np.concatenate([same, diff]))[::-1]
    tar = (len(same) - np.searchsorted(same, thresholds, side="left")) / len(same)
    far = (len(diff) - np.searchsorted(diff, thresholds, side="left")) / len(diff)
    return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar])


def curve_auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under a `roc_curve` by trapezoids; equals `roc_auc` (a tie's diagonal segment counts one half)."""
    far, tar = np.asarray(far, dtype=np.float64), np.asarray(tar, dtype=np.float64)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike) -> None:
    """Write a PNG with one ROC curve per entry of {label: (far, tar)} (from `roc_curve`), FAR on a log axis.

    Each legend entry shows the curve's AUC. The axis starts at the smallest FAR the pairs can measure
    (one different pair accepted, 1/#different, the curve's smallest non-zero FAR): below it there are no
    data, only the curve's jump from (0, 0).
    """
    # A bare Figure renders with Agg and leaves pyplot's global state (and backend) alone.
    from cosface.optional import require
    from cosface.plotting import save_figure

    Figure = require("matplotlib.figure", purpose="ROC plots").Figure

    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    smallest = 1.0
    for label, (far, tar) in curves.items():
        far, tar = np.asarray(far, dtype=np.float64), np.asarray(tar, dtype=np.float64)
        auc = curve_auc(far, tar)
        shown = far > 0
        smallest = min(smallest, float(far[shown].min()) if shown.any() else 1.0)
        ax.plot(far[shown], tar[shown], label=f"{label}, AUC {auc:.4f}")
    ax.set_xscale("log")
    ax.set_xlim(smallest, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC over all pairs ({SIMILARITY})", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, 120, "ROC plot")
