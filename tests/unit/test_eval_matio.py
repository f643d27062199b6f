import numpy as np
import pytest
import scipy.io

from cosface.errors import CosfaceError
from cosface.evaluation import evaluate_features, load_features, save_features


def features(n=40, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    fl = rng.standard_normal((n, dim)).astype(np.float32)
    fr = rng.standard_normal((n, dim)).astype(np.float32)
    flag = np.where(np.arange(n) % 4 < 2, 1, -1)
    fr[flag == 1] += 2 * fl[flag == 1]
    return fl, fr, np.arange(n) // (n // 10), flag


def test_round_trip_keeps_reference_layout(tmp_path):
    fl, fr, fold, flag = features()
    path = tmp_path / "f.mat"
    save_features(path, fl, fr, fold, flag)
    raw = scipy.io.loadmat(path)
    assert raw["fl"].shape == (40, 8) and raw["fl"].dtype == np.float32
    assert raw["fold"].shape == (1, 40) and raw["flag"].shape == (1, 40)
    got = load_features(path)
    np.testing.assert_array_equal(got.fl, fl)
    np.testing.assert_array_equal(got.fr, fr)
    assert got.fold.tolist() == fold.tolist() and got.flag.tolist() == flag.tolist()


@pytest.mark.parametrize("shape", ["row", "column"])
def test_reference_written_mat_with_float_fold_and_flag_evaluates(tmp_path, shape):
    fl, fr, fold, flag = features(seed=1)
    vec = (lambda a: np.asarray(a, np.float64).reshape(1, -1)) if shape == "row" else (
        lambda a: np.asarray(a, np.float64).reshape(-1, 1))
    path = tmp_path / "ref.mat"
    scipy.io.savemat(path, {"fl": fl, "fr": fr, "fold": vec(fold), "flag": vec(flag)})
    got = load_features(path)
    assert got.fold.dtype == np.int64 and got.fold.tolist() == fold.tolist()
    report = evaluate_features(got.fl, got.fr, got.fold, got.flag, source=str(path))
    direct = evaluate_features(fl, fr, fold, flag)
    np.testing.assert_array_equal(report.folds, direct.folds)
    np.testing.assert_array_equal(report.thresholds, direct.thresholds)
    assert len(report.folds) == 10


def test_missing_key_and_bad_values_are_named(tmp_path):
    fl, fr, fold, flag = features()
    path = tmp_path / "f.mat"
    scipy.io.savemat(path, {"fl": fl, "fr": fr, "fold": fold[None]})
    with pytest.raises(CosfaceError, match="has no 'flag' array"):
        load_features(path)
    scipy.io.savemat(path, {"fl": fl, "fr": fr, "fold": fold[None], "flag": (flag * 0)[None]})
    with pytest.raises(CosfaceError, match="'flag' must hold"):
        load_features(path)
    scipy.io.savemat(path, {"fl": fl, "fr": fr[:5], "fold": fold[None], "flag": flag[None]})
    with pytest.raises(CosfaceError, match="one shape"):
        load_features(path)
    scipy.io.savemat(path, {"fl": fl, "fr": fr, "fold": fold[None, :30], "flag": flag[None]})
    with pytest.raises(CosfaceError, match="'fold' must be a 1×40"):
        load_features(path)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(CosfaceError, match="not a readable MATLAB"):
        load_features(tmp_path / "junk.mat")
    with pytest.raises(CosfaceError, match="not found"):
        load_features(tmp_path / "absent.mat")
