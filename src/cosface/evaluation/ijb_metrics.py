"""IJB scoring at full scale: template pooling, all 1:1 pair scores in chunks, TAR@FAR, 1:N TPIR@FPIR and ranks.

Template features follow insightface's convention (eval_ijbc.py): each image's feature (by default
the sum of the raw embeddings of the image and its mirror, scaled by the detector score), averaged
over the images of each media (a video's frames, or one still), the media averages summed per
template, and the sum L2-normalised. A pair's score is the dot product of its two template features.

Pair scores are computed chunk by chunk of pairs sorted by their first template: a chunk whose pairs
fill a good part of its (first templates x second templates) block becomes one matrix product and a
gather, any other chunk a row-wise dot product over small slices, so no pairs x dim matrix is ever
held (IJB-C has 15.7 M pairs; 15.7 M x 512 float32 would be 32 GB per side).

Rules (the tests hold a literal, loop-by-loop implementation of each that these equal):
  TAR @ FAR f: with n different-person pairs, the threshold t is the (floor(f n) + 1)-th highest
    different-person score, so that at most floor(f n) of them score above it; TAR is the fraction of
    same-person pairs scoring strictly above t. When f n < 1 no false accept is allowed at all and the
    FAR is not measurable on this set: the value is None (shown "-").
  TAR @ FAR f, insightface's reading (what published IJB tables print; reported beside ours): the
    points of sklearn's roc_curve (one per distinct score, highest first, after (0, 0); with its
    default drop_intermediate only the first, the last and the corners of the curve), then the TPR of
    the point whose FPR is nearest f, the highest TPR among equally near points. It can count more
    false accepts than floor(f n), so it is never below ours (ties aside) and sometimes above.
  1:N, per gallery: a probe whose subject has a template in the gallery is mated, any other non-mated.
    A mated probe's rank is 1 + the number of gallery templates scoring strictly above its mate.
    Rank-k = fraction of mated probes with rank <= k. FPIR threshold t: the (floor(f m) + 1)-th
    highest top-1 score among the m non-mated probes; TPIR = fraction of mated probes at rank 1 whose
    mate scores strictly above t; None when f m < 1. Each gallery (G1, G2) is searched on its own and
    the reported figure is the mean over the galleries, as NIST's IJB-C protocol reports it.
"""
from __future__ import annotations

import numpy as np

from cosface.errors import CosfaceError

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FPIRS = (1e-2, 1e-1)
RANKS = (1, 5, 10)

_ROWS_PER_CHUNK = 1 << 15          # images pooled at once (float64 copy: 32k x 512 x 8 B = 128 MB)
_PAIRS_PER_CHUNK = 1 << 20         # pairs scored at once
_GATHER_ROWS = 1 << 14             # pairs per row-wise dot product slice
_BLOCK_BYTES = 256 << 20           # largest (first x second templates) block computed as one product


def image_inputs(features: np.ndarray, detector_scores: np.ndarray | None = None, *, flip: bool = True,
                 normalize: bool = False) -> np.ndarray:
    """Per-image features to pool, (N, D) float32, from the embedder's (N, 2D) [f(image), f(mirror)] rows.

    flip: f(image) + f(mirror), else f(image) alone; normalize: L2-normalise each image's feature first
    (insightface's "N0"; by default the norm is kept as a quality weight, "N1"); detector_scores: scale
    each image by its detector score ("D1"), None for "D0".
    """
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2 or f.shape[1] % 2:
        raise CosfaceError(f"expected (N, 2D) image features [image, mirror], got shape {f.shape}")
    d = f.shape[1] // 2
    x = f[:, :d] + f[:, d:] if flip else f[:, :d].copy()
    if normalize:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))
    if detector_scores is not None:
        x *= np.asarray(detector_scores, dtype=np.float32)[:, None]
    return x


def mode_name(*, flip: bool, normalize: bool, detector: bool) -> str:
    """insightface's name of the test mode, e.g. N1D1F1 (norm kept, detector-weighted, flip summed)."""
    return f"N{0 if normalize else 1}D{1 if detector else 0}F{1 if flip else 0}"


