"""A margin head (CosFace by default; any cosface.losses.Margin: ArcFace, combined, plain softmax)
whose class centres are split across ranks (model parallelism over classes).

Each rank keeps a contiguous block of rows of the (C, D) centre table (`class_ranges`; the first
C mod N ranks hold one row more). One step, on every rank:

1. all-gather the embeddings and labels of the global batch: (N·B, D) and (N·B,);
2. cosines of all N·B embeddings against the local centres -> (N·B, C_local) logits, with the
   margin on the targets this rank owns (it changes only the target logit, so no other rank's
   columns are needed);
3. softmax cross-entropy with a distributed row max and sum-exp (two all-reduces of N·B numbers),
   so no rank ever holds an (N·B, C) matrix. The loss is the mean over the global batch and is the
   same number on every rank.

Gradients. The centres get the exact gradient of the global loss (nobody else owns them, so they
are not averaged). The embeddings are the backbone's, and the backbone is wrapped in DDP, which
*averages* its gradients over ranks. The exact gradient for rank r's embeddings is the sum of the
contributions of every rank's classes (a reduce-scatter), but DDP would then divide the backbone
gradient by N; so the gather's backward multiplies by N. What reaches the backbone on rank r is
thus the gradient of rank r's own per-sample losses averaged over its B rows (what a replicated
head would give), and DDP's average makes the backbone gradient equal to one process's on the
whole global batch.

Partial FC (An et al., "Partial FC: Training 10 Million Identities on a Single Machine", 2021):
with sample_rate < 1, in training mode each rank scores its batch against a random subset of
ceil(sample_rate · C_local) of its centres, always including every centre that is a target in the
global batch (if the targets alone are more, exactly those). Unsampled rows receive a zero loss
gradient; the optimizer still treats them as ordinary rows (SGD applies weight decay and momentum
to the whole local table), which is what the table's optimizer state already holds, so nothing
else needs to know about sampling. The subset is drawn from a seed taken from torch's global
generator (the same on every rank, so it advances identically everywhere and is restored on
resume) plus the rank.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.autograd.function import once_differentiable

from cosface.errors import CosfaceError
from cosface.heads import init_centre_rows
from cosface.losses import Margin, normalized_cosines

# torch >= 2.10 renamed the single-tensor collectives; both spellings take (output, input, ...).
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def class_ranges(num_classes: int, world_size: int) -> list[tuple[int, int]]:
    """[start, stop) of the classes each rank owns: contiguous, in rank order, sizes differing by at most one."""
    base, extra = divmod(num_classes, world_size)
    bounds = [r * base + min(r, extra) for r in range(world_size + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _rank_and_size(group) -> tuple[int, int]:
    if group is None:
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 (every rank passes the same shape). Backward: the sum over ranks of
    the gradient for this rank's rows (a reduce-scatter), times the world size (see the module
    docstring: this undoes DDP's average over ranks)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, world: int) -> torch.Tensor:
        ctx.group, ctx.world = group, world
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        _all_gather_single(out, x.contiguous(), group=group)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        out = grad.new_empty((grad.shape[0] // ctx.world, *grad.shape[1:]))
        _reduce_scatter_single(out, grad.contiguous(), group=ctx.group)
        return out.mul_(ctx.world), None, None


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over the rows of a logit matrix whose columns are split across ranks.

    logits: (N, C_local) this rank's columns. target: (N,) the column of each row's label in this
    rank's block, or -1 where another rank owns it. Returns the mean over the N rows, the same
    value on every rank.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, group) -> torch.Tensor:
        z = logits.float()
        n = z.shape[0]
        row_max = z.max(dim=1).values                                    # (N,)
        if group is not None:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        e = (z - row_max[:, None]).exp_()                                # (N, C_local)
        rows = (target >= 0).nonzero().squeeze(1)
        cols = target[rows]
        # One all-reduce carries both the sum of exponentials and the target logit (0 off-owner).
        sums = torch.zeros(2, n, dtype=e.dtype, device=e.device)
        sums[0] = e.sum(dim=1)
        sums[1, rows] = z[rows, cols]
        if group is not None:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        loss = (sums[0].log() + row_max - sums[1]).mean()
        prob = e.div_(sums[0][:, None])                                  # softmax, this rank's columns
        ctx.save_for_backward(prob, rows, cols)
        ctx.in_dtype = logits.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        prob, rows, cols = ctx.saved_tensors
        scale = grad_loss / prob.shape[0]
        grad = prob * scale                                              # d mean / d logits = (p - onehot) / N
        grad[rows, cols] -= scale
        return grad.to(ctx.in_dtype), None, None


class ShardedCosFaceHead(nn.Module):
    """CosFace (LMCL), or the cosface.losses.Margin given as `margin`, with the class centres split
    over the ranks of `group` (None: one process, all classes here, no collectives). Same contract as cosface.heads.CosFaceHead: (embeddings (B, D),
    labels (B,)) -> mean loss over the global batch; every rank must pass the same B.

    `weight` holds this rank's rows, classes [start, stop), drawn by cosface.heads.init_centre_rows:
    every rank draws the whole table and keeps its rows, so the centres (and the RNG state after them)
    are those of the one-process head with the same seed, `init` and `init_std`, at any world size.
    gather_rows/scatter_rows convert per-rank tables (the weight, its optimizer state) to and from the
    whole (C, D) table.
    """

    def __init__(self, num_classes: int, embedding_size: int, s: float = 32.0, m: float = 0.40,
                 sample_rate: float = 1.0, group=None, margin: Margin | None = None,
                 init: str = "xavier", init_std: float = 0.01):
        super().__init__()
        rank, world = _rank_and_size(group)
        if num_classes < world:
            raise CosfaceError(f"{num_classes} classes cannot be split over {world} processes "
                               f"(each needs at least one); use fewer processes")
        if not 0 < sample_rate <= 1:
            raise CosfaceError(f"head.sample_rate must be in (0, 1], got {sample_rate}")
        self.group, self.rank, self.world = group, rank, world
        self.num_classes, self.embedding_size = num_classes, embedding_size
        self.s, self.m, self.sample_rate = s, m, sample_rate
        self.margin = Margin(1.0, 0.0, m) if margin is None else margin     # None: CosFace with margin m
        self.ranges = class_ranges(num_classes, world)
        self.start, self.stop = self.ranges[rank]
        self.weight = nn.Parameter(torch.empty(self.stop - self.start, embedding_size))
        init_centre_rows(self.weight.data, num_classes, self.start, init, init_std)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, classes=[{self.start}, {self.stop}) on rank {self.rank} of "
                f"{self.world}, s={self.s}, margin {self.margin.describe()}, sample_rate={self.sample_rate}")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.group is not None:
            embeddings = _GatherRows.apply(embeddings, self.group, self.world)   # (N·B, D)
            gathered = labels.new_empty(self.world * labels.shape[0])
            _all_gather_single(gathered, labels.contiguous(), group=self.group)
            labels = gathered                                                    # (N·B,)
        local = labels - self.start
        owned = (local >= 0) & (local < self.stop - self.start)
        target = torch.where(owned, local, -1)
        weight: torch.Tensor = self.weight
        if self.training and self.sample_rate < 1:
            index = self._sample(target[owned])                                  # (C_s,) sorted rows
            weight = weight[index]
            target = torch.where(owned, torch.searchsorted(index, target), -1)
        # cosface.losses.margin_logits, with the margin only where this rank owns the target;
        # computed in place to keep one (N·B, C_local) buffer alive.
        cos = normalized_cosines(embeddings, weight)                             # (N·B, C_s)
        rows = owned.nonzero().squeeze(1)
        cols = target[rows]
        adjusted = self.margin.target(cos[rows, cols])                            # (R,) owned targets only
        logits = cos.index_put_((rows, cols), adjusted).mul_(self.s)
        return _ShardedCrossEntropy.apply(logits, target, self.group)

    def _sample(self, positives: torch.Tensor) -> torch.Tensor:
        """Sorted local rows taking part in this step: every positive, then random negatives up to
        ceil(sample_rate · C_local)."""
        local = self.stop - self.start
        # Drawn on every rank before anything rank-dependent, so the global generator stays in step.
        seed = int(torch.randint(0, 2**62, ()))
        positives = torch.unique(positives)
        k = max(1, math.ceil(self.sample_rate * local))
        if positives.numel() >= k:
            return positives
        gen = torch.Generator(device=self.weight.device).manual_seed(seed + self.rank)
        score = torch.rand(local, generator=gen, device=self.weight.device)
        score[positives] = 2.0                                               # above any draw: always kept
        return score.topk(k).indices.sort().values

    # ---- whole-table conversion, for checkpoints -----------------------------------------------
    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows (C_local, ...) -> the whole (C, ...) table on rank 0, on the CPU; an
        empty (0, ...) tensor on the other ranks. A collective: every rank must call it. Shards are
        sent to rank 0 one at a time, so no device ever holds more than its shard plus one."""
        assert t.shape[0] == self.stop - self.start, (tuple(t.shape), self.start, self.stop)
        if self.group is None:
            return t
        tail = tuple(t.shape[1:])
        if self.rank != 0:
            dist.send(t.contiguous(), dst=dist.get_global_rank(self.group, 0), group=self.group)
            return torch.empty((0, *tail), dtype=t.dtype)
        full = torch.empty((self.num_classes, *tail), dtype=t.dtype)
        full[self.start:self.stop] = t.detach().cpu()
        for r in range(1, self.world):
            a, b = self.ranges[r]
            buf = t.new_empty((b - a, *tail))
            dist.recv(buf, src=dist.get_global_rank(self.group, r), group=self.group)
            full[a:b] = buf.cpu()
        return full

    def scatter_rows(self, full: torch.Tensor) -> torch.Tensor:
        """The whole (C, ...) table -> a copy of this rank's rows (a copy, so the table can be freed)."""
        if full.shape[0] != self.num_classes:
            raise CosfaceError(f"a head table of {full.shape[0]} rows does not fit a head of {self.num_classes} classes")
        return full[self.start:self.stop].clone()
