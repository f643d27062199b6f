"""The fast IJB scoring against literal, loop-by-loop implementations of the same rules, on generated sets."""
import math

import numpy as np
import pytest

from cosface.errors import CosfaceError
from cosface.evaluation import ijb_metrics as im


# ---------------------------------------------------------------- literal implementations

def literal_templates(feats, templates, medias):
    """insightface's pooling written out: per template, per media mean, summed, normalised."""
    out = {}
    for t in sorted(set(templates.tolist())):
        media_feats = []
        for m in sorted(set(medias[templates == t].tolist())):
            rows = [feats[i].astype(np.float64) for i in range(len(feats)) if templates[i] == t and medias[i] == m]
            media_feats.append(sum(rows) / len(rows))
        v = sum(media_feats)
        out[t] = v / math.sqrt(float(v @ v))
    return out


def literal_tar_at_far(scores, labels, far):
    neg = sorted((s for s, l in zip(scores, labels) if not l), reverse=True)
    pos = [s for s, l in zip(scores, labels) if l]
    allowed = math.floor(far * len(neg))
    if allowed < 1:
        return None
    t = neg[allowed]                       # the (allowed + 1)-th highest
    assert sum(1 for s in neg if s > t) <= allowed
    return sum(1 for s in pos if s > t) / len(pos)


def literal_identification(T, gallery, probes, ks, fpirs):
    """gallery: [(template, subject)], probes: [(template, subject)], T: {template: feature}."""
    ranks, top_nonmated, mate_scores = [], [], []
    for pt, ps in probes:
        sims = [(float(T[pt] @ T[gt]), gs) for gt, gs in gallery]
        mate = [s for s, gs in sims if gs == ps]
        if mate:
            ranks.append(1 + sum(1 for s, gs in sims if gs != ps and s > mate[0]))
            mate_scores.append(mate[0])
        else:
            top_nonmated.append(max(s for s, _ in sims))
    rank = {k: sum(1 for r in ranks if r <= k) / len(ranks) for k in ks}
    tpir = {}
    for f in fpirs:
        allowed = math.floor(f * len(top_nonmated))
        if f * len(top_nonmated) < 1:
            tpir[f] = None
            continue
        t = sorted(top_nonmated, reverse=True)[allowed]
        tpir[f] = sum(1 for r, s in zip(ranks, mate_scores) if r == 1 and s > t) / len(ranks)
    return rank, tpir


# ---------------------------------------------------------------- generated sets