def template_features(feats: np.ndarray, templates: np.ndarray, medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Media means summed per template, L2-normalised: -> (template ids (T,) sorted, (T, D) float64)."""
    feats = np.asarray(feats)
    templates = np.asarray(templates, dtype=np.int64)
    medias = np.asarray(medias, dtype=np.int64)
    n = len(feats)
    if not (len(templates) == len(medias) == n) or n == 0:
        raise CosfaceError(f"template pooling needs one template and media id per image: {n} features, "
                           f"{len(templates)} template ids, {len(medias)} media ids")
    order = np.lexsort((medias, templates))
    t, m = templates[order], medias[order]
    new_template = np.r_[True, t[1:] != t[:-1]]
    new_media = new_template | np.r_[True, m[1:] != m[:-1]]
    t_starts = np.flatnonzero(new_template)
    tids = t[t_starts]
    out = np.empty((len(tids), feats.shape[1]), np.float64)
    media_no = np.cumsum(new_media) - 1                     # (N,) index of each sorted row's media
    # Chunks of whole templates, so each template's media means and sum come from one chunk.
    bounds = np.r_[t_starts, n]
    first = 0
    while first < len(tids):
        last = int(np.searchsorted(bounds, bounds[first] + _ROWS_PER_CHUNK, side="right")) - 1
        last = min(max(last, first + 1), len(tids))
        lo, hi = bounds[first], bounds[last]
        rows = feats[order[lo:hi]]
        m_starts = np.flatnonzero(new_media[lo:hi])
        counts = np.diff(np.r_[m_starts, hi - lo])
        media_means = _segment_sums(rows, m_starts, counts) / counts[:, None]
        tm_starts = np.searchsorted(media_no[lo:hi][m_starts], media_no[bounds[first:last]])
        out[first:last] = _segment_sums(media_means, tm_starts, np.diff(np.r_[tm_starts, len(m_starts)]))
        first = last
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = tids[np.flatnonzero(norms[:, 0] == 0)[0]]
        raise CosfaceError(f"template {bad} pools to a zero feature (all its images have detector score 0?)")
    return tids, out / norms


def _segment_sums(rows: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(G, D) float64 sums of the consecutive row runs rows[starts[g] : starts[g] + lengths[g]], each added
    left to right. One vectorised step per position within a run (the longest run's length in all), where
    np.add.reduceat pays a Python-level call per run (0.6 s for 10k short runs of 512 values)."""
    by_length = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[by_length]
    sums = rows[starts].astype(np.float64)
    for j in range(1, int(sorted_lengths[0]) if len(lengths) else 0):
        k = int(np.searchsorted(-sorted_lengths, -j, side="left"))     # runs longer than j
        runs = by_length[:k]
        sums[runs] += rows[starts[runs] + j]
    return sums


def template_index(tids: np.ndarray, wanted: np.ndarray, what: str = "template") -> np.ndarray:
    """Row of each wanted template id in the sorted `tids`; an id that is not there is an error."""
    idx = np.searchsorted(tids, wanted)
    idx = np.minimum(idx, len(tids) - 1)
    bad = tids[idx] != wanted
    if np.any(bad):
        raise CosfaceError(f"{what} {int(np.asarray(wanted)[bad][0])} has no pooled feature")
    return idx


def pair_scores(tfeats: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(P,) float64 dot products tfeats[left[k]] . tfeats[right[k]], chunk by chunk (see the module doc)."""
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    out = np.empty(len(left), np.float64)
    order = np.argsort(left, kind="stable")
    remap = np.full(len(tfeats), -1, np.int64)
    for s in range(0, len(order), _PAIRS_PER_CHUNK):
        sel = order[s:s + _PAIRS_PER_CHUNK]
        li, ri = left[sel], right[sel]
        ul = np.unique(li)                  # li is sorted: unique is a cheap diff
        seen = np.zeros(len(tfeats), bool)
        seen[ri] = True
        ur = np.flatnonzero(seen)
        cells = len(ul) * len(ur)
        if cells <= 8 * len(sel) and cells * 8 <= _BLOCK_BYTES:
            block = tfeats[ul] @ tfeats[ur].T                          # (|ul|, |ur|)
            remap[ul] = np.arange(len(ul))
            lpos = remap[li]
            remap[ur] = np.arange(len(ur))
            out[sel] = block[lpos, remap[ri]]
        else:
            for g in range(0, len(sel), _GATHER_ROWS):
                a, b = li[g:g + _GATHER_ROWS], ri[g:g + _GATHER_ROWS]
                out[sel[g:g + _GATHER_ROWS]] = np.einsum("ij,ij->i", tfeats[a], tfeats[b])
    return out


def _kth_highest(values: np.ndarray, ks: list[int]) -> list[float]:
    """The k-th highest value (k >= 1) for each k, with one partial sort."""
    n = len(values)
    positions = sorted({n - k for k in ks})
    part = np.partition(values, positions)
    return [float(part[n - k]) for k in ks]


def tar_at_far(scores: np.ndarray, labels: np.ndarray, fars=FARS) -> dict[float, float | None]:
    """TAR at each FAR (rule in the module doc); None where the set has too few different pairs."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        raise CosfaceError("TAR@FAR needs both same-person and different-person pairs")
    measurable = [f for f in fars if f * len(neg) >= 1]
    ts = _kth_highest(neg, [int(np.floor(f * len(neg))) + 1 for f in measurable]) if measurable else []
    out: dict[float, float | None] = {f: None for f in fars}
    for f, t in zip(measurable, ts):
        out[f] = float(np.count_nonzero(pos > t) / len(pos))
    return out


def tar_at_far_insightface(scores: np.ndarray, labels: np.ndarray, fars=FARS) -> dict[float, float]:
    """TAR at each FAR as insightface's IJB scripts read it (rule in the module doc)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        raise CosfaceError("TAR@FAR needs both same-person and different-person pairs")
    order = np.argsort(-scores, kind="stable")
    ranked, same = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]   # last pair of each distinct score
    tp = np.cumsum(same, dtype=np.int64)[ends]
    fp = ends + 1 - tp
    if len(tp) > 2:                     # sklearn's drop_intermediate: keep the ends and where the curve turns
        turns = (np.diff(fp, 2) != 0) | (np.diff(tp, 2) != 0)
        keep = np.r_[True, turns, True]
        tp, fp = tp[keep], fp[keep]
    fpr = np.r_[0, fp] / fp[-1]
    tpr = np.r_[0, tp] / tp[-1]
    out = {}
    for f in fars:
        gap = np.abs(fpr - f)
        out[f] = float(tpr[gap == gap.min()].max())
    return out


def roc_points(scores: np.ndarray, labels: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A thinned ROC for plotting: (FAR, TAR) at about `points` FARs spaced evenly on a log axis."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=bool)
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])[::-1]
    ks = np.unique(np.geomspace(1, len(neg), points).astype(np.int64))   # accept the k highest different pairs
    thresholds = neg[ks - 1]
    # Accept scores >= the k-th highest different score: k false accepts (ties add more).
    far = (len(neg) - np.searchsorted(neg[::-1], thresholds, side="left")) / len(neg)
    tar = (len(pos) - np.searchsorted(pos, thresholds, side="left")) / len(pos)
    return far, tar


def identification(tfeats: np.ndarray, tids: np.ndarray, gallery_templates: np.ndarray, gallery_subjects: np.ndarray,
                   probe_templates: np.ndarray, probe_subjects: np.ndarray, *, ranks=RANKS, fpirs=FPIRS,
                   chunk: int = 4096, source: str = "gallery") -> dict:
    """Open-set 1:N search of the probes in one gallery (rules in the module doc)."""
    g_subjects = np.asarray(gallery_subjects, dtype=np.int64)
    uniq, counts = np.unique(g_subjects, return_counts=True)
    if np.any(counts > 1):
        raise CosfaceError(f"{source}: subject {int(uniq[counts > 1][0])} has {int(counts[counts > 1][0])} "
                           "templates; a 1:N gallery holds one template per subject")
    gallery = tfeats[template_index(tids, np.asarray(gallery_templates), "gallery template")]     # (G, D)
    probe_rows = template_index(tids, np.asarray(probe_templates), "probe template")
    order = np.argsort(g_subjects)
    pos = np.searchsorted(g_subjects[order], probe_subjects)
    pos = np.minimum(pos, len(order) - 1)
    mate = np.where(g_subjects[order][pos] == probe_subjects, order[pos], -1)      # (Q,) gallery column or -1
    rank = np.zeros(len(probe_rows), np.int64)
    mate_score = np.full(len(probe_rows), np.nan)
    top = np.full(len(probe_rows), np.nan)
    for s in range(0, len(probe_rows), chunk):
        sim = tfeats[probe_rows[s:s + chunk]] @ gallery.T            # (q, G)
        m = mate[s:s + chunk]
        rows = np.flatnonzero(m >= 0)
        ms = sim[rows, m[rows]]
        mate_score[s + rows] = ms
        rank[s + rows] = 1 + np.count_nonzero(sim[rows] > ms[:, None], axis=1)
        nm = np.flatnonzero(m < 0)
        top[s + nm] = sim[nm].max(axis=1)
    mated = mate >= 0
    if not mated.any():
        raise CosfaceError(f"{source}: no probe's subject is in this gallery")
    nonmated_top = top[~mated]
    out_fpir: dict[float, float | None] = {f: None for f in fpirs}
    measurable = [f for f in fpirs if f * len(nonmated_top) >= 1]
    if measurable:
        ts = _kth_highest(nonmated_top, [int(np.floor(f * len(nonmated_top))) + 1 for f in measurable])
        hit = rank[mated] == 1
        for f, t in zip(measurable, ts):
            out_fpir[f] = float(np.count_nonzero(hit & (mate_score[mated] > t)) / mated.sum())
    return {
        "gallery_templates": int(len(gallery)),
        "mated_probes": int(mated.sum()),
        "non_mated_probes": int((~mated).sum()),
        "rank": {k: float(np.count_nonzero(rank[mated] <= k) / mated.sum()) for k in ranks},
        "tpir_at_fpir": out_fpir,
    }


def mean_identification(per_gallery: dict[str, dict]) -> dict:
    """Rank-k and TPIR@FPIR averaged over the galleries (None where any gallery has None)."""
    results = list(per_gallery.values())

    def avg(values):
        return None if any(v is None for v in values) else float(np.mean(values))

    return {
        "rank": {k: avg([r["rank"][k] for r in results]) for k in results[0]["rank"]},
        "tpir_at_fpir": {f: avg([r["tpir_at_fpir"][f] for r in results]) for f in results[0]["tpir_at_fpir"]},
    }
