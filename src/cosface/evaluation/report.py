"""A verification result: the protocol's fold accuracies plus our own metrics, as text or JSON."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cosface.evaluation import metrics
from cosface.evaluation.protocol import FoldResult

# What each protocol name means; printed with every result so numbers are never compared across them.
PROTOCOLS = {
    "reference": "reference LFW 10-fold protocol (docs/protocol.md): flip-concatenated features, "
                 "fold-mean subtracted, cosine, mean of best thresholds on the 1e-4 grid",
    "insightface": "insightface verification protocol: flip embeddings summed and L2-normalised, "
                   "squared distance, contiguous 10-fold, first best threshold of arange(0, 4, 0.01)",
}


@dataclass(frozen=True)
class Report:
    protocol: str               # a key of PROTOCOLS
    source: str                 # what was evaluated (pairs file, .bin, .mat)
    folds: np.ndarray           # (F,) fold accuracies, fractions
    thresholds: np.ndarray      # (F,) each fold's threshold (cosine for "reference", distance for "insightface")
    auc: float                  # ours, over all pairs (metrics.SIMILARITY)
    tar_at_far: dict[float, float | None]   # None: that FAR cannot be measured with these pairs
    scores: np.ndarray = field(repr=False)    # (N,) all-pairs similarity behind auc / tar_at_far / the ROC
    issame: np.ndarray = field(repr=False)    # (N,) bool

    @classmethod
    def build(cls, protocol: str, source: str, result: FoldResult, scores: np.ndarray, issame: np.ndarray) -> "Report":
        assert protocol in PROTOCOLS, protocol
        return cls(
            protocol=protocol,
            source=source,
            folds=result.accuracies,
            thresholds=result.thresholds,
            auc=metrics.roc_auc(scores, issame),
            tar_at_far=metrics.tar_at_far(scores, issame),
            scores=scores,
            issame=issame,
        )

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    @property
    def std(self) -> float:
        """Population std (ddof 0) of the fold accuracies, as insightface prints it."""
        return float(np.std(self.folds))

    @property
    def pairs(self) -> int:
        return len(self.issame)

    @property
    def different_pairs(self) -> int:
        return int(np.sum(~self.issame))

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        return metrics.roc_curve(self.scores, self.issame)

    def to_json_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "protocol_description": PROTOCOLS[self.protocol],
            "source": self.source,
            "pairs": self.pairs,
            "folds": [float(a) for a in self.folds],
            "thresholds": [float(t) for t in self.thresholds],
            "mean": self.mean,
            "std": self.std,
            "auc": self.auc,
            "tar_at_far": {f"{far:g}": tar for far, tar in self.tar_at_far.items()},   # null: not measurable
            "min_measurable_far": 1.0 / self.different_pairs,
            "all_pairs_similarity": metrics.SIMILARITY,
        }

    def format(self) -> str:
        """Fold accuracies and AVE as the reference prints them (x100, 2 decimals), then ours, labelled."""
        lines = [f"{self.source}: {self.pairs} pairs, {PROTOCOLS[self.protocol]}"]
        lines += [f"{i + 1}\t{a * 100:.2f}" for i, a in enumerate(self.folds)]
        lines.append(f"AVE: {self.mean * 100:.2f}")
        lines.append("ours (not printed by the reference):")
        lines.append(f"  std of fold accuracies: {self.std * 100:.2f}")
        lines.append("  fold thresholds: " + " ".join(f"{t:.4f}" for t in self.thresholds))
        lines.append(f"  over all pairs, {metrics.SIMILARITY}:")
        lines.append(f"    ROC AUC: {self.auc:.5f}")
        lines += [f"    TAR @ FAR={far:g}: " + (f"{tar * 100:.2f}" if tar is not None else
                  f"not measurable with {self.different_pairs} different-person pairs (needs {np.ceil(1 / far - 1e-9):.0f})")
                  for far, tar in self.tar_at_far.items()]
        return "\n".join(lines)
