"""data.decoder: the choice of decoder, and the CPU path's images unchanged (GPU decoding: tests/gpu)."""
import pytest
import torch

from cosface.config import Config
from cosface.data.dataset import BatchDataset, Plan, make_loader
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
