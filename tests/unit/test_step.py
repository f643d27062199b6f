"""Every step variant trains exactly like the plain step: same losses, same weights, same batches."""
import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from cosface.backbones import build_backbone
from cosface.config import Config
from cosface.errors import CosfaceError
from cosface.heads import CosFaceHead
from cosface.margin_ce import margin_cross_entropy
from cosface.preprocess import Preprocessing
from cosface.step import EagerStep, build_optimizer, build_step

CPU = SimpleNamespace(device=torch.device("cpu"), distributed=False)


def _batches(n, size, classes, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=g),
             torch.randint(0, classes, (batch,), generator=g),
             torch.rand(batch, generator=g) < 0.5) for _ in range(n)]


def _train(model, head, batches, *, implementation="auto", class_chunk=0, compile=False, amp=False):
    cfg = Config()
    cfg = cfg.replace(**{"optim.implementation": implementation, "train.compile": compile})
    opt = build_optimizer(list(model.parameters()) + list(head.parameters()), cfg.optim)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp else (lambda: torch.autocast("cpu", enabled=False))
    step = build_step(cfg.train, opt, model, head, Preprocessing(size=batches[0][0].shape[1]), autocast, None, CPU,
                      class_chunk=class_chunk)
    assert isinstance(step, EagerStep)
    losses = []
    for i, (images, labels, flips) in enumerate(batches):
        step.set_lr(0.01 / (i + 1))
        losses.append(step.forward_backward(images, labels, flips, sync=True).detach())
        step.optimizer_step()
    return torch.stack(losses), torch.cat([p.detach().flatten() for p in [*model.parameters(), *head.parameters()]])


@pytest.fixture(scope="module")
def start():
    torch.manual_seed(0)
    return build_backbone("mobilefacenet", input_size=32), CosFaceHead(50, 128)


@pytest.mark.parametrize("variant", [dict(implementation="foreach"), dict(implementation="fused"),
                                     dict(class_chunk=7), dict(class_chunk=64, implementation="fused")])
def test_step_variants_give_the_plain_losses_and_weights(start, variant):
    batches = _batches(3, 32, 50)
    ref_loss, ref_w = _train(*copy.deepcopy(start), batches, implementation="for-loop")
    loss, w = _train(*copy.deepcopy(start), batches, **variant)
    # The same computation up to summation order (the blocked loss adds its classes in another
    # order); BatchNorm over this tiny batch amplifies such rounding in a few weights, so weights are
    # compared by how far they moved.
    assert torch.allclose(loss, ref_loss, rtol=1e-4), (loss, ref_loss)
    initial = torch.cat([p.detach().flatten() for p in [*start[0].parameters(), *start[1].parameters()]])
    assert (w - ref_w).norm() < 0.05 * (ref_w - initial).norm()


def test_blocked_head_loss_under_bf16_autocast_matches_plain_within_bf16_tolerance(start):
    batches = _batches(2, 32, 50, seed=1)
    ref_loss, _ = _train(*copy.deepcopy(start), batches, amp=True)
    loss, _ = _train(*copy.deepcopy(start), batches, amp=True, class_chunk=16)
    # The plain head's cosines run in bf16 under autocast, the blocked loss's in fp32.
    assert torch.allclose(loss, ref_loss, rtol=2e-2), (loss, ref_loss)


