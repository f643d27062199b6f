"""A step variant against the plain eager step, one step at a time from the same state.

Training MobileFaceNet + CosFace on random images is chaotic: scaling every weight by (1 + 1e-6) changes
the loss by 4e-5 after one step at lr 0.01, by 2e-3 after two and by 2e-2 after four (measured on this
CPU). An H200 run of the CUDA-graph step against the eager one showed the same growth: 3e-5 and 3e-3 in
its two eager warm-up steps after the first (cuDNN's non-deterministic backward alone), 2e-2 at the
first replay. Two runs whose kernels round
differently (a CUDA graph, a blocked head, bf16, atomics) therefore cannot be compared over a
trajectory of more than a step or two, whatever the tolerance.

So before every step of the variant, a copy of the model, the head and the momentum buffers takes the
same step eagerly with the plain step, and the two must agree on the loss and on how far each weight
moved. The rate changes every step, so a variant that kept an old rate moves its weights differently.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from cosface.backbones import build_backbone
from cosface.config import Config
from cosface.heads import CosFaceHead
from cosface.preprocess import Preprocessing
from cosface.step import GRAPH_WARMUP_STEPS, build_optimizer, build_step


def _flat(modules) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float() for m in modules for p in m.parameters()])


def step_by_step(device: torch.device, variant_sets: dict, *, amp: bool, steps: int, size: int = 112,
                 classes: int = 1000, batch: int = 32, class_chunk: int = 0, sync_check: bool = False,
                 reference_sets: dict | None = None):
    """Run the variant for `steps` steps; return (losses, reference losses, weight-move errors, step).

    The move error of a step is |variant's move - reference's move| / |reference's move| over all
    weights, the reference being the plain eager step taken from the variant's state just before.
    With `sync_check` (CUDA), the variant's steps after its warm-up and capture run under
    torch.cuda.set_sync_debug_mode("error"): a step that waits for the device fails.
    """
    torch.manual_seed(0)
    model = build_backbone("mobilefacenet", input_size=size).to(device).to(memory_format=torch.channels_last)
    head = CosFaceHead(classes, 128).to(device)
    cfg = Config().replace(**variant_sets)
    ref_cfg = Config().replace(**(reference_sets or {"optim.implementation": "foreach"}))
    params = [*model.parameters(), *head.parameters()]
    opt = build_optimizer(params, cfg.optim, cfg.train.cuda_graph)
    if amp:
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = lambda: torch.autocast(device.type, enabled=False)  # noqa: E731
    runtime = SimpleNamespace(device=device, distributed=False)
    prep = Preprocessing(size=size)
    step = build_step(cfg.train, opt, model, head, prep, autocast, None, runtime, class_chunk=class_chunk)
    g = torch.Generator(device=device).manual_seed(1)
    losses, ref_losses, moves = [], [], []
    for i in range(steps):
        images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device, generator=g)
        labels = torch.randint(0, classes, (batch,), device=device, generator=g)
        flips = torch.rand(batch, device=device, generator=g) < 0.5
        lr = 0.02 / (i + 1)

        ref_model, ref_head = copy.deepcopy((model, head))
        ref_params = [*ref_model.parameters(), *ref_head.parameters()]
        for q in ref_params:
            q.grad = None
        ref_opt = build_optimizer(ref_params, ref_cfg.optim)
        for p, q in zip(params, ref_params):
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                ref_opt.state[q]["momentum_buffer"] = buf.clone()
        ref_step = build_step(ref_cfg.train, ref_opt, ref_model, ref_head, prep, autocast, None, runtime)
        ref_step.set_lr(lr)
        ref_losses.append(ref_step.forward_backward(images, labels, flips, sync=True).detach().float())
        ref_step.optimizer_step()

        before = _flat((model, head))
        check = sync_check and i >= GRAPH_WARMUP_STEPS + 1
        if check:
            torch.cuda.set_sync_debug_mode("error")
        try:
            step.set_lr(lr)
            losses.append(step.forward_backward(images, labels, flips, sync=True).detach().float())
            step.optimizer_step()
        finally:
            if check:
                torch.cuda.set_sync_debug_mode("default")
        move, ref_move = _flat((model, head)) - before, _flat((ref_model, ref_head)) - before
        moves.append((move - ref_move).norm() / ref_move.norm())
    return torch.stack(losses).cpu(), torch.stack(ref_losses).cpu(), torch.stack(moves).cpu(), step
