"""The head-memory calculation (cosface.parallel.memory) against real tensors and known figures."""
import math

import pytest
import torch

from cosface.heads import CosFaceHead
from cosface.parallel.memory import head_memory
from cosface.parallel.sharded_head import ShardedCosFaceHead


def one_step(head, batch, label_range):
    """A training step with the trainer's optimizer; returns (saved-for-backward shapes, grad, momentum)."""
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, head.weight.shape[1], requires_grad=True)
    y = torch.randint(0, label_range, (batch,))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.append(tuple(t.shape)), t)[1], lambda t: t):
        loss = head(x, y)
    loss.backward()
    grad = head.weight.grad
    opt.step()
    return saved, grad, opt.state[head.weight]["momentum_buffer"]


@pytest.mark.parametrize("rate", [1.0, 0.25])
def test_a_rank_of_a_sharded_head_matches_the_calculation(rate):
    # The busiest rank of 4 sharing 103 classes, run alone: 26 centres, a global batch of 4 × 3 rows.
    # Labels cover all 4 ranks' classes, so about a quarter are this rank's, as in the real job.
    world, classes, dim, per_rank = 4, 103, 16, 3
    model = head_memory(classes, dim, per_rank, world_size=world, sample_rate=rate)
    torch.manual_seed(0)
    head = ShardedCosFaceHead(model.rows, dim, sample_rate=rate, group=None)
    saved, grad, momentum = one_step(head, world * per_rank, classes)
    assert model.rows == 26 and model.sampled == (26 if rate == 1.0 else 7)
    assert head.weight.numel() * 4 == model.weight_bytes
    assert grad.numel() * 4 == model.grad_bytes and momentum.numel() * 4 == model.momentum_bytes
    logits = (world * per_rank, model.sampled)
    assert logits in saved and math.prod(logits) * 4 == model.logits_bytes
    assert (model.sampled, dim) in saved            # the normalised centres kept for the backward
    if rate < 1:
        assert not any(model.rows in shape for shape in saved), saved   # only the sample is scored


def test_replicated_head_matches_the_calculation():
    model = head_memory(50, 8, 6, world_size=8, sharded=False)
    torch.manual_seed(0)
    head = CosFaceHead(50, 8)
    saved, grad, momentum = one_step(head, 6, 50)
    assert head.weight.numel() * 4 == model.weight_bytes == grad.numel() * 4 == momentum.numel() * 4
    assert (6, 50) in saved and 6 * 50 * 4 == model.logits_bytes


def test_known_figures():
    big = head_memory(10_000_000, 512, 128, world_size=8)
    assert big.rows == 1_250_000 and big.batch == 1024
    assert big.state_bytes == 3 * 1_250_000 * 512 * 4 == 7_680_000_000
    assert big.logits_bytes == 1024 * 1_250_000 * 4
    sampled = head_memory(10_000_000, 512, 128, world_size=8, sample_rate=0.1)
    assert sampled.sampled == 125_000 and sampled.logits_bytes == big.logits_bytes // 10
    assert sampled.state_bytes == big.state_bytes     # the optimizer keeps the whole local table
    replicated = head_memory(10_000_000, 512, 128, world_size=8, sharded=False)
    assert replicated.state_bytes == 8 * big.state_bytes
    assert replicated.logits_bytes == big.logits_bytes   # 128 rows × C  ==  1024 rows × C/8
    uneven = head_memory(10, 4, 2, world_size=4)
    assert uneven.rows == 3 and uneven.weight_bytes == 3 * 4 * 4
