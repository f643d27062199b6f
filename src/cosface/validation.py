"""Held-out validation: identities kept out of training, verification pairs drawn from them, evaluated at saves.

LFW and the other test sets stay tests; choosing a checkpoint needs data the choice never saw, so a
few training identities are set aside instead. Which ones depends only on the class names, the
image counts and `train.seed`: every rank computes the same split, a different process count gives
the same split, and a resumed run checks that it still gets the split its run directory lists.

The pairs follow LFW's layout: 10 folds, each P same-identity pairs then P different-identity pairs,
evaluated with the reference 10-fold protocol plus the all-pairs metrics (AUC, TAR at FAR).

    source, validator = split_validation(open_source(path), cfg.data, cfg.train.seed)
    validator.check_resume(run_dir, resuming)   # the run directory lists the same identities
    validator.write(run_dir)                    # val_identities.txt, val_pairs.txt
    summary = validator.evaluate(embed_fn, size=112)   # a dict for the checkpoint and metrics.jsonl
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError

IDENTITIES_FILE = "val_identities.txt"
PAIRS_FILE = "val_pairs.txt"
FOLDS = 10
_SPLIT_STREAM = 0x5A11     # keeps the validation draws apart from other uses of train.seed
_PAIR_STREAM = 0x9A125


class SubsetSource:
    """The samples `indices` of a source, with classes renumbered 0..K-1 in the source's class order."""

    def __init__(self, source, indices: np.ndarray, classes: np.ndarray):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        new_index = np.full(len(source.class_names), -1, dtype=np.int64)
        new_index[classes] = np.arange(len(classes))
        self.labels = new_index[np.asarray(source.labels)[self.indices]]
        self.class_names = [source.class_names[c] for c in classes]

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> bytes:
        return self.source.read(int(self.indices[i]))

    def describe(self, i: int) -> str:
        return self.source.describe(int(self.indices[i]))


@dataclass(frozen=True)
class Pairs:
    """Verification pairs over `images` (sample indices of the full source)."""

    images: np.ndarray    # (M,) int64 sample index of each distinct image
    left: np.ndarray      # (N,) int64 index into images
    right: np.ndarray     # (N,)
    issame: np.ndarray    # (N,) bool
    fold: np.ndarray      # (N,) int64


def count_identities(spec: float, num_classes: int) -> int:
    """data.val_identities -> a number of identities: a whole count, or a fraction of the classes."""
    if spec <= 0:
        return 0
    return int(spec) if spec >= 1 else max(2, round(spec * num_classes))


def choose_identities(labels: np.ndarray, num_classes: int, count: int, seed: int) -> np.ndarray:
    """`count` class indices (sorted), drawn by `seed` among the classes with at least 2 images."""
    sizes = np.bincount(np.asarray(labels), minlength=num_classes)
    eligible = np.flatnonzero(sizes >= 2)
    if count < 2:
        raise CosfaceError(f"data.val_identities gives {count} identity; different-identity pairs need at least 2")
    if count >= len(eligible):
        raise CosfaceError(f"data.val_identities asks for {count} held-out identities, but only {len(eligible)} of "
                           f"{num_classes} classes have the 2+ images a same-identity pair needs, and training needs "
                           f"some left; lower data.val_identities")
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    return np.sort(rng.choice(eligible, size=count, replace=False))


