"""The gallery's SQLite file: subjects, their face embeddings and thumbnails, and the model they came from.

One file (WAL mode, so readers never wait for a writer and another process may read while the
service writes). The schema is versioned in the `meta` table; so is the identity of the model whose
embeddings the file holds, and a `revision` counter that every write bumps, which is how a search
index (in this process or a saved FAISS file) knows it is stale. Each write also stores a random
`revision_id`: a counter repeats its values when the file is deleted and made again or restored from
a backup, so a saved index is matched on the id, which names one state of one file.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30          # how long a write waits for another process's write lock
PAGE_SIZE = 100              # subjects per page when a caller does not say
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE subjects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    metadata TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    thumbnail BLOB,
    source TEXT,
    created REAL NOT NULL
);
CREATE INDEX faces_by_subject ON faces(subject_id, id);
"""


class SubjectExistsError(CosfaceError):
    """A new subject's name is taken."""


class GalleryBusyError(CosfaceError):
    """Another process held the gallery's write lock for longer than BUSY_TIMEOUT_S."""


@dataclass(frozen=True)
class ModelIdentity:
    """What makes two embeddings comparable: the same network weights fed the same way."""

    backbone: str
    dim: int                    # values per stored embedding (2 x the embedding size: image and mirror)
    model_sha256: str           # of the model file's bytes
    preprocessing: dict = field(default_factory=dict)

    @classmethod
    def of(cls, embedder) -> "ModelIdentity":
        """The identity of a cosface.inference.Embedder's model (flip-concatenated embeddings)."""
        return cls(backbone=embedder.info.backbone, dim=2 * embedder.info.embedding_size,
                   model_sha256=file_sha256(embedder.path), preprocessing=embedder.preprocessing.to_dict())

    def describe(self) -> str:
        return f"{self.backbone}, {self.dim}-value embeddings, model sha256 {self.model_sha256[:12]}"


_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


@dataclass(frozen=True)
class Subject:
    id: int
    name: str
    metadata: dict
    faces: int
    face_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class SubjectPage:
    subjects: list[Subject]
    next: str | None            # pass as `after` for the following page; None on the last
    total: int                  # subjects matching the prefix, on every page


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (None: no such string).

    SQLite compares TEXT as UTF-8 bytes, whose order is code point order, so this is the prefix with
    its last character stepped up one code point (past the surrogates, which UTF-8 cannot hold)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _name_range(after: str | None, prefix: str | None) -> tuple[str, tuple]:
    """A WHERE clause on subjects.name (alias s) that the name index answers as one range, and its args.

    `LIKE 'p%'` would not use the index (SQLite's LIKE is case-insensitive); a range does."""
    clauses, args = [], []
    if after:
        clauses.append("s.name > ?")
        args.append(after)
    if prefix:
        clauses.append("s.name >= ?")
        args.append(prefix)
        end = _prefix_end(prefix)
        if end is not None:
            clauses.append("s.name < ?")
            args.append(end)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise CosfaceError("a subject name must be a non-empty string")
    if len(name) > 200 or any(ord(c) < 32 for c in name) or "/" in name:
        raise CosfaceError(f"subject name {name[:40]!r}{'...' if len(name) > 40 else ''} must be at most 200 "
                           f"characters, with no '/' or control characters")
    return name.strip()


