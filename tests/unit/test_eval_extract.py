import numpy as np
import pytest
import simplejpeg
import torch
from torch import nn

from cosface.errors import CosfaceError
from cosface.evaluation import embed_images, torch_embed_fn
from cosface.preprocess import normalize


def halves_embed(batch):
    """(B, H, W, 3) -> (B, 2): mean red value of the left and of the right half."""
    w = batch.shape[2] // 2
    return np.stack([batch[:, :, :w, 0].mean((1, 2)), batch[:, :, w:, 0].mean((1, 2))], 1).astype(np.float32)


def two_tone(a, b):
    img = np.zeros((112, 112, 3), np.uint8)
    img[:, :56] = a
    img[:, 56:] = b
    return simplejpeg.encode_jpeg(img, quality=95, colorspace="RGB")


class CountingSource:
    def __init__(self, blobs):
        self.blobs = blobs
        self.reads = [0] * len(blobs)

    def __len__(self):
        return len(self.blobs)

    def read(self, i):
        self.reads[i] += 1
        return self.blobs[i]

    def describe(self, i):
        return f"blob {i}"


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_rows_are_image_then_mirror_in_order_each_read_once(batch_size):
    tones = [(10 * i, 250 - 20 * i) for i in range(7)]
    src = CountingSource([two_tone(a, b) for a, b in tones])
    out = embed_images(halves_embed, src, batch_size=batch_size, progress=False, workers=2)
    assert out.shape == (7, 4) and out.dtype == np.float32
    expected = np.array([[a, b, b, a] for a, b in tones], np.float32)
    np.testing.assert_allclose(out, expected, atol=2.0)
    assert src.reads == [1] * 7


def test_paths_and_undecodable_image_named(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(two_tone(0, 200))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    out = embed_images(halves_embed, [good], progress=False)
    np.testing.assert_allclose(out, [[0, 200, 200, 0]], atol=2.0)
    with pytest.raises(CosfaceError, match="bad.jpg"):
        embed_images(halves_embed, [good, bad], batch_size=1, progress=False)
    with pytest.raises(CosfaceError, match="cannot read image .*missing.jpg"):
        embed_images(halves_embed, [tmp_path / "missing.jpg"], progress=False)


def test_embed_fn_of_wrong_shape_is_reported():
    src = CountingSource([two_tone(0, 0)] * 3)
    with pytest.raises(CosfaceError, match=r"embed_fn returned shape \(3, 2\) for a batch of 6"):
        embed_images(lambda b: halves_embed(b[: len(b) // 2]), src, progress=False)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_torch_embed_fn_runs_in_eval_mode_and_restores_training():
    torch.manual_seed(0)
    model = TinyNet()
    model.bn.running_mean.fill_(0.5)          # eval-mode BN gives different outputs from train-mode
    model.train()
    batch = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    out = torch_embed_fn(model)(batch)
    assert model.training
    assert out.shape == (3, 5) and out.dtype == np.float32
    model.eval()
    with torch.no_grad():
        want = model(normalize(torch.from_numpy(batch))).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    model.train()
    with torch.no_grad():
        assert not np.allclose(model(normalize(torch.from_numpy(batch))).numpy(), want, atol=1e-3)


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_torch_embed_fn_mirrors_on_the_device_as_the_host_would(order):
    # embed_images hands a torch embed_fn the B images alone (with_mirrors); any other embed_fn gets the
    # host-made (2B) batch of images and mirrors. Both give the same rows.
    from cosface.preprocess import Preprocessing

    torch.manual_seed(0)
    model = TinyNet().eval()
    fn = torch_embed_fn(model, prep=Preprocessing(channel_order=order))
    assert hasattr(fn, "with_mirrors")
    rng = np.random.default_rng(0)
    src = CountingSource([simplejpeg.encode_jpeg(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), quality=95,
                                                 colorspace="RGB") for _ in range(5)])
    fast = embed_images(fn, src, batch_size=2, progress=False, workers=2)
    host = embed_images(lambda b: fn(b), src, batch_size=2, progress=False, workers=2)
    assert fast.shape == host.shape == (5, 10)
    np.testing.assert_allclose(fast, host, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fast[:, :5], fast[:, 5:], atol=1e-3)     # the mirror really is another image
