"""CUDA step variants against the plain eager step (skipped without a GPU; run by benchmarks/gpu_check.sh)."""
import copy
import json
from types import SimpleNamespace

import pytest
import torch

from cosface.backbones import build_backbone
from cosface.config import Config, load_config
from cosface.heads import CosFaceHead
from cosface.preprocess import Preprocessing
from cosface.step import GRAPH_WARMUP_STEPS, GraphedStep, build_optimizer, build_step
from cosface.trainer import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = SimpleNamespace(device=torch.device("cuda"), distributed=False)


def _run(sets, amp, steps=GRAPH_WARMUP_STEPS + 4, class_chunk=0, sync_check=False):
    torch.manual_seed(0)
    model = build_backbone("mobilefacenet").cuda().to(memory_format=torch.channels_last)
    head = CosFaceHead(1000, 128).cuda()
    cfg = Config().replace(**sets)
    opt = build_optimizer(list(model.parameters()) + list(head.parameters()), cfg.optim, cfg.train.cuda_graph)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else (lambda: torch.autocast("cuda", enabled=False))
    step = build_step(cfg.train, opt, model, head, Preprocessing(), autocast, None, CUDA, class_chunk=class_chunk)
    g = torch.Generator(device="cuda").manual_seed(1)
    losses = []
    for i in range(steps):
        images = torch.randint(0, 256, (32, 112, 112, 3), dtype=torch.uint8, device="cuda", generator=g)
        labels = torch.randint(0, 1000, (32,), device="cuda", generator=g)
        flips = torch.rand(32, device="cuda", generator=g) < 0.5
        check = sync_check and i >= GRAPH_WARMUP_STEPS + 1
        if check:
            torch.cuda.set_sync_debug_mode("error")
        try:
            step.set_lr(0.01)
            losses.append(step.forward_backward(images, labels, flips, sync=True))
            step.optimizer_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return torch.stack(losses).float().cpu(), step


@pytest.mark.parametrize("amp", [False, True])
def test_cuda_graph_step_gives_the_eager_losses(amp):
    ref, _ = _run({"optim.implementation": "fused"}, amp)
    got, step = _run({"train.cuda_graph": True}, amp, sync_check=True)
    assert isinstance(step, GraphedStep) and step.graph is not None
    tol = 2e-2 if amp else 1e-3
    assert torch.allclose(got, ref, rtol=tol), (got, ref)


def test_inductor_compiled_step_gives_the_eager_losses():
    # One mode: each compilation of MobileFaceNet's forward and backward takes tens of seconds.
    ref, _ = _run({"optim.implementation": "foreach"}, True, steps=4)
    got, _ = _run({"optim.implementation": "foreach", "train.compile": True}, True, steps=4)
    assert torch.allclose(got, ref, rtol=2e-2), (got, ref)


def test_eager_blocked_head_step_never_waits_for_the_device():
    ref, _ = _run({"optim.implementation": "foreach"}, True, steps=6)
    got, _ = _run({"optim.implementation": "foreach"}, True, steps=6, class_chunk=512, sync_check=True)
    assert torch.allclose(got, ref, rtol=2e-2), (got, ref)


def test_trainer_with_cuda_graph_and_ring_loader(image_folder, tmp_path):
    base = [f"data.path='{image_folder}'", "train.device='cuda'", "train.amp='bf16'", "train.batch_size=4",
            "train.epochs=2", "data.workers=2", "train.log_every=1", "checkpoint.save_start_epoch=2",
            "optim.implementation='fused'"]
    plain = train(load_config(None, base), tmp_path / "plain", progress=False)
    graphed = train(load_config(None, base + ["train.cuda_graph=true", "head.class_chunk=3"]), tmp_path / "g",
                    progress=False)
    assert graphed.global_step == plain.global_step == 12
    read = lambda d: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert read(tmp_path / "g") == pytest.approx(read(tmp_path / "plain"), rel=5e-2)


def test_ring_loader_pins_its_slots_on_cuda(image_folder):
    from cosface.data.dataset import Plan, make_loader
    from cosface.data.sources import ImageFolderSource

    src = ImageFolderSource(image_folder)
    plan = Plan(len(src), 4)
    plain = make_loader(src, plan, rank=0, seed=0, flip=True, image_size=112, workers=0)
    ring = make_loader(src, plan, rank=0, seed=0, flip=True, image_size=112, workers=2, pin_memory=True)
    try:
        expected = [b["images"].clone() for b in plain]
        got = []
        for b in ring:
            assert b["images"].is_pinned()
            got.append(b["images"].to("cuda", non_blocking=True))
        torch.cuda.synchronize()
        assert all(torch.equal(a.cpu(), e) for a, e in zip(got, expected))
    finally:
        ring.close()
