"""Embedder.embed over many files: decoding on worker threads, a torch model fed uint8 bytes (normalised
and mirrored where it runs), the same rows and the same first error as one file at a time."""
import numpy as np
import pytest
import simplejpeg
import torch

from cosface import __version__
from cosface.backbones import build_backbone
from cosface.errors import CosfaceError
from cosface.export import export_torchscript
from cosface.inference import Embedder, ModelInfo
from cosface.preprocess import Preprocessing


@pytest.fixture(scope="module")
def model_and_faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedder_batches")
    torch.manual_seed(0)
    model = build_backbone("mobilefacenet").eval()
    path = root / "model.pt"
    export_torchscript(model, torch.randn(2, 3, 112, 112), path,
                       ModelInfo(Preprocessing(), model.embedding_size, "mobilefacenet", 0, __version__))
    rng = np.random.default_rng(0)
    faces = []
    for i in range(9):
        f = root / f"face_{i}.jpg"
        f.write_bytes(simplejpeg.encode_jpeg(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), quality=90,
                                             colorspace="RGB"))
        faces.append(str(f))
    return path, faces, root


def test_uint8_path_gives_the_float_paths_rows(model_and_faces):
    path, faces, _ = model_and_faces
    emb = Embedder(path, device="cpu", batch_size=4, quiet=True)
    assert hasattr(emb._run, "from_uint8")
    fast = emb.embed(faces)
    runner = emb._run
    emb._run = lambda x: runner(x)          # a runner without from_uint8: host normalisation and mirrors
    host = emb.embed(faces)
    assert fast.shape == host.shape == (9, 2 * emb.info.embedding_size)
    np.testing.assert_allclose(fast, host, atol=2e-5)
    one_by_one = np.concatenate([emb.embed(f) for f in faces])
    np.testing.assert_allclose(fast, one_by_one, atol=2e-5)


def test_the_first_bad_file_in_input_order_is_the_error(model_and_faces):
    path, faces, root = model_and_faces
    bad = [root / "bad_a.jpg", root / "bad_b.jpg"]
    for b in bad:
        b.write_bytes(b"\xff\xd8 not a jpeg")
    emb = Embedder(path, device="cpu", batch_size=4, detect=False, quiet=True)
    items = faces[:2] + [str(bad[0])] + faces[2:5] + [str(bad[1])] + faces[5:]
    with pytest.raises(CosfaceError, match="bad_a.jpg"):
        emb.embed(items)
    with pytest.raises(CosfaceError, match="bad_b.jpg"):      # in the second batch, decoded while the first ran
        emb.embed(faces[:5] + [str(bad[1])])
    with pytest.raises(CosfaceError, match="cannot read image .*missing.jpg"):
        emb.embed(faces + [str(root / "missing.jpg")])


def test_an_error_stops_the_rest_of_its_batch(model_and_faces, monkeypatch):
    # The first bad image ends the call as one at a time would: the images after it in its batch are not
    # all prepared first (a batch of photos to search for faces takes seconds).
    import time

    path, _, _ = model_and_faces
    emb = Embedder(path, device="cpu", batch_size=64, detect=False, quiet=True)
    prepare, calls = emb.prepare, []

    def slow(item, index=0):
        calls.append(index)
        if index == 0:
            raise CosfaceError("image #0 is bad")
        time.sleep(0.05)
        return prepare(item, index)

    monkeypatch.setattr(emb, "prepare", slow)
    rng = np.random.default_rng(0)
    with pytest.raises(CosfaceError, match="image #0 is bad"):
        emb.embed([rng.integers(0, 256, (120, 100, 3), dtype=np.uint8) for _ in range(128)])
    assert len(calls) <= 20, len(calls)       # at most the images already on a worker (<= 8 workers)


def test_one_lazily_opened_pil_image_given_several_times(model_and_faces, monkeypatch):
    # Pillow reads a lazily opened image's file on its first use, which two threads must not do at once.
    import io
    import threading
    import time

    from PIL import Image, PngImagePlugin

    path, _, _ = model_and_faces
    emb = Embedder(path, device="cpu", batch_size=4, detect=False, quiet=True)
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(buf, "PNG")
    want = emb.embed(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))

    load, inside, overlaps = PngImagePlugin.PngImageFile.load, {}, []
    guard = threading.Lock()

    def watched_load(self):                   # counts the calls that read the file (before it is loaded)
        if not self.tile:
            return load(self)
        with guard:
            inside[id(self)] = inside.get(id(self), 0) + 1
            if inside[id(self)] > 1:
                overlaps.append(id(self))
        try:
            time.sleep(0.01)
            return load(self)
        finally:
            with guard:
                inside[id(self)] -= 1

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", watched_load)
    for _ in range(3):
        im = Image.open(io.BytesIO(buf.getvalue()))
        got = emb.embed([im] * 6)
        np.testing.assert_allclose(got, np.repeat(want, 6, axis=0), atol=2e-5)
    assert not overlaps


def test_crops_at_the_models_size_are_prepared_without_worker_threads(model_and_faces, monkeypatch):
    # cosface serve's batcher embeds stacks of aligned crops on every forward pass: nothing to read, decode
    # or detect, so no thread pool is started for them.
    from cosface.inference import embedder as embedder_module

    path, _, _ = model_and_faces
    emb = Embedder(path, device="cpu", batch_size=4, quiet=True)
    crops = np.random.default_rng(2).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    want = np.concatenate([emb.embed(c) for c in crops])

    def no_pool(*args, **kwargs):
        raise AssertionError("a thread pool for crops that need no preparing")

    monkeypatch.setattr(embedder_module, "ThreadPoolExecutor", no_pool)
    np.testing.assert_allclose(emb.embed(crops), want, atol=2e-5)
    np.testing.assert_allclose(emb.embed(list(crops[:, :, :, 0])), emb.embed(np.repeat(crops[:, :, :, :1], 3, axis=3)),
                               atol=2e-5)                                   # (H, W) gray crops too
