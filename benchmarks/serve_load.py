"""Load on `cosface serve` (127.0.0.1 only), and FAISS identify on a million embeddings.

Part 1 (HTTP): galleries of --sizes subjects (random unit embeddings of the model's size, one face
each, plus the query photos' own subjects) are served by `cosface serve` as a real process, once with
--index exact and once with --index faiss. --clients threads send --requests requests in all to
POST /v1/verify (two photos) and POST /v1/identify (one photo), each a fixed, bounded number; the
script prints requests/s and p50 / p99 latency. Client and server share this machine's cores.

Part 2 (library): --million random unit embeddings in a gallery file, identified through
cosface.gallery.Gallery with FAISS (IVF above 200,000 vectors) and with exact numpy: build time,
per-query latency, and rank-1 on queries that are enrolled embeddings plus noise (--noise levels).

Part 3 (scale, library): --scale subjects enrolled one per transaction as the API does, 1 or 2 faces
each with a thumbnail: enrol rate, identify latency with exact numpy and FAISS, list-page latency
(Gallery.page, what GET /v1/subjects serves), file size and this process's memory.

    python benchmarks/serve_load.py --model demo_out/model.onnx --photos demo_out/synthetic/lfw/lfw_align_112
    python benchmarks/serve_load.py --sizes --million 0 --scale 100000          # the scale part alone
    python benchmarks/serve_load.py --model M --photos DIR --sizes 1000 --million 0     # quick
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_gallery(path: Path, embedder, size: int, photos: list[Path], seed: int = 0) -> None:
    """`size` subjects: the query photos' people (their first photo) and random others."""
    from cosface.gallery import Gallery, ModelIdentity

    g = Gallery(path, ModelIdentity.of(embedder), index="exact")
    people = {}
    for p in photos:
        people.setdefault(p.parent.name, p)
    real = list(people.items())[:size]
    emb = embedder.embed([str(p) for _, p in real])
    g.store.add_many((name, e[None]) for (name, _), e in zip(real, emb))
    rng = np.random.default_rng(seed)
    rest, chunk = size - len(real), 20_000
    for start in range(0, rest, chunk):
        n = min(chunk, rest - start)
        g.store.add_many((f"random-{start + i:07d}", e[None]) for i, e in enumerate(unit(rng.normal(size=(n, g.model.dim)))))
    g.close()


