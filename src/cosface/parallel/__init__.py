"""Everything that touches torch.distributed lives in this package.

`setup_runtime()` reads torchrun's environment. Without it (or at WORLD_SIZE=1) no process group is
created and every helper below is the identity, so single-process code paths stay plain.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from cosface.errors import CosfaceError


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: Any = None                # the torch.distributed ProcessGroup, None at world size 1
    timeout_s: float = 0.0           # collective timeout of the group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.group is not None

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of `t` over ranks (a new tensor)."""
        if not self.distributed:
            return t.clone()
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out / self.world_size

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def share_overflow(self, params) -> None:
        """Under fp16 loss scaling, make an overflow that any rank found in these (not DDP-averaged)
        gradients an overflow on every rank: GradScaler skips a step by looking at this rank's gradients
        only, and the class-sharded head's differ per rank, so one rank would skip a step that the others
        take and the replicas would part. Call before anything unscales. No host sync."""
        if not self.distributed:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        bad = torch.stack([~torch.isfinite(g).all() for g in grads]).any().float()
        dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=self.group)
        # +inf where some rank overflowed, +0 elsewhere: this rank's scaler then sees it too.
        grads[0].view(-1)[:1].add_(torch.where(bad > 0, float("inf"), 0.0).to(grads[0].dtype))

    def wrap_backbone(self, backbone: nn.Module) -> nn.Module:
        """DistributedDataParallel over the backbone (gradients averaged); the head is handled by
        the head itself (a class-sharded head never replicates its centres)."""
        if not self.distributed:
            return backbone
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(backbone, device_ids=ids, process_group=self.group, broadcast_buffers=True)

    def build_head(self, head_cfg, num_classes: int, embedding_size: int) -> nn.Module:
        from cosface.heads import build_head
        from cosface.losses import margin_for

        if not self.distributed:
            return build_head(head_cfg, num_classes, embedding_size)
        from cosface.parallel.sharded_head import ShardedCosFaceHead

        return ShardedCosFaceHead(num_classes, embedding_size, s=head_cfg.s, m=head_cfg.m,
                                  sample_rate=head_cfg.sample_rate, group=self.group, margin=margin_for(head_cfg),
                                  init=head_cfg.init, init_std=head_cfg.init_std)

    @contextlib.contextmanager
    def failing_clearly(self):
        """Turn a failed collective (a peer process died, or did not answer within the timeout) into
        a one-line CosfaceError naming this rank, instead of a backend traceback."""
        if not self.distributed:
            yield
            return
        import torch.distributed as dist

        try:
            yield
        except Exception as e:
            # gloo reports a lost peer or a timeout as a bare RuntimeError tagged with its source path.
            if not (isinstance(e, dist.DistError) or "gloo" in str(e)):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CosfaceError(
                f"rank {self.rank} of {self.world_size}: a collective operation failed, so training stops. "
                f"Usually another rank died or stalled (collectives time out after train.timeout_s = "
                f"{self.timeout_s:g} s): look at the first error in the other ranks' logs, then rerun with "
                f"--resume auto. Backend said: {first}") from e

    def close(self) -> None:
        if self.distributed:
            import gc

            import torch.distributed as dist

            # DistributedDataParallel's reducer keeps the process group's connections and threads alive,
            # and a wrapped model is often held only by reference cycles, so it would otherwise be freed
            # during interpreter shutdown, after the group's destruction, where tearing those threads
            # down aborted the process ("terminate called without an active exception", exit -6) about
            # once in 20 two-process runs. Collect it now, while the group still works.
            gc.collect()
            dist.destroy_process_group(self.group)
            self.group = None


def resolve_device(name: str, local_rank: int = 0, local_world: int = 1) -> torch.device:
    """The device of the process numbered `local_rank` of the `local_world` on this machine: "cuda" is
    the GPU of that number."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if name != "cuda" and local_world > 1:
            raise CosfaceError(f"train.device={name!r} puts all {local_world} processes of this machine on one GPU; "
                               f"use train.device='cuda' (each process takes the GPU numbered by its LOCAL_RANK)")
        if not torch.cuda.is_available():
            raise CosfaceError(f"train.device={name!r} but CUDA is not available on this machine")
        if name == "cuda" and local_rank >= torch.cuda.device_count():
            raise CosfaceError(f"the process with LOCAL_RANK {local_rank} needs GPU {local_rank}, but this machine has "
                               f"{torch.cuda.device_count()} GPU(s) visible; start at most that many processes per "
                               f"machine (torchrun --nproc_per_node)")
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    return torch.device(name)


def setup_runtime(device: str = "auto", timeout_s: float = 1800.0) -> Runtime:
    """One process, or one rank of a torchrun job (env: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...).

    Collectives time out after `timeout_s`, so when a rank dies the others fail with an error
    instead of waiting forever.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if world <= 1:
        return Runtime(0, 1, 0, dev)
    import torch.distributed as dist

    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    except (dist.DistError, ValueError) as e:
        # Typically MASTER_PORT taken by another program or job (rank 0), rank 0 gone (the others), or
        # (ValueError) RANK/WORLD_SIZE set without MASTER_ADDR/MASTER_PORT.
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CosfaceError(
            f"rank {rank} of {world}: cannot set up the process group at {where} ({backend}): {first}. If the port "
            f"is in use, pick a free one (torchrun --master_port, or --standalone on one machine)") from None
    return Runtime(rank, world, local_rank, dev, group=dist.group.WORLD, timeout_s=timeout_s)
