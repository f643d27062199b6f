"""Classification heads (class centres + margin loss) and their registry.

A head maps (embeddings (B, D), labels (B,)) -> mean loss. Heads that hold only part of the class
centres (cosface.parallel) implement the same contract plus `gather_rows`/`scatter_rows`, which the
checkpoint code uses so a head is always saved whole.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cosface.losses import cosface_logits, normalized_cosines
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

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosface_logits(normalized_cosines(embeddings, self.weight), labels, self.s, self.m)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def margin_on_target(self, cos_t: torch.Tensor) -> torch.Tensor:
        """The target cosine after the margin, (B,) -> (B,): what cosface.margin_ce needs of a head."""
        return cos_t - self.m

    # The whole table lives here, so saving and loading are identities.
    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def scatter_rows(self, full: torch.Tensor) -> torch.Tensor:
        return full
