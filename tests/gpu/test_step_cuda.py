"""CUDA step variants against the plain eager step (skipped without a GPU; run by benchmarks/gpu_check.sh).

Each variant is compared one step at a time from the same state (tests/step_agreement.py says why a
whole trajectory cannot be compared): the loss, and how far the weights moved, with a new learning
rate every step.
"""
import json

import pytest
import torch

from cosface.config import load_config
from cosface.step import GRAPH_WARMUP_STEPS, GraphedStep
from cosface.trainer import train
from step_agreement import step_by_step

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")


def _agree(losses, ref_losses, moves, loss_tol, move_tol):
    assert torch.allclose(losses, ref_losses, rtol=loss_tol), (losses, ref_losses)
    assert (moves < move_tol).all(), moves


@pytest.mark.parametrize("amp", [False, True])
def test_cuda_graph_step_takes_the_eager_step_every_step(amp):
    # Warm-up steps, the capture, then replays; no replay may wait for the device.
    losses, ref, moves, step = step_by_step(CUDA, {"train.cuda_graph": True}, amp=amp,
                                            steps=GRAPH_WARMUP_STEPS + 4, sync_check=True)
    assert isinstance(step, GraphedStep) and step.graph is not None
    # The same kernels on the same state: rounding and cuDNN's atomics only. A replay that kept the
    # captured rate, reused a stale batch or skipped the update misses by 100 % or more.
    _agree(losses, ref, moves, *((2e-2, 5e-2) if amp else (1e-4, 1e-3)))


def test_inductor_compiled_step_takes_the_eager_step_every_step():
    # One mode: each compilation of MobileFaceNet's forward and backward takes tens of seconds.
    losses, ref, moves, _ = step_by_step(CUDA, {"optim.implementation": "foreach", "train.compile": True},
                                         amp=True, steps=3)
    _agree(losses, ref, moves, 2e-2, 0.1)    # Inductor fuses bf16 work differently: bf16 rounding


def test_eager_blocked_head_step_never_waits_for_the_device():
    losses, ref, moves, _ = step_by_step(CUDA, {"optim.implementation": "foreach"}, amp=True, steps=6,
                                         class_chunk=512, sync_check=True)
    _agree(losses, ref, moves, 2e-2, 5e-2)   # the blocked head's cosines are fp32, the plain head's bf16


def test_trainer_with_cuda_graph_and_ring_loader(image_folder, tmp_path):
    # The trainer's path into the graph (ring loader, pinned slots, copies into the graph's input
    # buffers, the blocked head) at a learning rate too small to move the weights: every step's loss is
    # then its batch's, and the runs must agree step by step (a replay of a stale batch would not);
    # the update itself is checked above. At the usual rate two runs part within three steps whatever
    # their kernels (tests/step_agreement.py).
    base = [f"data.path='{image_folder}'", "train.device='cuda'", "train.amp='none'", "train.batch_size=4",
            "train.epochs=2", "data.workers=2", "train.log_every=1", "checkpoint.save_start_epoch=2",
            "optim.implementation='fused'", "optim.lr=1e-9"]
    plain = train(load_config(None, base), tmp_path / "plain", progress=False)
    graphed = train(load_config(None, base + ["train.cuda_graph=true", "head.class_chunk=3"]), tmp_path / "g",
                    progress=False)
    assert graphed.global_step == plain.global_step == 12
    read = lambda d: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert read(tmp_path / "g") == pytest.approx(read(tmp_path / "plain"), rel=5e-3)


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
