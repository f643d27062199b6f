"""The fast k-fold protocols against literal, threshold-by-threshold implementations, and by hand."""
import numpy as np
import pytest

from cosface.errors import CosfaceError
from cosface.evaluation import protocol


# ---------------------------------------------------------------- literal implementations (test only)

def literal_threshold(scores, flags):
    """SPEC §4 step 3 as written: accuracy at each of the 20,001 grid thresholds, then the mean of
    all thresholds reaching the maximum. Each t is compared in the scores' dtype (NumPy 1.x, which
    the reference ran under, rounds a float64 scalar to a float32 array's dtype)."""
    thresholds = np.arange(-10000, 10001) * 1.0 / 10000
    accs = np.zeros((len(thresholds), 1))
    for lo in range(0, len(thresholds), 2000):  # one comparison per (threshold, score), in blocks
        t = thresholds[lo : lo + 2000].astype(scores.dtype)[:, None]
        p = np.sum(scores[flags == 1][None, :] > t, 1)
        n = np.sum(scores[flags == -1][None, :] < t, 1)
        accs[lo : lo + 2000, 0] = 1.0 * (p + n) / len(scores)
    max_index = np.squeeze(accs == np.max(accs))
    return np.mean(thresholds[max_index])


def literal_accuracy(scores, flags, threshold):
    t = scores.dtype.type(threshold)
    return 1.0 * (np.sum(scores[flags == 1] > t) + np.sum(scores[flags == -1] < t)) / len(scores)


def literal_reference(fl, fr, fold, flag):
    accs, thrs = [], []
    for i in np.unique(fold):
        val, test = fold != i, fold == i
        scores = literal_scores(fl, fr, val)
        t = literal_threshold(scores[val], flag[val])
        thrs.append(t)
        accs.append(literal_accuracy(scores[test], flag[test], t))
    return np.array(accs), np.array(thrs)


