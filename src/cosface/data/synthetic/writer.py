"""Writing a synthetic dataset: the CASIA-style training folder, the LFW-style evaluation set, pairs.txt.

Every identity's images come from its own random stream, SeedSequence(seed, spawn_key=(split,
index)), so the bytes written depend on the seed, not on the worker count or the order in which
workers finish. (Across machines, a different numpy build or CPU may round a sine or a power
differently and move a pixel; the identities, names and pairs stay the same.) Training and
evaluation identities come from different splits: the evaluation set is open-set, as LFW is for
a model trained on CASIA-WebFace.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from itertools import combinations
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from cosface.data.synthetic.identity import Identity, sample_identity
from cosface.data.synthetic.render import NUISANCES, SIZE, Nuisances, render
from cosface.errors import CosfaceError

# Bump whenever the same seed would produce different files.
GENERATOR_VERSION = "2"

TRAIN_DIR = "train"
LFW_DIR = "lfw"
LFW_IMAGES = "lfw_align_112"
PAIRS_FILE = "pairs.txt"
MANIFEST = "manifest.json"

FOLDS = 10                 # LFW's View 2
MAX_PAIRS_PER_FOLD = 300   # LFW's fold size; smaller sets get what their identities support

# Spawn-key domains of the seed: one stream per identity of each split, one for names, one for pairs.
_TRAIN, _LFW, _NAMES, _PAIRS = range(4)
_CHUNK_IMAGES = 32         # images rendered at once: bounds memory for large images-per-identity

_GIVEN = (
    "Aaron Ada Akira Alice Amara Ana Anders Arjun Aylin Bruno Carla Chen Chloe Dario Dmitri Elena Emeka Erik "
    "Fatima Felix Greta Hana Hugo Ines Ivan Jamal Jana Jonas Kai Kamala Karim Lars Leila Lena Luca Maja Marco "
    "Maria Mateo Mei Nadia Nikos Nina Omar Oscar Paula Pedro Priya Rafael Rosa Sami Sara Sven Tariq Tomas Uma "
    "Vera Wei Yara Yusuf Zara Zoe"
).split()
_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "ch", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "s", "l", "t", "m", "k")


def identity_rngs(seed: int, split: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(parameter stream, image stream) of one identity."""
    params, images = np.random.SeedSequence(seed, spawn_key=(split, index)).spawn(2)
    return np.random.default_rng(params), np.random.default_rng(images)


def train_identity(seed: int, index: int) -> Identity:
    return sample_identity(identity_rngs(seed, _TRAIN, index)[0])


def lfw_identity(seed: int, index: int) -> Identity:
    return sample_identity(identity_rngs(seed, _LFW, index)[0])


