"""The gallery: SQLite persistence, model identity, exact vs FAISS search, scoring, concurrency, the CLI."""
import json
import sqlite3
import threading

import numpy as np
import pytest

from cosface.cli import main
from cosface.errors import CosfaceError
from cosface.gallery import Gallery, GalleryStore, ModelIdentity
from cosface.gallery import search as search_mod

D = 32
MODEL = ModelIdentity("mobilefacenet", D, "a" * 64, {"size": 112})


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_gallery(path, subjects=60, per=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    g = Gallery(path, MODEL, **kw)
    emb = unit(rng.normal(size=(subjects, per, D)))
    g.store.add_many((f"s{i:03d}", emb[i]) for i in range(subjects))
    return g, emb


def names(results):
    return [[m.name for m in r.matches] for r in results]


def test_exact_and_faiss_agree_on_random_data(tmp_path):
    exact, emb = random_gallery(tmp_path / "g.sqlite", index="exact")
    faiss_g = Gallery(tmp_path / "g.sqlite", MODEL, index="faiss")
    q = unit(np.random.default_rng(1).normal(size=(40, D)))
    a, b = exact.identify(q, top_k=7, threshold=0.3), faiss_g.identify(q, top_k=7, threshold=0.3)
    assert exact.index_kind() == "exact" and faiss_g.index_kind() == "faiss"
    assert names(a) == names(b)
    np.testing.assert_allclose([[m.score for m in r.matches] for r in a], [[m.score for m in r.matches] for r in b],
                               atol=1e-5)
    # max scoring, by hand: the best cosine over each subject's three faces
    by_hand = (q @ emb.reshape(-1, D).T).reshape(40, 60, 3).max(2)
    top = np.argsort(-by_hand, axis=1)[:, :7]
    assert names(a) == [[f"s{i:03d}" for i in row] for row in top]
    np.testing.assert_allclose([m.score for m in a[0].matches], by_hand[0, top[0]], atol=1e-6)


def test_mean_scoring_is_the_mean_cosine_over_a_subjects_faces(tmp_path):
    for index in ("exact", "faiss"):
        g, emb = random_gallery(tmp_path / f"{index}.sqlite", index=index, scoring="mean")
        q = unit(np.random.default_rng(2).normal(size=(5, D)))
        by_hand = np.einsum("qd,spd->qsp", q, emb).mean(2)
        r = g.identify(q, top_k=3, threshold=0.0)
        assert names(r) == [[f"s{i:03d}" for i in row] for row in np.argsort(-by_hand, axis=1)[:, :3]]
        np.testing.assert_allclose(r[4].matches[0].score, by_hand[4].max(), atol=1e-5)


def test_unknown_below_the_threshold_and_known_above(tmp_path):
    g, emb = random_gallery(tmp_path / "g.sqlite", index="exact")
    near = unit(emb[7, 1] + 0.05 * np.random.default_rng(3).normal(size=D))
    far = unit(-emb[:, 0].mean(0))
    known, unknown = g.identify(np.stack([near, far]), top_k=2, threshold=0.5)
    assert known.known and known.name == "s007" and known.best.score > 0.9
    assert not unknown.known and unknown.name is None and len(unknown.matches) == 2


def test_identify_refuses_a_threshold_that_is_not_a_cosine(tmp_path):
    g, emb = random_gallery(tmp_path / "g.sqlite", index="exact")
    for bad in (float("nan"), 1.5, -2.0):   # NaN would call everyone 'unknown'
        with pytest.raises(CosfaceError, match=f"threshold is a cosine, in -1..1; got {bad}"):
            g.identify(emb[7, :1], top_k=1, threshold=bad)
    assert g.identify(emb[7, :1], top_k=1, threshold=-1.0)[0].known


def test_faiss_index_is_saved_reused_and_rebuilt_when_stale(tmp_path):
    path = tmp_path / "g.sqlite"
    g, emb = random_gallery(path, index="faiss")
    g.identify(emb[0, :1], top_k=1, threshold=0.3)
    saved = tmp_path / "g.sqlite.max.faiss"
    stamp = json.loads((tmp_path / "g.sqlite.max.faiss.json").read_text())
    assert saved.exists() and stamp["count"] == 180 and stamp["revision"] == g.store.revision
    mtime = saved.stat().st_mtime_ns
    # another process (here: another Gallery) reuses the file while it matches ...
    g2 = Gallery(path, MODEL, index="faiss")
    assert g2.identify(emb[5, :1], top_k=1, threshold=0.3)[0].name == "s005"
    assert saved.stat().st_mtime_ns == mtime
    # ... and rebuilds it once the gallery changed under it
    new = unit(np.random.default_rng(9).normal(size=(1, D)))
    g.enroll("newcomer", new)
    assert g2.identify(new, top_k=1, threshold=0.3)[0].name == "newcomer"
    assert json.loads((tmp_path / "g.sqlite.max.faiss.json").read_text())["count"] == 181
    # a missing or damaged index file is rebuilt, not trusted
    saved.write_bytes(b"garbage")
    assert Gallery(path, MODEL, index="faiss").identify(new, top_k=1, threshold=0.3)[0].name == "newcomer"


def test_a_saved_faiss_index_is_not_reused_for_a_remade_or_restored_gallery(tmp_path):
    path = tmp_path / "g.sqlite"
    rng = np.random.default_rng(11)
    first, second = unit(rng.normal(size=(3, D))), unit(rng.normal(size=(3, D)))
    backup = tmp_path / "backup.sqlite"

    def enrol_three(emb, prefix):
        g = Gallery(path, MODEL, index="faiss")
        for i in range(3):
            g.enroll(f"{prefix}{i}", emb[i:i + 1])
        assert g.identify(emb[2:3], top_k=1, threshold=0.5)[0].name == f"{prefix}2"   # saves the index
        return g

    g = enrol_three(first, "old")
    with sqlite3.connect(backup) as b:
        g.store._db.backup(b)
    g.close()
    # the same number of writes and faces, other people: the revision counter repeats, the index must not
    for f in tmp_path.glob("g.sqlite*"):
        if ".faiss" not in f.name:
            f.unlink()
    g = enrol_three(second, "new")
    g.close()
    # a backup put back: the revision goes back to the one a saved index of other data may carry
    path.write_bytes(backup.read_bytes())
    for f in tmp_path.glob("g.sqlite-*"):
        f.unlink()
    g = Gallery(path, MODEL, index="faiss")
    assert g.identify(first[2:3], top_k=1, threshold=0.5)[0].name == "old2"


def test_faiss_search_works_where_the_index_cannot_be_saved(tmp_path, monkeypatch):
    g, emb = random_gallery(tmp_path / "g.sqlite", subjects=5, index="faiss")
    import faiss

    def full_disk(index, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise RuntimeError(f"Error in faiss::FileIOWriter: could not write {filename}: No space left on device")

    monkeypatch.setattr(faiss, "write_index", full_disk)
    assert g.identify(emb[3, :1], top_k=1, threshold=0.5)[0].name == "s003"
    assert sorted(f.name for f in tmp_path.iterdir() if "faiss" in f.name) == []   # no partial file left


def test_auto_picks_faiss_above_the_size(tmp_path):
    g, _ = random_gallery(tmp_path / "g.sqlite", index="auto", faiss_min=100)
    assert g.index_kind() == "faiss"
    small, _ = random_gallery(tmp_path / "h.sqlite", subjects=10, index="auto", faiss_min=100)
    assert small.index_kind() == "exact"


def test_ivf_index_finds_near_duplicates(tmp_path, monkeypatch):
    monkeypatch.setattr(search_mod, "IVF_MIN", 500)
    g, emb = random_gallery(tmp_path / "g.sqlite", subjects=400, per=2, index="faiss")
    assert type(g._current()[1].index).__name__ == "IndexIVFFlat"
    q = unit(emb[::20, 0] + 0.1 * np.random.default_rng(4).normal(size=(20, D)))
    assert [r.name for r in g.identify(q, top_k=1, threshold=0.3)] == [f"s{i:03d}" for i in range(0, 400, 20)]


def test_persistence_survives_a_restart(tmp_path):
    path = tmp_path / "g.sqlite"
    g, emb = random_gallery(path, subjects=5, index="exact")
    g.store.update("s001", new_name="Ada", metadata={"team": "blue"})
    g.remove("s004")
    q = emb[:, 0]
    before = g.identify(q, top_k=2, threshold=0.3)
    g.close()
    g = Gallery(path, MODEL, index="exact")
    assert [s.name for s in g.subjects()] == ["Ada", "s000", "s002", "s003"]
    assert g.subject("Ada").metadata == {"team": "blue"} and g.subject("Ada").faces == 3
    assert names(g.identify(q, top_k=2, threshold=0.3)) == names(before)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert dict(db.execute("SELECT key, value FROM meta"))["schema_version"] == "1"


def test_another_model_is_refused(tmp_path):
    path = tmp_path / "g.sqlite"
    random_gallery(path, subjects=2)
    other = ModelIdentity("mobilefacenet", D, "b" * 64, {"size": 112})
    with pytest.raises(CosfaceError, match="another model .*sha256 aaaaaaaaaaaa.*sha256 bbbbbbbbbbbb"):
        Gallery(path, other)
    g = Gallery(path, MODEL)
    with pytest.raises(CosfaceError, match=r"must be \(N, 32\)"):
        g.enroll("x", np.ones((1, 64), np.float32))


def test_bad_files_and_names(tmp_path):
    (tmp_path / "text.sqlite").write_text("hello")
    with pytest.raises(CosfaceError, match="not a gallery"):
        Gallery(tmp_path / "text.sqlite", MODEL)
    with pytest.raises(CosfaceError, match="does not exist"):
        GalleryStore(tmp_path / "none.sqlite", create=False)
    g, _ = random_gallery(tmp_path / "g.sqlite", subjects=2)
    with pytest.raises(CosfaceError, match="no subject named 'nobody'"):
        g.remove("nobody")
    with pytest.raises(CosfaceError, match="already has a subject named 's001'"):
        g.rename("s000", "s001")
    with pytest.raises(CosfaceError, match="non-empty"):
        g.enroll(" ", np.ones((1, D), np.float32))
    with pytest.raises(CosfaceError, match="NaN"):
        g.enroll("nan", np.full((1, D), np.nan, np.float32))
    with sqlite3.connect(tmp_path / "g.sqlite") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(CosfaceError, match="schema version 99, newer"):
        Gallery(tmp_path / "g.sqlite", MODEL)


def test_concurrent_enrol_and_identify_lose_nothing(tmp_path):
    g = Gallery(tmp_path / "g.sqlite", MODEL, index="exact")
    rng = np.random.default_rng(5)
    emb = unit(rng.normal(size=(4, 25, D)))
    errors = []

    def writer(t):
        try:
            for i in range(25):
                g.enroll(f"t{t}-{i}", emb[t, i:i + 1])
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    def reader():
        try:
            for _ in range(40):
                for r in g.identify(emb[:, 0], top_k=3, threshold=0.5):
                    assert all(m.name.startswith("t") for m in r.matches)
        except Exception as e:   # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)] + [threading.Thread(target=reader)
                                                                                for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert g.store.counts() == (100, 100)
    assert [r.name for r in g.identify(emb.reshape(-1, D), top_k=1, threshold=0.5)] == \
        [f"t{t}-{i}" for t in range(4) for i in range(25)]


def test_a_write_that_finds_the_gallery_locked_fails_clearly_and_frees_the_store(tmp_path):
    g = Gallery(tmp_path / "g.sqlite", MODEL, index="exact")
    g.store._db.execute("PRAGMA busy_timeout = 100")      # instead of 30 s
    other = sqlite3.connect(tmp_path / "g.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")                       # another process is writing
    failed, finish, errors = threading.Event(), threading.Event(), []

    def pool_worker():   # a long-lived thread, as a server's thread pool has
        try:
            g.enroll("a", np.ones((1, D), np.float32))
        except Exception as e:
            errors.append(e)
        failed.set()
        finish.wait(30)

    worker = threading.Thread(target=pool_worker, daemon=True)
    worker.start()
    assert failed.wait(30)
    other.execute("ROLLBACK")
    other.close()
    done = []
    writer = threading.Thread(target=lambda: done.append(g.enroll("b", np.ones((1, D), np.float32))), daemon=True)
    writer.start()
    writer.join(10)
    finish.set()
    assert done and [s.name for s in g.subjects()] == ["b"]   # the failed write did not keep the store's lock
    assert len(errors) == 1 and isinstance(errors[0], CosfaceError) and "is busy" in str(errors[0])


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_enroll_identify_list_rename_remove(tiny, tmp_path, capsys):
    faces, model, db = tiny["faces"], tiny["model"], tmp_path / "g.sqlite"
    people = list(faces)[:3]
    folder = tmp_path / "people"
    for p in people[1:]:
        (folder / p).mkdir(parents=True)
        for f in faces[p]:
            (folder / p / f.name).write_bytes(f.read_bytes())
    (folder / people[1] / "notes.png").write_text("not an image")
    (folder / "Empty").mkdir()
    rc, out, err = cli(capsys, "gallery", "enroll", "--db", db, "--model", model, people[0], *faces[people[0]])
    assert rc == 0 and "enrolled 2 face(s) of 1 subject(s)" in out
    rc, out, err = cli(capsys, "gallery", "enroll", "--db", db, "--model", model, "--folder", folder, "--quiet")
    assert rc == 0 and "enrolled 4 face(s) of 2 subject(s)" in out and "now holds 3 subject(s), 6 face(s)" in out
    assert "2 photo(s) had no usable face" in err and "notes.png: not an image" in err and "Empty: no image files" in err
    query = faces[people[2]][0]
    rc, out, _ = cli(capsys, "gallery", "identify", "--db", db, "--model", model, query, "--top-k", "3", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["results"][0]["matches"][0]["name"] == people[2]
    assert doc["results"][0]["matches"][0]["score"] == pytest.approx(1.0, abs=1e-4)   # the enrolled photo itself
    assert doc["results"][0]["known"] and len(doc["results"][0]["matches"]) == 3 and doc["index"] == "exact"
    rc, out, _ = cli(capsys, "gallery", "rename", "--db", db, people[2], "Renamed")
    assert rc == 0 and "renamed" in out
    rc, out, _ = cli(capsys, "gallery", "remove", "--db", db, people[0])
    assert rc == 0 and "and 2 face(s)" in out
    rc, out, _ = cli(capsys, "gallery", "list", "--db", db, "--json")
    assert sorted(s["name"] for s in json.loads(out)["subjects"]) == sorted([people[1], "Renamed"])
    rc, out, _ = cli(capsys, "gallery", "identify", "--db", db, "--model", model, query)
    assert rc == 0 and f"{query}: Renamed" in out
    # a photo the gallery cannot use: exit 1 and a reason, the others still answered
    rc, out, err = cli(capsys, "gallery", "identify", "--db", db, "--model", model, query, folder / people[1] / "notes.png")
    assert rc == 1 and "Renamed" in out and "not an image" in err


def test_cli_refuses_another_models_gallery(tiny, tmp_path, capsys):
    db = tmp_path / "g.sqlite"
    Gallery(db, ModelIdentity("mobilefacenet", 256, "c" * 64, {}))
    person, photos = next(iter(tiny["faces"].items()))
    rc, _, err = cli(capsys, "gallery", "enroll", "--db", db, "--model", tiny["model"], person, photos[0])
    assert rc == 2 and "holds embeddings of another model" in err and err.count("\n") == 1
    rc, _, err = cli(capsys, "gallery", "identify", "--db", tmp_path / "none.sqlite", "--model", tiny["model"], photos[0])
    assert rc == 2 and "does not exist" in err


def test_a_prefix_is_a_name_range_that_the_index_answers(tmp_path):
    g = Gallery(tmp_path / "g.sqlite", MODEL)
    names = ["Ab", "Ad", "Ada", "Ada King", "Adé", "Ad\U0010ffff", "Ae", "ad", "Ädam", "\U0010ffff"]
    g.store.add_many((n, np.ones((1, D), np.float32)) for n in names)
    # Python's string order is SQLite's (code points = UTF-8 bytes), so a hand-written filter is the reference
    for prefix in ("Ad", "Ada", "A", "Ad\U0010ffff", "\U0010ffff", "ä", "Z", ""):
        expected = sorted(n for n in names if n.startswith(prefix))
        assert [s.name for s in g.subjects(prefix=prefix)] == expected, prefix
        assert g.page(prefix=prefix, limit=2).total == len(expected)
    page = g.page(limit=3, prefix="Ad")
    assert [s.name for s in page.subjects] == ["Ad", "Ada", "Ada King"] and page.next == "Ada King" and page.total == 5
    page = g.page(limit=3, prefix="Ad", after=page.next)
    assert [s.name for s in page.subjects] == ["Adé", "Ad\U0010ffff"] and page.next is None
    with pytest.raises(CosfaceError, match="at least 1"):
        g.page(limit=0)
    plan = " ".join(r[-1] for r in g.store._query(
        "EXPLAIN QUERY PLAN SELECT s.name FROM subjects s WHERE s.name > ? AND s.name >= ? AND s.name < ? "
        "ORDER BY s.name LIMIT 10", ("a", "b", "c")))
    assert "USING COVERING INDEX sqlite_autoindex_subjects_1 (name>? AND name<?)" in plan and "TEMP B-TREE" not in plan


def test_cli_list_pages_and_prefix(tmp_path, capsys, monkeypatch):
    db = tmp_path / "g.sqlite"
    g, _ = random_gallery(db, subjects=25, per=2)
    g.close()
    rc, out, err = cli(capsys, "gallery", "list", "--db", db, "--limit", "10", "--json")
    doc = json.loads(out)
    assert rc == 0 and [s["name"] for s in doc["subjects"]] == [f"s{i:03d}" for i in range(10)]
    assert doc["next"] == "s009" and doc["total"] == 25 and doc["subjects"][0]["faces"] == 2
    rc, out, err = cli(capsys, "gallery", "list", "--db", db, "--limit", "10", "--after", "s009")
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith(f"{db}: 25 subject(s), 50 face(s)") and lines[1] == "s010\t2"
    assert len(lines) == 11 and err == "more: --after s019\n"
    rc, out, err = cli(capsys, "gallery", "list", "--db", db, "--prefix", "s01")
    lines = out.splitlines()
    assert rc == 0 and "10 of 25 subject(s) start with 's01'" in lines[0] and len(lines) == 11 and err == ""
    monkeypatch.setattr("cosface.gallery.PAGE_SIZE", 1)   # no --limit reads pages of 10 * PAGE_SIZE: here, 3
    rc, out, _ = cli(capsys, "gallery", "list", "--db", db, "--json")   # every subject, as before
    doc = json.loads(out)
    assert [s["name"] for s in doc["subjects"]] == [f"s{i:03d}" for i in range(25)]
    assert doc["next"] is None and doc["total"] == 25
    rc, _, err = cli(capsys, "gallery", "list", "--db", db, "--limit", "0")
    assert rc == 2 and "limit 0" in err and err.count("\n") == 1
