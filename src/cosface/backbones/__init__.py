"""Backbone registry: `build_backbone(name, **kwargs)`; families register themselves on import."""
from __future__ import annotations

import torch.nn as nn

from cosface.registry import Registry

BACKBONES: Registry = Registry("backbone")
register_backbone = BACKBONES.register
available_backbones = BACKBONES.names


def build_backbone(name: str, **kwargs) -> nn.Module:
    return BACKBONES.get(name)(**kwargs)


# Importing a family module registers its backbones.
from cosface.backbones import mobilefacenet  # noqa: E402,F401
