"""Tiny runs of the watching-and-trusting features: held-out validation choosing best.pt (also across a
resume), TensorBoard holding the metrics, fine-tuning from a checkpoint, and the Python API on the demo."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import cosface
from cosface.checkpoint import list_checkpoints, load_checkpoint
from cosface.cli import main as cli
from cosface.config import load_config
from cosface.errors import CosfaceError
from cosface.trainer import train
from cosface.validation import Validator

from image_folders import write_image_folder

# 64-pixel inputs: a quarter of the work of 112 per step, the same code.
TINY = ["model.input_size=64", "train.batch_size=8", "data.workers=0", "train.log_every=1",
        "checkpoint.save_start_epoch=1", "checkpoint.save_every_epochs=1", "schedule.name='constant'",
        "optim.lr=0.01"]
REAL_EVALUATE = Validator.evaluate


def tiny(data, *extra):
    return load_config(None, [*TINY, f"data.path='{data}'", *extra])


def force_accuracy(monkeypatch, by_epoch: dict):
    """Validation runs for real (embedding the held-out pairs), then its fold accuracies are replaced."""
    calls = []

    def forced(self, embed_fn, **kw):
        report = REAL_EVALUATE(self, embed_fn, **kw)
        calls.append(report)
        value = by_epoch[len(calls) + forced.offset]
        return dataclasses.replace(report, folds=np.full(len(report.folds), value))

    forced.offset = 0
    monkeypatch.setattr(Validator, "evaluate", forced)
    return forced


def test_best_follows_validation_across_a_resume_and_tensorboard_holds_the_metrics(tmp_path, monkeypatch):
    data = write_image_folder(tmp_path / "data", classes=6, per_class=4)
    cfg = tiny(data, "train.epochs=3", "data.val_identities=2", "checkpoint.select='val'", "log.tensorboard=true")
    force_accuracy(monkeypatch, {1: 0.6, 2: 0.9, 3: 0.7})
    out = tmp_path / "run"
    result = train(cfg, out, progress=False)

    held = (out / "val_identities.txt").read_text().split()
    trained = (out / "classes.txt").read_text().split()
    assert len(held) == 2 and len(trained) == 4 and not set(held) & set(trained)
    assert load_checkpoint(result.last_checkpoint)["class_names"] == trained
    assert result.best_checkpoint == out / "checkpoints" / "best.pt"
    best = load_checkpoint(result.best_checkpoint)
    assert best["best"]["epoch"] == 2 and best["best"]["value"] == pytest.approx(0.9)
    assert best["best"]["copy_of"] == "epoch_002.pt" and best["epoch"] == 2
    epoch2 = load_checkpoint(out / "checkpoints" / "epoch_002.pt")
    assert all(torch.equal(best["backbone"][k], epoch2["backbone"][k]) for k in epoch2["backbone"])
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt"]

    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in records if r["type"] == "val"]
    assert [r["val_mean"] for r in vals] == pytest.approx([0.6, 0.9, 0.7])
    assert vals[0]["val_pairs"] == 20 and set(vals[0]["val_tar_at_far"]) == {"0.1", "0.01", "0.001"}
    assert [r["epoch"] for r in records if r["type"] == "best"] == [1, 2]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("val/val_mean")] == pytest.approx([0.6, 0.9, 0.7])
    steps = [r for r in records if r["type"] == "step"]
    assert [(e.step, e.value) for e in acc.Scalars("step/loss")] == [(r["global_step"], pytest.approx(r["loss"])) for r in steps]
    assert {"step/lr", "step/images_per_s", "epoch/loss", "val/val_auc", "val/val_tar_at_far/0.1"} <= set(acc.Tags()["scalars"])
    # 20 pairs cannot measure FAR 1e-3: metrics.jsonl says null and TensorBoard gets no point for it
    assert vals[0]["val_tar_at_far"]["0.001"] is None and "val/val_tar_at_far/0.001" not in acc.Tags()["scalars"]

    # A run stopped after epoch 2: resuming keeps the held-out identities and compares against the
    # recorded best (0.9), so a lower epoch-3 value (0.85) must not replace best.pt.
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    for name in ("epoch_002.pt", "best.pt"):
        shutil.copy(out / "checkpoints" / name, cut / "checkpoints")
    shutil.copy(out / "val_identities.txt", cut)
    force_accuracy(monkeypatch, {3: 0.85}).offset = 2
    resumed = train(cfg, cut, resume="auto", progress=False)
    assert (cut / "val_identities.txt").read_text().split() == held
    assert load_checkpoint(resumed.best_checkpoint)["best"]["epoch"] == 2
    with pytest.raises(CosfaceError, match="other held-out identities"):
        train(cfg.replace(**{"train.seed": 5}), cut, resume="auto", progress=False)
    with pytest.raises(CosfaceError, match=r"differs in data.val_pairs, .*All differences: data.val_pairs: 6000 -> 100; "
                                           r"optim.lr: 0.01 -> 0.02"):
        train(cfg.replace(**{"data.val_pairs": 100, "optim.lr": 0.02}), cut, resume="auto", progress=False)


def test_a_save_not_yet_copied_to_best_is_offered_again_on_resuming(tmp_path, monkeypatch):
    data = write_image_folder(tmp_path / "data", classes=6, per_class=4, size=64)
    cfg = tiny(data, "train.epochs=2", "data.val_identities=2", "checkpoint.select='val'", "model.input_size=32")
    force_accuracy(monkeypatch, {1: 0.9, 2: 0.7})
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    # Killed after writing epoch_001.pt, before copying it to best.pt (the first best.pt of the run).
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "checkpoints" / "epoch_001.pt", cut / "checkpoints")
    shutil.copy(out / "val_identities.txt", cut)
    force_accuracy(monkeypatch, {2: 0.7}).offset = 1
    resumed = train(cfg, cut, resume="auto", progress=False)
    best = load_checkpoint(resumed.best_checkpoint)["best"]
    assert (best["epoch"], best["copy_of"], best["value"]) == (1, "epoch_001.pt", pytest.approx(0.9))
    records = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "best"] == [1]


def test_resume_auto_falls_back_to_best_when_every_epoch_checkpoint_is_unusable(tmp_path, capsys):
    data = write_image_folder(tmp_path / "data", classes=6, per_class=4, size=64)
    cfg = tiny(data, "train.epochs=1", "data.val_identities=2", "checkpoint.select='val'", "model.input_size=32")
    out = tmp_path / "run"
    first = train(cfg, out, progress=False)
    ckpts = out / "checkpoints"
    (ckpts / "epoch_001.pt").write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    resumed = train(cfg.replace(**{"train.epochs": 2}), out, resume="auto", progress=False)
    said = capsys.readouterr().out
    assert f"--resume auto: skipping {ckpts / 'epoch_001.pt'}: checkpoint" in said
    assert f"every epoch_*.pt checkpoint in {ckpts} is unusable; resuming from best.pt" in said
    assert (f"resumed from {ckpts / 'best.pt'}, a copy of epoch_001.pt (epoch 2, step 0, global step "
            f"{first.global_step})") in said
    assert resumed.last_checkpoint == ckpts / "epoch_002.pt" and resumed.global_step == 2 * first.global_step

    # best.pt unusable too: one line naming every skipped file, not a silent fresh start.
    (ckpts / "epoch_002.pt").write_bytes(b"PK\x03\x04 truncated")
    (ckpts / "best.pt").write_bytes(b"")
    with pytest.raises(CosfaceError, match=rf"^--resume auto: no usable checkpoint in {ckpts} \(skipped epoch_002.pt, "
                                           rf"epoch_001.pt, best.pt\); resume from a good file with --resume PATH, "
                                           rf"or start over with --overwrite"):
        train(cfg.replace(**{"train.epochs": 3}), out, resume="auto", progress=False)


def test_init_from_starts_a_new_head_and_keeps_the_frozen_backbone(tmp_path, capsys):
    data = write_image_folder(tmp_path / "data", classes=4, per_class=4)
    first = train(tiny(data, "train.epochs=1"), tmp_path / "a", progress=False)
    other = write_image_folder(tmp_path / "other", classes=3, per_class=4, seed=1)
    sets = [a for kv in [*TINY, "train.epochs=2", "finetune.freeze_backbone_epochs=1", "finetune.backbone_lr_scale=0.5"]
            for a in ("--set", kv)]
    rc = cli(["train", "--data", str(other), "--out", str(tmp_path / "b"), "--no-progress",
              "--init-from", str(first.last_checkpoint), *sets])
    assert rc == 0
    said = capsys.readouterr().out
    assert "loaded its backbone, new head for 3 classes (it had 4); backbone frozen for epochs 1..1, backbone lr × 0.5" in said
    init = load_checkpoint(first.last_checkpoint)
    frozen = load_checkpoint(tmp_path / "b" / "checkpoints" / "epoch_001.pt")
    thawed = load_checkpoint(tmp_path / "b" / "checkpoints" / "epoch_002.pt")
    assert frozen["head"]["weight"].shape == (3, 128) and init["head"]["weight"].shape == (4, 128)
    assert frozen["epoch"] == 1 and frozen["global_step"] == 1       # a new run, not a resume
    for k, v in init["backbone"].items():                        # BN statistics included
        assert torch.equal(frozen["backbone"][k], v), k
    assert not torch.equal(thawed["backbone"]["stem.0.0.weight"], init["backbone"]["stem.0.0.weight"])
    with pytest.raises(CosfaceError, match="model.embedding_size is 128 there, 64 here"):
        train(tiny(other, "model.embedding_size=64", f"finetune.init_from='{first.last_checkpoint}'"),
              tmp_path / "c", progress=False)


def test_a_run_resumed_inside_its_thaw_epoch_keeps_the_momentum_gathered_since_thawing(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=4, per_class=6, size=64)
    first = train(tiny(data, "train.epochs=1", "model.input_size=32"), tmp_path / "a", progress=False)
    cfg = tiny(data, "train.epochs=2", "model.input_size=32", "train.batch_size=4", "checkpoint.save_every_steps=4",
               f"finetune.init_from='{first.last_checkpoint}'", "finetune.freeze_backbone_epochs=1")
    full = tmp_path / "full"
    train(cfg, full, progress=False)
    # Stopped after the save at step 8, two steps into epoch 2 (the first thawed one).
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "epoch_002_step_00000008.pt", cut / "checkpoints")
    a = load_checkpoint(full / "checkpoints" / "epoch_002.pt")
    b = load_checkpoint(train(cfg, cut, resume="auto", progress=False).last_checkpoint)
    for part in ("backbone", "head"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"


def test_python_api_trains_the_demo_and_evaluates(tmp_path):
    from cosface.data.synthetic import generate

    import cosface.trainer  # noqa: F401  (a submodule import must not shadow cosface.train)

    generate(tmp_path / "syn", identities=8, images_per_identity=4, lfw_identities=20, seed=0)
    result = cosface.train("demo", data=tmp_path / "syn" / "train", out=tmp_path / "run",
                           overrides={"train.epochs": 1, "model.input_size": 64, "train.batch_size": 8,
                                      "data.workers": 0, "checkpoint.save_start_epoch": 1, "data.val_identities": 3,
                                      "checkpoint.select": "val"})
    assert isinstance(result, cosface.TrainResult)
    assert result.out_dir == tmp_path / "run" and result.epochs_done == 1 and result.global_step == 2
    assert result.best_checkpoint.name == "best.pt" and result.last_checkpoint.name == "epoch_001.pt"
    assert np.isfinite(result.final_loss) and 0.5 <= result.validation.mean <= 1.0
    assert load_config(tmp_path / "run" / "config.toml") == cosface.load_config(
        "demo", {"train.epochs": 1, "model.input_size": 64, "train.batch_size": 8, "data.workers": 0,
                 "checkpoint.save_start_epoch": 1, "data.val_identities": 3, "checkpoint.select": "val",
                 "data.path": str(tmp_path / "syn" / "train")})
    report = cosface.evaluate(result.best_checkpoint, lfw=tmp_path / "syn" / "lfw", device="cpu")
    assert isinstance(report, cosface.Report) and len(report.folds) == 10 and 0.5 <= report.mean <= 1.0
    with pytest.raises(CosfaceError, match="exactly one of lfw=DIR or bin=FILE"):
        cosface.evaluate(result.best_checkpoint)
