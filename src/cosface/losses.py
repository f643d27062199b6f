"""Margin math, pure functions of cosines: no parameters, no process groups.

Every margin here changes only the target logit. Other classes get s·cos(θ_j); the target gets
s·f(cos θ_y) with

    CosFace (Wang et al., CVPR 2018)          f = cos θ − m
    ArcFace (Deng et al., CVPR 2019)          f = cos(θ + m)
    combined (insightface's (m1, m2, m3))     f = cos(m1·θ + m2) − m3
    normalised softmax (NormFace)             f = cos θ

so CosFace is (1, 0, m), ArcFace (1, m, 0) and the normalised softmax (1, 0, 0) of the combined form.
Where the angular margin would push the angle past π (m1·θ + m2 > π, i.e. θ > θ* = (π − m2)/m1) cos(·)
stops decreasing, so the target would *gain* from a worse angle; there f = cos θ − p − m3 instead, with
p = max(m2·sin(m2), 1 + cos θ*). For m1 = 1 that is insightface's original ArcFace fallback
(easy_margin = False: cos θ − m·sin m past π − m); p never leaves f above its value −1 − m3 at θ*, which
m2·sin(m2) alone would for m1 > 1 (m1 = 1.35, m2 = 0: a jump from −1 up to cos θ* ≈ −0.686). So f never
increases with θ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cosface.registry import Registry

# arccos has an infinite slope at ±1; a cosine is moved this far inside before taking it.
_ACOS_EPS = 1e-6


@dataclass(frozen=True)
class Margin:
    """insightface's (m1, m2, m3): the target cosine becomes cos(m1·θ + m2) − m3."""

    m1: float = 1.0
    m2: float = 0.0
    m3: float = 0.0

    @property
    def angular(self) -> bool:
        return self.m1 != 1.0 or self.m2 != 0.0

    def target(self, cos_y: torch.Tensor) -> torch.Tensor:
        """(N,) target cosines -> (N,) margin-adjusted target cosines (unscaled)."""
        if not self.angular:                       # CosFace / plain softmax: no arccos, exact gradients at ±1
            return cos_y - self.m3
        theta = torch.acos(cos_y.clamp(-1 + _ACOS_EPS, 1 - _ACOS_EPS))
        shifted = self.m1 * theta + self.m2
        fallback = cos_y - self.fallback_penalty
        return torch.where(shifted <= math.pi, torch.cos(shifted), fallback) - self.m3

    @property
    def fallback_penalty(self) -> float:
        """What the target cosine loses past θ* = (π − m2)/m1 (see the module docstring)."""
        return max(self.m2 * math.sin(self.m2), 1.0 + math.cos((math.pi - self.m2) / self.m1))

    def describe(self) -> str:
        return f"(m1, m2, m3) = ({self.m1:g}, {self.m2:g}, {self.m3:g})"


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, s: float, margin: Margin) -> torch.Tensor:
    """(B, C) cosines, (B,) labels in [0, C) -> (B, C) scaled logits with `margin` on each target."""
    rows = torch.arange(cos.shape[0], device=cos.device)
    target = margin.target(cos[rows, labels])                           # (B,)
    return s * cos.index_put((rows, labels), target)


def cosface_logits(cos: torch.Tensor, labels: torch.Tensor, s: float, m: float) -> torch.Tensor:
    """(B, C) cosines, (B,) labels in [0, C) -> (B, C) scaled logits with the margin on each target."""
    margin = torch.zeros_like(cos).scatter_(1, labels.view(-1, 1), m)
    return s * (cos - margin)


def arcface_logits(cos: torch.Tensor, labels: torch.Tensor, s: float, m: float) -> torch.Tensor:
    """ArcFace: s·cos(θ_y + m) on each target (with the fallback past π), s·cos θ_j elsewhere."""
    return margin_logits(cos, labels, s, Margin(1.0, m, 0.0))


def combined_margin_logits(cos: torch.Tensor, labels: torch.Tensor, s: float,
                           m1: float, m2: float, m3: float) -> torch.Tensor:
    """insightface's combined margin: s·(cos(m1·θ_y + m2) − m3) on each target, s·cos θ_j elsewhere."""
    return margin_logits(cos, labels, s, Margin(m1, m2, m3))


def normface_logits(cos: torch.Tensor, labels: torch.Tensor, s: float) -> torch.Tensor:
    """Normalised softmax (m = 0): s·cos θ_j for every class; `labels` only for a uniform signature."""
    return s * cos


def normalized_cosines(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, D) embeddings, (C, D) class centres -> (B, C) cosines, in fp32 whatever the input dtype."""
    x = F.normalize(embeddings.float(), dim=1)
    w = F.normalize(weight.float(), dim=1)
    return x @ w.t()


# head.type -> the Margin its config section means. Both the one-process and the class-sharded head
# read margins from here, so a new margin type is one entry.
MARGINS: Registry = Registry("head type")
register_margin = MARGINS.register


@register_margin("cosface")
def _cosface(cfg) -> Margin:
    return Margin(1.0, 0.0, cfg.m)


@register_margin("arcface")
def _arcface(cfg) -> Margin:
    return Margin(1.0, cfg.m, 0.0)


@register_margin("combined")
def _combined(cfg) -> Margin:
    return Margin(cfg.m1, cfg.m2, cfg.m3)


@register_margin("softmax")
def _softmax(cfg) -> Margin:
    return Margin(1.0, 0.0, 0.0)


def margin_text(head_cfg) -> str:
    """The margin as the trainer's start line shows it: `m=` for CosFace and ArcFace, (m1, m2, m3) otherwise."""
    return f"m={head_cfg.m}" if head_cfg.type in ("cosface", "arcface") else margin_for(head_cfg).describe()


def margin_for(head_cfg) -> Margin:
    """The Margin of a [head] config section (its `type`, `m`, `m1`, `m2`, `m3`)."""
    return MARGINS.get(head_cfg.type)(head_cfg)
