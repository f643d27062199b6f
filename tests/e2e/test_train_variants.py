"""The trainer with the faster step and loader variants learns like the plain trainer (CPU)."""
import json
import math

import pytest

from cosface.config import load_config
from cosface.trainer import train

BASE = ["train.batch_size=4", "train.epochs=1", "train.log_every=1", "checkpoint.save_start_epoch=1",
        "optim.lr=0.01"]


def _losses(out):
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in x]


def test_ring_loader_fused_sgd_and_blocked_head_in_the_trainer(image_folder, tmp_path):
    data = f"data.path='{image_folder}'"
    train(load_config(None, [data, *BASE, "data.workers=0", "optim.implementation='for-loop'"]), tmp_path / "plain",
          progress=False)
    train(load_config(None, [data, *BASE, "data.workers=2", "optim.implementation='fused'"]), tmp_path / "fast",
          progress=False)
    train(load_config(None, [data, *BASE, "data.workers=0", "head.class_chunk=3"]), tmp_path / "blocked",
          progress=False)
    ref = _losses(tmp_path / "plain")
    assert len(ref) == 6
    # Same batches from the ring, same update from the fused kernel: the very same numbers.
    assert _losses(tmp_path / "fast") == ref
    # The blocked loss sums classes in another order: equal at the first step; later steps carry the
    # rounding through BatchNorm over 4 images (tests/unit/test_step.py bounds it over three steps).
    blocked = _losses(tmp_path / "blocked")
    assert blocked[0] == pytest.approx(ref[0], rel=1e-6) and blocked[1] == pytest.approx(ref[1], rel=1e-4)
    assert len(blocked) == 6 and all(math.isfinite(x) for x in blocked)
