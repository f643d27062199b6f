"""Per-rank memory of the classification head, by calculation (fp32 throughout).

A replicated head (plain data parallel, or one process) holds all C centres and scores its own B
embeddings against them. A class-sharded head holds ceil(C / N) centres and scores the N·B
embeddings of the global batch against them (or, with Partial FC, against a sample of them): the
logit matrix per rank is the same size as the replicated head's until sampling shrinks it, while the
centres, their gradient and their momentum shrink N-fold. Checked against real tensors in
tests/distributed/test_head_memory.py and, on a GPU, by benchmarks/head_memory.py --measure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FP32 = 4


@dataclass(frozen=True)
class HeadMemory:
    rows: int       # centres held by the rank (the largest shard)
    sampled: int    # centres scored per step (rows, or the Partial FC sample)
    batch: int      # rows of the logit matrix: the rank's batch (replicated) or the global batch (sharded)
    dim: int

    @property
    def weight_bytes(self) -> int:
        return self.rows * self.dim * FP32

    @property
    def grad_bytes(self) -> int:
        return self.weight_bytes    # dense: unsampled rows get zeros

    @property
    def momentum_bytes(self) -> int:
        return self.weight_bytes

    @property
    def state_bytes(self) -> int:
        return self.weight_bytes + self.grad_bytes + self.momentum_bytes

    @property
    def logits_bytes(self) -> int:
        """One (batch, sampled) logit matrix."""
        return self.batch * self.sampled * FP32

    @property
    def step_bytes(self) -> int:
        """What a step adds on top of the state at its peak: two logit-sized buffers (logits and
        softmax in the forward, softmax and its gradient in the backward) and two copies of the
        scored centres (normalised, and the gradient of that)."""
        return 2 * self.logits_bytes + 2 * self.sampled * self.dim * FP32

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.step_bytes


def head_memory(num_classes: int, dim: int, batch_per_rank: int, world_size: int = 1,
                sample_rate: float = 1.0, sharded: bool = True) -> HeadMemory:
    """Memory of the busiest rank. sharded=False: every rank holds the whole head (the reference's
    data parallelism); sample_rate applies to sharded heads only. Assumes the batch's distinct
    targets on a rank do not outnumber its sample (they are always scored: then sampled = their count)."""
    if not sharded:
        return HeadMemory(num_classes, num_classes, batch_per_rank, dim)
    rows = math.ceil(num_classes / world_size)
    sampled = rows if sample_rate >= 1 else max(1, math.ceil(sample_rate * rows))
    return HeadMemory(rows, sampled, batch_per_rank * world_size, dim)