def draw_pairs(labels: np.ndarray, classes: np.ndarray, total: int, seed: int) -> Pairs:
    """LFW-style pairs among the samples of `classes`: 10 folds of P same then P different pairs."""
    labels = np.asarray(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    same_avail = int(np.sum(sizes * (sizes - 1) // 2))
    diff_avail = int((sizes.sum() ** 2 - np.sum(sizes ** 2)) // 2)
    per = min(total // (2 * FOLDS), same_avail // FOLDS, diff_avail // FOLDS)
    if per < 1:
        raise CosfaceError(f"the {len(classes)} held-out identities allow only {same_avail} same-identity pairs, "
                           f"fewer than the {FOLDS} folds need; raise data.val_identities")
    rng = np.random.default_rng([seed, _PAIR_STREAM])
    n = FOLDS * per

    def same_pair():
        c = rng.choice(len(sizes), p=(sizes * (sizes - 1)) / (2 * same_avail))
        a, b = rng.choice(sizes[c], size=2, replace=False)
        return members[c][a], members[c][b]

    def diff_pair():
        c1, c2 = rng.choice(len(sizes), size=2, replace=False, p=sizes / sizes.sum())
        return members[c1][rng.integers(sizes[c1])], members[c2][rng.integers(sizes[c2])]

    def all_same():
        return [(m[i], m[j]) for m in members for i in range(len(m)) for j in range(i + 1, len(m))]

    def all_diff():
        flat = [(c, s) for c, m in enumerate(members) for s in m]
        return [(a, b) for i, (ca, a) in enumerate(flat) for cb, b in flat[i + 1:] if ca != cb]

    same = _unique_pairs(rng, n, same_avail, same_pair, all_same)
    diff = _unique_pairs(rng, n, diff_avail, diff_pair, all_diff)
    ordered = []
    for k in range(FOLDS):
        ordered += same[k * per:(k + 1) * per] + diff[k * per:(k + 1) * per]
    issame = np.tile(np.r_[np.ones(per, bool), np.zeros(per, bool)], FOLDS)
    fold = np.repeat(np.arange(FOLDS), 2 * per)
    images = np.unique(np.array(ordered, dtype=np.int64))
    pos = {int(s): i for i, s in enumerate(images)}
    left = np.array([pos[int(a)] for a, _ in ordered], dtype=np.int64)
    right = np.array([pos[int(b)] for _, b in ordered], dtype=np.int64)
    return Pairs(images, left, right, issame, fold)


def _unique_pairs(rng, n: int, available: int, draw, enumerate_all) -> list[tuple[int, int]]:
    """n distinct unordered pairs: by rejection while they are plentiful, else a sample of all of them."""
    if 2 * n > available:
        everything = enumerate_all()
        return [everything[i] for i in rng.choice(len(everything), size=n, replace=False)]
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    while len(out) < n:
        a, b = draw()
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            out.append((int(a), int(b)))
    return out


class Validator:
    """The held-out identities of one run: writes their list and pairs, and evaluates a backbone on them."""

    def __init__(self, source, classes: np.ndarray, pairs: Pairs | None):
        self.source, self.classes, self.pairs = source, classes, pairs

    @property
    def enabled(self) -> bool:
        return self.pairs is not None

    def _pairs(self) -> Pairs:
        assert self.pairs is not None, "validation is off"
        return self.pairs

    @property
    def names(self) -> list[str]:
        return [self.source.class_names[c] for c in self.classes]

    def notes(self, data_cfg, num_train_classes: int) -> list[str]:
        """What the split did, in one line (none when validation is off)."""
        if not self.enabled:
            return []
        n, total = len(self.classes), len(self.source.class_names)
        return [f"validation: {n} of {total} identities held out (data.val_identities = {data_cfg.val_identities:g}), "
                f"{len(self._pairs().issame)} pairs in {FOLDS} folds; training on the other {num_train_classes}"]

    def check_resume(self, run_dir: Path, resuming: bool) -> None:
        """A resumed run must hold out the identities its run directory lists (else it trains on them)."""
        listed = Path(run_dir) / IDENTITIES_FILE
        if not (resuming and listed.exists()):
            return
        before = listed.read_text().splitlines()
        if before != self.names:
            gone = sorted(set(before) - set(self.names))[:5]
            new = sorted(set(self.names) - set(before))[:5]
            raise CosfaceError(f"{listed} lists other held-out identities than this run would hold out "
                               f"(listed but not chosen now: {gone}; chosen now but not listed: {new}): "
                               f"data.val_identities, train.seed or the data changed; resuming would mix "
                               f"validation and training identities")

    def write(self, run_dir: Path) -> None:
        """List the held-out identities and their pairs in the run directory."""
        if not self.enabled:
            return
        (Path(run_dir) / IDENTITIES_FILE).write_text("".join(f"{n}\n" for n in self.names))
        (Path(run_dir) / PAIRS_FILE).write_text(self.pairs_text())

    def pairs_text(self) -> str:
        """The pairs in LFW's pairs.txt layout: `F P`, then `name n1 n2` / `name1 n1 name2 n2`, where n is
        the 1-based position of the image among its identity's images in the data (source order)."""
        p = self._pairs()
        labels = np.asarray(self.source.labels)
        number = {}
        for c in self.classes:
            for k, s in enumerate(np.flatnonzero(labels == c), start=1):
                number[int(s)] = k
        per = int(np.sum(p.issame & (p.fold == 0)))
        lines = [f"{FOLDS} {per}"]
        names = self.source.class_names
        for a, b, same in zip(p.images[p.left], p.images[p.right], p.issame):
            na, nb = names[labels[a]], names[labels[b]]
            lines.append(f"{na}\t{number[int(a)]}\t{number[int(b)]}" if same
                         else f"{na}\t{number[int(a)]}\t{nb}\t{number[int(b)]}")
        return "\n".join(lines) + "\n"

    def evaluate(self, embed_fn, *, size: int, batch_size: int = 64):
        """-> Report (reference protocol + all-pairs metrics) of `embed_fn` on the held-out pairs, or None when off."""
        if not self.enabled:
            return None
        from cosface.evaluation import embed_images, evaluate_features

        p = self._pairs()
        emb = embed_images(embed_fn, SubsetSource(self.source, p.images, np.arange(len(self.source.class_names))),
                           batch_size=batch_size, size=size, progress=False, desc="validation")
        flag = np.where(p.issame, 1, -1)
        source = f"held-out validation: {len(self.classes)} identities, {len(p.issame)} pairs"
        return evaluate_features(emb[p.left], emb[p.right], p.fold, flag, source=source)


def summary(report) -> dict:
    """A validation Report as the plain numbers a checkpoint and metrics.jsonl hold."""
    return {"mean": report.mean, "std": report.std, "auc": report.auc,
            "tar_at_far": {f"{far:g}": tar for far, tar in report.tar_at_far.items()},
            "pairs": len(report.issame)}


def split_validation(source, data_cfg, seed: int):
    """-> (training source without the held-out identities, Validator). With data.val_identities = 0 the
    source comes back unchanged and the Validator is disabled."""
    num_classes = len(source.class_names)
    count = count_identities(data_cfg.val_identities, num_classes)
    if count == 0:
        return source, Validator(source, np.zeros(0, dtype=np.int64), None)
    labels = np.asarray(source.labels)
    held = choose_identities(labels, num_classes, count, seed)
    keep = np.setdiff1d(np.arange(num_classes), held)
    train_source = SubsetSource(source, np.flatnonzero(np.isin(labels, keep)), keep)
    pairs = draw_pairs(labels, held, data_cfg.val_pairs, seed)
    return train_source, Validator(source, held, pairs)