class GalleryStore:
    """Thread-safe access to one gallery file. `model`: required to create a file or add embeddings."""

    def __init__(self, path: str | os.PathLike, model: ModelIdentity | None = None, *, create: bool = True):
        self.path = Path(path)
        self._lock = threading.RLock()
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            with open(self.path, "rb") as f:
                if f.read(16) != _SQLITE_MAGIC:
                    raise CosfaceError(f"{self.path} is not a gallery (not an SQLite file)")
        elif not create:
            raise CosfaceError(f"gallery {self.path} does not exist (enrol someone to create it)")
        elif model is None:
            raise CosfaceError(f"gallery {self.path} does not exist; creating one needs the model (--model)")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a write never upgrades late.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_S)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if exists:
            self._check_schema()
        else:
            assert model is not None   # checked above: a new file needs the model
            with self._write() as db:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(stmt)
                db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("revision", "0"),
                    ("created", str(time.time())), ("model", json.dumps(asdict(model)))])
        self.model = self._stored_model()
        if model is not None and self.model != model:
            raise CosfaceError(
                f"gallery {self.path} holds embeddings of another model ({self.model.describe()}); this model is "
                f"{model.describe()}. Embeddings of different models cannot be compared: use another --db, or "
                f"re-enrol everyone with this model")

    # -- transactions -----------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: "GalleryStore"):
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._db.execute("BEGIN IMMEDIATE")
            except BaseException as e:
                # __exit__ does not run when __enter__ raises: release here, or every other thread waits forever.
                self.store._lock.release()
                if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                    raise GalleryBusyError(f"gallery {self.store.path} is busy: another process held its write lock "
                                           f"for {BUSY_TIMEOUT_S} s; try again") from None
                raise
            return self.store._db

        def __exit__(self, exc_type, exc, tb):
            try:
                if exc_type is None:
                    self.store._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
                    self.store._db.execute("INSERT OR REPLACE INTO meta VALUES ('revision_id', ?)",
                                           (secrets.token_hex(16),))
                    self.store._db.execute("COMMIT")
                else:
                    self.store._db.execute("ROLLBACK")
            finally:
                self.store._lock.release()

    def _write(self) -> "GalleryStore._Tx":
        return GalleryStore._Tx(self)

    def _query(self, sql: str, args=()) -> list:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _check_schema(self) -> None:
        try:
            rows = dict(self._query("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as e:
            raise CosfaceError(f"{self.path} is not a cosface gallery ({e})") from None
        if "schema_version" not in rows or "model" not in rows:
            raise CosfaceError(f"{self.path} is an SQLite file but not a cosface gallery (no schema version)")
        version = int(rows["schema_version"])
        if version > SCHEMA_VERSION:
            raise CosfaceError(f"gallery {self.path} has schema version {version}, newer than this cosface "
                               f"reads ({SCHEMA_VERSION}); upgrade cosface")

    def _stored_model(self) -> ModelIdentity:
        (raw,), = self._query("SELECT value FROM meta WHERE key = 'model'")
        return ModelIdentity(**json.loads(raw))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads --------------------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        (value,), = self._query("SELECT value FROM meta WHERE key = 'revision'")
        return int(value)

    def subject(self, name: str) -> Subject:
        rows = self._query("SELECT id, name, metadata FROM subjects WHERE name = ?", (name,))
        if not rows:
            raise CosfaceError(f"no subject named {name!r} in gallery {self.path}")
        sid, name, meta = rows[0]
        faces = tuple(r[0] for r in self._query("SELECT id FROM faces WHERE subject_id = ? ORDER BY id", (sid,)))
        return Subject(sid, name, json.loads(meta), len(faces), faces)

    def subjects(self, *, limit: int | None = None, after: str | None = None,
                 prefix: str | None = None) -> list[Subject]:
        """Subjects in name order: those named after `after` (exclusive) and starting with `prefix`
        (case-sensitive), at most `limit` (None: all)."""
        if limit is not None and limit < 1:
            raise CosfaceError(f"a page holds at least 1 subject, got limit {limit}")
        where, args = _name_range(after, prefix)
        # Walks the UNIQUE index on name from the page's first key; each page's face counts come from
        # faces_by_subject, so a page costs the same on the first and the thousandth page.
        rows = self._query("SELECT s.id, s.name, s.metadata, (SELECT COUNT(*) FROM faces f WHERE f.subject_id = s.id) "
                           f"FROM subjects s{where} ORDER BY s.name LIMIT ?", (*args, -1 if limit is None else limit))
        return [Subject(sid, name, json.loads(meta), n) for sid, name, meta, n in rows]

    def page(self, *, limit: int = PAGE_SIZE, after: str | None = None, prefix: str | None = None) -> "SubjectPage":
        """One page of subjects in name order, the name to pass as `after` for the next (None: the last
        page), and how many subjects match `prefix` in all; read in one transaction, so they agree.

        Pages are keyed on names, not offsets: a subject enrolled or deleted meanwhile never makes the
        next page skip or repeat another."""
        if limit < 1:
            raise CosfaceError(f"a page holds at least 1 subject, got limit {limit}")
        with self._lock:
            self._db.execute("BEGIN")
            try:
                subjects = self.subjects(limit=limit + 1, after=after, prefix=prefix)
                where, args = _name_range(None, prefix)
                (total,), = self._db.execute(f"SELECT COUNT(*) FROM subjects s{where}", args).fetchall()
            finally:
                self._db.execute("COMMIT")
        more = len(subjects) > limit
        return SubjectPage(subjects[:limit], subjects[limit - 1].name if more else None, total)

    def counts(self) -> tuple[int, int]:
        (s,), = self._query("SELECT COUNT(*) FROM subjects")
        (f,), = self._query("SELECT COUNT(*) FROM faces")
        return s, f

    def thumbnail(self, face_id: int) -> bytes | None:
        rows = self._query("SELECT thumbnail FROM faces WHERE id = ?", (face_id,))
        if not rows:
            raise CosfaceError(f"no face {face_id} in gallery {self.path}")
        return rows[0][0]

    def snapshot(self, with_embeddings: bool = True):
        """One consistent read: (revision, revision id, face subject ids (N,), embeddings (N, D) or None,
        {subject id: name}).

        Faces come ordered by subject, then id, so each subject's faces are one contiguous run.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                (rev,), = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchall()
                rev_id = self._db.execute("SELECT value FROM meta WHERE key = 'revision_id'").fetchone()
                names = dict(self._db.execute("SELECT id, name FROM subjects").fetchall())
                (n,), = self._db.execute("SELECT COUNT(*) FROM faces").fetchall()
                owners = np.empty(n, np.int64)
                emb = np.empty((n, self.model.dim), np.float32) if with_embeddings else None
                columns = "subject_id, embedding" if with_embeddings else "subject_id"
                # Filled row by row: a million faces never exist as a million Python objects at once.
                for i, row in enumerate(self._db.execute(f"SELECT {columns} FROM faces ORDER BY subject_id, id")):
                    owners[i] = row[0]
                    if emb is not None:
                        emb[i] = np.frombuffer(row[1], np.float32)
            finally:
                self._db.execute("COMMIT")
        return int(rev), rev_id[0] if rev_id else "", owners, emb, names

    # -- writes -------------------------------------------------------------------------------------
    def add(self, name: str, embeddings: np.ndarray, *, thumbnails=None, sources=None, metadata: dict | None = None,
            create: bool = True, exist_ok: bool = True) -> Subject:
        """Add faces to `name` (created when new and `create`); metadata, when given, replaces the subject's.

        `exist_ok=False`: only create; a taken name raises SubjectExistsError (checked in the write's
        transaction, so two concurrent enrolments of one name never merge into one subject)."""
        name = check_name(name)
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.model.dim:
            raise CosfaceError(f"embeddings for gallery {self.path} must be (N, {self.model.dim}), got {emb.shape}")
        if not np.isfinite(emb).all():
            raise CosfaceError("embeddings contain NaN or infinity")
        n = len(emb)
        thumbnails = list(thumbnails) if thumbnails is not None else [None] * n
        sources = list(sources) if sources is not None else [None] * n
        if metadata is not None and not isinstance(metadata, dict):
            raise CosfaceError(f"subject metadata must be a JSON object, got {type(metadata).__name__}")
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT id FROM subjects WHERE name = ?", (name,)).fetchone()
            if row is None:
                if not create:
                    raise CosfaceError(f"no subject named {name!r} in gallery {self.path}")
                sid = db.execute("INSERT INTO subjects (name, metadata, created) VALUES (?, ?, ?)",
                                 (name, json.dumps(metadata or {}), now)).lastrowid
            else:
                if not exist_ok:
                    raise SubjectExistsError(f"gallery {self.path} already has a subject named {name!r}")
                sid = row[0]
                if metadata is not None:
                    db.execute("UPDATE subjects SET metadata = ? WHERE id = ?", (json.dumps(metadata), sid))
            db.executemany("INSERT INTO faces (subject_id, embedding, thumbnail, source, created) VALUES (?, ?, ?, ?, ?)",
                           [(sid, emb[i].tobytes(), thumbnails[i], sources[i], now) for i in range(n)])
        return self.subject(name)

    def add_many(self, items) -> int:
        """Bulk load: `items` yields (name, (N, D) embeddings); one transaction. Returns the faces added."""
        count = 0
        now = time.time()
        with self._write() as db:
            for name, emb in items:
                emb = np.ascontiguousarray(emb, dtype=np.float32).reshape(-1, self.model.dim)
                sid = db.execute("INSERT INTO subjects (name, metadata, created) VALUES (?, '{}', ?)",
                                 (check_name(name), now)).lastrowid
                db.executemany("INSERT INTO faces (subject_id, embedding, created) VALUES (?, ?, ?)",
                               [(sid, e.tobytes(), now) for e in emb])
                count += len(emb)
        return count

    def remove(self, name: str) -> int:
        """Delete a subject and its faces; returns how many faces went."""
        with self._write() as db:
            row = db.execute("SELECT id FROM subjects WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CosfaceError(f"no subject named {name!r} in gallery {self.path}")
            (n,), = db.execute("SELECT COUNT(*) FROM faces WHERE subject_id = ?", row).fetchall()
            db.execute("DELETE FROM faces WHERE subject_id = ?", row)
            db.execute("DELETE FROM subjects WHERE id = ?", row)
        return n

    def remove_face(self, name: str, face_id: int) -> None:
        with self._write() as db:
            row = db.execute("SELECT f.id FROM faces f JOIN subjects s ON s.id = f.subject_id "
                             "WHERE s.name = ? AND f.id = ?", (name, face_id)).fetchone()
            if row is None:
                raise CosfaceError(f"subject {name!r} has no face {face_id} in gallery {self.path}")
            db.execute("DELETE FROM faces WHERE id = ?", row)

    def update(self, name: str, *, new_name: str | None = None, metadata: dict | None = None) -> Subject:
        if metadata is not None and not isinstance(metadata, dict):
            raise CosfaceError(f"subject metadata must be a JSON object, got {type(metadata).__name__}")
        target = check_name(new_name) if new_name is not None else name
        with self._write() as db:
            row = db.execute("SELECT id FROM subjects WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CosfaceError(f"no subject named {name!r} in gallery {self.path}")
            if target != name:
                if db.execute("SELECT 1 FROM subjects WHERE name = ?", (target,)).fetchone():
                    raise SubjectExistsError(f"gallery {self.path} already has a subject named {target!r}")
                db.execute("UPDATE subjects SET name = ? WHERE id = ?", (target, row[0]))
            if metadata is not None:
                db.execute("UPDATE subjects SET metadata = ? WHERE id = ?", (json.dumps(metadata), row[0]))
        return self.subject(target)
