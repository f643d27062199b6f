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


def tar_at_far(scores: np.ndarray, issame: np.ndarray, fars=FARS) -> dict[float, float]:
    """For each target FAR f: the fraction of same pairs accepted at the lowest threshold that
    accepts at most floor(f * #different) different pairs."""
    same, diff = _split(scores, issame)
    out = {}
    for far in fars:
        allowed = int(np.floor(far * len(diff)))
        # Accepting only scores above the (allowed+1)-th highest different score lets at most `allowed` through.
        t = diff[len(diff) - 1 - allowed] if allowed < len(diff) else -np.inf
        out[far] = float(np.sum(same > t) / len(same))
    return out


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false accept rates, true accept rates) at every distinct score as threshold, from (0, 0) to (1, 1)."""
    same, diff = _split(scores, issame)
    thresholds = np.unique(np.concatenate([same, diff]))[::-1]
    tar = (len(same) - np.searchsorted(same, thresholds, side="left")) / len(same)
    far = (len(diff) - np.searchsorted(diff, thresholds, side="left")) / len(diff)
    return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar])


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike) -> None:
    """Write a PNG with one ROC curve per entry of {label: (far, tar)}, FAR on a log axis."""
    # A bare Figure renders with Agg and leaves pyplot's global state (and backend) alone.
    from cosface.optional import require

    Figure = require("matplotlib.figure", purpose="ROC plots").Figure

    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    for label, (far, tar) in curves.items():
        ax.plot(far, tar, label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC over all pairs ({SIMILARITY})", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise CosfaceError(f"cannot write ROC plot {path}: {e}") from None
