"""Classification heads (class centres + margin loss) and their registry.

A head maps (embeddings (B, D), labels (B,)) -> mean loss. Heads that hold only part of the class
centres (cosface.parallel) implement the same contract plus `gather_rows`/`scatter_rows`, which the
checkpoint code uses so a head is always saved whole. Every registered head type has
`from_config(head_cfg, num_classes, embedding_size)`; `build_head` calls it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cosface.losses import Margin, cosface_logits, margin_for, margin_logits, normalized_cosines
from cosface.registry import Registry

HEADS: Registry = Registry("head type")
register_head = HEADS.register
available_heads = HEADS.names
head_class = HEADS.get


@register_head("cosface")
class CosFaceHead(nn.Module):
    """Large Margin Cosine Loss over all classes on one process. No bias; Xavier-uniform centres."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 32.0, m: float = 0.40):
        super().__init__()
        self.num_classes, self.s, self.m = num_classes, s, m
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)

    @classmethod
    def from_config(cls, cfg, num_classes: int, embedding_size: int) -> nn.Module:
        return cls(num_classes, embedding_size, s=cfg.s, m=cfg.m)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosface_logits(normalized_cosines(embeddings, self.weight), labels, self.s, self.m)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    # The whole table lives here, so saving and loading are identities.
    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def scatter_rows(self, full: torch.Tensor) -> torch.Tensor:
        return full


class MarginHead(nn.Module):
    """Softmax over s·cos with a cosface.losses.Margin on each target, all classes on one process.
    No bias; Xavier-uniform centres, as CosFaceHead."""

    def __init__(self, num_classes: int, embedding_size: int, s: float, margin: Margin):
        super().__init__()
        self.num_classes, self.s, self.margin = num_classes, s, margin
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)

    @classmethod
    def from_config(cls, cfg, num_classes: int, embedding_size: int) -> nn.Module:
        return MarginHead(num_classes, embedding_size, s=cfg.s, margin=margin_for(cfg))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, s={self.s}, margin {self.margin.describe()}"

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return margin_logits(normalized_cosines(embeddings, self.weight), labels, self.s, self.margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def scatter_rows(self, full: torch.Tensor) -> torch.Tensor:
        return full


@register_head("arcface")
class ArcFaceHead(MarginHead):
    """ArcFace (additive angular margin): target logit s·cos(θ + m)."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0, m: float = 0.5):
        super().__init__(num_classes, embedding_size, s, Margin(1.0, m, 0.0))


@register_head("combined")
class CombinedMarginHead(MarginHead):
    """insightface's combined margin: target logit s·(cos(m1·θ + m2) − m3)."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0,
                 m1: float = 1.0, m2: float = 0.5, m3: float = 0.0):
        super().__init__(num_classes, embedding_size, s, Margin(m1, m2, m3))


@register_head("softmax")
class NormSoftmaxHead(MarginHead):
    """Normalised softmax (NormFace): s·cos θ for every class, no margin."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 32.0):
        super().__init__(num_classes, embedding_size, s, Margin())


def build_head(head_cfg, num_classes: int, embedding_size: int) -> nn.Module:
    """The one-process head of a [head] config section."""
    return head_class(head_cfg.type).from_config(head_cfg, num_classes, embedding_size)
