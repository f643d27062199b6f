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
