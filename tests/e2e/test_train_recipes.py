"""The recipe presets and options in a real (tiny) training run."""
import json

import pytest
import torch

from cosface.checkpoint import load_backbone, load_checkpoint
from cosface.config import load_config
from cosface.train import train


def test_ms1mv3_r50_arcface_preset_trains_at_tiny_size_with_every_recipe_option(image_folder, tmp_path):
    # The preset as shipped, shrunk: iresnet18 instead of 50 and 16-px inputs keep it to seconds on a CPU.
    cfg = load_config("ms1mv3_r50_arcface", [
        f"data.path='{image_folder}'", "data.num_classes=0", "data.workers=0", "model.backbone='iresnet18'",
        "model.input_size=16", "model.dropout=0.2", "train.epochs=2", "train.batch_size=8", "train.amp='none'",
        "train.log_every=1", "optim.no_decay_bn_prelu=true", "schedule.warmup_epochs=0.5"])
    assert (cfg.head.type, cfg.schedule.name, cfg.optim.clip_grad_norm) == ("arcface", "poly", 5.0)
    result = train(cfg, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["type"] == "step"]
    # 24 images / batch 8 = 3 steps per epoch; lr 0.1 × 8 / 1024 (scaled with the global batch), warm-up over
    # half an epoch, then the poly decay to 0 at the end of epoch 2.
    base = 0.1 * 8 / 1024
    assert lrs == pytest.approx([0.0, base * (1 / 3) / 0.5, base * (1 - (2 / 3 - 0.5) / 1.5),
                                 base * (1 - 0.5 / 1.5), base * (1 - (4 / 3 - 0.5) / 1.5), base * (1 - (5 / 3 - 0.5) / 1.5)])
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt["config"]["head"]["type"] == "arcface" and ckpt["head"]["weight"].shape == (4, 512)
    assert torch.equal(ckpt["backbone"]["features.weight"], torch.ones(512))      # fixed scale: never trained
    model, prep, _ = load_backbone(result.last_checkpoint)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 512)


def test_combined_margin_head_trains_and_records_its_margin(image_folder, tmp_path):
    cfg = load_config(None, [f"data.path='{image_folder}'", "data.workers=0", "train.epochs=1", "train.batch_size=8",
                             "model.input_size=32", "head.type='combined'", "head.m1=1.0", "head.m2=0.3",
                             "head.m3=0.1", "optim.clip_grad_norm=1.0"])
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.final_loss > 0 and load_checkpoint(result.last_checkpoint)["config"]["head"]["m2"] == 0.3