class Server:
    def __init__(self, model: str, db: Path, index: str, log: Path):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "cosface", "serve", "--model", model, "--db", str(db),
                                      "--index", index, "--port", str(self.port), "--device", "cpu",
                                      "--log-level", "warning"], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"the server did not start; see {log}")
            time.sleep(0.3)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def load(url: str, endpoint: str, make_files, clients: int, requests: int) -> dict:
    """`requests` POSTs shared by `clients` threads; latencies of the successful ones, and the failures."""
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            http.post(url + endpoint, files=make_files(0))   # warm the connection and the server
            barrier.wait()
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                r = http.post(url + endpoint, files=make_files(i))
                dt = time.perf_counter() - t0
                with lock:
                    (latencies.append(dt) if r.status_code == 200 else failures.append(r.text[:200]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"rps": len(latencies) / wall, "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "failures": failures}


def http_part(args, embedder, photos: list[Path], work: Path) -> None:
    blobs = [p.read_bytes() for p in photos]
    print(f"\nHTTP: {args.clients} concurrent clients, {args.requests} requests per row, 127.0.0.1; "
          f"model {Path(args.model).name}")
    print(f"{'gallery':>9} {'index':>6} {'endpoint':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for size in args.sizes:
        db = work / f"gallery_{size}.sqlite"
        t0 = time.perf_counter()
        build_gallery(db, embedder, size, photos)
        print(f"  (gallery of {size:,} subjects written in {time.perf_counter() - t0:.1f} s)")
        for index in ("exact", "faiss"):
            server = Server(args.model, db, index, work / f"server_{size}_{index}.log")
            try:
                rows = [("identify", "/v1/identify", lambda i: {"image": blobs[i % len(blobs)]})]
                if size == args.sizes[0] and index == "exact":
                    rows.insert(0, ("verify", "/v1/verify",
                                    lambda i: {"image1": blobs[i % len(blobs)], "image2": blobs[(i + 1) % len(blobs)]}))
                for name, endpoint, files in rows:
                    r = load(server.url, endpoint, files, args.clients, args.requests)
                    shown = "-" if name == "verify" else f"{size:,}"
                    print(f"{shown:>9} {index if name != 'verify' else '-':>6} {name:>9} {r['rps']:8.1f} "
                          f"{r['p50']:8.1f} {r['p99']:8.1f}" + (f"  {len(r['failures'])} failed: {r['failures'][0]}"
                                                                  if r["failures"] else ""), flush=True)
            finally:
                server.close()


def million_part(args, work: Path) -> None:
    from cosface.gallery import Gallery, ModelIdentity, search

    n, dim = args.million, args.dim
    model = ModelIdentity("random", dim, "0" * 64, {})
    db = work / f"million_{n}_{dim}.sqlite"
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    fresh = not db.exists()
    g = Gallery(db, model, index="faiss")
    chunk = 50_000
    for start in range(0, n if fresh else 0, chunk):
        m = min(chunk, n - start)
        g.store.add_many((f"s{start + i:07d}", e[None]) for i, e in enumerate(unit(rng.normal(size=(m, dim)))))
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    g.identify(unit(rng.normal(size=(1, dim))), top_k=5, threshold=0.3)
    built = time.perf_counter() - t0
    kind = type(g._current()[1].index).__name__
    t0 = time.perf_counter()
    reopened = Gallery(db, model, index="faiss")
    reopened.identify(unit(rng.normal(size=(1, dim))), top_k=5, threshold=0.3)
    reload_s = time.perf_counter() - t0
    exact = Gallery(db, model, index="exact")
    exact.identify(unit(rng.normal(size=(1, dim))), top_k=5, threshold=0.3)
    _, _, owners, emb, names = g.store.snapshot()
    print(f"\nlibrary: {n:,} random {dim}-value unit embeddings, one per subject; {args.queries} queries per row, "
          f"one at a time, top-5; each query is an enrolled embedding plus Gaussian noise (a re-take of the face)")
    print(f"  gallery file {'written' if fresh else 'reused'} in {written:.1f} s ({db.stat().st_size / 2**30:.2f} GiB); "
          f"FAISS {kind} (nprobe {search.IVF_NPROBE}) {'built from it' if fresh else 'loaded'} in {built:.1f} s; "
          f"a new process reloads the saved index in {reload_s:.1f} s")
    print(f"  {'noise':>5} {'cos':>5} {'search':>6} {'p50 ms':>8} {'p99 ms':>8} {'queries/s':>9} {'rank-1':>7}")
    for sigma in args.noise:
        targets = rng.choice(n, args.queries, replace=False)
        queries = unit(emb[targets] + sigma * rng.normal(size=(args.queries, dim)).astype(np.float32))
        cos = float(np.mean(np.einsum("qd,qd->q", queries, emb[targets])))
        truth = [names[int(owners[t])] for t in targets]
        for name, gallery in (("faiss", g), ("exact", exact)):
            lat, got = [], []
            for q in queries:
                t = time.perf_counter()
                r = gallery.identify(q[None], top_k=5, threshold=0.3)[0]
                lat.append((time.perf_counter() - t) * 1000)
                got.append(r.matches[0].name)
            acc = np.mean([a == b for a, b in zip(got, truth)])
            print(f"  {sigma:5.3f} {cos:5.2f} {name:>6} {np.percentile(lat, 50):8.2f} {np.percentile(lat, 99):8.2f} "
                  f"{1000 / np.mean(lat):9.1f} {100 * acc:6.1f}%", flush=True)


def rss_mib() -> tuple[float, float]:
    """This process's resident memory now and at its peak, MiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def timed(fn, repeats: int) -> tuple[float, float]:
    """p50 and p99 of `repeats` calls of fn, ms."""
    lat = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def scale_part(args, work: Path) -> None:
    """--scale subjects enrolled one by one as the API does (1 or 2 faces each, with a JPEG thumbnail per
    face), then: identify with exact numpy and with FAISS, list pages, file size, this process's memory."""
    from cosface.gallery import Gallery, ModelIdentity, thumbnail_jpeg

    n, dim = args.scale, args.dim
    model = ModelIdentity("random", dim, "0" * 64, {})
    db = work / f"scale_{n}_{dim}.sqlite"
    db.unlink(missing_ok=True)
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:112, :112]
    crop = 128 + 60 * (np.sin(xx / 9) * np.cos(yy / 13))[..., None] + rng.normal(0, 4, (112, 112, 3))
    thumb = thumbnail_jpeg(crop.clip(0, 255).astype(np.uint8))   # one crop's worth of bytes per face
    print(f"\nscale: {n:,} subjects with 1 or 2 random {dim}-value unit embeddings each (alternately), enrolled one "
          f"subject per transaction through Gallery.enroll (the path of POST /v1/subjects), a {len(thumb):,}-byte "
          f"JPEG thumbnail per face; {rss_mib()[0]:.0f} MiB resident before")
    g = Gallery(db, model, index="exact")
    names = [f"subject {i:07d}" for i in range(n)]
    order = rng.permutation(n)             # enrolled in random name order, as people arrive
    chunk = 10_000
    t0 = time.perf_counter()
    faces = 0
    for start in range(0, n, chunk):
        ids = order[start:start + chunk]
        emb = unit(rng.normal(size=(2 * len(ids), dim)))
        for j, i in enumerate(ids):
            k = 1 + int(i) % 2
            g.enroll(names[i], emb[2 * j:2 * j + k], thumbnails=[thumb] * k, sources=["synthetic"] * k)
            faces += k
    enrol_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.suffix in (".sqlite", ".sqlite-wal"))
    print(f"  enrol: {n:,} subjects, {faces:,} faces in {enrol_s:.1f} s = {n / enrol_s:,.0f} subjects/s "
          f"({faces / enrol_s:,.0f} faces/s); file {size / 2**20:,.0f} MiB with its WAL; "
          f"{rss_mib()[0]:.0f} MiB resident")

    _, _, owners, emb, by_id = g.store.snapshot()
    targets = rng.choice(len(owners), args.queries, replace=False)
    queries = unit(emb[targets] + 0.04 * rng.normal(size=(args.queries, dim)).astype(np.float32))
    truth = [by_id[int(o)] for o in owners[targets]]
    del emb, owners, by_id
    print(f"  identify: {args.queries} queries one at a time, top-5, scoring max over {faces:,} face vectors; "
          f"each an enrolled face plus noise (cosine ~0.84)")
    print(f"  {'search':>6} {'index':>15} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'rank-1':>7} {'RSS MiB':>8}")
    for kind in ("exact", "faiss"):
        gk = Gallery(db, model, index=kind)
        t0 = time.perf_counter()
        gk.identify(queries[:1], top_k=5, threshold=0.3)
        build = time.perf_counter() - t0
        index = gk._current()[1]
        label = type(getattr(index, "index", index)).__name__
        lat, hits = [], 0
        for q, name in zip(queries, truth):
            t = time.perf_counter()
            r = gk.identify(q[None], top_k=5, threshold=0.3)[0]
            lat.append((time.perf_counter() - t) * 1000)
            hits += r.matches[0].name == name
        print(f"  {kind:>6} {label:>15} {build:8.1f} {np.percentile(lat, 50):8.2f} {np.percentile(lat, 99):8.2f} "
              f"{100 * hits / len(lat):6.1f}% {rss_mib()[0]:8.0f}", flush=True)
        gk.close()

    middle, repeats = names[n // 2], 200
    prefix = middle[:-2]   # the 100 names that share all but the last two digits
    print(f"  list (Gallery.page, what GET /v1/subjects calls; {repeats} calls each):")
    rows = [("first page, limit 100", lambda: g.page(limit=100)),
            ("a page from the middle, limit 100", lambda: g.page(limit=100, after=middle)),
            ("the last 500 names, limit 1000", lambda: g.page(limit=1000, after=names[-501])),
            (f"prefix {prefix!r}, limit 100", lambda: g.page(limit=100, prefix=prefix))]
    for label, fn in rows:
        p50, p99 = timed(fn, repeats)
        print(f"    {label:<36} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    t0 = time.perf_counter()
    everyone = g.subjects()
    print(f"    {'every subject in one list (before)':<36} {1000 * (time.perf_counter() - t0):7.0f} ms "
          f"({len(everyone):,} subjects; the API returned them all in one response)")
    current, peak = rss_mib()
    print(f"  memory: {current:.0f} MiB resident now, {peak:.0f} MiB peak (this process: both indexes were built in it)")
    g.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model file for the HTTP part (e.g. the demo's ONNX export)")
    ap.add_argument("--photos", help="folder of aligned face crops used as queries (e.g. a synthetic lfw_align_112)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 100_000], help="gallery sizes for the HTTP part")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="requests per row (bounded)")
    ap.add_argument("--million", type=int, default=1_000_000, help="embeddings for the library part (0: skip)")
    ap.add_argument("--dim", type=int, default=256, help="values per embedding in the library part")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.04, 0.08],
                    help="per-value noise of the library part's queries (0.04 on 256 values: cosine ~0.8)")
    ap.add_argument("--scale", type=int, default=0, help="subjects for the scale part (0: skip): enrol rate, "
                    "identify (exact, FAISS), list pages, file size, memory")
    ap.add_argument("--workdir", help="where gallery files go (default: a temporary folder, removed); with it the "
                    "library part's gallery and FAISS index are kept and reused")
    args = ap.parse_args()
    print(f"cosface serve load; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.sizes and args.model:
            from cosface.inference import Embedder, list_images

            if not args.photos:
                raise SystemExit("--photos DIR is needed with --model")
            photos = list_images([args.photos])[:400]
            embedder = Embedder(args.model, device="cpu", quiet=True)
            http_part(args, embedder, photos, work)
        if args.million:
            million_part(args, work)
        if args.scale:
            scale_part(args, work)


if __name__ == "__main__":
    main()