class _Tiny(nn.Module):
    """Small enough for Inductor to compile on a CPU in seconds."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_compiled_backbone_and_head_give_the_eager_losses(monkeypatch):
    # Inductor's C++ code generation takes minutes on a 2-core CPU, so this traces the same graphs
    # (Dynamo + AOTAutograd: normalisation, flip, network, blocked loss forward and backward) and runs
    # them eagerly; tests/gpu runs the Inductor-compiled step against the eager one on CUDA.
    real_compile = torch.compile
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: calls.append(mode) or real_compile(fn, backend="aot_eager"))
    torch._dynamo.reset()
    torch.manual_seed(0)
    start = (_Tiny(), CosFaceHead(20, 16))
    batches = _batches(3, 16, 20)
    for chunk in (0, 8):
        ref_loss, ref_w = _train(*copy.deepcopy(start), batches, class_chunk=chunk)
        loss, w = _train(*copy.deepcopy(start), batches, class_chunk=chunk, compile=True)
        assert torch.allclose(loss, ref_loss, rtol=1e-5), (loss, ref_loss)
        assert torch.allclose(w, ref_w, rtol=1e-4, atol=1e-6)
    assert calls == [None, None]


@pytest.mark.parametrize("s,m,chunk", [(32.0, 0.4, 1), (32.0, 0.4, 5), (64.0, 0.35, 13), (10.0, 0.0, 100)])
def test_blocked_margin_loss_and_gradients_equal_the_plain_head(s, m, chunk):
    torch.manual_seed(2)
    head = CosFaceHead(13, 16, s=s, m=m)
    x = torch.randn(9, 16, requires_grad=True)
    y = torch.tensor([0, 12, 5, 5, 3, 12, 7, 1, 0])
    ref = head(x, y)
    gx, gw = torch.autograd.grad(ref, (x, head.weight))
    loss = margin_cross_entropy(x, head.weight, y, s, head.margin_on_target, chunk)
    bx, bw = torch.autograd.grad(loss, (x, head.weight))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(bx, gx, atol=1e-5) and torch.allclose(bw, gw, atol=1e-5)


def test_any_margin_on_the_target_cosine_plugs_in():
    # An additive angular (ArcFace-style) margin given as a function of the target cosine.
    torch.manual_seed(3)
    w = torch.randn(11, 8, requires_grad=True)
    x = torch.randn(6, 8, requires_grad=True)
    y = torch.tensor([1, 4, 4, 10, 0, 7])
    arc = lambda c: torch.cos(torch.acos(c.clamp(-1 + 1e-6, 1 - 1e-6)) + 0.5)
    cos = nn.functional.normalize(x) @ nn.functional.normalize(w).t()
    logits = 64.0 * cos.scatter(1, y[:, None], arc(cos.gather(1, y[:, None])))
    ref = nn.functional.cross_entropy(logits, y)
    loss = margin_cross_entropy(x, w, y, 64.0, arc, chunk=4)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(torch.autograd.grad(loss, (x, w)), torch.autograd.grad(ref, (x, w))):
        assert torch.allclose(a, b, atol=1e-5)


def test_impossible_combinations_are_named():
    model, head = _Tiny(), CosFaceHead(5, 16)
    cfg = Config().replace(**{"train.cuda_graph": True})
    opt = build_optimizer(list(model.parameters()), cfg.optim, cuda_graph=True)
    assert opt.defaults["fused"] is True
    with pytest.raises(CosfaceError, match="train.cuda_graph = true needs a CUDA device"):
        build_step(cfg.train, opt, model, head, Preprocessing(), lambda: torch.autocast("cpu", enabled=False), None, CPU)
    with pytest.raises(CosfaceError, match="head.class_chunk = 8 needs a head with a per-target margin"):
        build_step(Config().train, opt, model, nn.Identity(), Preprocessing(), None, None, CPU, class_chunk=8)
    with pytest.raises(CosfaceError, match="optim.implementation"):
        Config().replace(**{"optim.implementation": "turbo"})
    with pytest.raises(CosfaceError, match="train.compile_mode"):
        Config().replace(**{"train.compile_mode": "fast"})


def test_step_by_step_agreement_passes_a_true_variant_and_catches_a_stale_rate(monkeypatch):
    # tests/gpu compares the CUDA graph, compiled and blocked-head steps with this harness; here it is
    # shown to pass a variant that computes the same step and to fail one that keeps its first rate.
    import step_agreement

    cpu = torch.device("cpu")
    losses, ref, moves, _ = step_agreement.step_by_step(cpu, {"optim.implementation": "fused"}, amp=False, steps=4,
                                                        size=32, classes=50, batch=8, class_chunk=16)
    assert torch.allclose(losses, ref, rtol=1e-5) and (moves < 1e-3).all(), (losses, ref, moves)

    real_build = step_agreement.build_step

    def first_rate_only(train_cfg, *args, **kwargs):
        step = real_build(train_cfg, *args, **kwargs)
        if kwargs.get("class_chunk"):                # the variant; the reference is built without one
            set_lr, seen = step.set_lr, []
            step.set_lr = lambda lr: None if seen else (seen.append(lr), set_lr(lr))
        return step

    monkeypatch.setattr(step_agreement, "build_step", first_rate_only)
    losses, ref, moves, _ = step_agreement.step_by_step(cpu, {"optim.implementation": "fused"}, amp=False, steps=4,
                                                        size=32, classes=50, batch=8, class_chunk=16)
    assert moves[0] < 1e-3 and (moves[1:] > 0.5).all(), moves    # the loss alone would not show it


def test_train_cudnn_benchmark_holds_for_the_run_and_is_restored_after(monkeypatch, image_folder, tmp_path):
    from cosface import trainer
    from cosface.config import load_config

    seen = []
    monkeypatch.setattr(trainer.Trainer, "run", lambda self, resume: seen.append(torch.backends.cudnn.benchmark))
    before = torch.backends.cudnn.benchmark
    for on in (True, False):
        cfg = load_config(None, [f"data.path='{image_folder}'", f"train.cudnn_benchmark={str(on).lower()}",
                                 "data.workers=0"])
        trainer.train(cfg, tmp_path / f"run_{on}", progress=False)
        assert torch.backends.cudnn.benchmark == before
    assert seen == [True, False]
