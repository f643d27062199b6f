"""nvImageCodec decoding on the GPU against the CPU decoder (skipped without CUDA or nvImageCodec)."""
import pytest
import torch

from cosface.data.dataset import BatchDataset, Plan, make_loader
from cosface.data.gpu_decode import GpuDecodeLoader, resolve_decoder
from cosface.data.pack import pack_folder
from cosface.data.recordio import RecordSource
from cosface.data.sources import ImageFolderSource

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _nvimgcodec():
    pytest.importorskip("nvidia.nvimgcodec")


@pytest.mark.parametrize("packed", [False, True])
def test_gpu_decoded_batches_match_the_cpu_ones(image_folder, tmp_path, packed):
    (image_folder / "c00" / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    if packed:
        pack_folder(image_folder, tmp_path / "rec", workers=0, progress=False)
        src = RecordSource(tmp_path / "rec")
    else:
        src = ImageFolderSource(image_folder)
    dev = torch.device("cuda")
    assert resolve_decoder("auto", dev) == "gpu"
    plan = Plan(len(src), batch_size=5)
    loader = make_loader(src, plan, rank=0, seed=2, flip=True, image_size=112, workers=0, decoder="gpu", device=dev)
    assert isinstance(loader, GpuDecodeLoader)
    ds = BatchDataset(src, 112)
    loader.sampler.set_epoch(3)
    got = list(loader)
    loader.sampler.set_epoch(3)
    ref = [ds[item] for item in loader.sampler]
    assert len(got) == len(ref) == len(src) // 5
    for g, r in zip(got, ref):
        assert g["images"].device.type == "cuda"
        assert torch.equal(g["labels"], r["labels"]) and torch.equal(g["flips"], r["flips"])
        diff = (g["images"].cpu().int() - r["images"].int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 16      # JPEG decoders differ in rounding only
    if not packed:
        assert any("zz_broken.jpg" in b for g in got for b in g["bad"])


def test_training_with_the_gpu_decoder(image_folder, tmp_path):
    from cosface.config import load_config
    from cosface.trainer import train

    cfg = load_config(None, [f"data.path='{image_folder}'", "train.device='cuda'", "data.decoder='gpu'",
                             "train.batch_size=4", "train.epochs=1", "checkpoint.save_start_epoch=1"])
    assert train(cfg, tmp_path / "run", progress=False).global_step == 6


def test_cuda_graph_training_with_the_gpu_decoder(image_folder, tmp_path):
    # The graph is captured at step GRAPH_WARMUP_STEPS + 1 while the decode thread runs ahead; without the
    # loader's `quiet` the decoder's allocations invalidated the capture (an H200 run of gpu_check.sh).
    from cosface.config import load_config
    from cosface.trainer import train

    cfg = load_config(None, [f"data.path='{image_folder}'", "train.device='cuda'", "data.decoder='gpu'",
                             "train.cuda_graph=true", "train.amp='bf16'", "data.prefetch=4",
                             "train.batch_size=2", "train.epochs=1", "checkpoint.save_start_epoch=1"])
    assert train(cfg, tmp_path / "run", progress=False).global_step == 12
