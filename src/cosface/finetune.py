"""Fine-tuning: start a new run from another checkpoint's backbone, optionally frozen or slower at first.

Unlike `--resume` (the same run continued: weights, optimizer, position and RNG), `--init-from` takes
only the backbone (and its preprocessing) and begins a new run at epoch 1 with a fresh optimizer. The
head is new, sized for this run's classes, unless the classes are exactly the checkpoint's: then its
class centres are kept too.

Freezing is done by a zero learning rate on the backbone's parameter group and BatchNorm in eval mode
(its statistics fixed), which changes nothing under DistributedDataParallel; gradients are still
computed, so a frozen epoch costs as long as any other. When the backbone thaws its momentum starts
from zero, not from the gradients gathered while frozen.
"""
from __future__ import annotations

from typing import Any

import torch

from cosface.checkpoint import checkpoint_config, load_checkpoint
from cosface.errors import CosfaceError
from cosface.preprocess import Preprocessing


class FineTune:
    def __init__(self, cfg, model_cfg):
        self.cfg, self.model_cfg = cfg, model_cfg
        self.ckpt = load_checkpoint(cfg.init_from) if cfg.init_from else None
        self.thawed = False
        if self.ckpt is not None:
            src = checkpoint_config(self.ckpt, cfg.init_from).model
            diff = [f"model.{k} is {getattr(src, k)!r} there, {getattr(model_cfg, k)!r} here"
                    for k in ("backbone", "embedding_size", "input_size") if getattr(src, k) != getattr(model_cfg, k)]
            if diff:
                raise CosfaceError(f"--init-from {cfg.init_from}: its backbone does not fit this config: "
                                   + ", ".join(diff) + " (set those keys to match)")
            if self.ckpt["preprocessing"].get("channel_order") != "RGB":
                raise CosfaceError(f"--init-from {cfg.init_from}: its backbone expects "
                                   f"{self.ckpt['preprocessing'].get('channel_order')} input; the trainer feeds RGB")

    def preprocessing(self, size: int) -> Preprocessing:
        """The init checkpoint's preprocessing (its weights expect it), else the default at `size`."""
        return Preprocessing.from_dict(self.ckpt["preprocessing"]) if self.ckpt is not None else Preprocessing(size=size)

    def init_weights(self, backbone: torch.nn.Module, head: Any, class_names: list[str],
                     resuming: bool) -> str | None:
        """Load the init checkpoint's backbone (and head, for identical classes); a note to print, or None."""
        if self.ckpt is None or resuming:
            return None
        try:
            backbone.load_state_dict(self.ckpt["backbone"])
        except RuntimeError as e:
            raise CosfaceError(f"--init-from {self.cfg.init_from}: backbone weights do not fit "
                               f"{self.model_cfg.backbone}: {str(e).splitlines()[0]}") from None
        same = list(self.ckpt["class_names"]) == list(class_names)
        if same:
            with torch.no_grad():
                for n, p in head.named_parameters():
                    p.copy_(head.scatter_rows(self.ckpt["head"][n]).to(p.device))
        head_note = ("kept its head (same classes)" if same else
                     f"new head for {len(class_names)} classes (it had {self.ckpt['num_classes']})")
        return f"fine-tuning from {self.cfg.init_from}: loaded its backbone, {head_note}" + self._schedule_note()

    def _schedule_note(self) -> str:
        parts = []
        if self.cfg.freeze_backbone_epochs:
            parts.append(f"backbone frozen for epochs 1..{self.cfg.freeze_backbone_epochs}")
        if self.cfg.backbone_lr_scale != 1:
            parts.append(f"backbone lr × {self.cfg.backbone_lr_scale:g}")
        return "; " + ", ".join(parts) if parts else ""

    def scaled(self, optimizer: torch.optim.Optimizer, backbone: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimizer with an `lr_scale` on every group (the trainer sets lr = schedule × lr_scale).

        Whatever groups `optimizer` has (one, or decay / no-decay), each is split into its backbone and
        its head part when the backbone's rate can differ, so its other options (weight decay...) are kept.
        """
        if not (self.cfg.freeze_backbone_epochs or self.cfg.backbone_lr_scale != 1):
            for g in optimizer.param_groups:
                g["lr_scale"], g["backbone"] = 1.0, False
            return optimizer
        in_backbone = {id(p) for p in backbone.parameters()}
        groups = []
        for g in optimizer.param_groups:
            options = {k: v for k, v in g.items() if k != "params"}
            for part in (True, False):
                params = [p for p in g["params"] if (id(p) in in_backbone) == part]
                if params:
                    groups.append({**options, "params": params, "backbone": part,
                                   "lr_scale": self.cfg.backbone_lr_scale if part else 1.0})
        return type(optimizer)(groups, **optimizer.defaults)

    def begin_epoch(self, epoch: int, backbone: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    start_step: int = 0) -> None:
        """Freeze (epoch is 0-based) or thaw the backbone for this epoch; call after model.train().
        `start_step` > 0: a run resumed inside the epoch, whose momentum since thawing came with the checkpoint."""
        frozen = epoch < self.cfg.freeze_backbone_epochs
        groups = [g for g in optimizer.param_groups if g["backbone"]]
        for g in groups:
            g["lr_scale"] = 0.0 if frozen else self.cfg.backbone_lr_scale
        if frozen:
            for m in backbone.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        elif (self.cfg.freeze_backbone_epochs and not self.thawed and epoch == self.cfg.freeze_backbone_epochs
              and start_step == 0):
            for g in groups:
                for p in g["params"]:
                    optimizer.state.pop(p, None)
        self.thawed = not frozen
