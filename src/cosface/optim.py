"""The optimizer the [optim] section describes, and gradient clipping: the recipe options the
trainer calls at one line each.

Weight decay exclusion (`optim.no_decay_bn_prelu`): BatchNorm scales/shifts, PReLU slopes and biases
get weight_decay = 0; convolution/linear weights and the head's class centres keep it. The groups
are chosen by module type, not by name, so it works for any backbone.
"""
from __future__ import annotations

import torch
import torch.nn as nn

_NO_DECAY_MODULES = (nn.modules.batchnorm._NormBase, nn.PReLU, nn.GroupNorm, nn.LayerNorm)


def decay_groups(modules: list[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) trainable parameters of `modules`, each parameter once, in module order."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                (no_decay if isinstance(sub, _NO_DECAY_MODULES) or name == "bias" else decay).append(p)
    return decay, no_decay


def build_optimizer(cfg, backbone: nn.Module, head: nn.Module) -> torch.optim.Optimizer:
    """SGD over the backbone and head from an [optim] config section."""
    kwargs = dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if not cfg.no_decay_bn_prelu:
        return torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), **kwargs)
    decay, no_decay = decay_groups([backbone, head])
    groups: list[dict] = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, **kwargs)


def clip_gradients(cfg, backbone: nn.Module, optimizer: torch.optim.Optimizer, scaler=None) -> float | None:
    """With optim.clip_grad_norm > 0, clip the backbone's gradient norm (as insightface, which leaves
    the head alone: a class-sharded head's norm would need a collective). Unscales fp16 gradients
    first. Returns the norm before clipping, or None when clipping is off."""
    if cfg.clip_grad_norm <= 0:
        return None
    if scaler is not None:
        scaler.unscale_(optimizer)
    return float(torch.nn.utils.clip_grad_norm_(backbone.parameters(), cfg.clip_grad_norm))
