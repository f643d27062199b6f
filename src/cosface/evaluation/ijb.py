"""IJB-B / IJB-C evaluation end to end: align each loose crop from its five points, embed it with its
mirror, pool per media then per template, score every 1:1 pair, search the 1:N galleries, report.

    from cosface.evaluation import checkpoint_embed_fn
    from cosface.evaluation.ijb import evaluate_ijb
    embed_fn, prep = checkpoint_embed_fn("run/last.pt")
    report = evaluate_ijb(embed_fn, "data/IJB_release/IJBC", size=prep.size)
    print(report.format())
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from cosface.errors import CosfaceError
from cosface.evaluation import ijb_metrics
from cosface.evaluation.extract import EmbedFn, PathSource, embed_images
from cosface.evaluation.ijb_data import IJBSet, load_ijb
from cosface.preprocess import DEFAULT, decode_full

PROTOCOL = "ijb"
DESCRIPTION = ("IJB template protocol: 5-point ArcFace alignment, image + mirror embeddings, media mean then "
               "template sum (insightface's pooling), cosine of L2-normalised templates")


class AlignedSource(PathSource):
    """The images of an IJB set for `embed_images`: decoded, then aligned from the listed five points."""

    def __init__(self, ijb: IJBSet):
        super().__init__(ijb.paths)
        self.ijb = ijb

    def decode(self, i: int, size: int) -> np.ndarray:
        from cosface.faces.align import align_face

        try:
            return align_face(decode_full(self.read(i)), self.ijb.landmarks[i], size=size)
        except CosfaceError as e:
            raise ValueError(str(e)) from None


@dataclass(frozen=True)
class IJBReport:
    protocol: str                   # always "ijb"; named like the other reports for the shared printers
    source: str
    target: str
    mode: str                       # insightface's test-mode name, e.g. N1D1F1
    images: int
    templates: int
    tar_at_far: dict                # {far: TAR or None}
    identification: dict | None     # {"G1": {...}, "G2": {...}, "mean": {...}} or None without 1:N files
    scores: np.ndarray = field(repr=False)    # (P,) float64 pair scores
    issame: np.ndarray = field(repr=False)    # (P,) bool

    @cached_property
    def tar_at_far_insightface(self) -> dict:
        """{far: TAR} read as insightface's IJB scripts read it (comparable with published tables)."""
        return ijb_metrics.tar_at_far_insightface(self.scores, self.issame, fars=tuple(self.tar_at_far))

    @property
    def pairs(self) -> int:
        return len(self.issame)

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        return ijb_metrics.roc_points(self.scores, self.issame)

    def to_json_dict(self) -> dict:
        ident = None
        if self.identification is not None:
            ident = {g: {**r, "rank": {str(k): v for k, v in r["rank"].items()},
                         "tpir_at_fpir": {f"{f:g}": v for f, v in r["tpir_at_fpir"].items()}}
                     for g, r in self.identification.items()}
        return {
            "protocol": self.protocol,
            "protocol_description": DESCRIPTION,
            "source": self.source,
            "target": self.target,
            "mode": self.mode,
            "images": self.images,
            "templates": self.templates,
            "pairs": self.pairs,
            "same_pairs": int(self.issame.sum()),
            "tar_at_far": {f"{f:g}": v for f, v in self.tar_at_far.items()},
            "tar_at_far_insightface": {f"{f:g}": v for f, v in self.tar_at_far_insightface.items()},
            "identification": ident,
        }

    def format(self) -> str:
        same = int(self.issame.sum())
        lines = [f"{self.source}: {self.target} 1:1, {self.images} images, {self.templates} templates, "
                 f"{self.pairs} pairs ({same} same, {self.pairs - same} different), mode {self.mode}",
                 f"  {DESCRIPTION}"]
        lines.append(_table(["FAR"] + [f"{f:g}" for f in self.tar_at_far],
                            ["TAR %"] + [_pct(v) for v in self.tar_at_far.values()],
                            ["insightface's reading"] + [_pct(v) for v in self.tar_at_far_insightface.values()]))
        lines.append("  TAR %: at most floor(FAR x different pairs) false accepts; insightface's reading: the nearest "
                     "corner of sklearn's ROC, as published IJB tables (can allow more false accepts)")
        if self.identification is not None:
            lines.append(f"{self.target} 1:N (open set; each gallery searched on its own, then averaged):")
            first = next(iter(self.identification.values()))
            head = (["gallery", "mated", "non-mated"] + [f"rank-{k}" for k in first["rank"]]
                    + [f"TPIR@FPIR={f:g}" for f in first["tpir_at_fpir"]])
            rows = []
            for g, r in self.identification.items():
                rows.append([g, str(r.get("mated_probes", "")), str(r.get("non_mated_probes", ""))]
                            + [_pct(v) for v in r["rank"].values()] + [_pct(v) for v in r["tpir_at_fpir"].values()])
            lines.append(_table(head, *rows))
        shown = list(self.tar_at_far.values())
        if self.identification is not None:
            shown += [v for r in self.identification.values() for v in r["tpir_at_fpir"].values()]
        if any(v is None for v in shown):
            lines.append("  -: not measurable, the set has fewer than 1/FAR different-person pairs (or non-mated probes)")
        return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.2f}"


def _table(header: list[str], *rows: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    fmt = "  " + " | ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in (header, *rows))


def score_ijb(ijb: IJBSet, features: np.ndarray, *, flip: bool = True, normalize: bool = False,
              detector: bool = True) -> IJBReport:
    """Everything after the network: pooling, 1:1 scores and TAR@FAR, 1:N when the set has its files."""
    x = ijb_metrics.image_inputs(features, ijb.detector_scores if detector else None, flip=flip, normalize=normalize)
    tids, tfeats = ijb_metrics.template_features(x, ijb.templates, ijb.medias)
    left = ijb_metrics.template_index(tids, ijb.pairs[:, 0])
    right = ijb_metrics.template_index(tids, ijb.pairs[:, 1])
    scores = ijb_metrics.pair_scores(tfeats, left, right)
    ident = None
    if ijb.probe is not None and ijb.galleries:
        probe = ijb.probe
        ident = {g: ijb_metrics.identification(tfeats, tids, gal.templates, gal.subjects, probe.templates,
                                               probe.subjects, source=gal.path)
                 for g, gal in ijb.galleries.items()}
        ident["mean"] = ijb_metrics.mean_identification(ident)
    return IJBReport(PROTOCOL, ijb.root, ijb.target, ijb_metrics.mode_name(flip=flip, normalize=normalize, detector=detector),
                     len(ijb.names), len(tids), ijb_metrics.tar_at_far(scores, ijb.labels), ident, scores, ijb.labels)


def evaluate_ijb(
    embed_fn: EmbedFn,
    root: str | os.PathLike,
    target: str | None = None,
    *,
    flip: bool = True,
    normalize: bool = False,
    detector: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    workers: int | None = None,
    size: int = DEFAULT.size,
) -> IJBReport:
    """Read, check, align, embed and score an IJB folder (`target` defaults to whichever meta/ holds)."""
    ijb = load_ijb(root, target)
    feats = embed_images(embed_fn, AlignedSource(ijb), batch_size=batch_size, size=size, progress=progress,
                         workers=workers, desc=ijb.target)
    return score_ijb(ijb, feats, flip=flip, normalize=normalize, detector=detector)
