"""Fine-tuning's optimizer policy: the backbone's rate factor per epoch, BatchNorm fixed while frozen, and
momentum restarted at the thaw."""
import torch

from cosface.config import FinetuneConfig, ModelConfig
from cosface.finetune import FineTune


def test_freeze_then_thaw_with_a_lower_backbone_rate():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    head = torch.nn.Linear(4, 2)
    ft = FineTune(FinetuneConfig(freeze_backbone_epochs=2, backbone_lr_scale=0.1), ModelConfig())
    opt = torch.optim.SGD(ft.param_groups(backbone, head), lr=0.1, momentum=0.9)
    scales = []
    for epoch in range(4):
        backbone.train()
        for p in opt.param_groups[0]["params"]:
            opt.state[p] = {"momentum_buffer": torch.ones_like(p)}
        ft.begin_epoch(epoch, backbone, opt)
        scales.append([g["lr_scale"] for g in opt.param_groups])
        assert backbone[1].training == (epoch >= 2)
        assert (opt.param_groups[0]["params"][0] in opt.state) == (epoch != 2)   # cleared once, at the thaw
    assert scales == [[0.0, 1.0], [0.0, 1.0], [0.1, 1.0], [0.1, 1.0]]
