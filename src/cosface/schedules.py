"""Learning-rate schedules as pure functions of training progress (epochs as a float).

Being pure, a resumed run needs no scheduler state: the step counter gives the same rate.
"""
from __future__ import annotations

import bisect
import math

from cosface.config import ScheduleConfig
from cosface.registry import Registry

SCHEDULES: Registry = Registry("schedule")
register_schedule = SCHEDULES.register
available_schedules = SCHEDULES.names


def learning_rate(cfg: ScheduleConfig, base_lr: float, epoch: float, total_epochs: int) -> float:
    """Rate at `epoch` (e.g. 3.25 = a quarter into the fourth epoch), warm-up included."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return base_lr * epoch / cfg.warmup_epochs
    return SCHEDULES.get(cfg.name)(cfg, base_lr, epoch, total_epochs)


@register_schedule("constant")
def _constant(cfg, base_lr, epoch, total_epochs):
    return base_lr


@register_schedule("multistep")
def _multistep(cfg, base_lr, epoch, total_epochs):
    # Epoch e (0-based, integer part) runs at base * gamma^(milestones <= e), as the reference's
    # per-epoch table: with milestones 36/48/60 the 37th epoch is the first at 0.01.
    return base_lr * cfg.gamma ** bisect.bisect_right(cfg.milestones, int(epoch))


@register_schedule("cosine")
def _cosine(cfg, base_lr, epoch, total_epochs):
    span = max(total_epochs - cfg.warmup_epochs, 1e-12)
    t = min(max(epoch - cfg.warmup_epochs, 0.0) / span, 1.0)
    return cfg.min_lr + 0.5 * (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


@register_schedule("poly")
def _poly(cfg, base_lr, epoch, total_epochs):
    # insightface arcface_torch's default (PolynomialLRWarmup, power 1): after the warm-up the rate
    # falls as (1 − t)^power to 0 at the end of training.
    span = max(total_epochs - cfg.warmup_epochs, 1e-12)
    t = min(max(epoch - cfg.warmup_epochs, 0.0) / span, 1.0)
    return base_lr * (1.0 - t) ** cfg.power
