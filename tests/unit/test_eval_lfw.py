"""evaluate_lfw end to end on a tiny generated LFW folder, and the report it returns."""
import json

import numpy as np
import pytest
import simplejpeg

from cosface.evaluation import PROTOCOLS, evaluate_features, evaluate_lfw, load_features, plot_roc


def pooled_embed(batch):
    """(B, 112, 112, 3) -> (B, 48): the 4x4 block means, centred."""
    b = batch.shape[0]
    return (batch.reshape(b, 4, 28, 4, 28, 3).mean((2, 4)).reshape(b, -1) - 128).astype(np.float32)


def make_lfw(root, n_folds=2, per=3, seed=0):
    """People P0..: 2 images each (a shared 4x4 colour pattern + noise); header `n_folds per`."""
    rng = np.random.default_rng(seed)
    lines = [f"{n_folds}\t{per}"]
    person = 0
    for _ in range(n_folds):
        lines += [f"P{person + i}\t1\t2" for i in range(per)]
        lines += [f"P{person + i}\t1\tP{person + per + i}\t2" for i in range(per)]
        person += 2 * per
    for p in range(person):
        base = rng.integers(0, 256, (4, 4, 3))
        (root / "lfw_align_112" / f"P{p}").mkdir(parents=True)
        for n in (1, 2):
            img = np.clip(np.kron(base, np.ones((28, 28, 1))) + rng.normal(0, 6, (112, 112, 3)), 0, 255)
            jpeg = simplejpeg.encode_jpeg(img.astype(np.uint8), quality=90, colorspace="RGB")
            (root / "lfw_align_112" / f"P{p}" / f"P{p}_{n:04d}.jpg").write_bytes(jpeg)
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_evaluate_lfw_saves_features_that_evaluate_the_same(tmp_path):
    lfw = make_lfw(tmp_path / "lfw")
    report = evaluate_lfw(pooled_embed, lfw, batch_size=5, progress=False, features_out=tmp_path / "f.mat")
    assert report.protocol == "reference" and report.pairs == 12
    assert report.folds.tolist() == [1.0, 1.0] and report.auc == 1.0

    saved = load_features(tmp_path / "f.mat")
    assert saved.fl.shape == (12, 96) and saved.fl.dtype == np.float32
    assert saved.fold.tolist() == [0] * 6 + [1] * 6 and saved.flag.tolist() == ([1] * 3 + [-1] * 3) * 2
    # left of pair 0 is P0_0001: its row is [emb(image), emb(mirror)]
    img = simplejpeg.decode_jpeg((lfw / "lfw_align_112/P0/P0_0001.jpg").read_bytes(), colorspace="RGB")[None]
    np.testing.assert_allclose(saved.fl[0], np.concatenate([pooled_embed(img)[0], pooled_embed(img[:, :, ::-1])[0]]))
    again = evaluate_features(saved.fl, saved.fr, saved.fold, saved.flag)
    np.testing.assert_array_equal(again.folds, report.folds)
    np.testing.assert_array_equal(again.thresholds, report.thresholds)


def test_report_json_and_text():
    rng = np.random.default_rng(0)
    n = 200
    flag = np.where(np.arange(n) % 20 < 10, 1, -1)
    fl = rng.standard_normal((n, 8))
    fr = np.where(flag[:, None] == 1, fl + rng.standard_normal((n, 8)), rng.standard_normal((n, 8)))
    report = evaluate_features(fl, fr, np.arange(n) // 20, flag, source="x.mat")

    d = json.loads(json.dumps(report.to_json_dict()))
    for key in ("protocol", "folds", "thresholds", "mean", "std", "tar_at_far", "auc", "pairs"):
        assert key in d
    assert d["protocol"] == "reference" and d["protocol_description"] == PROTOCOLS["reference"]
    assert d["pairs"] == 200 and len(d["folds"]) == 10 and all(0 <= a <= 1 for a in d["folds"])
    assert d["mean"] == pytest.approx(np.mean(d["folds"])) and d["std"] == pytest.approx(np.std(d["folds"]))
    assert set(d["tar_at_far"]) == {"0.1", "0.01", "0.001"}

    text = report.format().splitlines()
    assert text[0].startswith("x.mat: 200 pairs, reference LFW 10-fold protocol")
    assert text[1:11] == [f"{i + 1}\t{a * 100:.2f}" for i, a in enumerate(report.folds)]
    assert text[11] == f"AVE: {report.mean * 100:.2f}"
    assert text[12] == "ours (not printed by the reference):"
    assert any(line.strip().startswith("TAR @ FAR=0.001:") for line in text[13:])


def test_plot_roc_writes_png(tmp_path):
    scores = np.array([0.9, 0.8, 0.3, 0.1, 0.5, 0.2])
    issame = np.array([True, True, True, False, False, False])
    from cosface.evaluation.metrics import roc_curve

    plot_roc({"a": roc_curve(scores, issame)}, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
