"""The training step (forward, backward, optimizer update) and its faster variants.

Every variant computes the same thing as the plain step (tests/unit/test_step.py checks equal losses
on the same batches); they differ in how the work reaches the device:

* `optim.implementation`: torch's SGD as a Python loop over parameters, `foreach` (a few multi-tensor
  kernels) or `fused` (one kernel per dtype and device; its learning rate can live on the device).
* `train.compile` / `train.compile_mode`: torch.compile of backbone + head loss together (the loss
  function below), so Inductor fuses normalisation, flip, the network and the margin loss.
* `head.class_chunk`: the head's normalise -> matmul -> margin -> cross-entropy over blocks of
  classes (cosface.margin_ce), never holding the (B, C) logits.
* `train.cudnn_benchmark` (CUDA): cuDNN times its convolution algorithms for each new input shape
  and keeps the fastest (training has one batch shape), instead of picking by heuristics.
* `train.cuda_graph` (CUDA): the whole step, optimizer included, captured once into a CUDA graph and
  replayed, so a step costs one launch instead of hundreds (MobileFaceNet's small kernels leave a
  GPU launch-bound at batch 128). The batch is copied into fixed input buffers; the learning rate is a
  device tensor the graph reads.

No variant synchronises with the host inside a step: the loss stays on the device until the trainer's
logging window ends.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

from cosface.errors import CosfaceError
from cosface.margin_ce import margin_cross_entropy
from cosface.preprocess import Preprocessing, normalize

OPTIMIZER_IMPLEMENTATIONS = ("auto", "for-loop", "foreach", "fused")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Eager steps before a CUDA graph is captured: cuDNN picks its algorithms, the optimizer creates its
# momentum buffers and the allocator settles, all on real batches (they are ordinary training steps).
GRAPH_WARMUP_STEPS = 3


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    """torch.backends.cudnn.benchmark = `on` inside the block, the previous setting after it."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def build_optimizer(params, optim_cfg, cuda_graph: bool = False) -> torch.optim.SGD:
    """SGD with the config's hyper-parameters in `optim.implementation`; "auto" is torch's choice, or
    `fused` for a CUDA-graph step (which needs it)."""
    implementation = optim_cfg.implementation
    if implementation == "auto" and cuda_graph:
        implementation = "fused"
    if implementation not in OPTIMIZER_IMPLEMENTATIONS:
        raise CosfaceError(f"optim.implementation must be one of {OPTIMIZER_IMPLEMENTATIONS}, got {implementation!r}")
    kind = {"auto": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    return torch.optim.SGD(params, lr=optim_cfg.lr, momentum=optim_cfg.momentum, nesterov=optim_cfg.nesterov,
                           weight_decay=optim_cfg.weight_decay, **kind[implementation])


def head_loss(head, embeddings: torch.Tensor, labels: torch.Tensor, class_chunk: int) -> torch.Tensor:
    """The head's mean loss; blocked over classes when `class_chunk` > 0 (heads with `margin_on_target`)."""
    if class_chunk:
        return margin_cross_entropy(embeddings, head.weight, labels, head.s, head.margin_on_target, class_chunk)
    return head(embeddings, labels)


def make_loss_fn(model, head, prep: Preprocessing, channels_last: bool, autocast: Callable, class_chunk: int):
    """(uint8 NHWC images, labels, flips) on the device -> mean loss: preprocessing, backbone, head."""

    def loss_fn(images: torch.Tensor, labels: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        x = normalize(images, prep)                                       # (B, 3, H, W), channels_last
        x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        if not channels_last:
            x = x.contiguous()
        with autocast():
            emb = model(x)                                                # (B, D)
            return head_loss(head, emb.float(), labels, class_chunk)

    return loss_fn


class EagerStep:
    """forward_backward per micro-batch, optimizer_step per step; the loss function may be compiled."""

    def __init__(self, loss_fn, model, optimizer, scaler, accumulate: int, distributed: bool):
        self.loss_fn, self.model, self.optimizer, self.scaler = loss_fn, model, optimizer, scaler
        self.accumulate, self.distributed = accumulate, distributed

    def set_lr(self, lr: float) -> None:
        """The schedule's rate, times each group's `lr_scale` (cosface.finetune) where it has one."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def forward_backward(self, images, labels, flips, sync: bool) -> torch.Tensor:
        no_sync = self.model.no_sync if (self.distributed and not sync) else contextlib.nullcontext
        with no_sync():
            loss = self.loss_fn(images, labels, flips)
            scaled = loss / self.accumulate
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return loss

    def optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class GraphedStep:
    """The whole step (loss, backward, SGD update) as one CUDA graph, replayed on every batch.

    The first GRAPH_WARMUP_STEPS steps run eagerly on a side stream; the next batch is captured and
    every batch from then on is a copy into the graph's input buffers plus one replay. Needs one
    process, train.accumulate = 1, no fp16 loss scaling and a batch of constant shape (the sampler
    drops the last partial batch, so every batch has train.batch_size images).

    Other threads may use the GPU meanwhile (the GPU decoder's thread allocates and decodes there
    between steps). A capture fails if any of them calls something a capture forbids (cudaMalloc,
    a synchronisation): an H200 run with `data.decoder = "gpu"` failed so with
    cudaErrorStreamCaptureInvalidated. So the capture holds only this thread to those rules
    (capture_error_mode "thread_local"), and `capture_guard`, a context the trainer sets to the GPU
    decoder's `quiet`, keeps the decoder's GPU work out of the capture altogether.
    """

    def __init__(self, loss_fn, optimizer, device: torch.device):
        self.loss_fn, self.optimizer, self.device = loss_fn, optimizer, device
        # The learning rates as device tensors (one per group), read by the fused SGD kernel inside the graph.
        self.lrs = [torch.zeros((), device=device) for _ in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.lrs):
            g["lr"] = lr
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, ...] = ()
        self.loss: torch.Tensor | None = None
        self.steps = 0
        self.stream = torch.cuda.Stream(device)
        self.capture_guard: Callable[[], ContextManager] = contextlib.nullcontext

    def set_lr(self, lr: float) -> None:
        for g, t in zip(self.optimizer.param_groups, self.lrs):
            t.fill_(lr * g.get("lr_scale", 1.0))

    def forward_backward(self, images, labels, flips, sync: bool) -> torch.Tensor:
        if self.graph is None and self.steps < GRAPH_WARMUP_STEPS:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                loss = self.loss_fn(images, labels, flips)
                loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            self.steps += 1
            return loss.detach()
        if self.graph is None:
            self._capture(images, labels, flips)
        assert self.graph is not None and self.loss is not None
        for buf, t in zip(self.static, (images, labels, flips)):
            buf.copy_(t, non_blocking=True)
        self.graph.replay()
        self.steps += 1
        return self.loss.clone()    # the graph overwrites its output on the next replay

    def _capture(self, images, labels, flips) -> None:
        self.static = tuple(t.clone() for t in (images, labels, flips))
        self.optimizer.zero_grad(set_to_none=True)   # backward inside the graph allocates the grads
        self.graph = torch.cuda.CUDAGraph()
        with self.capture_guard(), torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            loss = self.loss_fn(*self.static)
            loss.backward()
            self.optimizer.step()
        self.loss = loss.detach()

    def optimizer_step(self) -> None:
        """Part of the graph (and of the eager warm-up steps)."""


def build_step(train_cfg, optimizer, model, head, prep: Preprocessing, autocast, scaler, runtime,
               class_chunk: int = 0, clip_grad_norm: float = 0.0):
    """The step the config asks for, after checking the combination makes sense here."""
    if class_chunk and not hasattr(head, "margin_on_target"):
        raise CosfaceError(f"head.class_chunk = {class_chunk} needs a head with a per-target margin "
                           f"(margin_on_target); {type(head).__name__} computes its own loss, so set head.class_chunk = 0")
    mode = train_cfg.compile_mode
    if mode not in COMPILE_MODES:
        raise CosfaceError(f"train.compile_mode must be one of {COMPILE_MODES}, got {mode!r}")
    loss_fn = make_loss_fn(model, head, prep, train_cfg.channels_last, autocast, class_chunk)
    if train_cfg.cuda_graph:
        problems = [why for bad, why in [
            (runtime.device.type != "cuda", f"a CUDA device (train.device resolves to {runtime.device})"),
            (runtime.distributed, "one process (this run has several)"),
            (train_cfg.accumulate != 1, f"train.accumulate = 1 (it is {train_cfg.accumulate})"),
            (scaler is not None, "no fp16 loss scaling (use train.amp = 'bf16' or 'none')"),
            (train_cfg.compile and mode == "reduce-overhead", "train.compile_mode other than 'reduce-overhead', "
                                                              "which captures CUDA graphs itself"),
            (clip_grad_norm > 0, "optim.clip_grad_norm = 0 (clipping happens between backward and update, "
                                 "inside the captured step)"),
        ] if bad]
        if problems:
            raise CosfaceError("train.cuda_graph = true needs " + "; ".join(problems))
        if not optimizer.defaults.get("fused"):
            raise CosfaceError("train.cuda_graph = true needs optim.implementation = 'fused' "
                               "(its update reads the learning rate from the device)")
    if train_cfg.compile:
        loss_fn = torch.compile(loss_fn, mode=None if mode == "default" else mode)
    if train_cfg.cuda_graph:
        return GraphedStep(loss_fn, optimizer, runtime.device)
    return EagerStep(loss_fn, model, optimizer, scaler, train_cfg.accumulate, runtime.distributed)
