"""MobileFaceNet (Chen et al. 2018) as the reference builds it: 112×112 RGB -> 128-d embedding.

Architecture only: no normalisation of the output, no dtype or device policy.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from cosface.backbones import register_backbone

# (expansion t, output channels c, repeats n, first stride s)
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def conv_bn(cin: int, cout: int, k: int, s: int, p: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))  # per channel, init slope 0.25
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            conv_bn(cin, hidden, 1, 1, 0),
            conv_bn(hidden, hidden, 3, stride, 1, groups=hidden),
            conv_bn(hidden, cout, 1, 1, 0, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileFaceNet(nn.Module):
    def __init__(self, embedding_size: int = 128, input_size: int = 112,
                 bottlenecks: tuple = BOTTLENECKS, width: int = 64, final_channels: int = 512):
        super().__init__()
        self.embedding_size = embedding_size
        self.stem = nn.Sequential(
            conv_bn(3, width, 3, 2, 1),
            conv_bn(width, width, 3, 1, 1, groups=width),
        )
        blocks = []
        cin = width
        for t, c, n, s in bottlenecks:
            for i in range(n):
                blocks.append(Bottleneck(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.conv_expand = conv_bn(cin, final_channels, 1, 1, 0)
        feat = input_size // 16  # four stride-2 stages: 112 -> 7
        self.gdc = conv_bn(final_channels, final_channels, feat, 1, 0, groups=final_channels, act=False)
        self.embed = conv_bn(final_channels, embedding_size, 1, 1, 0, act=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 112, 112)
        x = self.stem(x)                                  # (B, 64, 56, 56)
        x = self.blocks(x)                                # (B, 128, 7, 7)
        x = self.conv_expand(x)                           # (B, 512, 7, 7)
        x = self.gdc(x)                                   # (B, 512, 1, 1)
        return self.embed(x).flatten(1)                   # (B, 128)


@register_backbone("mobilefacenet")
def mobilefacenet(embedding_size: int = 128, input_size: int = 112) -> MobileFaceNet:
    """The reference network: 1,003,136 trainable parameters at 128-d."""
    return MobileFaceNet(embedding_size=embedding_size, input_size=input_size)
