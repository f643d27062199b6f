"""Held-out validation: the split (disjoint, seeded, the same for a folder and its RecordIO pack), the
LFW-layout pairs, and the checks a resumed run makes."""
import numpy as np
import pytest

from cosface.config import DataConfig
from cosface.data.pack import pack_folder
from cosface.data.sources import open_source
from cosface.errors import CosfaceError
from cosface.evaluation.pairs import parse_pairs
from cosface.validation import (FOLDS, IDENTITIES_FILE, PAIRS_FILE, choose_identities, count_identities, draw_pairs,
                                split_validation)

from image_folders import write_image_folder


def labels_of(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


def test_count_is_a_whole_number_or_a_fraction_of_the_classes():
    assert count_identities(0, 100) == 0
    assert count_identities(20, 100) == 20
    assert count_identities(0.05, 100) == 5
    assert count_identities(0.001, 100) == 2          # never fewer than a different pair needs


def test_identities_are_seeded_and_only_classes_with_two_images_are_eligible():
    sizes = [1, 5, 5, 1, 5, 5, 5, 5, 1, 5]
    labels = labels_of(sizes)
    a = choose_identities(labels, len(sizes), 3, seed=7)
    assert list(a) == list(choose_identities(labels, len(sizes), 3, seed=7))
    assert len(set(a)) == 3 and not {0, 3, 8} & set(a.tolist())
    draws = {tuple(choose_identities(labels, len(sizes), 3, seed=s)) for s in range(10)}
    assert len(draws) > 1                              # the seed matters
    with pytest.raises(CosfaceError, match="only 7 of 10 classes have the 2\\+ images"):
        choose_identities(labels, len(sizes), 7, seed=0)


def test_pairs_have_lfw_layout_no_duplicates_and_right_labels():
    sizes = [8, 4, 8, 3, 8]
    labels = labels_of(sizes)
    p = draw_pairs(labels, np.array([0, 2, 4]), total=100, seed=3)
    per = 100 // (2 * FOLDS)
    assert len(p.issame) == 2 * FOLDS * per
    assert list(p.issame[: 2 * per]) == [True] * per + [False] * per
    assert list(np.bincount(p.fold)) == [2 * per] * FOLDS
    a, b = p.images[p.left], p.images[p.right]
    assert np.all((labels[a] == labels[b]) == p.issame) and np.all(a != b)
    assert set(labels[p.images].tolist()) <= {0, 2, 4}
    assert len({(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}) == len(a)
    # Only 6 + 28 + 3 = 37 same-identity pairs exist among 4, 8 and 3 images: 3 per fold, none repeated.
    few = draw_pairs(labels, np.array([1, 2, 3]), total=6000, seed=0)
    a, b = few.images[few.left], few.images[few.right]
    assert int(few.issame.sum()) == 30 and len(few.issame) == 60
    assert len({(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}) == 60


def test_split_removes_the_identities_from_training_and_writes_them(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=8, per_class=4)
    full = open_source(data)
    train, val = split_validation(full, DataConfig(val_identities=3, val_pairs=40), seed=0)
    held = set(val.names)
    assert len(held) == 3 and not held & set(train.class_names)
    assert len(train.class_names) == 5 and len(train) == 20
    assert sorted(set(train.labels.tolist())) == list(range(5))
    for i in range(len(train)):                       # labels follow the renumbered class names
        assert train.describe(i).split("/")[-2] == train.class_names[train.labels[i]]
    run = tmp_path / "run"
    run.mkdir()
    val.check_resume(run, resuming=True)     # nothing listed yet: nothing to compare
    val.write(run)
    assert (run / IDENTITIES_FILE).read_text().split() == val.names
    names_l, names_r, issame, fold = parse_pairs(run / PAIRS_FILE)   # LFW's own parser reads it
    assert list(issame) == list(val.pairs.issame) and list(fold) == list(val.pairs.fold)
    assert {n.split("/")[0] for n in names_l + names_r} == held
    # A resumed run must hold out the same identities: another seed would train on validation ones.
    _, moved = split_validation(full, DataConfig(val_identities=3, val_pairs=40), seed=1)
    assert moved.names != val.names
    with pytest.raises(CosfaceError, match="other held-out identities"):
        moved.check_resume(run, resuming=True)
    moved.check_resume(run, resuming=False)  # a new run in the same directory may choose anew
    val.check_resume(run, resuming=True)


def test_packed_recordio_gets_the_same_split_as_its_folder(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=6, per_class=4)
    pack_folder(data, tmp_path / "packed", workers=0, progress=False)
    cfg = DataConfig(val_identities=0.5, val_pairs=20)
    t1, v1 = split_validation(open_source(data), cfg, seed=4)
    t2, v2 = split_validation(open_source(tmp_path / "packed"), cfg, seed=4)
    assert type(t2.source).__name__ == "RecordSource"
    assert v1.names == v2.names and len(v1.names) == 3 and t1.class_names == t2.class_names
    assert np.array_equal(v1.pairs.left, v2.pairs.left) and np.array_equal(t1.labels, t2.labels)
    assert t2.read(0) and len(t2) == 12


def test_validation_off_returns_the_source_unchanged(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=3, per_class=2)
    src = open_source(data)
    train, val = split_validation(src, DataConfig(), seed=0)
    assert train is src and not val.enabled and val.notes(DataConfig(), 3) == []
