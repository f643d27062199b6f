"""Early warnings and failures: class sizes, a loss that grows 10x, a changed config on resume."""
import numpy as np
import pytest

from cosface.config import load_config
from cosface.errors import CosfaceError
from cosface.preflight import DivergenceWatch, check_resume_config, config_differences, data_warnings


def test_single_image_classes_are_named():
    labels = np.repeat(np.arange(4), [6, 1, 6, 1])
    (w,) = data_warnings(labels, ["a", "b", "c", "d"])
    assert "2 of 4 classes have a single image (b, d)" in w


def test_mostly_small_classes_are_warned_with_counts():
    sizes = [1, 2, 3, 3, 4, 10, 12]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    single, small = data_warnings(labels, [f"c{i}" for i in range(len(sizes))])
    assert "1 of 7 classes have a single image" in single
    assert "5 of 7 classes have fewer than 5 images (median 3, 1 with 1, 4 with 2-4)" in small
    assert data_warnings(np.repeat(np.arange(4), 5), list("abcd")) == []


def test_loss_growing_tenfold_within_the_window_stops():
    w = DivergenceWatch(lr=0.5)
    for step, loss in enumerate([20.0, 18.0, 15.0, 40.0, 120.0], start=1):
        w.check(loss, step)
    with pytest.raises(CosfaceError, match=r"loss grew 11× in 3 steps \(from 15 at global step 3 to 160 .*optim.lr \(now 0.5\)"):
        w.check(160.0, 6)


def test_slow_growth_outside_the_window_is_not_divergence():
    w = DivergenceWatch(lr=0.1)
    loss = 1.0
    for step in range(1, 40):       # x1.25 per log: 10x only over more than the 10-value window
        w.check(loss, step)
        loss *= 1.25


def test_config_differences_are_listed_and_the_split_is_fatal():
    old = load_config(None, ["optim.lr=0.1", "data.val_identities=20"])
    assert config_differences(old.to_dict(), old.to_dict()) == []
    said = []
    check_resume_config(old.to_dict(), old.replace(**{"optim.lr": 0.05, "train.epochs": 7}), "ck.pt", said.append)
    assert said == ["note: resuming with a config that differs from the checkpoint's (2): "
                    "optim.lr: 0.1 -> 0.05; train.epochs: 100 -> 7"]
    with pytest.raises(CosfaceError, match=r"differs in data.val_identities, .*All differences: "
                                           r"data.val_identities: 20.0 -> 5.0; optim.lr: 0.1 -> 0.05"):
        check_resume_config(old.to_dict(), old.replace(**{"optim.lr": 0.05, "data.val_identities": 5}), "ck.pt", said.append)
