"""Fine-tuning's optimizer policy: the backbone's rate factor per epoch, BatchNorm fixed while frozen, and
momentum restarted at the thaw."""
import torch

from cosface.config import FinetuneConfig, ModelConfig
from cosface.finetune import FineTune


def test_freeze_then_thaw_with_a_lower_backbone_rate():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    head = torch.nn.Linear(4, 2)
    ft = FineTune(FinetuneConfig(freeze_backbone_epochs=2, backbone_lr_scale=0.1), ModelConfig())
    # Two groups going in (decay / no decay, as optim.no_decay_bn_prelu builds them): four coming out.
    decay = [backbone[0].weight, head.weight]
    no_decay = [backbone[0].bias, backbone[1].weight, backbone[1].bias, head.bias]
    opt = ft.scaled(torch.optim.SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.1,
                                    momentum=0.9, weight_decay=5e-4), backbone)
    assert [(g["backbone"], len(g["params"]), g["weight_decay"]) for g in opt.param_groups] == [
        (True, 1, 5e-4), (False, 1, 5e-4), (True, 3, 0.0), (False, 1, 0.0)]
    scales = []
    for epoch in range(4):
        backbone.train()
        for p in [*backbone.parameters(), head.weight]:
            opt.state[p] = {"momentum_buffer": torch.ones_like(p)}
        ft.begin_epoch(epoch, backbone, opt)
        scales.append([g["lr_scale"] for g in opt.param_groups])
        assert backbone[1].training == (epoch >= 2)
        assert (opt.param_groups[0]["params"][0] in opt.state) == (epoch != 2)   # cleared once, at the thaw
        assert head.weight in opt.state
    assert scales == [[0.0, 1.0, 0.0, 1.0]] * 2 + [[0.1, 1.0, 0.1, 1.0]] * 2


def test_without_fine_tuning_options_the_optimizer_is_untouched():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert FineTune(FinetuneConfig(), ModelConfig()).scaled(opt, model) is opt and opt.param_groups[0]["lr_scale"] == 1.0
