"""IResNet: insightface arcface_torch's architecture, key names and parameter counts."""
import pytest
import torch

from cosface.backbones import build_backbone, build_backbone_for
from cosface.backbones.iresnet import DEPTHS
from cosface.config import ModelConfig
from cosface.errors import CosfaceError


def counted_from_architecture(depths, embedding=512, feat=7) -> int:
    """Parameters of the architecture, written out layer by layer (BatchNorm: scale + shift)."""
    bn = lambda c: 2 * c                                        # noqa: E731
    total = 3 * 64 * 9 + bn(64) + 64                            # stem conv3×3, BN, PReLU
    cin = 64
    for width, n in zip((64, 128, 256, 512), depths):
        for i in range(n):
            total += bn(cin) + cin * width * 9 + bn(width) + width + width * width * 9 + bn(width)
            if i == 0:                                          # stride 2: 1×1 conv + BN shortcut
                total += cin * width + bn(width)
            cin = width
    return total + bn(512) + 512 * feat * feat * embedding + embedding + bn(embedding)


# The published sizes (insightface reports r50 ≈ 43.6 M, r100 ≈ 65.2 M parameters).
KNOWN = {"iresnet18": 24_025_600, "iresnet34": 34_139_328, "iresnet50": 43_590_848,
         "iresnet100": 65_156_160, "iresnet200": 118_833_920}


@pytest.mark.parametrize("name", list(DEPTHS))
def test_parameter_count_equals_the_architecture(name):
    with torch.device("meta"):
        model = build_backbone(name)
    total = sum(p.numel() for p in model.parameters())
    assert total == counted_from_architecture(DEPTHS[name]) == KNOWN[name]
    # The BatchNorm1d scale is fixed at 1, as in the reference: all else trains.
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == total - 512
    # Every BatchNorm also has running mean/var and a batch counter (insightface's files carry them).
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in model.modules())
    assert len(model.state_dict()) == len(list(model.parameters())) + 3 * n_bn


def test_insightface_key_names_and_block_layout():
    model = build_backbone("iresnet18")
    keys = list(model.state_dict())
    assert keys[:8] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked", "prelu.weight", "layer1.0.bn1.weight"]
    block = ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
             "conv1.weight", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var",
             "bn2.num_batches_tracked", "prelu.weight", "conv2.weight", "bn3.weight", "bn3.bias",
             "bn3.running_mean", "bn3.running_var", "bn3.num_batches_tracked"]
    down = ["downsample.0.weight", "downsample.1.weight", "downsample.1.bias", "downsample.1.running_mean",
            "downsample.1.running_var", "downsample.1.num_batches_tracked"]
    assert keys[7:7 + 24] == [f"layer1.0.{k}" for k in block + down]
    assert keys[-12:] == ["bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked",
                          "fc.weight", "fc.bias", "features.weight", "features.bias", "features.running_mean",
                          "features.running_var", "features.num_batches_tracked"]
    assert len(keys) == 187
    first = model.layer2[0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)        # the stride is on the second conv
    assert first.downsample[0].stride == (2, 2) and model.layer2[1].downsample is None
    assert model.conv1.stride == (1, 1) and model.fc.in_features == 512 * 7 * 7


def test_a_state_dict_under_insightface_names_loads_strictly_and_runs():
    torch.manual_seed(0)
    src = build_backbone("iresnet18")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in src.state_dict().items()}
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}
    model = build_backbone("iresnet18")
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        out = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    assert low.dtype == torch.float32                         # FC + BatchNorm1d stay fp32 under autocast
    assert torch.allclose(low, out, rtol=0.1, atol=0.1 * out.abs().max().item())


def test_dropout_is_a_config_option_of_families_that_have_it():
    model = build_backbone_for(ModelConfig(backbone="iresnet18", embedding_size=64, input_size=32, dropout=0.4))
    assert model.dropout.p == 0.4 and model.fc.out_features == 64 and model.fc.in_features == 512 * 2 * 2
    with pytest.raises(CosfaceError, match="mobilefacenet has no dropout layer"):
        build_backbone_for(ModelConfig(dropout=0.2))
