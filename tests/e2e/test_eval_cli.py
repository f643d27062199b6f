"""`cosface eval` on a real (randomly initialised) MobileFaceNet checkpoint: LFW folder, .mat, .bin."""
import json
import pickle

import numpy as np
import pytest
import simplejpeg
import torch

from cosface.backbones import build_backbone
from cosface.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, versions
from cosface.cli import main
from cosface.config import Config
from cosface.preprocess import Preprocessing

KEYS = {"protocol", "folds", "thresholds", "mean", "std", "tar_at_far", "auc", "pairs"}


def write_checkpoint(path):
    torch.manual_seed(0)
    cfg = Config()
    model = build_backbone(cfg.model.backbone, embedding_size=cfg.model.embedding_size, input_size=cfg.model.input_size)
    atomic_save({
        "format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), "config": cfg.to_dict(),
        "num_classes": 2, "class_names": ["a", "b"], "preprocessing": Preprocessing().to_dict(),
        "backbone": model.state_dict(), "head": {"weight": torch.zeros(2, cfg.model.embedding_size)},
    }, path)
    return path


def jpeg(rng, base):
    img = np.clip(np.kron(base, np.ones((28, 28, 1))) + rng.normal(0, 6, (112, 112, 3)), 0, 255)
    return simplejpeg.encode_jpeg(img.astype(np.uint8), quality=90, colorspace="RGB")


def write_lfw(root, rng):
    """2 folds of 3 same + 3 different pairs, 12 people with 2 images each."""
    lines = ["2\t3"]
    for f in range(2):
        p = 6 * f
        lines += [f"P{p + i}\t1\t2" for i in range(3)] + [f"P{p + i}\t1\tP{p + 3 + i}\t2" for i in range(3)]
    for p in range(12):
        base = rng.integers(0, 256, (4, 4, 3))
        (root / "lfw_align_112" / f"P{p}").mkdir(parents=True)
        for n in (1, 2):
            (root / "lfw_align_112" / f"P{p}" / f"P{p}_{n:04d}.jpg").write_bytes(jpeg(rng, base))
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def write_bin(path, rng, n_pairs=10):
    images, issame = [], []
    for i in range(n_pairs):
        a = rng.integers(0, 256, (4, 4, 3))
        b = a if i % 2 == 0 else rng.integers(0, 256, (4, 4, 3))
        images += [jpeg(rng, a), jpeg(rng, b)]
        issame.append(i % 2 == 0)
    path.write_bytes(pickle.dumps((images, issame)))
    return path


def run_json(capsys, *argv):
    assert main(["eval", *argv, "--json", "--no-progress", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_lfw_features_and_bins(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ckpt = write_checkpoint(tmp_path / "epoch_001.pt")
    lfw = write_lfw(tmp_path / "lfw", rng)
    mat, png = tmp_path / "f.mat", tmp_path / "roc.png"

    d = run_json(capsys, "--ckpt", str(ckpt), "--lfw", str(lfw), "--features-out", str(mat), "--plot", str(png),
                 "--batch-size", "7")
    assert KEYS <= set(d) and d["protocol"] == "reference" and d["pairs"] == 12 and len(d["folds"]) == 2
    assert png.read_bytes()[:4] == b"\x89PNG"

    again = run_json(capsys, "--features", str(mat))
    assert (again["folds"], again["thresholds"], again["auc"]) == (d["folds"], d["thresholds"], d["auc"])

    assert main(["eval", "--features", str(mat)]) == 0
    text = capsys.readouterr().out
    assert f"AVE: {100 * np.mean(d['folds']):.2f}" in text and "reference LFW 10-fold protocol" in text

    a, b = write_bin(tmp_path / "a.bin", rng), write_bin(tmp_path / "b.bin", rng)
    both = run_json(capsys, "--ckpt", str(ckpt), "--bin", str(a), str(b))
    assert set(both) == {str(a), str(b)}
    assert all(KEYS <= set(r) and r["protocol"] == "insightface" and r["pairs"] == 10 for r in both.values())
    one = run_json(capsys, "--ckpt", str(ckpt), "--bin", str(a), "--protocol", "reference")
    assert one["protocol"] == "reference" and len(one["folds"]) == 10


def test_eval_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--lfw", str(tmp_path)])
    assert e.value.code == 2 and "need --ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--features", "x.mat", "--ckpt", "c.pt"])
    assert main(["eval", "--ckpt", str(tmp_path / "none.pt"), "--lfw", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
