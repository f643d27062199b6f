"""How fast is IJB scoring after the network? Prints figures; asserts nothing.

An IJB-C-sized problem with random features: image features (N, 2 x 512) float32 as the embedder
returns them, detector scores, templates of 1-4 media of 1-4 images, 1:1 pairs between 3,531 "gallery"
templates and 19,593 "probe" templates (the structure of IJB-C's pair list: few first templates, many
second ones) and the 1:N galleries G1/G2 and mixed probes. Timed: pooling, all pair scores, TAR@FAR,
1:N search of both galleries, end to end (cosface.evaluation.ijb_metrics / ijb.score_ijb's steps).

With --insightface, the same features also go through the steps of insightface's eval_ijbc.py, restated
in plain numpy here (a per-template np.where over all images, a per-media mean, pairs in batches of
100,000 gathered as (batch, 1, dim) float64 and multiplied, then the sort under sklearn's roc_curve),
and the two results are compared.

    python benchmarks/ijb_scoring.py                       # 227,630 images, 23,124 templates, 15.66 M pairs
    python benchmarks/ijb_scoring.py --images 469375       # IJB-C's real image count
    python benchmarks/ijb_scoring.py --insightface
    python benchmarks/ijb_scoring.py --pairs 200000 --images 20000 --templates 2000   # a quick check
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cosface.evaluation import ijb_metrics as im


class Timer:
    def __init__(self):
        self.rows = []

    def __call__(self, label, fn, *args, **kw):
        t = time.perf_counter()
        out = fn(*args, **kw)
        dt = time.perf_counter() - t
        self.rows.append((label, dt))
        print(f"  {label:<44s} {dt:8.2f} s", flush=True)
        return out


def make_problem(images: int, templates: int, pairs: int, gallery: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    # Templates own contiguous runs of images; each run is cut into media of 1-4 images.
    cuts = np.sort(rng.choice(np.arange(1, images), templates - 1, replace=False))
    tid = np.zeros(images, np.int64)
    tid[cuts] = 1
    tid = np.cumsum(tid) + 1
    mid = np.cumsum(np.r_[True, (rng.random(images - 1) < 0.4) | (np.diff(tid) != 0)])
    perm = rng.permutation(images)                       # the image list is not sorted by template
    tid, mid = tid[perm], mid[perm]
    feats = rng.standard_normal((images, 2 * dim), dtype=np.float32)
    det = rng.uniform(0.1, 1.0, images).astype(np.float32)
    # 1:1 pairs: each gallery template against a random share of the probe templates.
    gal = np.arange(1, gallery + 1)
    probe = np.arange(gallery + 1, templates + 1)
    p = pairs / (len(gal) * len(probe))
    left, right = [], []
    for g in gal:
        chosen = probe[rng.random(len(probe)) < p]
        left.append(np.full(len(chosen), g))
        right.append(chosen)
    pair_arr = np.stack([np.concatenate(left), np.concatenate(right)], axis=1)
    labels = rng.random(len(pair_arr)) < 19557 / 15658489     # IJB-C's share of same-person pairs
    # 1:N: gallery templates split in two galleries of distinct subjects; probes mated to either.
    g_subjects = np.arange(len(gal))
    p_subjects = rng.integers(0, len(gal), len(probe))
    return feats, det, tid, mid, pair_arr, labels, gal, g_subjects, probe, p_subjects


def ours(t: Timer, feats, det, tid, mid, pairs, labels, gal, g_subjects, probe, p_subjects):
    x = t("image features (flip sum, detector score)", im.image_inputs, feats, det)
    tids, tf = t("pooling: media mean, template sum, L2", im.template_features, x, tid, mid)
    left = im.template_index(tids, pairs[:, 0])
    right = im.template_index(tids, pairs[:, 1])
    scores = t(f"1:1 scores of {len(pairs):,} pairs", im.pair_scores, tf, left, right)
    tar = t("TAR @ FAR 1e-6 ... 1e-1", im.tar_at_far, scores, labels)
    half = len(gal) // 2
    for name, sl in (("G1", slice(0, half)), ("G2", slice(half, None))):
        t(f"1:N {name}: {len(probe):,} probes x {len(gal[sl]):,} templates", im.identification,
          tf, tids, gal[sl], g_subjects[sl], probe, p_subjects)
    return scores, tar


def insightface_steps(t: Timer, feats, det, tid, mid, pairs, labels):
    """insightface eval_ijbc.py's algorithm, step by step, in numpy (restated, not their code)."""
    d = feats.shape[1] // 2

    def inputs():
        return (feats[:, :d] + feats[:, d:]) * det[:, None]

    def pool(x):
        unique = np.unique(tid)
        out = np.zeros((len(unique), x.shape[1]))
        for k, u in enumerate(unique):
            rows = np.where(tid == u)[0]
            f, m = x[rows], mid[rows]
            um, counts = np.unique(m, return_counts=True)
            media = [f[m == v] if c == 1 else np.mean(f[m == v], 0, keepdims=True) for v, c in zip(um, counts)]
            out[k] = np.sum(np.array(media), 0)
        return unique, out / np.sqrt(np.sum(out ** 2, -1, keepdims=True))

    def verify(unique, tf):
        index = np.zeros((unique.max() + 1, 1), dtype=int)
        index[unique, 0] = np.arange(len(unique))
        score = np.zeros(len(pairs))
        for s in range(0, len(pairs), 100000):
            f1 = tf[index[pairs[s:s + 100000, 0]]]             # (batch, 1, dim) float64
            f2 = tf[index[pairs[s:s + 100000, 1]]]
            score[s:s + 100000] = np.sum(f1 * f2, -1).ravel()
        return score

    def roc(score):
        # roc_curve's core: a stable descending sort and cumulative counts of both classes.
        order = np.argsort(score, kind="mergesort")[::-1]
        tps = np.cumsum(labels[order])
        fps = np.cumsum(~labels[order])
        return fps / fps[-1], tps / tps[-1]

    x = t("image features", inputs)
    unique, tf = t("pooling (np.where per template)", pool, x)
    score = t(f"1:1 scores, batches of 100,000 pairs", verify, unique, tf)
    t("ROC (stable sort of all scores)", roc, score)
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=227_630)
    ap.add_argument("--templates", type=int, default=23_124)
    ap.add_argument("--pairs", type=int, default=15_658_489)
    ap.add_argument("--gallery", type=int, default=3_531, help="first templates of the pairs and 1:N gallery size")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--insightface", action="store_true", help="also time insightface's steps and compare scores")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(f"IJB scoring, {args.images:,} images x 2 x {args.dim} float32, {args.templates:,} templates, "
          f"~{args.pairs:,} pairs; {os.cpu_count()} CPUs (shared), numpy {np.__version__}")
    t0 = time.perf_counter()
    problem = make_problem(args.images, args.templates, args.pairs, args.gallery, args.dim, args.seed)
    print(f"  (generated the problem in {time.perf_counter() - t0:.1f} s: {len(problem[4]):,} pairs, "
          f"{len(np.unique(problem[3])):,} media)")
    print("cosface:")
    t = Timer()
    scores, tar = ours(t, *problem)
    total = sum(dt for _, dt in t.rows)
    print(f"  {'total, end to end after the network':<44s} {total:8.2f} s")
    print("  TAR@FAR (random features, so near FAR): " + ", ".join(
        f"{f:g}: {'-' if v is None else f'{v * 100:.3f}'}" for f, v in tar.items()))
    if args.insightface:
        print("insightface eval_ijbc.py's steps (numpy restatement):")
        ti = Timer()
        ref = insightface_steps(ti, *problem[:6])
        print(f"  {'total':<44s} {sum(dt for _, dt in ti.rows):8.2f} s")
        print(f"  largest |score difference| from cosface's: {np.max(np.abs(ref - scores)):.2e}")


if __name__ == "__main__":
    main()
