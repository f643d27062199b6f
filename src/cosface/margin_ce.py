"""Margin softmax cross-entropy computed over blocks of classes, never holding the (B, C) logits.

The plain head builds cosines (B, C), a margin matrix, scaled logits and log-softmax, each a (B, C)
tensor, and autograd keeps several of them until backward. Here the forward pass visits the class
centres `chunk` rows at a time with an online log-sum-exp, keeping only (B,) running sums, and the
backward pass recomputes each block's cosines to form its gradient: one (B, chunk) block is alive at
a time, in fp32 whatever the autocast policy.

Margins plug in as pure functions of the target cosine, `margin(cos_t) -> cos_t'` on (B,) tensors
(CosFace: cos_t - m; ArcFace: cos(acos(cos_t) + m); both as in cosface.losses), differentiated by
autograd on those B numbers. Every non-target logit is s * cos, which holds for these margin families.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def margin_cross_entropy(embeddings: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, s: float,
                         margin: Callable[[torch.Tensor], torch.Tensor], chunk: int) -> torch.Tensor:
    """Mean over the batch of -log softmax(logits)[y], logits_j = s·cos_j off target, s·margin(cos_y) on it.

    embeddings (B, D), weight (C, D) class centres (un-normalised), labels (B,) in [0, C), chunk > 0
    classes per block. Equal, up to rounding, to cross_entropy of a head's full logits.
    """
    if chunk <= 0:
        raise ValueError(f"chunk must be > 0, got {chunk}")
    with torch.autocast(embeddings.device.type, enabled=False):
        xn = F.normalize(embeddings.float(), dim=1)                      # (B, D)
        wn = F.normalize(weight.float(), dim=1)                          # (C, D)
        cos_t = (xn * wn[labels]).sum(dim=1)                             # (B,)
        target_logit = s * margin(cos_t)                                 # (B,)
        return _BlockedMarginCE.apply(xn, wn, labels, target_logit, float(s), int(chunk))


def _block_logits(xn, wn, labels, s: float, c0: int, c1: int) -> torch.Tensor:
    """s·cos for classes [c0, c1) with each row's target column (when in the block) set to -inf.

    Written with gather/scatter on B numbers rather than a boolean index, so nothing waits on the device.
    """
    z = torch.mm(xn, wn[c0:c1].t()).mul_(s)                              # (B, c1 - c0)
    inside = (labels >= c0) & (labels < c1)
    col = (labels - c0).clamp_(0, c1 - c0 - 1).unsqueeze(1)              # (B, 1)
    keep = z.gather(1, col)
    z.scatter_(1, col, torch.where(inside.unsqueeze(1), torch.full_like(keep, float("-inf")), keep))
    return z


class _BlockedMarginCE(torch.autograd.Function):
    """Inputs already normalised; the target logits arrive computed (so the margin stays in autograd)."""

    @staticmethod
    def forward(ctx, xn, wn, labels, target_logit, s: float, chunk: int):
        num_classes = wn.shape[0]
        run_max = target_logit.detach().clone()                          # (B,) running max
        run_sum = torch.ones_like(run_max)                               # sum of exp(logit - run_max)
        for c0 in range(0, num_classes, chunk):
            z = _block_logits(xn, wn, labels, s, c0, min(c0 + chunk, num_classes))
            new_max = torch.maximum(run_max, z.amax(dim=1))
            run_sum.mul_((run_max - new_max).exp_()).add_(z.sub_(new_max.unsqueeze(1)).exp_().sum(dim=1))
            run_max = new_max
        lse = run_max + run_sum.log()                                    # (B,)
        ctx.save_for_backward(xn, wn, labels, target_logit, lse)
        ctx.s, ctx.chunk = s, chunk
        return (lse - target_logit).mean()

    @staticmethod
    def backward(ctx, grad_loss):
        xn, wn, labels, target_logit, lse = ctx.saved_tensors
        s, chunk = ctx.s, ctx.chunk
        num_classes, b = wn.shape[0], xn.shape[0]
        g = grad_loss / b
        grad_xn = torch.zeros_like(xn)
        grad_wn = torch.empty_like(wn)
        for c0 in range(0, num_classes, chunk):
            c1 = min(c0 + chunk, num_classes)
            # d loss / d cos_j = s · softmax_j / B off target (the target column is 0 here: exp(-inf)).
            p = _block_logits(xn, wn, labels, s, c0, c1).sub_(lse.unsqueeze(1)).exp_().mul_(g * s)
            grad_xn.addmm_(p, wn[c0:c1])
            torch.mm(p.t(), xn, out=grad_wn[c0:c1])
        grad_target = g * ((target_logit - lse).exp() - 1)               # (B,)
        return grad_xn, grad_wn, None, grad_target, None, None
