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
