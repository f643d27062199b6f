import math

import pytest
import torch

from cosface.backbones import available_backbones, build_backbone
from cosface.errors import CosfaceError


def test_mobilefacenet_parameter_count_matches_reference():
    model = build_backbone("mobilefacenet")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 1_003_136
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    bn = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    prelu = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.PReLU))
    assert (conv, bn, prelu) == (976_000, 19_584, 7_552)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_structure_residuals_and_prelu_init():
    model = build_backbone("mobilefacenet")
    blocks = list(model.blocks)
    assert len(blocks) == 15
    assert sum(b.residual for b in blocks) == 12
    assert all(torch.allclose(m.weight, torch.full_like(m.weight, 0.25)) for m in model.modules()
               if isinstance(m, torch.nn.PReLU))


def test_conv_init_is_he_normal_over_output_fan():
    torch.manual_seed(0)
    model = build_backbone("mobilefacenet")
    conv = model.conv_expand[0]  # 1×1, 128 -> 512: n = 512
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    bn = model.conv_expand[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_output_shape_and_eval_determinism():
    model = build_backbone("mobilefacenet").eval()
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.shape == (3, 128)
    assert torch.equal(a, b)
    with torch.no_grad():  # channels_last memory gives the same function
        c = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, c, atol=1e-4)


def test_embedding_size_is_configurable_and_registry_rejects_unknown():
    assert "mobilefacenet" in available_backbones()
    model = build_backbone("mobilefacenet", embedding_size=256).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 256)
    with pytest.raises(CosfaceError, match="unknown backbone 'resnet9000'"):
        build_backbone("resnet9000")
