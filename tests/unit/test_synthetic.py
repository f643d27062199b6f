"""Synthetic faces: determinism, layout, pairs.txt, open set, the renderer's warp, the raw-pixel baseline."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cosface.cli import main as cli_main
from cosface.data.sources import ImageFolderSource
from cosface.data.synthetic import GENERATOR_VERSION, generate, raw_pixel_baseline
from cosface.data.synthetic import render as render_mod
from cosface.data.synthetic import writer
from cosface.data.synthetic.identity import sample_identity
from cosface.data.synthetic.render import Nuisances, render
from cosface.errors import CosfaceError
from cosface.evaluation import evaluate_lfw, read_lfw
from cosface.evaluation.pairs import parse_pairs
from cosface.preprocess import decode_image, normalize_numpy

SMALL = dict(identities=5, images_per_identity=3, lfw_identities=20, lfw_images_per_identity=3)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    generate(out, seed=7, **SMALL)
    return out


def test_same_seed_same_bytes_whatever_the_workers(small, tmp_path):
    again = tmp_path / "two_workers"
    generate(again, seed=7, workers=2, **SMALL)
    assert tree(again) == tree(small)


def test_other_seed_other_images(small, tmp_path):
    other = tmp_path / "other"
    generate(other, seed=8, **SMALL)
    a, b = tree(small), tree(other)
    assert a["train/0000/001.jpg"] != b["train/0000/001.jpg"]
    assert a["lfw/pairs.txt"] != b["lfw/pairs.txt"]


def test_training_layout(small):
    classes = sorted(p.name for p in (small / "train").iterdir())
    assert classes == ["0000", "0001", "0002", "0003", "0004"]
    for c in classes:
        assert sorted(p.name for p in (small / "train" / c).iterdir()) == ["001.jpg", "002.jpg", "003.jpg"]
    src = ImageFolderSource(small / "train")
    assert len(src) == 15 and src.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    for i in range(len(src)):
        data = src.read(i)
        assert data[:2] == b"\xff\xd8"
        img = decode_image(data)
        assert img.shape == (112, 112, 3) and img.dtype == np.uint8


def test_class_names_sort_numerically(tmp_path):
    generate(tmp_path / "s", identities=12, images_per_identity=1, lfw_identities=20, lfw_images_per_identity=2)
    names = ImageFolderSource(tmp_path / "s" / "train").class_names
    assert names == [f"{i:04d}" for i in range(12)]


def test_lfw_layout_and_pairs_format(small):
    text = (small / "lfw" / "pairs.txt").read_text()
    lines = text.splitlines()
    per = writer.supported_pairs_per_fold(20, 3)
    assert per == 6                          # 2 people per fold, C(3, 2) same pairs each
    assert lines[0] == f"10\t{per}"
    assert len(lines) == 1 + 10 * 2 * per and text.endswith("\n")
    name = r"[A-Z][a-z]+_[A-Z][a-z]+"
    for f in range(10):
        block = lines[1 + 2 * per * f: 1 + 2 * per * (f + 1)]
        same, diff = block[:per], block[per:]
        assert all(re.fullmatch(rf"{name}\t[123]\t[123]", s) for s in same), same
        assert all(re.fullmatch(rf"{name}\t[123]\t{name}\t[123]", d) for d in diff), diff
        for s in same:
            _, a, b = s.split("\t")
            assert int(a) < int(b)
        for d in diff:
            p, _, q, _ = d.split("\t")
            assert p < q
        assert len(set(block)) == len(block)

    pairs = read_lfw(small / "lfw")          # the evaluation code parses it and finds every image
    assert len(pairs) == 20 * per and pairs.n_folds == 10
    assert pairs.issame.sum() == 10 * per
    for path in pairs.images:
        assert re.search(rf"/lfw_align_112/({name})/\1_000[123]\.jpg$", path), path
        assert decode_image(Path(path).read_bytes()).shape == (112, 112, 3)
    people = sorted(p.name for p in (small / "lfw" / "lfw_align_112").iterdir())
    assert len(people) == 20
    for p in people:
        assert sorted(f.name for f in (small / "lfw" / "lfw_align_112" / p).iterdir()) == [
            f"{p}_0001.jpg", f"{p}_0002.jpg", f"{p}_0003.jpg"]


def test_folds_are_identity_disjoint(small):
    left, right, _, fold = parse_pairs(small / "lfw" / "pairs.txt")
    people = [{n.split("/")[0] for n, k in zip(left + right, np.concatenate([fold, fold])) if k == f} for f in range(10)]
    for f in range(10):
        assert len(people[f]) == 2
        for g in range(f):
            assert not people[f] & people[g]


def test_manifest(small):
    m = json.loads((small / "manifest.json").read_text())
    assert m["version"] == GENERATOR_VERSION and m["seed"] == 7 and m["image_size"] == 112
    assert m["train"] == {"dir": "train", "identities": 5, "images_per_identity": 3, "images": 15}
    assert m["lfw"]["images"] == 60 and m["lfw"]["folds"] == 10
    assert m["lfw"]["pairs_per_fold"] == 6 and m["lfw"]["pairs"] == 120
    assert m["nuisances"]["gray"] == Nuisances().gray


def test_open_set():
    train = np.stack([writer.train_identity(3, i).as_vector() for i in range(200)])
    lfw = np.stack([writer.lfw_identity(3, i).as_vector() for i in range(200)])
    gaps = np.abs(train[:, None, :] - lfw[None, :, :]).max(-1)      # (train, lfw) largest parameter difference
    assert gaps.min() > 0.5
    names = writer.lfw_names(3, 2000)
    assert len(set(names)) == 2000
    assert all(re.fullmatch(r"[A-Z][a-z]+_[A-Z][a-z]+", n) for n in names)
    assert names[:200] == writer.lfw_names(3, 200)


def test_supported_pairs_per_fold():
    assert writer.supported_pairs_per_fold(200, 4) == 120        # 20 people a fold, 6 same pairs each
    assert writer.supported_pairs_per_fold(25, 2) == 2           # the smallest fold has 2 people
    assert writer.supported_pairs_per_fold(6000, 10) == 300      # LFW's fold size caps it


def test_chosen_pairs_per_fold(tmp_path):
    generate(tmp_path / "s", identities=1, images_per_identity=1, lfw_identities=20, lfw_images_per_identity=3,
             pairs_per_fold=4)
    pairs = read_lfw(tmp_path / "s" / "lfw")
    assert len(pairs) == 80 and pairs.n_folds == 10


@pytest.mark.parametrize("kwargs, message", [
    (dict(lfw_identities=19), "LFW identities"),
    (dict(lfw_images_per_identity=1), "LFW images per identity"),
    (dict(pairs_per_fold=7), "pairs per fold"),
    (dict(identities=0), "identities"),
    (dict(workers=0), "workers"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(CosfaceError, match=message):
        generate(tmp_path / "s", **{**SMALL, **kwargs})


def test_bad_nuisances():
    with pytest.raises(CosfaceError, match="gray"):
        Nuisances(gray=1.5)
    with pytest.raises(CosfaceError, match="gain"):
        Nuisances(gain=(1.2, 0.8))
    with pytest.raises(CosfaceError, match="quality"):
        Nuisances(quality=(0, 95))


def test_output_directory_rules(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(CosfaceError, match="not empty"):
        generate(user, **SMALL)
    with pytest.raises(CosfaceError, match="no manifest.json"):
        generate(user, overwrite=True, **SMALL)
    assert (user / "notes.txt").read_text() == "mine"

    out = tmp_path / "synth"
    generate(out, seed=1, **SMALL)
    generate(out, seed=1, overwrite=True, **{**SMALL, "identities": 2})
    assert sorted(p.name for p in (out / "train").iterdir()) == ["0000", "0001"]


def test_warp_known_answers():
    rng = np.random.default_rng(0)
    canvas = np.zeros((3, 4, 112, 112), np.float32)
    canvas[:, :3] = rng.integers(0, 256, (3, 3, 112, 112))
    canvas[:, 3] = 1.0
    expected = canvas.copy()
    expected[:, 3] = 255.0
    zero = np.zeros(3, np.float32)
    ones = np.ones(3, np.float32)
    # No motion: every pixel comes back.
    assert np.array_equal(render_mod._warp(canvas.copy(), zero, ones, zero, zero), expected)
    # A whole-pixel shift moves the picture and leaves transparency behind.
    moved = render_mod._warp(canvas.copy(), zero, ones, np.full(3, 5, np.float32), np.full(3, -2, np.float32))
    assert np.array_equal(moved[:, :, : 112 - 2, 5:], expected[:, :, 2:, : 112 - 5])
    assert np.all(moved[:, 3, :, :5] == 0) and np.all(moved[:, 3, -2:, :] == 0)
    # A quarter turn (clockwise on screen, y pointing down) maps row r, column c to row c, column
    # 111 - r. On a smooth, asymmetric picture, since float32 pi/2 lands a hair off pixel centres.
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float32)
    smooth = np.stack([xx * 2, yy * 2, 120 + 100 * np.sin(xx / 15) * np.cos(yy / 25), np.ones_like(xx)])[None]
    turned = render_mod._warp(smooth.copy(), np.full(1, np.pi / 2, np.float32), ones[:1], zero[:1], zero[:1])
    smooth[:, 3] = 255.0
    rotated = np.rot90(smooth + 0.0, k=-1, axes=(2, 3))
    assert np.abs(turned - rotated)[..., 1:-1, 1:-1].max() <= 2.0
    assert np.abs(turned - smooth)[..., 1:-1, 1:-1].max() > 50       # it did turn
    # Half-way between two pixels: their mean (8-bit lanes, 1/16-pixel weights).
    half = render_mod._warp(canvas.copy(), zero, ones, np.full(3, 0.5, np.float32), zero)
    mean = (expected[:, :, :, 1:] + expected[:, :, :, :-1]) / 2
    assert np.abs(half[:, :, :, 1:] - mean).max() <= 1.0


def test_render_images_and_nuisance_switches():
    rng = np.random.default_rng(1)
    idn = sample_identity(rng)
    images = render(idn, rng, 6)
    assert len(images) == 6
    for pixels, quality in images:
        assert pixels.dtype == np.uint8 and pixels.shape[:2] == (112, 112) and pixels.shape[2] in (1, 3)
        assert 40 <= quality <= 95
    gray = render(idn, np.random.default_rng(2), 4, Nuisances(gray=1.0))
    assert all(p.shape == (112, 112, 1) for p, _ in gray)
    colour = render(idn, np.random.default_rng(2), 4, Nuisances(gray=0.0, quality=(90, 90)))
    assert all(p.shape == (112, 112, 3) and q == 90 for p, q in colour)
    # Same identity and stream: same images; the images of one identity differ from each other.
    again = render(idn, np.random.default_rng(2), 4, Nuisances(gray=0.0, quality=(90, 90)))
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(colour, again))
    assert not np.array_equal(colour[0][0], colour[1][0])


def test_identity_survives_the_nuisances():
    """Without nuisances, images of one person are nearly identical and unlike another person's:
    identity is in the parameters, the variation comes from the nuisances."""
    calm = Nuisances(zoom=1.35, scale=(1, 1), rotation=0, shift=0, saturation=(0, 0), clutter=0, occlusion=0,
                     gain=(1, 1), tint=0, gradient=0, blur=0, gray=0, quality=(95, 95))

    def pictures(seed):
        rng = np.random.default_rng(seed)
        idn = sample_identity(rng)
        return np.stack([p for p, _ in render(idn, rng, 4, calm)]).astype(np.float32)

    people = [pictures(seed) for seed in range(10, 14)]
    # The background (gray level) still varies per image: compare the face region only.
    face = [p[:, 30:90, 30:82] for p in people]
    within = np.mean([np.abs(f[i] - f[j]).mean() for f in face for i in range(4) for j in range(i)])
    between = np.mean([np.abs(f[0] - g[0]).mean() for i, f in enumerate(face) for g in face[:i]])
    assert within < 0.5 * between


def test_raw_pixel_baseline_is_the_reference_protocol_on_pixels(small):
    def pixels(batch):
        return normalize_numpy(batch).reshape(len(batch), -1)

    reference = evaluate_lfw(pixels, small / "lfw", progress=False).mean
    assert raw_pixel_baseline(small / "lfw") == pytest.approx(reference, abs=1e-12)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", str(out), "--identities", "3", "--images-per-identity", "2", "--lfw-identities", "20",
            "--lfw-images-per-identity", "2", "--seed", "4", "--workers", "1", "--quiet", "--baseline"]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "wrote 6 training images of 3 identities" in text
    assert "40 evaluation images of 20 other people and 40 pairs (10 folds of 2 same + 2 different)" in text
    assert re.search(r"raw-pixel baseline \(reference protocol\): \d+\.\d\d %", text)
    assert cli_main(args) == 2                           # refuses to write into a non-empty directory
    assert "not empty" in capsys.readouterr().err
