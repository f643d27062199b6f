"""Recipe options: the polynomial schedule, weight-decay groups, gradient clipping."""
import pytest
import torch

from cosface.backbones import build_backbone
from cosface.config import OptimConfig, ScheduleConfig
from cosface.heads import CosFaceHead
from cosface.optim import build_optimizer, clip_gradients, decay_groups
from cosface.schedules import learning_rate


def insightface_poly(step: int, warmup: int, total: int, base: float, power: float) -> float:
    """insightface's PolynomialLRWarmup closed form, at optimizer step `step`."""
    if step <= warmup:
        return base * step / warmup
    return base * (1 - (min(total, step) - warmup) / (total - warmup)) ** power


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_poly_with_warmup_matches_insightface_at_every_step(power):
    steps_per_epoch, epochs, warmup_epochs = 50, 20, 2
    cfg = ScheduleConfig(name="poly", warmup_epochs=warmup_epochs, power=power)
    for step in range(0, steps_per_epoch * epochs + 1, 7):
        ours = learning_rate(cfg, 0.4, step / steps_per_epoch, epochs)
        want = insightface_poly(step, warmup_epochs * steps_per_epoch, steps_per_epoch * epochs, 0.4, power)
        assert ours == pytest.approx(want, abs=1e-12), step


def test_poly_known_values_without_warmup():
    cfg = ScheduleConfig(name="poly")
    assert learning_rate(cfg, 0.1, 0.0, 20) == 0.1
    assert learning_rate(cfg, 0.1, 5.0, 20) == pytest.approx(0.075)
    assert learning_rate(cfg, 0.1, 20.0, 20) == 0.0
    assert learning_rate(ScheduleConfig(name="poly", power=2.0), 0.1, 10.0, 20) == pytest.approx(0.025)


def test_no_decay_groups_hold_bn_prelu_and_biases_only():
    torch.manual_seed(0)
    backbone, head = build_backbone("iresnet18", embedding_size=32, input_size=16), CosFaceHead(5, 32)
    opt = build_optimizer(OptimConfig(no_decay_bn_prelu=True, weight_decay=5e-4), backbone, head)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    conv_fc = [m.weight for m in backbone.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert {id(p) for p in decay["params"]} == {id(p) for p in conv_fc + [head.weight]}
    bn_prelu = [p for m in backbone.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d, torch.nn.PReLU))
                for p in m.parameters() if p.requires_grad]
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in bn_prelu + [backbone.fc.bias]}
    trainable = [p for p in list(backbone.parameters()) + [head.weight] if p.requires_grad]
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable)
    # Off (the reference): one group, every parameter decayed.
    plain = build_optimizer(OptimConfig(), backbone, head)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 5e-4


def test_decay_groups_step_leaves_bn_untouched_without_gradient():
    bn = torch.nn.BatchNorm1d(3)
    lin = torch.nn.Linear(3, 3)
    decay, no_decay = decay_groups([torch.nn.Sequential(lin, bn)])
    opt = torch.optim.SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1.0, weight_decay=0.5)
    for p in decay + no_decay:
        p.grad = torch.zeros_like(p)
    w0, g0 = lin.weight.detach().clone(), bn.weight.detach().clone()
    opt.step()
    assert torch.allclose(lin.weight, 0.5 * w0) and torch.equal(bn.weight, g0)


def test_gradient_clipping_limits_the_backbone_norm_and_is_off_by_default():
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)                       # norm = 3 · sqrt(20)
    assert clip_gradients(OptimConfig(), model, opt) is None
    before = clip_gradients(OptimConfig(clip_grad_norm=5.0), model, opt)
    assert before == pytest.approx(3.0 * 20 ** 0.5)
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert norm.item() == pytest.approx(5.0, rel=1e-5)
