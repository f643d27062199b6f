"""Margin math, pure functions of cosines: no parameters, no process groups.

CosFace (Wang et al., CVPR 2018): logits = s * (cos(theta_j) - m * [j == y]). With m = 0 this is the
normalised-softmax (NormFace) logit, which the margin benchmark uses as its baseline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosface_logits(cos: torch.Tensor, labels: torch.Tensor, s: float, m: float) -> torch.Tensor:
    """(B, C) cosines, (B,) labels in [0, C) -> (B, C) scaled logits with the margin on each target."""
    margin = torch.zeros_like(cos).scatter_(1, labels.view(-1, 1), m)
    return s * (cos - margin)


def normalized_cosines(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, D) embeddings, (C, D) class centres -> (B, C) cosines, in fp32 whatever the input dtype."""
    x = F.normalize(embeddings.float(), dim=1)
    w = F.normalize(weight.float(), dim=1)
    return x @ w.t()