def generated(seed, n_templates=40, subjects=12, dim=8):
    """Templates of a few subjects, 1-3 media of 1-4 images each, features near the subject's centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(subjects, dim))
    subject_of = rng.integers(0, subjects, n_templates)
    tids = rng.permutation(np.arange(100, 100 + 3 * n_templates))[:n_templates]
    feats, templates, medias = [], [], []
    for t, s in zip(tids, subject_of):
        for m in range(rng.integers(1, 4)):
            for _ in range(rng.integers(1, 5)):
                feats.append(np.concatenate([centres[s], centres[s]]) + rng.normal(0, 1.0, 2 * dim))
                templates.append(t)
                medias.append(1000 + m)       # media ids repeat across templates, as in IJB
    p = rng.permutation(len(feats))
    return (np.array(feats, np.float32)[p], np.array(templates)[p], np.array(medias)[p],
            rng.uniform(0.1, 1.0, len(feats)).astype(np.float32)[p], tids, subject_of)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooling_and_scores_equal_literal(seed, monkeypatch):
    feats, templates, medias, det, tids, _ = generated(seed)
    monkeypatch.setattr(im, "_ROWS_PER_CHUNK", 7)      # many chunks, some templates larger than a chunk
    x = im.image_inputs(feats, det)
    d = feats.shape[1] // 2
    np.testing.assert_array_equal(x, (feats[:, :d] + feats[:, d:]) * det[:, None])
    got_ids, got = im.template_features(x, templates, medias)
    want = literal_templates(x, templates, medias)
    assert got_ids.tolist() == sorted(want)
    np.testing.assert_allclose(got, np.stack([want[t] for t in got_ids]), rtol=0, atol=1e-12)

    rng = np.random.default_rng(seed)
    pairs = rng.choice(tids, size=(500, 2))
    for chunk in (1 << 20, 64):                          # one block product / chunks on both paths
        monkeypatch.setattr(im, "_PAIRS_PER_CHUNK", chunk)
        monkeypatch.setattr(im, "_GATHER_ROWS", 16)
        scores = im.pair_scores(got, im.template_index(got_ids, pairs[:, 0]), im.template_index(got_ids, pairs[:, 1]))
        np.testing.assert_allclose(scores, [want[a] @ want[b] for a, b in pairs], rtol=0, atol=1e-12)


def test_image_inputs_flip_sum_then_normalise_then_detector_score():
    # One image: f(image) = (3, 0), f(mirror) = (0, 4), detector score 2 (insightface's order: F, N, D).
    feats = np.array([[3.0, 0.0, 0.0, 4.0]], np.float32)
    det = np.array([2.0], np.float32)
    np.testing.assert_allclose(im.image_inputs(feats, det), [[6.0, 8.0]])                        # N1D1F1
    np.testing.assert_allclose(im.image_inputs(feats, det, normalize=True), [[1.2, 1.6]])        # N0D1F1
    np.testing.assert_allclose(im.image_inputs(feats, None), [[3.0, 4.0]])                       # N1D0F1
    np.testing.assert_allclose(im.image_inputs(feats, det, flip=False), [[6.0, 0.0]])            # N1D1F0
    np.testing.assert_allclose(im.image_inputs(feats, det, flip=False, normalize=True), [[2.0, 0.0]])


def test_a_still_weighs_as_much_as_a_whole_video():
    # Template 7: a still (1, 0) in media 1 and a video of two frames (0, 1), (0, 3) in media 2: the
    # video's mean (0, 2) plus the still gives (1, 2). Template 9 reuses media id 2 for its own image.
    feats = np.array([[1, 0], [0, 1], [0, 3], [5, 0]], np.float64)
    tids, t = im.template_features(feats, np.array([7, 7, 7, 9]), np.array([1, 2, 2, 2]))
    assert tids.tolist() == [7, 9]
    np.testing.assert_allclose(t, [[1 / np.sqrt(5), 2 / np.sqrt(5)], [1.0, 0.0]], atol=1e-15)


def test_gather_path_when_pairs_are_sparse(monkeypatch):
    rng = np.random.default_rng(5)
    t = rng.normal(size=(300, 4))
    left, right = rng.integers(0, 300, 50), rng.integers(0, 300, 50)   # 50 pairs over a 300 x 300 block: gather
    monkeypatch.setattr(im, "_GATHER_ROWS", 8)
    np.testing.assert_allclose(im.pair_scores(t, left, right), np.einsum("ij,ij->i", t[left], t[right]), atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_tar_at_far_equals_literal(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    # Rounded scores make ties, which the rule must treat as the literal one does.
    scores = np.round(rng.normal(size=n), 2)
    labels = rng.random(n) < 0.3
    scores[labels] += 1.0
    got = im.tar_at_far(scores, labels, fars=im.FARS)
    for far in im.FARS:
        assert got[far] == literal_tar_at_far(scores.tolist(), labels.tolist(), far), far


def test_tar_at_far_known_answer():
    # 10 different pairs 0.0 .. 0.9; FAR 0.1 allows one: threshold 0.8 -> same pairs above 0.8 are accepted.
    neg = np.arange(10) / 10
    pos = np.array([0.85, 0.95, 0.5, 0.8])
    scores = np.concatenate([neg, pos])
    labels = np.r_[np.zeros(10, bool), np.ones(4, bool)]
    # FAR 0.3 allows three: threshold 0.6 (the 4th highest); 0.01 allows none: not measurable.
    got = im.tar_at_far(scores, labels, fars=(0.1, 0.01, 0.3))
    assert got == {0.1: 0.5, 0.01: None, 0.3: 0.75}


def insightface_reading(scores, labels, far, drop_intermediate=True):
    """How insightface's ijb_11.py / eval_ijbc.py read TAR at a FAR: the points of sklearn's roc_curve
    (one per distinct score, highest first, after (0, 0); with drop_intermediate only the first, the last
    and the corners are kept), then the point whose FPR is nearest the target, highest TPR among equals."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]          # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    if drop_intermediate and len(fps) > 2:
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        fps, tps = fps[keep], tps[keep]
    fpr, tpr = np.r_[0, fps] / fps[-1], np.r_[0, tps] / tps[-1]
    gap = np.abs(fpr - far)
    return float(tpr[gap == gap.min()].max())


def test_insightface_reads_the_nearest_kept_roc_corner():
    # 40 different pairs, the 7 highest in one run with no same pair between them; FAR 0.1 allows 4.
    neg = np.r_[np.linspace(0.9, 0.84, 7), np.linspace(0.3, -0.5, 33)]
    pos = np.array([0.99, 0.5, 0.45])
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(3, bool), np.zeros(40, bool)]
    assert im.tar_at_far(scores, labels, fars=(0.1,)) == {0.1: pytest.approx(1 / 3)}     # threshold: 5th highest
    # sklearn keeps the run's two ends (FPR 0 and 7/40); 7/40 is nearer 0.1, with all three same pairs above it.
    assert insightface_reading(scores, labels, 0.1) == 1.0
    assert insightface_reading(scores, labels, 0.1, drop_intermediate=False) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(6))
