"""CUDA paths of the trainer. Skipped on machines without a GPU (CI); run by benchmarks/gpu_check.sh."""
import json

import pytest
import torch

from cosface.checkpoint import load_checkpoint
from cosface.config import load_config
from cosface.trainer import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_training_on_cuda_with_each_precision(image_folder, tmp_path, amp):
    cfg = load_config(None, [f"data.path='{image_folder}'", "train.device='cuda'", f"train.amp='{amp}'",
                             "train.batch_size=8", "train.epochs=2", "data.workers=2", "train.log_every=1",
                             "checkpoint.save_start_epoch=2"])
    result = train(cfg, tmp_path / amp, progress=False)
    assert result.global_step == 6
    losses = [json.loads(x)["loss"] for x in (tmp_path / amp / "metrics.jsonl").read_text().splitlines()
              if '"step"' in x]
    assert all(l == l and l < 100 for l in losses)
    ckpt = load_checkpoint(result.last_checkpoint)
    assert all(t.device.type == "cpu" for t in ckpt["backbone"].values())  # saved unwrapped, on CPU


def test_cuda_and_cpu_resume_interchange(image_folder, tmp_path):
    base = [f"data.path='{image_folder}'", "train.batch_size=8", "train.epochs=2", "data.workers=0",
            "checkpoint.save_start_epoch=1", "checkpoint.save_every_epochs=1"]
    train(load_config(None, base + ["train.device='cuda'", "train.epochs=1"]), tmp_path / "r", progress=False)
    result = train(load_config(None, base + ["train.device='cpu'"]), tmp_path / "r", resume="auto", progress=False)
    assert load_checkpoint(result.last_checkpoint)["epoch"] == 2


def test_compiled_training_step(image_folder, tmp_path):
    cfg = load_config(None, [f"data.path='{image_folder}'", "train.device='cuda'", "train.compile=true",
                             "train.amp='bf16'", "train.batch_size=8", "train.epochs=1", "data.workers=0"])
    assert train(cfg, tmp_path / "c", progress=False).global_step == 3
