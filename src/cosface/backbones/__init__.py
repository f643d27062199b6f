"""Backbone registry: `build_backbone(name, **kwargs)`; families register themselves on import."""
from __future__ import annotations

import inspect

import torch.nn as nn

from cosface.errors import CosfaceError
from cosface.registry import Registry

BACKBONES: Registry = Registry("backbone")
register_backbone = BACKBONES.register
available_backbones = BACKBONES.names


def build_backbone(name: str, **kwargs) -> nn.Module:
    return BACKBONES.get(name)(**kwargs)


def build_backbone_for(model_cfg) -> nn.Module:
    """The backbone a [model] config section describes (dropout only where the family has one)."""
    kwargs = dict(embedding_size=model_cfg.embedding_size, input_size=model_cfg.input_size)
    if model_cfg.dropout:
        if "dropout" not in inspect.signature(BACKBONES.get(model_cfg.backbone)).parameters:
            raise CosfaceError(f"model.dropout = {model_cfg.dropout} but {model_cfg.backbone} has no dropout layer; "
                               f"set model.dropout = 0")
        kwargs["dropout"] = model_cfg.dropout
    return build_backbone(model_cfg.backbone, **kwargs)


# Importing a family module registers its backbones.
from cosface.backbones import iresnet, mobilefacenet  # noqa: E402,F401
