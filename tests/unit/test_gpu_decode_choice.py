"""data.decoder: the choice of decoder, the CPU path's images unchanged, and the GPU loader's own logic
with a stand-in decoder (real GPU decoding: tests/gpu)."""
import numpy as np
import pytest
import torch

from cosface.config import Config
from cosface.data.dataset import BatchDataset, EpochSampler, Plan, make_loader
from cosface.data.gpu_decode import resolve_decoder
from cosface.data.sources import ImageFolderSource
from cosface.errors import CosfaceError

CPU = torch.device("cpu")


def test_auto_is_the_cpu_decoder_on_a_cpu_device_and_gpu_there_is_an_error():
    assert resolve_decoder("auto", CPU) == "cpu" and resolve_decoder("cpu", CPU) == "cpu"
    with pytest.raises(CosfaceError, match="data.decoder = 'gpu' needs a CUDA training device"):
        resolve_decoder("gpu", CPU)
    with pytest.raises(CosfaceError, match="data.decoder must be one of"):
        resolve_decoder("nvjpeg", CPU)
    with pytest.raises(CosfaceError, match="data.decoder"):
        Config().replace(**{"data.decoder": "nvjpeg"})


@pytest.mark.parametrize("workers", [0, 2])
def test_auto_on_cpu_gives_the_same_pixels_as_the_batch_dataset(image_folder, workers):
    src = ImageFolderSource(image_folder)
    plan = Plan(len(src), batch_size=6)
    loader = make_loader(src, plan, rank=0, seed=4, flip=True, image_size=112, workers=workers,
                         decoder=resolve_decoder("auto", CPU), device=CPU)
    ds = BatchDataset(src, 112)
    try:
        loader.sampler.set_epoch(1)
        batches = [(b["images"].clone(), b["labels"].clone(), b["flips"].clone()) for b in loader]
        loader.sampler.set_epoch(1)
        for (images, labels, flips), item in zip(batches, loader.sampler):
            ref = ds[item]
            assert torch.equal(images, ref["images"]) and torch.equal(labels, ref["labels"])
            assert torch.equal(flips, ref["flips"])
        assert len(batches) == 4
    finally:
        if hasattr(loader, "close"):
            loader.close()


class _FakeNvImgCodec:
    """Stands in for nvidia.nvimgcodec on a CPU: decodes JPEGs to numpy arrays (None when it cannot),
    and returns one image at another size, so the loader's own logic runs without a GPU."""

    class DecodeParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class CodeStream:
        def __init__(self, data):
            self.data = data

    class Decoder:
        def __init__(self, device_id=0):
            self.calls = 0

        def decode(self, srcs, params=None, cuda_stream=0):
            import simplejpeg
            from PIL import Image

            out = []
            for src in srcs:
                try:
                    img = simplejpeg.decode_jpeg(src.data, colorspace="RGB")
                except Exception:
                    out.append(None)
                    continue
                self.calls += 1
                if self.calls == 3:      # pretend a 130x130 original
                    img = np.asarray(Image.fromarray(img).resize((130, 130)))
                out.append(img)
            return out


def test_gpu_loader_logic_order_labels_fallback_and_resize_on_a_cpu(image_folder, monkeypatch):
    from cosface.data import gpu_decode

    monkeypatch.setattr(gpu_decode, "require", lambda module, extra=None, purpose="": _FakeNvImgCodec)
    (image_folder / "c01" / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    src = ImageFolderSource(image_folder)
    plan = Plan(len(src), batch_size=5)
    loader = gpu_decode.GpuDecodeLoader(src, EpochSampler(plan, rank=0, seed=2, flip=True), 112, CPU, prefetch=2)
    ds = BatchDataset(src, 112)
    loader.sampler.set_epoch(1)
    got = list(loader)
    loader.sampler.set_epoch(1)
    ref = [ds[item] for item in loader.sampler]
    assert len(got) == len(ref) == len(src) // 5
    resized = 0
    for g, r in zip(got, ref):
        assert torch.equal(g["labels"], r["labels"]) and torch.equal(g["flips"], r["flips"])
        same = [torch.equal(a, b) for a, b in zip(g["images"], r["images"])]
        resized += same.count(False)
        assert g["bad"] == r["bad"]
    assert resized == 1                   # the one 130x130 image went through the resize, the rest are exact
    assert any("zz_broken.jpg" in b for g in got for b in g["bad"])
    # Abandoning an iteration stops the decode thread.
    it = iter(loader)
    next(it)
    it.close()
