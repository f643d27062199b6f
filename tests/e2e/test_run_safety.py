"""Only good models are saved or resumed; a run directory belongs to one run; records a pack could not
open are reported like unreadable images; files follow the umask and leave no temporary files."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosface.checkpoint import atomic_save, list_checkpoints, load_checkpoint
from cosface.config import load_config
from cosface.errors import CosfaceError
from cosface.fsio import atomic_write
from cosface.trainer import train

TINY = ["train.batch_size=8", "train.epochs=1", "data.workers=0", "train.log_every=1", "model.input_size=64",
        "checkpoint.save_start_epoch=1", "checkpoint.save_every_epochs=1", "schedule.milestones=[1]"]


def tiny_config(data, *extra):
    return load_config(None, [*TINY, f"data.path='{data}'", *extra])


def all_finite(path) -> bool:
    ck = load_checkpoint(path)
    tensors = [*ck["backbone"].values(), *ck["head"].values(),
               *(t for st in ck["optimizer"].values() for t in st.values())]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def test_a_diverged_state_is_never_saved_and_the_error_names_the_last_good_checkpoint(image_folder, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(image_folder), out, progress=False)
    good = out / "checkpoints" / "epoch_001.pt"
    # Saves after every step, but the loss is logged (and checked) only every 1000 steps: the save's
    # own check must catch the blown-up weights.
    with pytest.raises(CosfaceError, match=r"non-finite .* it was not saved") as err:
        train(tiny_config(image_folder, "optim.lr=1e30", "train.epochs=2", "train.log_every=1000",
                          "checkpoint.save_every_steps=1"), out, resume="auto", progress=False)
    saved = list_checkpoints(out / "checkpoints")
    assert saved[0] == good and f"Last good checkpoint: {saved[-1]}." in str(err.value)
    assert "(epoch 2)" in str(err.value)
    assert all(all_finite(p) for p in saved)


def test_resume_auto_skips_checkpoints_that_are_broken_or_diverged(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(image_folder), out, progress=False)
    ck = load_checkpoint(out / "checkpoints" / "epoch_001.pt")
    ck["backbone"] = {k: (v.clone().fill_(float("inf")) if v.is_floating_point() else v) for k, v in ck["backbone"].items()}
    atomic_save(ck, out / "checkpoints" / "epoch_002_step_00000004.pt")
    (out / "checkpoints" / "epoch_002.pt").write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    result = train(tiny_config(image_folder, "train.epochs=2"), out, resume="auto", progress=False)
    said = capsys.readouterr().out
    assert "--resume auto: skipping" in said and "epoch_002.pt: checkpoint" in said
    assert "epoch_002_step_00000004.pt: non-finite values (NaN or inf) in backbone." in said
    assert f"resumed from {out / 'checkpoints' / 'epoch_001.pt'}" in said
    assert result.last_checkpoint.name == "epoch_002.pt" and all_finite(result.last_checkpoint)


def test_a_resumed_run_keeps_the_divergence_window_of_its_checkpoint(image_folder, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(image_folder), out, progress=False)
    path = out / "checkpoints" / "epoch_001.pt"
    ck = load_checkpoint(path)
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert ck["recent_losses"] == [[pytest.approx(s["loss"]), s["global_step"]] for s in steps]
    # Saved just after a far lower loss: the resumed run's first logged loss is a 10x rise, caught at once.
    ck["recent_losses"] = [[1e-3, ck["global_step"]]]
    atomic_save(ck, path)
    with pytest.raises(CosfaceError, match=rf"training is diverging") as err:
        train(tiny_config(image_folder, "train.epochs=2"), out, resume="auto", progress=False)
    assert f"from 0.001 at global step {ck['global_step']} to " in str(err.value)
    # A checkpoint from before the window was saved still resumes (the window starts empty).
    del ck["recent_losses"]
    atomic_save(ck, path)
    assert train(tiny_config(image_folder, "train.epochs=2"), out, resume="auto", progress=False).epochs_done == 2


def test_a_finished_run_resumed_says_nothing_is_left_without_an_empty_epoch_range(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(image_folder), out, progress=False)
    capsys.readouterr()
    train(tiny_config(image_folder), out, resume="auto", progress=False)
    said = capsys.readouterr().out
    start = next(line for line in said.splitlines() if line.startswith("training "))
    assert start.endswith("steps/epoch") and "epochs 2..1" not in said
    assert "nothing to train: the checkpoint already holds 1 of train.epochs = 1" in said


def test_overwrite_moves_the_old_run_aside(image_folder, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(image_folder), out, progress=False)
    old_metrics = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(CosfaceError, match=r"already holds a run \(1 checkpoint\(s\), newest epoch_001.pt\); pass "
                                           r"--resume auto to continue it, or --overwrite .*in Python: "
                                           r"resume='auto' or overwrite=True\)$"):
        train(tiny_config(image_folder), out, progress=False)
    assert (out / "metrics.jsonl").read_bytes() == old_metrics
    train(tiny_config(image_folder), out, progress=False, overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and (aside[0] / "metrics.jsonl").read_bytes() == old_metrics
    assert (aside[0] / "checkpoints" / "epoch_001.pt").is_file()
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert [s["global_step"] for s in steps] == [1, 2, 3]    # a fresh log, not appended
    # The Python API can start over too (its error names overwrite=True).
    import cosface

    cosface.train(tiny_config(image_folder), out=out, overwrite=True)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]) == 2


HOLD = """
import sys, time
from cosface.rundir import RunLock
from pathlib import Path
lock = RunLock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_trainer_is_refused_until_the_holder_dies(image_folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CosfaceError, match=rf"run directory {out} is in use by process {holder.pid} on "):
            train(tiny_config(image_folder), out, progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)     # a crash: the kernel drops the lock with the process
        holder.wait()
    assert train(tiny_config(image_folder), out, progress=False).global_step == 3


