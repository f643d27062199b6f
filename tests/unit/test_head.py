import math

import pytest
import torch
import torch.nn.functional as F

from cosface.heads import CosFaceHead, head_class
from cosface.losses import cosface_logits


def reference_lmcl(x, w, y, s, m):
    """Hand-written Large Margin Cosine Loss, one sample at a time."""
    losses = []
    for i in range(x.shape[0]):
        xi = x[i] / torch.sqrt((x[i] ** 2).sum())
        logits = []
        for j in range(w.shape[0]):
            wj = w[j] / torch.sqrt((w[j] ** 2).sum())
            cos = (xi * wj).sum()
            logits.append(s * (cos - (m if j == y[i] else 0.0)))
        logits = torch.stack(logits)
        losses.append(-(logits[y[i]] - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("s,m", [(32.0, 0.40), (64.0, 0.35), (10.0, 0.0)])
def test_loss_and_gradients_match_hand_written_formula(s, m):
    torch.manual_seed(1)
    head = CosFaceHead(7, 16, s=s, m=m).double()
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 6, 3, 1])
    # The head computes in fp32; compare against the float64 formula on the same inputs.
    loss = head(x, y)
    loss.backward()
    gx, gw = x.grad.clone(), head.weight.grad.clone()
    x2 = x.detach().clone().requires_grad_(True)
    w2 = head.weight.detach().clone().requires_grad_(True)
    ref = reference_lmcl(x2, w2, y, s, m)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(gx.double(), x2.grad, atol=1e-5)
    assert torch.allclose(gw.double(), w2.grad, atol=1e-5)


def test_margin_only_on_target_and_zero_margin_is_normalised_softmax():
    torch.manual_seed(0)
    head = CosFaceHead(5, 8, s=32.0, m=0.4)
    x, y = torch.randn(4, 8), torch.tensor([1, 0, 4, 1])
    cos = F.normalize(x) @ F.normalize(head.weight).t()
    logits = head.logits(x, y)
    expected = 32.0 * cos
    expected[torch.arange(4), y] -= 32.0 * 0.4
    assert torch.allclose(logits, expected, atol=1e-5)
    plain = CosFaceHead(5, 8, s=32.0, m=0.0)
    plain.weight.data.copy_(head.weight.data)
    assert torch.allclose(plain.logits(x, y), 32.0 * cos, atol=1e-5)


def test_head_is_bias_free_xavier_uniform_and_fp32_under_half_inputs():
    torch.manual_seed(0)
    head = CosFaceHead(1000, 128)
    assert [n for n, _ in head.named_parameters()] == ["weight"]
    bound = math.sqrt(6 / (1000 + 128))
    assert head.weight.abs().max().item() <= bound
    assert head.weight.abs().max().item() > 0.95 * bound
    logits = cosface_logits(torch.zeros(2, 3), torch.tensor([0, 2]), 2.0, 0.5)
    assert logits.tolist() == [[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    out = head.logits(torch.randn(2, 128).to(torch.bfloat16), torch.tensor([0, 1]))
    assert out.dtype == torch.float32
    assert head_class("cosface") is CosFaceHead


# Two init chunks (4,194,304 // 505 = 8305 rows, then 95), neither a multiple of 16 values: torch's CPU
# normal_ works in blocks of 16 and redraws a ragged tail, so here one normal_ call over the table, one
# per chunk and one per shard all give different values; shards match a one-process head only because
# every process draws the whole table in the same chunks.
BIG_C, BIG_D = 8400, 505


@pytest.mark.parametrize("init", ["normal", "xavier"])
def test_centres_of_simulated_shards_equal_the_one_process_head_bit_for_bit(init):
    from cosface.parallel.sharded_head import ShardedCosFaceHead, class_ranges
    from cosface.heads import init_centre_rows

    torch.manual_seed(11)
    whole = CosFaceHead(BIG_C, BIG_D, init=init, init_std=0.01).weight.detach()
    rng = torch.get_rng_state()
    for world in (2, 3):
        for start, stop in class_ranges(BIG_C, world):
            rows = torch.empty(stop - start, BIG_D)
            torch.manual_seed(11)
            init_centre_rows(rows, BIG_C, start, init, 0.01)   # what rank r of `world` runs
            assert torch.equal(rows, whole[start:stop]), (world, start)
            assert torch.equal(torch.get_rng_state(), rng), (world, start)
    torch.manual_seed(11)
    sharded = ShardedCosFaceHead(BIG_C, BIG_D, group=None, init=init, init_std=0.01)
    assert torch.equal(sharded.weight.detach(), whole)


def test_normal_centres_have_the_asked_spread_and_every_head_type_draws_the_same_table():
    from cosface.config import HeadConfig
    from cosface.heads import build_head

    torch.manual_seed(5)
    w = CosFaceHead(BIG_C, BIG_D, init="normal", init_std=0.01).weight.detach().double()
    assert w.mean().item() == pytest.approx(0.0, abs=3e-5)     # standard error 0.01 / √(4.2M) ≈ 5e-6
    assert w.std().item() == pytest.approx(0.01, rel=0.005)    # standard error ≈ 0.035 %
    assert w.norm(dim=1).mean().item() == pytest.approx(0.01 * math.sqrt(BIG_D), rel=0.01)
    torch.manual_seed(5)
    wide = CosFaceHead(300, 64, init="normal", init_std=0.05).weight.detach()
    assert wide.std().item() == pytest.approx(0.05, rel=0.05)
    for t in ("cosface", "arcface", "combined", "softmax"):
        torch.manual_seed(5)
        head = build_head(HeadConfig(type=t, init="normal", init_std=0.01), BIG_C, BIG_D)
        assert torch.equal(head.weight.detach().double(), w), t


def test_default_init_is_nn_init_xavier_uniform_bit_for_bit():
    from cosface.config import HeadConfig
    from cosface.heads import build_head

    torch.manual_seed(2)
    expected = torch.nn.init.xavier_uniform_(torch.empty(BIG_C, BIG_D))
    rng = torch.get_rng_state()
    for t in ("cosface", "arcface"):
        torch.manual_seed(2)
        head = build_head(HeadConfig(type=t), BIG_C, BIG_D)
        assert torch.equal(head.weight.detach(), expected) and torch.equal(torch.get_rng_state(), rng), t


@pytest.mark.parametrize("kwargs,message", [
    ({"init": "gaussian"}, r"head.init must be one of \['normal', 'xavier'\], got 'gaussian'"),
    ({"init": "normal", "init_std": 0.0}, r"head.init_std must be > 0, got 0.0"),
])
def test_bad_init_is_a_clear_error(kwargs, message):
    from cosface.errors import CosfaceError

    with pytest.raises(CosfaceError, match=message):
        CosFaceHead(4, 8, **kwargs)