def literal_insightface(dist, issame, n_folds=10):
    thresholds = np.arange(0, 4, 0.01)
    n = len(dist)
    accs, thrs = [], []
    bounds = np.cumsum([0] + [n // n_folds + (1 if k < n % n_folds else 0) for k in range(n_folds)])
    for k in range(n_folds):
        test = np.arange(bounds[k], bounds[k + 1])
        train = np.setdiff1d(np.arange(n), test)

        def acc(t, idx):
            predict = np.less(dist[idx], t)
            actual = issame[idx]
            tp = np.sum(np.logical_and(predict, actual))
            tn = np.sum(np.logical_and(~predict, ~actual))
            return float(tp + tn) / len(idx)

        train_acc = np.array([acc(t, train) for t in thresholds])
        best = thresholds[np.argmax(train_acc)]
        thrs.append(best)
        accs.append(acc(best, test))
    return np.array(accs), np.array(thrs)


def literal_scores(fl, fr, val):
    mu = np.expand_dims(np.mean(np.concatenate((fl[val, :], fr[val, :]), 0), 0), 0)
    L, R = fl - mu, fr - mu
    L = L / np.expand_dims(np.sqrt(np.sum(np.power(L, 2), 1)), 1)
    R = R / np.expand_dims(np.sqrt(np.sum(np.power(R, 2), 1)), 1)
    return np.sum(np.multiply(L, R), 1)


def assert_same_as_literal(fl, fr, fold, flag):
    fast = protocol.reference_kfold(fl, fr, fold, flag)
    accs, thrs = literal_reference(fl, fr, fold, flag)
    np.testing.assert_array_equal(fast.accuracies, accs)
    np.testing.assert_array_equal(fast.thresholds, thrs)
    return fast


def lfw_like(rng, n_folds=10, per=20, dim=16, dtype=np.float32, signal=0.6):
    """n_folds folds of `per` same then `per` different pairs with correlated same-pair features."""
    n = n_folds * 2 * per
    fold = np.arange(n) // (2 * per)
    flag = np.where(np.arange(n) % (2 * per) < per, 1, -1)
    fl = rng.standard_normal((n, dim))
    fr = rng.standard_normal((n, dim))
    fr[flag == 1] = signal * fl[flag == 1] + (1 - signal) * fr[flag == 1]
    return fl.astype(dtype), fr.astype(dtype), fold, flag


# ---------------------------------------------------------------- reference protocol

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_equals_literal_on_random_features(seed, dtype):
    fl, fr, fold, flag = lfw_like(np.random.default_rng(seed), dtype=dtype, signal=0.3 + 0.2 * seed)
    fast = assert_same_as_literal(fl, fr, fold, flag)
    assert 0.5 < fast.accuracies.mean() <= 1.0
    one_thread = protocol.reference_kfold(fl, fr, fold, flag, workers=1)
    np.testing.assert_array_equal(one_thread.accuracies, fast.accuracies)
    np.testing.assert_array_equal(one_thread.thresholds, fast.thresholds)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scores_are_bitwise_the_references(dtype):
    rng = np.random.default_rng(5)
    fl = rng.standard_normal((3000, 64)).astype(dtype)
    fr = rng.standard_normal((3000, 64)).astype(dtype)
    val = rng.random(3000) < 0.9
    fast = protocol.reference_scores(fl, fr, val)
    assert fast.dtype == dtype
    np.testing.assert_array_equal(fast, literal_scores(fl, fr, val))


def test_fast_equals_literal_on_quantised_features_with_ties():
    # Features of a few integer values repeat scores exactly: many ties within and across classes.
    rng = np.random.default_rng(3)
    fl, fr, fold, flag = lfw_like(rng, per=15, dim=3)
    fl, fr = np.round(fl).astype(np.float32), np.round(fr).astype(np.float32)
    fr[::7] = fl[::7]          # identical sides, same and different pairs alike
    assert_same_as_literal(fl, fr, fold, flag)


def test_fast_equals_literal_with_one_class_folds_and_uneven_folds():
    rng = np.random.default_rng(4)
    fl, fr, fold, flag = lfw_like(rng, per=10, dim=8)
    flag[fold == 2] = 1        # a fold with only same pairs
    flag[fold == 5] = -1       # and one with only different pairs
    assert_same_as_literal(fl, fr, fold, flag)
    uneven = np.sort(rng.integers(0, 4, size=len(flag)))
    assert_same_as_literal(fl, fr, uneven, flag)


def test_hand_computed_two_folds():
    """Features whose validation mean is exactly 0, so the scores are the chosen cosines.

    fold 0: same cos 0.90005 (x2), different cos 0 (x2);
    fold 1: same cos 0.60005 (x2) and 0.40005 (x2), different cos -0.19995 (x2).
    Test fold 0, validated on fold 1: every t in (-0.19995, 0.40005) is perfect -> grid -0.1999..0.4000,
    mean 0.10005; on fold 0 all four pairs are right -> 1.0.
    Test fold 1, validated on fold 0: t in (0, 0.90005) -> grid 0.0001..0.9000, mean 0.45005;
    the 0.40005 same pairs fall below it -> 4/6.
    """
    u = np.array([1.0, 0.0])

    def at(c):
        return np.array([c, np.sqrt(1 - c * c)])

    rows = [(0, 1, 0.90005), (0, -1, 0.0), (1, 1, 0.60005), (1, 1, 0.40005), (1, -1, -0.19995)]
    fl, fr, fold, flag = [], [], [], []
    for k, f, c in rows:
        for sign in (1, -1):    # each pair and its negation: the fold's features sum to exactly 0
            fl.append(sign * u)
            fr.append(sign * at(c))
            fold.append(k)
            flag.append(f)
    fl, fr, fold, flag = np.array(fl), np.array(fr), np.array(fold), np.array(flag)
    res = assert_same_as_literal(fl, fr, fold, flag)
    assert res.accuracies.tolist() == [1.0, 4 / 6]
    assert res.thresholds == pytest.approx([0.10005, 0.45005], abs=1e-12)


@pytest.mark.parametrize(
    "scores,flags",
    [
        # exactly on grid points, ties between classes
        (np.array([0.25, 0.25, 0.5, -0.5, 0.25, 0.0, 1.0, -1.0]), np.array([1, -1, 1, -1, 1, -1, 1, -1])),
        # every score equal
        (np.full(12, 0.3), np.array([1, -1] * 6)),
        # one class only
        (np.linspace(-0.9, 0.9, 9), np.ones(9, dtype=int)),
        (np.linspace(-0.9, 0.9, 9), -np.ones(9, dtype=int)),
        # beyond the grid on both sides, and perfectly separable far from zero
        (np.array([1.5, 2.0, -1.5, -3.0]), np.array([1, 1, -1, -1])),
        (np.array([-1.5, -2.0, 1.5, 3.0]), np.array([1, 1, -1, -1])),
        # a zero feature gives NaN scores: never right on either side
        (np.array([np.nan, 0.4, np.nan, -0.1, 0.3]), np.array([1, 1, -1, -1, 1])),
        # float32 scores equal to float32 roundings of grid points (0.1234 is not a float32)
        (np.float32([0.1234, 0.1234, 0.1233, 0.1235, 0.3]), np.array([1, -1, -1, 1, 1])),
    ],
)
def test_threshold_search_equals_literal_on_adversarial_scores(scores, flags):
    fast = protocol.best_threshold(scores, flags == 1)
    assert fast == literal_threshold(scores, flags)
    assert protocol.accuracy(scores, flags == 1, fast) == literal_accuracy(scores, flags, fast)


def test_grid_is_the_references():
    g = protocol.THRESHOLDS
    assert len(g) == 20001 and g[0] == -1.0 and g[-1] == 1.0 and g[10000] == 0.0
    assert g[11234] == 1234 / 10000.0 and g[3] == -9997 / 10000.0


def test_comparisons_round_the_threshold_to_float32_scores():
    # float32(0.1234) > 0.1234 in float64, but not after rounding 0.1234 to float32 as NumPy 1.x did.
    s = np.float32([0.1234])
    assert float(s[0]) > 0.1234
    assert protocol.accuracy(s, np.array([True]), 0.1234) == 0.0
    assert protocol.accuracy(s.astype(np.float64), np.array([True]), 0.1234) == 1.0


def test_bad_inputs_are_reported():
    fl = np.zeros((4, 2), np.float32)
    with pytest.raises(CosfaceError, match="flag"):
        protocol.reference_kfold(fl, fl, [0, 0, 1, 1], [1, 0, 1, -1])
    with pytest.raises(CosfaceError, match="at least 2 folds"):
        protocol.reference_kfold(fl, fl, [0, 0, 0, 0], [1, -1, 1, -1])
    with pytest.raises(CosfaceError, match="one shape"):
        protocol.reference_kfold(fl, fl[:3], [0, 0, 1, 1], [1, -1, 1, -1])


# ---------------------------------------------------------------- insightface protocol

def test_kfold_splits_like_sklearn():
    # sklearn's KFold(10) on 23 items: 3 folds of 3, then 7 of 2
    expected = [0, 0, 0, 1, 1, 1, 2, 2, 2] + [k for k in range(3, 10) for _ in "ab"]
    assert protocol.kfold_splits(23, 10).tolist() == expected
    with pytest.raises(CosfaceError):
        protocol.kfold_splits(5, 10)


@pytest.mark.parametrize("seed", [0, 1])
def test_insightface_equals_literal(seed):
    rng = np.random.default_rng(seed)
    n = 203
    issame = rng.random(n) < 0.5
    plain = rng.standard_normal((2 * n, 8)).astype(np.float32)
    plain[1::2][issame] = plain[0::2][issame] + 0.8 * plain[1::2][issame]
    e = protocol.insightface_embeddings(plain, plain[:, ::-1])
    fast = protocol.insightface_kfold(e[0::2], e[1::2], issame)
    dist = np.sum(np.square(np.subtract(e[0::2], e[1::2])), 1)
    accs, thrs = literal_insightface(dist, issame)
    np.testing.assert_array_equal(fast.accuracies, accs)
    np.testing.assert_array_equal(fast.thresholds, thrs)


def test_insightface_equals_literal_on_grid_distances():
    # Distances exactly on threshold grid points, with ties across classes.
    rng = np.random.default_rng(2)
    n = 150
    issame = rng.random(n) < 0.5
    dist = protocol.INSIGHTFACE_THRESHOLDS[np.where(issame, rng.integers(50, 140, n), rng.integers(100, 200, n))]
    fast = protocol.insightface_kfold_dist(dist, issame)
    accs, thrs = literal_insightface(dist, issame)
    np.testing.assert_array_equal(fast.accuracies, accs)
    np.testing.assert_array_equal(fast.thresholds, thrs)


def test_insightface_embeddings_sum_then_normalise():
    e = protocol.insightface_embeddings(np.array([[3.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(e, [[0.6, 0.8], [0.0, 0.0]])
