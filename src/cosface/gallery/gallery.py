"""1:N identification: a GalleryStore plus a search index that follows it.

Scores are cosines of the stored flip-concatenated, L2-normalised embeddings, the similarity that
`cosface verify` compares with the model's threshold. A subject's score for a query is
  - "max":  the best cosine over the subject's faces (the default; it is exactly what `verify`
            would say for the subject's closest enrolled photo, so the same threshold applies), or
  - "mean": the mean cosine over the subject's faces (= the cosine with the unnormalised mean of
            its embeddings; lower than "max", steadier when one enrolled photo is poor).
A query is "unknown" when its best subject's score is not above the threshold.

The index is rebuilt from SQLite whenever the file's revision moves (another thread or process
wrote to it). With FAISS it is also saved next to the file (<db>.<scoring>.faiss and a JSON stamp)
and reused by the next process while the stamp still matches.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError
from cosface.evaluation.metrics import check_cosine_threshold
from cosface.gallery import search
from cosface.gallery.search import ExactIndex, FaissIndex, faiss_available
from cosface.gallery.store import PAGE_SIZE, GalleryStore, ModelIdentity, SubjectPage

INDEXES = ("auto", "exact", "faiss")
SCORINGS = ("max", "mean")
FAISS_MIN = 50_000        # searched vectors from which "auto" picks FAISS (when it is installed)


@dataclass(frozen=True)
class Match:
    name: str
    score: float


@dataclass(frozen=True)
class Identification:
    matches: list[Match]      # best first, at most top_k
    threshold: float

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def known(self) -> bool:
        return self.best is not None and self.best.score > self.threshold   # strict, as verify

    @property
    def name(self) -> str | None:
        best = self.best
        return best.name if best is not None and self.known else None


class Gallery:
    """Subjects with face embeddings in one SQLite file, searchable for the best-matching subjects.

    `model`: the identity of the model whose embeddings go in (required to create the file or search
    it; a file made with another model is refused). `index`: "auto" (FAISS from FAISS_MIN searched
    vectors, when installed), "exact" or "faiss". `scoring`: "max" or "mean" (see the module doc).
    """

    def __init__(self, path: str | os.PathLike, model: ModelIdentity | None = None, *, index: str = "auto",
                 scoring: str = "max", create: bool = True, faiss_min: int = FAISS_MIN):
        if index not in INDEXES:
            raise CosfaceError(f"index must be one of {', '.join(INDEXES)}, got {index!r}")
        if scoring not in SCORINGS:
            raise CosfaceError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
        if index == "faiss" and not faiss_available():
            from cosface.optional import require

            require("faiss", purpose="--index faiss")
        self.store = GalleryStore(path, model, create=create)
        self.index_choice, self.scoring, self.faiss_min = index, scoring, faiss_min
        self._lock = threading.Lock()
        self._state: tuple | None = None   # (revision, index, unit owners (U,), names, max faces per subject)

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def model(self) -> ModelIdentity:
        return self.store.model

    def close(self) -> None:
        self.store.close()

    # Writes go straight to the store; the index notices through the revision.
    def enroll(self, name: str, embeddings: np.ndarray, **kw):
        return self.store.add(name, embeddings, **kw)

    def subjects(self, *, limit: int | None = None, after: str | None = None, prefix: str | None = None):
        return self.store.subjects(limit=limit, after=after, prefix=prefix)

    def page(self, *, limit: int = PAGE_SIZE, after: str | None = None, prefix: str | None = None) -> SubjectPage:
        return self.store.page(limit=limit, after=after, prefix=prefix)

    def subject(self, name: str):
        return self.store.subject(name)

    def remove(self, name: str) -> int:
        return self.store.remove(name)

    def rename(self, name: str, new_name: str):
        return self.store.update(name, new_name=new_name)

    def index_kind(self) -> str:
        return self._current()[1].kind

    def _use_faiss(self, units: int) -> bool:
        if self.index_choice == "auto":
            return units >= self.faiss_min and faiss_available()
        return self.index_choice == "faiss"

    def _current(self) -> tuple:
        rev = self.store.revision
        with self._lock:
            if self._state is None or self._state[0] != rev:
                self._state = self._build(rev)
            return self._state

    def _build(self, rev: int) -> tuple:
        subjects, faces = self.store.counts()
        units = faces if self.scoring == "max" else subjects
        if not self._use_faiss(units):
            rev, _, owners, emb, names = self.store.snapshot()
            owners, vectors = self._units(owners, emb)
            return rev, ExactIndex(vectors), owners, names, _max_run(owners)
        saved = self.path.with_name(f"{self.path.name}.{self.scoring}.faiss")
        rev, rev_id, owners, _, names = self.store.snapshot(with_embeddings=False)
        units_owner = owners if self.scoring == "max" else np.unique(owners)
        stamp = {"revision": rev, "revision_id": rev_id, "count": int(len(units_owner)), "scoring": self.scoring,
                 "model_sha256": self.model.model_sha256, "ivf_from": search.IVF_MIN}
        index = FaissIndex.load(saved, stamp)
        if index is None:
            rev2, rev_id, owners, emb, names = self.store.snapshot()
            units_owner, vectors = self._units(owners, emb)
            stamp.update(revision=rev2, revision_id=rev_id, count=int(len(units_owner)))
            rev = rev2
            index = FaissIndex.build(vectors)
            try:
                index.save(saved, stamp)
            except OSError:
                pass   # a read-only directory: the index still serves this process
        return rev, index, units_owner, names, _max_run(owners)

    def _units(self, owners: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Searched vectors and their subject ids: every face ("max") or each subject's mean ("mean")."""
        if self.scoring == "max" or len(owners) == 0:
            return owners, emb
        subjects, starts = np.unique(owners, return_index=True)   # faces are grouped by subject
        sums = np.add.reduceat(emb, starts, axis=0)
        counts = np.diff(np.append(starts, len(owners)))[:, None]
        return subjects, (sums / counts).astype(np.float32)

    def identify(self, embeddings: np.ndarray, *, top_k: int = 5, threshold: float) -> list[Identification]:
        """(Q, D) query embeddings -> one Identification per query: the top_k subjects, best first."""
        if top_k < 1:
            raise CosfaceError(f"top-k must be >= 1, got {top_k}")
        check_cosine_threshold(threshold)
        q = np.ascontiguousarray(embeddings, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.model.dim:
            raise CosfaceError(f"queries for gallery {self.path} must be (N, {self.model.dim}), got {q.shape}")
        _, index, owners, names, per_subject = self._current()
        # "max": the top_k * (most faces of one subject) best faces always hold top_k distinct subjects.
        n = top_k * per_subject if self.scoring == "max" else top_k
        scores, rows = index.search(q, n)
        out = []
        for srow, rrow in zip(scores, rows):
            seen: dict[int, float] = {}
            for s, r in zip(srow, rrow):
                if r < 0:
                    continue
                sid = int(owners[r])
                if sid not in seen:
                    seen[sid] = float(s)
                    if len(seen) == top_k:
                        break
            out.append(Identification([Match(names[sid], s) for sid, s in seen.items()], float(threshold)))
        return out


def _max_run(owners: np.ndarray) -> int:
    if len(owners) == 0:
        return 1
    return int(np.unique(owners, return_counts=True)[1].max())

