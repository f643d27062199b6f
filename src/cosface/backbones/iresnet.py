"""IResNet (Duta et al., "Improved Residual Networks", 2020) as insightface arcface_torch builds it.

112×112 RGB -> 512-d embedding. The parameter and buffer names are insightface's, so a
`backbone.pth` saved by arcface_torch loads with `strict=True` (cosface.insightface imports one).

Layout: stem conv3×3 (stride 1) -> BN -> PReLU; four stages of 64/128/256/512 channels, each
starting with a stride-2 block; BN -> flatten -> dropout -> FC -> BatchNorm1d ("features", its scale
fixed at 1 and not trained). A block is BN -> conv3×3 -> BN -> PReLU -> conv3×3 (stride here) -> BN,
plus the identity or a 1×1 stride-2 conv + BN on the shortcut.

Architecture only. The one numeric policy kept from the reference: the FC and BatchNorm1d after the
body run in fp32 even under autocast (the reference wraps only the body in autocast), because the
embedding's last layers are where reduced precision costs accuracy and they are cheap.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from cosface.backbones import register_backbone

# Blocks per stage, as insightface's iresnet18 ... iresnet200.
DEPTHS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    def __init__(self, depths: tuple[int, int, int, int], embedding_size: int = 512, input_size: int = 112,
                 dropout: float = 0.0):
        super().__init__()
        self.embedding_size = embedding_size
        self.conv1 = _conv3x3(3, WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=BN_EPS)
        self.prelu = nn.PReLU(WIDTHS[0])
        stages = []
        cin = WIDTHS[0]
        for width, n in zip(WIDTHS, depths):
            stages.append(nn.Sequential(IBasicBlock(cin, width, stride=2), *(IBasicBlock(width, width) for _ in range(n - 1))))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        feat = input_size // 16                                     # four stride-2 stages: 112 -> 7
        self.bn2 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(cin * feat * feat, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)                 # insightface's init
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)                  # a fixed scale of 1, as the reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:           # (B, 3, 112, 112)
        x = self.prelu(self.bn1(self.conv1(x)))                      # (B, 64, 112, 112)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))    # (B, 512, 7, 7)
        x = self.dropout(self.bn2(x).flatten(1))                     # (B, 25088)
        with torch.autocast(x.device.type, enabled=False):
            return self.features(self.fc(x.float()))                 # (B, 512), fp32


def _register(name: str, depths: tuple[int, int, int, int]) -> None:
    def build(embedding_size: int = 512, input_size: int = 112, dropout: float = 0.0) -> IResNet:
        return IResNet(depths, embedding_size=embedding_size, input_size=input_size, dropout=dropout)

    build.__name__ = name
    build.__doc__ = f"insightface's {name}: blocks per stage {depths}."
    register_backbone(name)(build)


for _name, _depths in DEPTHS.items():
    _register(_name, _depths)
