"""Tiny end-to-end training runs: artifacts, exact resume, unreadable files, NaN, mismatched resume."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from cosface.checkpoint import list_checkpoints, load_backbone, load_checkpoint
from cosface.config import load_config
from cosface.errors import CosfaceError
from cosface.trainer import train

TINY = ["train.batch_size=4", "train.epochs=2", "data.workers=0", "train.log_every=1",
        "checkpoint.save_start_epoch=1", "checkpoint.save_every_epochs=1", "schedule.milestones=[1]"]


def tiny_config(data, *extra):
    return load_config(None, [*TINY, f"data.path='{data}'", *extra])


def test_run_writes_checkpoints_config_classes_and_metrics(image_folder, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(image_folder), out, progress=False)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["epoch_001.pt", "epoch_002.pt"]
    assert (out / "classes.txt").read_text().split() == [f"c{i:02d}" for i in range(4)]
    assert load_config(out / "config.toml") == tiny_config(image_folder)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert len(steps) == 12 and len(epochs) == 2  # 24 images / batch 4 = 6 steps per epoch
    assert {"loss", "lr", "images_per_s", "epoch_time_s", "step_time_ms"} <= set(epochs[0])
    assert [e["lr"] for e in epochs] == [0.1, pytest.approx(0.01)]  # milestone at epoch 1
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt["num_classes"] == 4 and ckpt["class_names"][0] == "c00" and ckpt["epoch"] == 2
    assert ckpt["preprocessing"] == {"size": 112, "channel_order": "RGB", "mean": 128.0, "std": 128.0, "layout": "NCHW"}
    assert ckpt["config"]["head"]["m"] == 0.4 and ckpt["versions"]["torch"] == torch.__version__
    assert ckpt["head"]["weight"].shape == (4, 128)
    assert set(ckpt["optimizer"]) >= {"head.weight", "backbone.stem.0.0.weight"}
    model, prep, _ = load_backbone(result.last_checkpoint)
    assert not model.training and prep.size == 112


def test_resume_from_mid_epoch_save_is_bit_identical(image_folder, tmp_path):
    cfg = tiny_config(image_folder, "checkpoint.save_every_steps=4", "data.workers=1")
    full = tmp_path / "full"
    train(cfg, full, progress=False)
    saves = [p.name for p in list_checkpoints(full / "checkpoints")]
    assert saves == ["epoch_001_step_00000004.pt", "epoch_001.pt", "epoch_002_step_00000008.pt", "epoch_002.pt"]
    # A run killed right after its step-8 save (mid epoch 2) leaves only what was written until then.
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "epoch_002_step_00000008.pt", cut / "checkpoints")
    result = train(cfg, cut, resume="auto", progress=False)
    a = load_checkpoint(full / "checkpoints" / "epoch_002.pt")
    b = load_checkpoint(result.last_checkpoint)
    assert b["global_step"] == a["global_step"] == 12
    for part in ("backbone", "head"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    for k in a["optimizer"]:
        assert torch.equal(a["optimizer"][k]["momentum_buffer"], b["optimizer"][k]["momentum_buffer"])
    lrs = [json.loads(x)["lr"] for x in (cut / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert lrs == [pytest.approx(0.01)] * 4


def records(out, kind=None):
    found = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in found if kind is None or r["type"] == kind]


def test_a_run_killed_after_its_mid_epoch_save_logs_each_step_once_after_resuming(image_folder, tmp_path):
    cfg = tiny_config(image_folder, "checkpoint.save_every_steps=4", "model.input_size=32")
    full = tmp_path / "full"
    train(cfg, full, progress=False)
    # Killed after logging step 10; its last checkpoint is the step-8 save.
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "epoch_002_step_00000008.pt", cut / "checkpoints")
    logged = [x for x in (full / "metrics.jsonl").read_text().splitlines(keepends=True) if json.loads(x)["global_step"] <= 10]
    (cut / "metrics.jsonl").write_text("".join(logged))
    train(cfg, cut, resume="auto", progress=False)
    steps = records(cut, "step")
    assert [r["global_step"] for r in steps] == list(range(1, 13))
    assert [r["loss"] for r in steps] == [r["loss"] for r in records(full, "step")]
    assert [r["epoch"] for r in records(cut, "epoch")] == [1, 2]
    saves = [(r["epoch"], r["global_step"]) for r in records(cut, "checkpoint")]
    assert saves == [(1, 4), (1, 6), (2, 8), (2, 12)]      # a save inside epoch 2 is numbered 2, as its file


def test_the_epoch_loss_of_a_resumed_epoch_covers_the_steps_before_the_save(image_folder, tmp_path):
    # Logged every 3 steps and saved every 4: the save falls inside a logging window too.
    cfg = tiny_config(image_folder, "checkpoint.save_every_steps=4", "model.input_size=32", "train.log_every=3")
    full = tmp_path / "full"
    expected = train(cfg, full, progress=False).final_loss
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "epoch_002_step_00000008.pt", cut / "checkpoints")
    logged = [x for x in (full / "metrics.jsonl").read_text().splitlines(keepends=True) if json.loads(x)["global_step"] <= 8]
    (cut / "metrics.jsonl").write_text("".join(logged))
    assert train(cfg, cut, resume="auto", progress=False).final_loss == expected
    for kind in ("step", "epoch"):
        assert [(r["global_step"], r["loss"]) for r in records(cut, kind)] == [(r["global_step"], r["loss"]) for r in records(full, kind)]


def test_resume_rejects_a_checkpoint_that_does_not_fit(image_folder, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(image_folder, "train.epochs=1"), out, progress=False)
    with pytest.raises(CosfaceError, match=r"model.embedding_size is 128 there, 64 here"):
        train(tiny_config(image_folder, "model.embedding_size=64"), out, resume="auto", progress=False)
    other = tmp_path / "other"
    shutil.copytree(image_folder, other)
    shutil.rmtree(other / "c03")
    with pytest.raises(CosfaceError, match="trained on 4 classes"):
        train(tiny_config(other), tmp_path / "x", resume=str(result.last_checkpoint), progress=False)
    with pytest.raises(CosfaceError, match="does not exist"):
        train(tiny_config(image_folder), tmp_path / "y", resume=str(tmp_path / "nope.pt"), progress=False)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(image_folder, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(image_folder, "train.epochs=1"), out, progress=False)
    good = out / "checkpoints" / "epoch_001.pt"
    before = good.read_bytes()
    # Resuming with an absurd rate blows the weights up during epoch 2.
    with pytest.raises(CosfaceError, match=r"loss became (nan|inf) in epoch 2") as err:
        train(tiny_config(image_folder, "optim.lr=1e30"), out, resume="auto", progress=False)
    assert f"Last good checkpoint: {good}" in str(err.value)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["epoch_001.pt"]
    assert good.read_bytes() == before


def test_cli_trains_on_a_folder_with_unreadable_files(image_folder, tmp_path):
    (image_folder / "c00" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (image_folder / "c01" / "empty.jpg").write_bytes(b"")
    (image_folder / "c02" / "notes.txt").write_text("not an image")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cosface", "train", "--data", str(image_folder), "--out", str(out), "--no-progress",
           *[a for kv in TINY for a in ("--set", kv)], "--set", "train.epochs=1", "--set", "train.batch_size=9"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipped" in proc.stderr
    for name in ("broken.jpg", "empty.jpg", "notes.txt"):
        assert name in proc.stderr
    assert "epoch 1/1: epoch time" in proc.stdout and "done: 3 steps" in proc.stdout
    bad = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"unreadable"' in x]
    assert bad and bad[-1]["total"] == 3
    missing = subprocess.run([sys.executable, "-m", "cosface", "train", "--data", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
