"""Backbone registry: `build_backbone(name, **kwargs)`; families register themselves on import."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from cosface.errors import CosfaceError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise CosfaceError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    return _REGISTRY[name](**kwargs)


# Importing a family module registers its backbones.
from cosface.backbones import mobilefacenet  # noqa: E402,F401
