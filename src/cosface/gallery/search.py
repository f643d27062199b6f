"""Nearest-neighbour search over unit vectors by inner product (= cosine): exact numpy, or FAISS.

Both return, for each query, the `n` best rows in descending score. FAISS uses an exact flat index
(`IndexFlatIP`, the same answers as numpy, faster kernels) up to IVF_MIN vectors and an inverted-file
index (`IndexIVFFlat`, approximate: it scans the IVF_NPROBE nearest of sqrt(N) clusters) above.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError
from cosface.optional import require

IVF_MIN = 200_000         # vectors; below this FAISS is exact
IVF_NPROBE = 64


def top_rows(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, N) scores -> the n best (scores, rows) of each query, best first."""
    q, total = scores.shape
    n = min(n, total)
    if n < total:
        rows = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    else:
        rows = np.broadcast_to(np.arange(total), (q, total))
    best = np.take_along_axis(scores, rows, 1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best, order, 1), np.take_along_axis(rows, order, 1)


class ExactIndex:
    kind = "exact"

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)   # (N, D)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.vectors) == 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        return top_rows(queries @ self.vectors.T, n)   # (Q, N) -> (Q, n)


class FaissIndex:
    kind = "faiss"

    def __init__(self, index):
        self.index = index

    def __len__(self) -> int:
        return self.index.ntotal

    @classmethod
    def build(cls, vectors: np.ndarray) -> "FaissIndex":
        faiss = require("faiss", purpose="FAISS gallery search")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = vectors.shape
        if n >= IVF_MIN:
            nlist = int(math.sqrt(n))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = vectors[np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)]
            index.train(sample)
            index.nprobe = IVF_NPROBE
        else:
            index = faiss.IndexFlatIP(d)
        index.add(vectors)
        return cls(index)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        n = min(n, self.index.ntotal)
        if n == 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), n)
        return scores, rows   # rows are -1 where an IVF probe found fewer than n

    def save(self, path: Path, stamp: dict) -> None:
        """Write the index and its stamp (what it was built from) atomically, stamp last.

        OSError when it cannot (a read-only directory, a full disk); no temporary file is left behind."""
        faiss = require("faiss", purpose="FAISS gallery search")
        stamp_path = path.with_name(path.name + ".json")
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp_stamp = stamp_path.with_name(stamp_path.name + f".tmp{os.getpid()}")
        try:
            try:
                faiss.write_index(self.index, str(tmp))
            except RuntimeError as e:   # faiss reports an unwritable or full disk this way
                raise OSError(f"cannot write {tmp}: {e}") from None
            os.replace(tmp, path)
            tmp_stamp.write_text(json.dumps(stamp))
            os.replace(tmp_stamp, stamp_path)
        except OSError:
            for t in (tmp, tmp_stamp):
                try:
                    t.unlink()
                except OSError:
                    pass
            raise

    @classmethod
    def load(cls, path: Path, stamp: dict) -> "FaissIndex | None":
        """The saved index if its stamp matches `stamp` exactly; None when missing, stale or unreadable."""
        faiss = require("faiss", purpose="FAISS gallery search")
        stamp_path = path.with_name(path.name + ".json")
        try:
            if json.loads(stamp_path.read_text()) != stamp:
                return None
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError):
            return None
        if index.ntotal != stamp.get("count"):
            return None
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = IVF_NPROBE
        return cls(index)


def faiss_available() -> bool:
    try:
        require("faiss", purpose="FAISS gallery search")
        return True
    except CosfaceError:
        return False
