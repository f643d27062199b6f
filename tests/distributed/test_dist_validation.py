"""Held-out validation across process counts: a run started on one process resumes on two, where every rank
re-derives the split and checks it against the run's val_identities.txt (a different one would stop it)."""
import json

import torch

from cosface.checkpoint import load_checkpoint
from cosface.config import load_config
from cosface.trainer import train

from image_folders import write_image_folder
from dist_launch import check_all_ok, run_ranks, torchrun

COMMON = ["model.input_size=64", "train.batch_size=4", "data.workers=0", "train.log_every=1", "train.device='cpu'",
          "checkpoint.save_start_epoch=1", "data.val_identities=2", "checkpoint.select='val'", "train.timeout_s=60.0"]


def test_split_is_the_same_on_one_and_on_two_processes(tmp_path):
    data = write_image_folder(tmp_path / "data", classes=6, per_class=4)
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(None, [*COMMON, "train.epochs=1", "train.accumulate=2", f"data.path='{data}'"]), out,
              progress=False)
    finally:
        torch.set_num_threads(threads)
    held = (out / "val_identities.txt").read_text()
    args = ["-m", "cosface", "train", "--data", str(data), "--out", str(out), "--no-progress", "--resume", "auto"]
    args += [a for kv in [*COMMON, "train.epochs=2"] for a in ("--set", kv)]
    done = torchrun(args, nproc=2, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "val_identities.txt").read_text() == held
    last = load_checkpoint(out / "checkpoints" / "epoch_002.pt")
    assert last["world_size"] == 2 and not set(held.split()) & set(last["class_names"])
    vals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert [v["epoch"] for v in vals] == [1, 2]          # rank 0 alone evaluated, once per save
    assert load_checkpoint(out / "checkpoints" / "best.pt")["best"]["epoch"] in (1, 2)


def test_rank_zero_rewrites_the_held_out_list_only_after_every_rank_has_read_it(tmp_path):
    """On resuming every rank checks OUT/val_identities.txt against its own split while rank 0 rewrites
    the run's files: a rank reading late must not find the file rank 0 is writing (half written, it
    would not match and that rank alone would stop the job)."""
    data = write_image_folder(tmp_path / "data", classes=6, per_class=4)
    out = tmp_path / "run"
    sets = [*COMMON, "train.epochs=1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(None, [*sets, "train.accumulate=2", f"data.path='{data}'"]), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    times = tmp_path / "times"
    times.mkdir()
    args = ["--data", str(data), "--out", str(out), "--no-progress", "--resume", "auto"]
    args += [a for kv in sets for a in ("--set", kv)]
    results = run_ranks(["slowread", str(times), *args], 2, tmp_path / "logs", timeout=90)
    check_all_ok(results)
    read_end = float((times / "read_end").read_text())
    write_start = float((times / "write_start").read_text())
    assert write_start >= read_end, f"rank 0 rewrote the file {read_end - write_start:.2f} s before rank 1 had read it"