def test_records_a_pack_cannot_open_are_reported_in_metrics(image_folder, tmp_path):
    from cosface.data.pack import pack_folder

    packed = tmp_path / "packed"
    pack_folder(image_folder, packed, workers=0, progress=False)
    rec = bytearray((packed / "train.rec").read_bytes())
    offsets = [int(line.split("\t")[1]) for line in (packed / "train.idx").read_text().splitlines()]
    rec[offsets[2]] ^= 0xFF              # break record 3's magic word
    (packed / "train.rec").write_bytes(bytes(rec))
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipped 1 unreadable record"):
        train(tiny_config(packed), out, progress=False)
    bad = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"unreadable"' in x]
    assert len(bad) == 1 and "record 3" in bad[0]["files"][0] and "bad magic" in bad[0]["files"][0]


def test_written_files_follow_the_umask_and_a_failed_write_keeps_the_old_file(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"new"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640

    def fails(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(CosfaceError, match=r"cannot write file .*a.bin: No space left on device"):
        atomic_write(tmp_path / "a.bin", fails)
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_stale_temporary_checkpoint_is_removed_on_the_next_start(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    stale = out / "checkpoints" / ".epoch_001.pt.abc123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    other = out / "checkpoints" / "notes.tmp"     # not ours: left alone
    other.write_text("keep")
    train(tiny_config(image_folder), out, resume="auto", progress=False)
    assert not stale.exists() and other.exists()
    assert f"removed {stale}" in capsys.readouterr().out


def test_an_export_killed_earlier_leaves_nothing_behind(tmp_path):
    from cosface.fsio import remove_orphaned_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".model.onnx.{dead.pid}.tmp"
    live = tmp_path / f".model.onnx.{os.getpid()}.tmp"      # a write in progress: kept
    for p in (orphan, live):
        p.write_bytes(b"partial")
    assert remove_orphaned_temp_files(tmp_path, "model.onnx") == [orphan]
    assert live.exists() and not orphan.exists()


def test_a_write_error_masked_by_another_exception_still_names_the_os_reason(tmp_path):
    def masked(f):
        try:
            raise OSError(27, "File too large")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 199552 vs 199440")

    with pytest.raises(CosfaceError, match=r"cannot write checkpoint .*c.pt: File too large$"):
        atomic_write(tmp_path / "c.pt", masked, "checkpoint")
    assert list(tmp_path.iterdir()) == []


def test_one_training_class_is_one_clear_error(image_folder, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(image_folder / "c00", one / "c00")
    with pytest.raises(CosfaceError, match=r"has 1 training class \(c00\); a margin loss needs at least 2 classes"):
        train(tiny_config(one, "train.batch_size=4"), tmp_path / "run1", progress=False)
    with pytest.raises(CosfaceError, match=r"has 1 training class left after holding out 3 \(data.val_identities\)"):
        train(tiny_config(image_folder, "data.val_identities=3"), tmp_path / "run2", progress=False)
    assert not (tmp_path / "run1" / "checkpoints").exists()


def test_keep_last_never_deletes_the_save_just_written(image_folder, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(image_folder, "checkpoint.save_every_steps=1", "checkpoint.keep_last=1"), out, progress=False)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["epoch_001.pt"]
    # A newer file the resume skipped (broken): it sorts after every save of the resumed run.
    (out / "checkpoints" / "epoch_003.pt").write_bytes(b"PK\x03\x04 truncated")
    result = train(tiny_config(image_folder, "train.epochs=2", "checkpoint.keep_last=1"), out, resume="auto",
                   progress=False)
    assert result.last_checkpoint.exists() and all_finite(result.last_checkpoint)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["epoch_002.pt", "epoch_003.pt"]