def test_the_reported_insightface_reading_equals_the_restatement(seed):
    rng = np.random.default_rng(seed)
    n_neg = int(rng.choice([40, 997, 1234, 5000]))
    scores = np.r_[rng.normal(1.5, 1, 300), rng.normal(0, 1, n_neg)]
    if seed % 2:
        scores = np.round(scores, 1)            # many ties, mixed same/different within a score
    labels = np.r_[np.ones(300, bool), np.zeros(n_neg, bool)]
    perm = rng.permutation(len(scores))
    scores, labels = scores[perm], labels[perm]
    fars = (1e-3, 2.5e-3, 1e-2, 0.05, 1e-1, 0.5)
    got = im.tar_at_far_insightface(scores, labels, fars=fars)
    assert got == {f: insightface_reading(scores, labels, f) for f in fars}


def test_the_insightface_reading_on_the_hand_made_case():
    neg = np.r_[np.linspace(0.9, 0.84, 7), np.linspace(0.3, -0.5, 33)]
    scores = np.r_[np.array([0.99, 0.5, 0.45]), neg]
    labels = np.r_[np.ones(3, bool), np.zeros(40, bool)]
    # Kept points: (0, 0), FPR 0 at TPR 1/3, FPR 7/40 at TPR 1/3 and at 1 (the run's ends), FPR 1 at TPR 1:
    # 7/40 is the nearest to 0.1, and its higher TPR is read.
    assert im.tar_at_far_insightface(scores, labels, fars=(0.1, 1.0)) == {0.1: 1.0, 1.0: 1.0}
    with pytest.raises(CosfaceError, match="both same-person and different-person"):
        im.tar_at_far_insightface(scores[:3], labels[:3])


@pytest.mark.parametrize("seed", range(4))
def test_insightface_reading_is_never_below_ours(seed):
    rng = np.random.default_rng(seed)
    n_neg = int(rng.choice([1000, 1234, 5000]))
    scores = np.r_[rng.normal(1.5, 1, 300), rng.normal(0, 1, n_neg)]
    labels = np.r_[np.ones(300, bool), np.zeros(n_neg, bool)]
    ours = im.tar_at_far(scores, labels, fars=(1e-3, 1e-2, 1e-1))
    for far, tar in ours.items():
        assert insightface_reading(scores, labels, far) >= tar
        if (far * n_neg) % 1 < 0.5:      # nearest point of the full curve: floor(FAR n) false accepts, as ours
            assert insightface_reading(scores, labels, far, drop_intermediate=False) == tar


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_identification_equals_literal(seed):
    feats, templates, medias, det, tids, subject_of = generated(seed, n_templates=60, subjects=30)
    ids, tf = im.template_features(im.image_inputs(feats, det), templates, medias)
    T = {t: tf[i] for i, t in enumerate(ids)}
    # Gallery: the first template of each of subjects 0..19; probes: every other template (some non-mated).
    first = {}
    for t, s in zip(tids, subject_of):
        if s < 20:
            first.setdefault(int(s), int(t))
    gallery = [(t, s) for s, t in first.items()]
    probes = [(int(t), int(s)) for t, s in zip(tids, subject_of) if int(t) not in first.values()]
    got = im.identification(tf, ids, np.array([g[0] for g in gallery]), np.array([g[1] for g in gallery]),
                            np.array([p[0] for p in probes]), np.array([p[1] for p in probes]),
                            ranks=(1, 2, 5), fpirs=(0.01, 0.1, 0.5), chunk=7)
    rank, tpir = literal_identification(T, gallery, probes, (1, 2, 5), (0.01, 0.1, 0.5))
    assert got["rank"] == rank
    assert got["tpir_at_fpir"] == tpir
    assert got["mated_probes"] + got["non_mated_probes"] == len(probes)


def test_identification_rejects_two_templates_of_one_subject():
    tf = np.eye(3)
    with pytest.raises(CosfaceError, match="subject 7 has 2 templates"):
        im.identification(tf, np.array([1, 2, 3]), np.array([1, 2]), np.array([7, 7]), np.array([3]), np.array([7]),
                          source="g.csv")


def test_mean_identification_averages_and_keeps_unmeasurable():
    a = {"rank": {1: 0.5}, "tpir_at_fpir": {0.01: None, 0.1: 0.2}}
    b = {"rank": {1: 0.7}, "tpir_at_fpir": {0.01: 0.3, 0.1: 0.4}}
    m = im.mean_identification({"G1": a, "G2": b})
    assert m["rank"][1] == pytest.approx(0.6)
    assert m["tpir_at_fpir"] == {0.01: None, 0.1: pytest.approx(0.3)}


def test_mode_names_follow_insightface():
    assert im.mode_name(flip=True, normalize=False, detector=True) == "N1D1F1"
    assert im.mode_name(flip=False, normalize=True, detector=False) == "N0D0F0"
