"""The REST API end to end with FastAPI's test client, on synthetic faces and the tiny model."""
import base64
import io
import json
import struct
import warnings
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

with warnings.catch_warnings():
    # newer Starlette asks for httpx2 in its test client; httpx is what the serve extra's tests install
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient  # noqa: E402

from cosface.gallery import Gallery, ModelIdentity, open_gallery  # noqa: E402
from cosface.serve import ServeSettings, Service, create_app  # noqa: E402

KEY = "test-key-123456"


@pytest.fixture
def app_for(embedder, tmp_path):
    services = []

    def make(**settings):
        gallery = open_gallery(tmp_path / "g.sqlite", embedder, index="exact")
        service = Service(embedder, gallery, ServeSettings(**settings))
        services.append(service)
        return TestClient(create_app(service), base_url="http://127.0.0.1:8000")

    yield make
    for s in services:
        s.batcher.close()


def png_bytes(w, h) -> bytes:
    """A valid 1-bit PNG of w x h (all black), built row by row so it never needs w*h bytes of memory."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (w + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    assert "Traceback" not in r.text
    return body["error"]["message"]


def test_verify_embed_detect_identify_and_subjects(app_for, tiny, embedder):
    c = app_for()
    faces = tiny["faces"]
    ada, bob = list(faces)[:2]
    a1, a2 = faces[ada][0].read_bytes(), faces[ada][1].read_bytes()
    h = c.get("/healthz").json()
    assert h["status"] == "ok" and h["gallery"] == {"subjects": 0, "faces": 0}
    assert h["model"]["sha256"] == ModelIdentity.of(embedder).model_sha256

    # verify: multipart and base64 JSON give the Embedder's answer
    r = c.post("/v1/verify", files={"image1": a1, "image2": a2})
    assert r.status_code == 200, r.text
    v = r.json()
    expected = embedder.verify(str(faces[ada][0]), str(faces[ada][1]))
    assert v["similarity"] == pytest.approx(expected.similarity, abs=1e-5)
    assert v["threshold"] == pytest.approx(expected.threshold) and v["same"] == expected.same
    assert len(v["faces"]) == 2 and v["faces"][0]["crop"].startswith("data:image/jpeg;base64,")
    j = c.post("/v1/verify", json={"image1": base64.b64encode(a1).decode(),
                                   "image2": "data:image/jpeg;base64," + base64.b64encode(a2).decode()}).json()
    assert j["similarity"] == pytest.approx(v["similarity"], abs=1e-6)

    # embed: two images in one request, the Embedder's rows
    r = c.post("/v1/embed", files=[("image", a1), ("image", a2)])
    assert r.status_code == 200, r.text
    got = np.array([f["embedding"] for f in r.json()["faces"]], np.float32)
    np.testing.assert_allclose(got, embedder.embed([str(faces[ada][0]), str(faces[ada][1])]), atol=1e-5)

    # detect: an aligned crop is one face covering the image
    d = c.post("/v1/detect", files={"image": a1}).json()
    assert len(d["faces"]) == 1 and d["faces"][0]["box"] == [0, 0, 112, 112]

    # subjects CRUD
    r = c.post("/v1/subjects", data={"name": ada, "metadata": '{"team": "red"}'}, files=[("image", a1)])
    assert r.status_code == 201, r.text
    assert r.json()["subject"] == {"name": ada, "faces": 1, "metadata": {"team": "red"}, "face_ids": [1]}
    r = c.post("/v1/subjects", json={"name": bob, "images": [base64.b64encode(p.read_bytes()).decode()
                                                             for p in faces[bob]]})
    assert r.status_code == 201 and r.json()["subject"]["faces"] == 2
    error(c.post("/v1/subjects", data={"name": ada}, files=[("image", a1)]), 409, "subject_exists")
    assert c.post(f"/v1/subjects/{ada}/faces", files=[("image", a2)]).json()["subject"]["faces"] == 2
    assert [s["name"] for s in c.get("/v1/subjects").json()["subjects"]] == sorted([ada, bob])
    thumb = c.get(f"/v1/subjects/{ada}/faces/1/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"

    # identify: an enrolled photo finds its subject with score 1
    r = c.post("/v1/identify", files={"image": faces[bob][1].read_bytes()}, data={"top_k": "2"})
    assert r.status_code == 200, r.text
    i = r.json()
    assert i["identity"] == bob and i["known"] and i["matches"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [m["name"] for m in i["matches"]] == [bob, ada] and i["matches"][0]["thumbnail"] == f"/v1/subjects/{bob}/thumbnail"
    stranger = faces[list(faces)[2]][0].read_bytes()
    strict = c.post("/v1/identify", files={"image": stranger}, data={"threshold": "0.9999"}).json()
    assert strict["identity"] is None and not strict["known"] and strict["threshold_source"] == "given"
    assert c.get(i["matches"][0]["thumbnail"]).status_code == 200
    # ... and by an embedding the client computed with this model
    emb = embedder.embed(str(faces[bob][1]))[0].tolist()
    r = c.post("/v1/identify", json={"embedding": emb, "model_sha256": h["model"]["sha256"]})
    assert r.status_code == 200 and r.json()["identity"] == bob

    # rename, metadata, delete a face, delete a subject
    r = c.patch(f"/v1/subjects/{ada}", json={"name": "Ada Renamed", "metadata": {"team": "blue"}})
    assert r.status_code == 200 and r.json()["subject"]["metadata"] == {"team": "blue"}
    error(c.get(f"/v1/subjects/{ada}"), 404, "no_subject")
    assert c.delete("/v1/subjects/Ada Renamed/faces/1").json()["subject"]["faces"] == 1
    error(c.delete("/v1/subjects/Ada Renamed/faces/1"), 404, "no_face")
    assert c.delete(f"/v1/subjects/{bob}").json() == {"removed": bob, "faces": 2}
    assert c.get("/healthz").json()["gallery"] == {"subjects": 1, "faces": 1}


def encoded(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def test_photos_are_detected_and_aligned(app_for, embedder):
    data = pytest.importorskip("skimage.data")
    c = app_for()
    astronaut = encoded(data.astronaut())
    r = c.post("/v1/detect", files={"image": astronaut})
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 1 and faces[0]["score"] > 0.9 and len(faces[0]["landmarks"]) == 5
    # eyes, nose, mouth corners where they are in skimage's astronaut (hand-read), inside the box
    points = np.array(faces[0]["landmarks"])
    assert np.abs(points - [[205, 101], [247, 103], [224, 129], [203, 138], [244, 140]]).max() < 8
    x0, y0, x1, y1 = faces[0]["box"]
    assert (x0 < points[:, 0]).all() and (points[:, 0] < x1).all() and (y0 < points[:, 1]).all() and (points[:, 1] < y1).all()
    crop = np.asarray(__import__("PIL.Image").Image.open(io.BytesIO(base64.b64decode(faces[0]["crop"].split(",")[1]))))
    assert crop.shape == (112, 112, 3)
    # the service's crop is the Embedder's: same embedding as embedding the photo directly
    got = np.array(c.post("/v1/embed", files={"image": astronaut}).json()["faces"][0]["embedding"], np.float32)
    np.testing.assert_allclose(got, embedder.embed(data.astronaut())[0], atol=2e-3)
    assert c.post("/v1/subjects", data={"name": "Eileen"}, files={"image": astronaut}).status_code == 201
    mirrored = encoded(np.ascontiguousarray(data.astronaut()[:, ::-1]), "PNG")
    r = c.post("/v1/identify", files={"image": mirrored}).json()
    assert r["matches"][0]["name"] == "Eileen" and r["matches"][0]["score"] > 0.9
    assert "no face found" in error(c.post("/v1/identify", files={"image": encoded(data.coffee())}), 422, "no_face")


def test_bad_requests_get_the_right_4xx_and_one_message(app_for, tiny, embedder):
    c = app_for(max_upload_bytes=2 * 1024 * 1024)
    photo = next(iter(tiny["faces"].values()))[0].read_bytes()
    assert "image1" in error(c.post("/v1/verify", files={"image2": photo}), 400, "missing_image")
    error(c.post("/v1/verify"), 400, "missing_image")
    assert "not an image" in error(c.post("/v1/verify", files={"image1": b"hello, I am text", "image2": photo}),
                                   415, "not_an_image")
    bomb = png_bytes(30000, 30000)
    assert len(bomb) < 2 * 1024 * 1024
    assert "900000000 pixels" in error(c.post("/v1/identify", files={"image": bomb}), 413, "too_many_pixels")
    assert "7000x7000 pixels" in error(c.post("/v1/identify", files={"image": png_bytes(7000, 7000)}), 413,
                                       "too_many_pixels")
    big = photo + b"\x00" * (2 * 1024 * 1024)
    assert "limit" in error(c.post("/v1/embed", files={"image": big}), 413, "too_large")
    error(c.post("/v1/verify", json={"image1": "%%%not base64", "image2": "x"}), 400, "bad_base64")
    error(c.post("/v1/verify", content=b"{", headers={"content-type": "application/json"}), 400, "bad_json")
    error(c.post("/v1/verify", content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")
    no_face = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (300, 200), (200, 200, 200)).save(no_face, format="PNG")
    error(c.post("/v1/identify", files={"image": no_face.getvalue()}), 422, "no_face")
    error(c.post("/v1/identify", json={"embedding": [0.1] * 8, "model_sha256": "0" * 64}), 409, "model_mismatch")
    sha = ModelIdentity.of(embedder).model_sha256
    error(c.post("/v1/identify", json={"embedding": [0.1] * 8, "model_sha256": sha}), 409, "model_mismatch")
    dim = ModelIdentity.of(embedder).dim
    nan = json.dumps({"embedding": [float("nan")] * dim, "model_sha256": sha})   # Python's json writes NaN
    assert "NaN or infinity" in error(c.post("/v1/identify", content=nan, headers={"content-type": "application/json"}),
                                      400, "bad_request")
    error(c.post("/v1/identify", data={"top_k": "many"}, files={"image": photo}), 400, "bad_request")
    error(c.post("/v1/verify", data={"threshold": "2"}, files={"image1": photo, "image2": photo}), 400, "bad_request")
    error(c.get("/v1/nothing"), 404, "not_found")
    error(c.delete("/v1/subjects/nobody"), 404, "no_subject")


def test_hostile_json_is_a_400_not_a_500(app_for, embedder):
    """Deep nesting, Infinity and integers beyond a float's range used to escape as 500s, each with a logged traceback."""
    c = TestClient(app_for().app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    as_json = {"content-type": "application/json"}
    sha, dim = ModelIdentity.of(embedder).model_sha256, ModelIdentity.of(embedder).dim
    deep = b"[" * 100_000 + b"]" * 100_000
    assert "nested too deeply" in error(c.post("/v1/verify", content=deep, headers=as_json), 400, "bad_json")
    assert "nested too deeply" in error(c.post("/v1/subjects", data={"name": "Ada", "metadata": "[" * 100_000},
                                               files={"image": b"x"}), 400, "bad_request")
    query = {"embedding": [0.1] * dim, "model_sha256": sha}
    for bad in ({"embedding": [10 ** 400] + [0.0] * (dim - 1)}, {"top_k": float("inf")}, {"threshold": 10 ** 400}):
        error(c.post("/v1/identify", content=json.dumps({**query, **bad}), headers=as_json), 400, "bad_request")


def test_two_enrolments_of_one_new_name_never_merge(app_for, tiny):
    c = app_for()
    gallery = c.app.state.service.gallery
    (ada, _), (_, others) = list(tiny["faces"].items())[:2]
    real_enroll = gallery.enroll
    rival = gallery.store.model

    def enroll_after_a_rival(name, emb, **kw):
        # another request for the same name commits between this request's checks and its write
        gallery.enroll = real_enroll
        gallery.store.add(name, np.ones((1, rival.dim), np.float32) / np.sqrt(rival.dim), metadata={"by": "rival"})
        return real_enroll(name, emb, **kw)

    gallery.enroll = enroll_after_a_rival
    r = c.post("/v1/subjects", data={"name": ada, "metadata": '{"by": "me"}'}, files={"image": others[0].read_bytes()})
    assert "exists" in error(r, 409, "subject_exists")
    assert c.get(f"/v1/subjects/{ada}").json()["subject"] == {"name": ada, "faces": 1, "metadata": {"by": "rival"},
                                                              "face_ids": [1]}


def test_a_gallery_locked_by_another_process_is_503_and_then_writable(app_for, tiny):
    import sqlite3

    c = app_for()
    photo = next(iter(tiny["faces"].values()))[0].read_bytes()
    store = c.app.state.service.gallery.store
    store._db.execute("PRAGMA busy_timeout = 100")      # instead of 30 s
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    assert "busy" in error(c.post("/v1/subjects", data={"name": "Ada"}, files={"image": photo}), 503, "gallery_busy")
    other.execute("ROLLBACK")
    other.close()
    assert c.post("/v1/subjects", data={"name": "Ada"}, files={"image": photo}).status_code == 201


def test_api_key_on_every_request_but_health_and_page(app_for, tiny):
    c = app_for(api_key=KEY)
    photo = next(iter(tiny["faces"].values()))[0].read_bytes()
    assert c.get("/healthz").status_code == 200
    assert c.get("/").status_code == 200 and "<title>cosface</title>" in c.get("/").text
    error(c.get("/v1/subjects"), 401, "unauthorized")
    assert "wrong" in error(c.get("/v1/subjects", headers={"X-API-Key": "nope-nope"}), 401, "unauthorized")
    error(c.post("/v1/verify", files={"image1": photo, "image2": photo}, headers={"X-API-Key": KEY + "x"}),
          401, "unauthorized")
    assert c.get("/v1/subjects", headers={"X-API-Key": KEY}).status_code == 200
    r = c.post("/v1/verify", files={"image1": photo, "image2": photo}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json()["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_other_sites_cannot_use_a_server_without_a_key(app_for, tiny):
    """Without a key, a page of another site could post a form here (enrol its face under someone's name), or,
    through a DNS name it rebinds to 127.0.0.1, read and delete the gallery as a same-origin page."""
    c = app_for()
    photo = next(iter(tiny["faces"].values()))[0].read_bytes()
    r = c.post("/v1/subjects", data={"name": "Mallory"}, files={"image": photo}, headers={"Sec-Fetch-Site": "cross-site"})
    assert "another site" in error(r, 403, "cross_site")
    error(c.get("/v1/subjects", headers={"Sec-Fetch-Site": "same-site"}), 403, "cross_site")
    rebound = {"Host": "attacker.example:8000", "Sec-Fetch-Site": "same-origin"}
    assert "attacker.example" in error(c.get("/v1/subjects", headers=rebound), 403, "forbidden_host")
    error(c.post("/v1/subjects", data={"name": "Mallory"}, files={"image": photo}, headers=rebound), 403,
          "forbidden_host")
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "10.0.0.5"):   # the page, curl, a proxy
        r = c.get("/v1/subjects", headers={"Host": host, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200 and r.json() == {"subjects": [], "next": None, "total": 0}
    assert c.get("/", headers={"Sec-Fetch-Site": "none"}).status_code == 200
    keyed = app_for(api_key=KEY)   # with a key, a DNS name is fine: a rebound page does not have the key
    assert keyed.get("/v1/subjects", headers={"Host": "faces.example", "X-API-Key": KEY}).status_code == 200
    error(keyed.get("/v1/subjects", headers={"Host": "faces.example"}), 401, "unauthorized")


def test_a_gallery_of_another_model_is_refused_at_start(embedder, tmp_path):
    from cosface.errors import CosfaceError

    Gallery(tmp_path / "other.sqlite", ModelIdentity("iresnet50", 1024, "d" * 64, {}))
    with pytest.raises(CosfaceError, match="another model"):
        open_gallery(tmp_path / "other.sqlite", embedder)


def test_concurrent_requests_share_forward_passes(embedder, tiny):
    import threading

    from cosface.serve import Batcher

    calls = []

    def slow_embed(x):
        calls.append(len(x))
        return embedder.embed(x)

    b = Batcher(slow_embed, max_wait_s=0.2)
    crops = np.stack([np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB"))
                      for p in next(iter(tiny["faces"].values()))])
    results = [None] * 6
    start = threading.Barrier(6)

    def client(i):
        start.wait()
        results[i] = b.submit(crops[i % 2:i % 2 + 1]).result(timeout=60)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert sum(calls) == 6 and len(calls) < 6
    for i, r in enumerate(results):
        np.testing.assert_allclose(r, embedder.embed(crops[i % 2:i % 2 + 1]), atol=1e-5)


def test_a_cancelled_request_does_not_stop_the_batcher():
    import threading

    from cosface.serve import Batcher

    running, release = threading.Event(), threading.Event()

    def blocking_embed(x):
        running.set()
        release.wait(30)
        return np.zeros((len(x), 4), np.float32)

    b = Batcher(blocking_embed, max_wait_s=0.0)
    crop = np.zeros((1, 112, 112, 3), np.uint8)
    first = b.submit(crop)
    assert running.wait(30)
    queued = b.submit(crop)
    assert queued.cancel()            # its client went away while it waited
    release.set()
    assert first.result(timeout=30).shape == (1, 4)
    assert b.submit(crop).result(timeout=30).shape == (1, 4)
    b.close()


def test_subjects_come_a_page_at_a_time_by_name_with_a_prefix_search(app_for):
    c = app_for()
    store = c.app.state.service.gallery.store
    rng = np.random.default_rng(0)
    names = [f"s{i:03d}" for i in range(120)]
    store.add_many((n, rng.normal(size=(1 + i % 2, store.model.dim))) for i, n in enumerate(reversed(names)))

    first = c.get("/v1/subjects").json()   # the default page: 100
    assert [s["name"] for s in first["subjects"]] == names[:100]
    assert first["next"] == "s099" and first["total"] == 120 and first["subjects"][0]["faces"] == 2

    def walk(limit, **query):
        seen, after = [], None
        while True:
            r = c.get("/v1/subjects", params={"limit": limit, **query, **({"after": after} if after else {})}).json()
            seen += [s["name"] for s in r["subjects"]]
            assert len(r["subjects"]) <= limit and r["total"] == (10 if query else 120)
            if r["next"] is None:
                return seen
            assert r["next"] == seen[-1]
            after = r["next"]

    assert walk(7) == names
    assert walk(4, prefix="s01") == names[10:20]
    assert c.get("/v1/subjects", params={"prefix": "s01", "limit": 10}).json()["next"] is None   # exactly one full page
    assert c.get("/v1/subjects", params={"prefix": "t"}).json() == {"subjects": [], "next": None, "total": 0}
    assert c.get("/v1/subjects", params={"limit": 1000}).json()["next"] is None

    for query, what in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "ten"}, "limit"),
                        ({"prefix": "p" * 201}, "prefix")):
        message = error(c.get("/v1/subjects", params=query), 400, "bad_request")
        assert f"'{what}'" in message and "\n" not in message
    params = {p["name"]: p for p in c.get("/openapi.json").json()["paths"]["/v1/subjects"]["get"]["parameters"]}
    assert set(params) == {"limit", "after", "prefix"} and params["limit"]["schema"]["maximum"] == 1000


def test_subject_pages_neither_skip_nor_repeat_while_others_enrol_and_delete(app_for):
    """Keyset pages: what changes behind the cursor never shifts what comes after it (offsets would)."""
    c = app_for()
    store = c.app.state.service.gallery.store
    rng = np.random.default_rng(1)
    store.add_many((f"s{i:02d}", rng.normal(size=(1, store.model.dim))) for i in range(30))
    page = c.get("/v1/subjects", params={"limit": 10}).json()
    assert page["next"] == "s09"
    # meanwhile: two subjects of the page just read go, one of the next page goes, one is enrolled behind the
    # cursor and one ahead of it
    for gone in ("s00", "s05", "s12"):
        assert c.delete(f"/v1/subjects/{gone}").status_code == 200
    store.add_many([("s04a", rng.normal(size=(1, store.model.dim))), ("s15a", rng.normal(size=(1, store.model.dim)))])
    page = c.get("/v1/subjects", params={"limit": 10, "after": page["next"]}).json()
    assert [s["name"] for s in page["subjects"]] == ["s10", "s11", "s13", "s14", "s15", "s15a", "s16", "s17", "s18",
                                                    "s19"]
    assert page["total"] == 29 and page["next"] == "s19"

    # and with a thread deleting while another pages through: every survivor seen exactly once, in order
    store.add_many((f"t{i:03d}", rng.normal(size=(1, store.model.dim))) for i in range(200))
    doomed = [f"t{i:03d}" for i in range(0, 200, 3)]
    import threading

    deleter = threading.Thread(target=lambda: [store.remove(n) for n in doomed])
    seen, after = [], "s99"
    deleter.start()
    while after is not None:
        r = c.get("/v1/subjects", params={"limit": 9, "prefix": "t", "after": after}).json()
        seen += [s["name"] for s in r["subjects"]]
        after = r["next"]
    deleter.join()
    survivors = [f"t{i:03d}" for i in range(200) if i % 3]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and set(survivors) <= set(seen) <= set(survivors + doomed)
