import numpy as np
import pytest

from cosface.errors import CosfaceError
from cosface.evaluation import metrics

# 4 same pairs, 5 different; by hand: same-over-different wins 3+3+2.5+1 (of 5 each) + 0 ...
SCORES = np.array([0.9, 0.7, 0.5, 0.2, 0.6, 0.5, 0.3, 0.1, 0.0])
ISSAME = np.array([True, True, True, True, False, False, False, False, False])


def test_auc_by_hand():
    # 0.9 beats all 5; 0.7 beats 5; 0.5 beats 0.3, 0.1, 0.0 and ties 0.5 -> 3.5; 0.2 beats 0.1, 0.0 -> 2
    assert metrics.roc_auc(SCORES, ISSAME) == pytest.approx((5 + 5 + 3.5 + 2) / 20)


def test_tar_at_far_by_hand():
    rng = np.random.default_rng(0)
    diff = rng.permutation(np.arange(1000) / 1000.0)          # 1000 different pairs, 0.000 .. 0.999
    same = np.array([0.9995, 0.9985, 0.9905, 0.95, 0.5])
    scores = np.concatenate([same, diff])
    issame = np.arange(len(scores)) < len(same)
    # FAR 1e-3 allows 1 false accept: threshold 0.998 (2nd highest different) -> 2 same
    # FAR 1e-2 allows 10: threshold 0.989 -> 3 same; FAR 1e-1 allows 100: threshold 0.899 -> 4 same
    assert metrics.tar_at_far(scores, issame) == {0.1: 0.8, 0.01: 0.6, 0.001: 0.4}


def test_roc_curve_and_cosine():
    far, tar = metrics.roc_curve(SCORES, ISSAME)
    assert (far[0], tar[0]) == (0.0, 0.0) and (far[-1], tar[-1]) == (1.0, 1.0)
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    # threshold 0.5 (accept >= 0.5): 3 same, 2 different
    assert (0.4, 0.75) in set(zip(far.tolist(), tar.tolist()))
    np.testing.assert_allclose(metrics.cosine([[3, 4], [0, 0]], [[4, 3], [1, 0]]), [24 / 25, 0.0])


def test_needs_both_classes():
    with pytest.raises(CosfaceError, match="both"):
        metrics.roc_auc(np.ones(3), np.ones(3, bool))
