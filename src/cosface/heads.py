"""Classification heads (class centres + margin loss) and their registry.

A head maps (embeddings (B, D), labels (B,)) -> mean loss. Heads that hold only part of the class
centres (cosface.parallel) implement the same contract plus `gather_rows`/`scatter_rows`, which the
checkpoint code uses so a head is always saved whole.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cosface.errors import CosfaceError
from cosface.losses import cosface_logits, normalized_cosines

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_head(name: str):
    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"head {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return deco


def available_heads() -> list[str]:
    return sorted(_REGISTRY)


def head_class(name: str):
    if name not in _REGISTRY:
        raise CosfaceError(f"unknown head type {name!r}; available: {', '.join(available_heads())}")
    return _REGISTRY[name]


@register_head("cosface")
class CosFaceHead(nn.Module):
    """Large Margin Cosine Loss over all classes on one process. No bias; Xavier-uniform centres."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 32.0, m: float = 0.40):
        super().__init__()
        self.num_classes, self.s, self.m = num_classes, s, m
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosface_logits(normalized_cosines(embeddings, self.weight), labels, self.s, self.m)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    # The whole table lives here, so saving and loading are identities.
    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def scatter_rows(self, full: torch.Tensor) -> torch.Tensor:
        return full
