"""ArcFace, combined-margin and normalised-softmax heads against hand-written float64 formulas."""
import math

import pytest
import torch
import torch.nn.functional as F

from cosface.config import HeadConfig
from cosface.heads import (ArcFaceHead, CombinedMarginHead, CosFaceHead, NormSoftmaxHead, available_heads,
                           build_head)
from cosface.losses import (MARGINS, Margin, arcface_logits, combined_margin_logits, cosface_logits, margin_for,
                            normface_logits)
from cosface.parallel.sharded_head import ShardedCosFaceHead


def fallback_penalty(m1: float, m2: float) -> float:
    """What the target loses past θ* = (π − m2)/m1: ArcFace's m2·sin(m2), or more when that would leave
    the target above its value at θ* (−1 − m3), which happens for m1 > 1."""
    return max(m2 * math.sin(m2), 1 + math.cos((math.pi - m2) / m1))


def reference_loss(x, w, y, s, m1, m2, m3):
    """Mean softmax cross-entropy, one sample and one class at a time, in float64 (autograd gives gradients)."""
    losses = []
    for i in range(x.shape[0]):
        xi = x[i] / torch.sqrt((x[i] ** 2).sum())
        logits = []
        for j in range(w.shape[0]):
            cos = (xi * w[j] / torch.sqrt((w[j] ** 2).sum())).sum()
            if j == int(y[i]):
                theta = torch.acos(cos)
                if m1 * theta.item() + m2 <= math.pi:
                    cos = torch.cos(m1 * theta + m2) - m3
                else:
                    cos = cos - fallback_penalty(m1, m2) - m3
            logits.append(s * cos)
        logits = torch.stack(logits)
        losses.append(torch.logsumexp(logits, 0) - logits[int(y[i])])
    return torch.stack(losses).mean()


CASES = [   # head, (s, m1, m2, m3)
    (lambda: ArcFaceHead(7, 16, s=64.0, m=0.5), (64.0, 1.0, 0.5, 0.0)),
    (lambda: CombinedMarginHead(7, 16, s=64.0, m1=1.0, m2=0.3, m3=0.2), (64.0, 1.0, 0.3, 0.2)),
    (lambda: CombinedMarginHead(7, 16, s=30.0, m1=0.9, m2=0.4, m3=0.15), (30.0, 0.9, 0.4, 0.15)),
    (lambda: CombinedMarginHead(7, 16, s=30.0, m1=1.35, m2=0.0, m3=0.1), (30.0, 1.35, 0.0, 0.1)),
    (lambda: NormSoftmaxHead(7, 16, s=32.0), (32.0, 1.0, 0.0, 0.0)),
    (lambda: CosFaceHead(7, 16, s=32.0, m=0.35), (32.0, 1.0, 0.0, 0.35)),
]


@pytest.mark.parametrize("make,params", CASES, ids=["arcface", "combined", "combined_m1", "combined_m1_above_1", "softmax", "cosface"])
def test_loss_and_both_gradients_match_float64_formula(make, params):
    torch.manual_seed(2)
    head = make()
    y = torch.tensor([0, 3, 6, 3, 1])
    x = torch.randn(5, 16, dtype=torch.float64)
    # Sample 2 points almost away from its centre: θ + m passes π, so the fallback branch is tested too.
    x[2] = -head.weight.detach()[6].double() + 0.05 * x[2]
    x.requires_grad_(True)
    loss = head(x, y)
    loss.backward()
    x2 = x.detach().clone().requires_grad_(True)
    w2 = head.weight.detach().double().clone().requires_grad_(True)
    ref = reference_loss(x2, w2, y, *params)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(x.grad.double(), x2.grad, atol=1e-5), (x.grad - x2.grad).abs().max()
    assert torch.allclose(head.weight.grad.double(), w2.grad, atol=1e-5)
    assert head.weight.grad.abs().max() > 1e-3


def test_arcface_target_and_its_derivative_written_out():
    c = torch.tensor([0.9, 0.3, -0.2, -0.95], dtype=torch.float64, requires_grad=True)
    m = 0.5
    out = Margin(1.0, m, 0.0).target(c)
    out.sum().backward()
    for ci, oi, gi in zip(c.tolist(), out.tolist(), c.grad.tolist()):
        if math.acos(ci) + m <= math.pi:
            # cos(θ + m) = c·cos m − sin θ·sin m, so d/dc = cos m + c·sin m / sqrt(1 − c²)
            assert oi == pytest.approx(ci * math.cos(m) - math.sqrt(1 - ci * ci) * math.sin(m), abs=1e-12)
            assert gi == pytest.approx(math.cos(m) + ci * math.sin(m) / math.sqrt(1 - ci * ci), rel=1e-6)
        else:   # -0.95: θ ≈ 2.82 rad, θ + 0.5 > π
            assert oi == pytest.approx(ci - m * math.sin(m), abs=1e-12)
            assert gi == pytest.approx(1.0)