def lfw_names(seed: int, count: int) -> list[str]:
    """`count` distinct LFW-style `First_Last` names (a given name and a made-up surname), the same
    for a seed whatever the count: the first n of a longer list are the list for n."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_NAMES,)))
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        surname = "".join(
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] + _CODAS[rng.integers(len(_CODAS))]
            for _ in range(int(rng.integers(2, 4)))
        )
        name = f"{_GIVEN[rng.integers(len(_GIVEN))]}_{surname.capitalize()}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def supported_pairs_per_fold(identities: int, images_per_identity: int) -> int:
    """The most same (and different) pairs per fold a set of this size supports, at most LFW's 300.

    Folds are identity-disjoint, as in LFW: fold f draws from every tenth person, so the smallest
    fold has identities // 10 people with C(images, 2) same pairs each.
    """
    return min(MAX_PAIRS_PER_FOLD, (identities // FOLDS) * math.comb(images_per_identity, 2))


def make_pairs(seed: int, names: list[str], images_per_identity: int, per: int) -> str:
    """The text of pairs.txt: header `10<TAB>per`, then for each fold `per` same-person lines
    `name<TAB>n1<TAB>n2` and `per` different-person lines `name1<TAB>n1<TAB>name2<TAB>n2`."""
    assert per <= supported_pairs_per_fold(len(names), images_per_identity)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PAIRS,)))
    order = rng.permutation(len(names))
    numbers = range(1, images_per_identity + 1)
    lines = [f"{FOLDS}\t{per}"]
    for fold in range(FOLDS):
        people = sorted(names[i] for i in order[fold::FOLDS])
        same = [(p, a, b) for p in people for a, b in combinations(numbers, 2)]
        picked = sorted(same[i] for i in rng.choice(len(same), per, replace=False))
        lines += [f"{p}\t{a}\t{b}" for p, a, b in picked]
        # C(people, 2) * images^2 distinct different pairs exist, never fewer than the same pairs.
        different: set[tuple[str, int, str, int]] = set()
        while len(different) < per:
            i, j = sorted(rng.choice(len(people), 2, replace=False))
            a, b = rng.integers(1, images_per_identity + 1, 2)
            different.add((people[i], int(a), people[j], int(b)))
        lines += [f"{p}\t{a}\t{q}\t{b}" for p, a, q, b in sorted(different)]
    return "\n".join(lines) + "\n"


def _encode(pixels: np.ndarray, quality: int) -> bytes:
    import simplejpeg

    colorspace = "GRAY" if pixels.shape[2] == 1 else "RGB"
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace=colorspace)


def _write_identities(out_dir: str, seed: int, nuisances: Nuisances, split: int,
                      items: list[tuple[int, str, list[str]]]) -> int:
    """Render and write identities given as (index in split, folder under out_dir, file names);
    returns the number of images written."""
    written = 0
    for index, folder, files in items:
        param_rng, image_rng = identity_rngs(seed, split, index)
        identity = sample_identity(param_rng)
        path = Path(out_dir) / folder
        path.mkdir(parents=True, exist_ok=True)
        for first in range(0, len(files), _CHUNK_IMAGES):
            images = render(identity, image_rng, min(_CHUNK_IMAGES, len(files) - first), nuisances)
            for name, (pixels, quality) in zip(files[first:], images):
                (path / name).write_bytes(_encode(pixels, quality))
        written += len(files)
    return written


def _check(name: str, value: int, low: int, high: int | None = None) -> None:
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low
            or (high is not None and value > high)):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise CosfaceError(f"{name} must be an integer {bound}, got {value!r}")


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CosfaceError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise CosfaceError(f"output directory {out} is not empty (--overwrite, or overwrite=True, replaces "
                               "an earlier synthetic set)")
        if not (out / MANIFEST).is_file():
            raise CosfaceError(f"refusing to overwrite {out}: it has no {MANIFEST}, so it was not written by this generator")
        for entry in (TRAIN_DIR, LFW_DIR):
            shutil.rmtree(out / entry, ignore_errors=True)
        (out / MANIFEST).unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(
    out_dir: str | os.PathLike,
    *,
    identities: int = 500,
    images_per_identity: int = 20,
    lfw_identities: int = 200,
    lfw_images_per_identity: int = 4,
    pairs_per_fold: int | None = None,
    seed: int = 0,
    workers: int = 1,
    nuisances: Nuisances = NUISANCES,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Write a synthetic training set and an open-set LFW-style evaluation set; returns the manifest.

    Layout: OUT/train/<class>/<image>.jpg, OUT/lfw/lfw_align_112/<Name>/<Name>_<n:04d>.jpg,
    OUT/lfw/pairs.txt and OUT/manifest.json (written last: its presence marks a complete set).
    pairs.txt has 10 identity-disjoint folds of `pairs_per_fold` same and as many different pairs
    (default: as many as the set supports, at most LFW's 300). The same seed gives the same bytes
    for any `workers`. `nuisances` sets how much the images of one identity vary; the defaults are
    calibrated (see render.Nuisances).
    """
    _check("identities", identities, 1)
    _check("images per identity", images_per_identity, 1)
    _check("LFW identities", lfw_identities, 2 * FOLDS)
    _check("LFW images per identity", lfw_images_per_identity, 2, 9999)
    _check("seed", seed, 0)
    _check("workers", workers, 1)
    supported = supported_pairs_per_fold(lfw_identities, lfw_images_per_identity)
    if pairs_per_fold is None:
        pairs_per_fold = supported
    _check(f"pairs per fold (for {lfw_identities} LFW identities of {lfw_images_per_identity} images)",
           pairs_per_fold, 1, supported)
    out = Path(out_dir)
    _prepare(out, overwrite)

    class_width = max(4, len(str(identities - 1)))      # zero-padded: string order = numeric order
    file_width = max(3, len(str(images_per_identity)))
    train_files = [f"{j:0{file_width}d}.jpg" for j in range(1, images_per_identity + 1)]
    names = lfw_names(seed, lfw_identities)
    lfw_numbers = range(1, lfw_images_per_identity + 1)
    splits = (
        (_TRAIN, [(i, f"{TRAIN_DIR}/{i:0{class_width}d}", train_files) for i in range(identities)]),
        (_LFW, [(i, f"{LFW_DIR}/{LFW_IMAGES}/{name}", [f"{name}_{j:04d}.jpg" for j in lfw_numbers])
                for i, name in enumerate(names)]),
    )
    # Jobs of about a hundred images, so that workers stay balanced and the progress bar moves.
    jobs = []
    for split, items in splits:
        step = max(1, 100 // len(items[0][2]))
        jobs += [(split, items[s:s + step]) for s in range(0, len(items), step)]

    from tqdm import tqdm

    total = identities * images_per_identity + lfw_identities * lfw_images_per_identity
    with tqdm(total=total, unit="img", desc="synth", file=sys.stderr, disable=not progress) as bar:
        if workers == 1:
            for split, items in jobs:
                bar.update(_write_identities(str(out), seed, nuisances, split, items))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_write_identities, str(out), seed, nuisances, split, items)
                           for split, items in jobs]
                for future in as_completed(futures):
                    bar.update(future.result())

    pairs = make_pairs(seed, names, lfw_images_per_identity, pairs_per_fold)
    (out / LFW_DIR / PAIRS_FILE).write_text(pairs, encoding="utf-8")
    manifest = {
        "generator": "cosface synthetic faces",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": SIZE,
        "nuisances": asdict(nuisances),
        "train": {
            "dir": TRAIN_DIR,
            "identities": identities,
            "images_per_identity": images_per_identity,
            "images": identities * images_per_identity,
        },
        "lfw": {
            "dir": LFW_DIR,
            "identities": lfw_identities,
            "images_per_identity": lfw_images_per_identity,
            "images": lfw_identities * lfw_images_per_identity,
            "folds": FOLDS,
            "pairs_per_fold": pairs_per_fold,
            "pairs": 2 * FOLDS * pairs_per_fold,
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
