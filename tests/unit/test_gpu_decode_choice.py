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
        def __init__(self, device_id=0, backends=None):
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


def test_the_decode_thread_issues_no_gpu_work_while_the_loader_is_quiet(image_folder, monkeypatch):
    # The CUDA-graph step captures inside `quiet()`: a capture fails when another thread allocates or
    # synchronises on the GPU meanwhile (seen on an H200 with data.decoder = "gpu").
    import threading

    from cosface.data import gpu_decode

    monkeypatch.setattr(gpu_decode, "require", lambda module, extra=None, purpose="": _FakeNvImgCodec)
    src = ImageFolderSource(image_folder)
    loader = gpu_decode.GpuDecodeLoader(src, EpochSampler(Plan(len(src), batch_size=4), rank=0, seed=0, flip=False),
                                        112, CPU, prefetch=6)
    loader.sampler.set_epoch(0)
    decoded_before = loader._decoder.calls
    got: list = []
    with loader.quiet():
        it = iter(loader)
        first = threading.Thread(target=lambda: got.append(next(it)))
        first.start()
        first.join(0.5)
        assert not got and loader._decoder.calls == decoded_before     # waiting, with room to run ahead
    first.join(10)
    assert len(got) == 1
    rest = list(it)
    assert len(rest) == len(loader) - 1 and loader._decoder.calls == decoded_before + len(src)


# ---- the real nvImageCodec on a machine without a GPU --------------------------------------------
# Its CPU codecs run anywhere, so the calls the GPU loader makes (CodeStream, DecodeParams, batched
# decode on a stream) are checked against the installed release here, and so is the refusal of a
# decoder that decodes on the CPU: without nvJPEG, nvImageCodec falls back to those codecs quietly.

def _real_nvimgcodec():
    return pytest.importorskip("nvidia.nvimgcodec", reason="nvImageCodec is not installed (pip install 'cosface[gpu-decode]')")


def _jpeg(mode: str, seed: int) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (112, 112, 3) if mode == "RGB" else (112, 112)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(out, "JPEG", quality=92)
    return out.getvalue()


def test_the_loaders_calls_work_on_the_installed_nvimgcodec_and_match_libjpeg_turbo():
    from cosface.data.gpu_decode import code_streams, decode_params
    from cosface.preprocess import decode_image

    nvimgcodec = _real_nvimgcodec()
    cpu_decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                     backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)])
    blobs = [_jpeg("RGB", 1), b"\xff\xd8 not a jpeg", _jpeg("L", 2)]
    out = cpu_decoder.decode(code_streams(nvimgcodec, blobs), params=decode_params(nvimgcodec), cuda_stream=0)
    assert out[1] is None                                   # undecodable: None in its place, the rest decoded
    for blob, img in ((blobs[0], out[0]), (blobs[2], out[2])):
        assert img.shape == (112, 112, 3) and img.dtype == np.uint8    # grayscale comes out as 3-channel RGB too
        assert np.array_equal(np.asarray(img.cpu()), decode_image(blob, 112))


def test_a_decoder_that_decodes_on_the_cpu_is_refused_with_the_package_to_install():
    from cosface.data.gpu_decode import check_decodes_on_device

    nvimgcodec = _real_nvimgcodec()
    cpu_decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                     backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)])
    with pytest.raises(CosfaceError, match=r"into GPU memory here \(a test JPEG was decoded into STRIDED_HOST, "
                                           r"not GPU memory\).*pip install 'cosface\[gpu-decode\]'"):
        check_decodes_on_device(nvimgcodec, cpu_decoder)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_opening_the_gpu_decoder_without_a_gpu_is_one_clear_error():
    from cosface.data.gpu_decode import open_gpu_decoder

    nvimgcodec = _real_nvimgcodec()
    with pytest.raises(CosfaceError, match=r"^nvImageCodec cannot decode JPEG into GPU memory here .*data.decoder = 'cpu'$"):
        open_gpu_decoder(nvimgcodec, 0)


def test_auto_falls_back_to_the_cpu_with_a_note_when_the_gpu_decoder_fails(monkeypatch):
    from cosface.data import gpu_decode

    class NoGpuDecoder(_FakeNvImgCodec):
        class Decoder:
            def __init__(self, device_id=0, backends=None):
                raise RuntimeError("Internal error - Could not create decoder. Code: 8")

    monkeypatch.setattr(gpu_decode, "require", lambda module, extra=None, purpose="": NoGpuDecoder)
    notes: list[str] = []
    assert gpu_decode.resolve_decoder("auto", torch.device("cuda", 0), note=notes.append) == "cpu"
    assert len(notes) == 1 and notes[0].startswith("data.decoder = 'auto' decodes on the CPU: nvImageCodec cannot")
    assert "Could not create decoder" in notes[0]
    monkeypatch.setattr(gpu_decode, "require", lambda module, extra=None, purpose="": _FakeNvImgCodec)
    assert gpu_decode.resolve_decoder("auto", torch.device("cuda", 0), note=notes.append) == "gpu"
    assert len(notes) == 1