@pytest.mark.parametrize("margin", [Margin(1, 0.5, 0), Margin(1, 0.3, 0.2), Margin(0.9, 0.4, 0.15),
                                    Margin(1.35, 0, 0), Margin(1.2, 0.3, 0.1), Margin(2, 0, 0.35)])
def test_target_never_rises_as_the_angle_grows(margin):
    # A target that rises with θ rewards pushing a sample away from its own centre.
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    f = margin.target(torch.cos(theta))
    assert (f[1:] <= f[:-1] + 1e-12).all(), theta[1:][f[1:] > f[:-1] + 1e-12][:3]


def test_fallback_for_m1_above_1_written_out():
    # m1 = 1.35, m2 = 0: θ* = π/1.35 ≈ 2.3271, cos θ* ≈ −0.6862. ArcFace's penalty m2·sin(m2) is 0 here,
    # which would make the target jump from cos(π) = −1 up to cos θ* at θ*; the penalty is 1 + cos θ*.
    theta = 2.5
    want = math.cos(theta) - (1 + math.cos(math.pi / 1.35))          # ≈ −0.80114 − 0.31376 = −1.11490
    assert want == pytest.approx(-1.11490, abs=1e-4)
    got = Margin(1.35, 0.0, 0.0).target(torch.tensor([math.cos(theta)], dtype=torch.float64))
    assert got.item() == pytest.approx(want, abs=1e-9)
    # m1 = 1: still insightface's ArcFace fallback cos θ − m·sin(m) past π − m.
    got = Margin(1.0, 0.5, 0.0).target(torch.tensor([math.cos(3.0)], dtype=torch.float64))
    assert got.item() == pytest.approx(math.cos(3.0) - 0.5 * math.sin(0.5), abs=1e-12)


def test_pure_functions_agree_with_each_other_and_known_values():
    torch.manual_seed(0)
    cos = torch.rand(4, 6) * 1.6 - 0.8
    y = torch.tensor([5, 0, 2, 2])
    assert torch.allclose(combined_margin_logits(cos, y, 64.0, 1.0, 0.0, 0.4), cosface_logits(cos, y, 64.0, 0.4), atol=1e-4)
    assert torch.allclose(combined_margin_logits(cos, y, 64.0, 1.0, 0.5, 0.0), arcface_logits(cos, y, 64.0, 0.5))
    assert torch.equal(normface_logits(cos, y, 10.0), 10.0 * cos)
    assert torch.allclose(combined_margin_logits(cos, y, 10.0, 1.0, 0.0, 0.0), normface_logits(cos, y, 10.0))
    # cos θ = 0 is θ = π/2: the ArcFace target is cos(π/2 + 0.5) = −sin 0.5; other entries untouched.
    z = arcface_logits(torch.zeros(1, 3), torch.tensor([1]), 2.0, 0.5)
    assert z[0].tolist() == pytest.approx([0.0, -2 * math.sin(0.5), 0.0], abs=1e-6)


def test_every_head_type_builds_from_config_and_means_its_margin():
    assert sorted(MARGINS.names()) == available_heads() == ["arcface", "combined", "cosface", "softmax"]
    expected = {"cosface": Margin(1, 0, 0.35), "arcface": Margin(1, 0.35, 0), "softmax": Margin(),
                "combined": Margin(1.0, 0.2, 0.1)}
    for t, margin in expected.items():
        cfg = HeadConfig(type=t, s=20.0, m=0.35, m1=1.0, m2=0.2, m3=0.1)
        assert margin_for(cfg) == margin
        head = build_head(cfg, 9, 8)
        assert head.weight.shape == (9, 8) and head.s == 20.0


@pytest.mark.parametrize("margin", [Margin(1, 0.5, 0), Margin(1, 0.3, 0.2), Margin(), Margin(1, 0, 0.4)])
def test_sharded_head_without_group_equals_one_process_head(margin):
    from cosface.heads import MarginHead

    torch.manual_seed(3)
    plain = MarginHead(9, 16, s=64.0, margin=margin)
    torch.manual_seed(3)
    sharded = ShardedCosFaceHead(9, 16, s=64.0, group=None, margin=margin)
    assert torch.equal(plain.weight, sharded.weight)
    x, y = torch.randn(6, 16), torch.tensor([0, 8, 3, 3, 5, 1])
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    la, lb = plain(xa, y), sharded(xb, y)
    la.backward()
    lb.backward()
    assert lb.item() == pytest.approx(la.item(), abs=1e-5)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6)
    assert torch.allclose(plain.weight.grad, sharded.weight.grad, atol=1e-6)


def test_one_process_logits_are_fp32_and_cross_entropy_of_themselves():
    torch.manual_seed(0)
    head = ArcFaceHead(5, 8)
    x, y = torch.randn(3, 8).to(torch.bfloat16), torch.tensor([0, 4, 2])
    z = head.logits(x, y)
    assert z.dtype == torch.float32
    assert head(x, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)
