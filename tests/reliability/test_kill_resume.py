"""kill -9 trials: a tiny run killed at random moments (and once in the middle of writing a checkpoint)
resumes with `--resume auto` to exactly the weights, optimizer state and step of an uninterrupted run.

The moments come from a seeded generator, so a failure reproduces; the count is small to keep the
suite under a minute on two shared cores.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cosface.checkpoint import list_checkpoints, load_checkpoint
from cosface.config import load_config
from cosface.trainer import train

pytestmark = pytest.mark.reliability

# 6 images of 64 x 64, batch 2: 3 steps per epoch, 2 epochs, a checkpoint after every step.
SETTINGS = ["train.batch_size=2", "train.epochs=2", "data.workers=0", "train.log_every=1", "data.flip=true",
            "model.input_size=64", "model.embedding_size=32",
            "checkpoint.save_start_epoch=1", "checkpoint.save_every_epochs=1", "checkpoint.save_every_steps=1",
            "schedule.milestones=[1]"]
TOTAL_STEPS = 6
RANDOM_TRIALS = 2
SEED = 15
SRC = Path(__file__).resolve().parents[2] / "src"


def start(data: Path, out: Path) -> subprocess.Popen:
    sets = [a for kv in SETTINGS for a in ("--set", kv)]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    code = "import sys, torch; torch.set_num_threads(1); from cosface.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "train", "--data", str(data), "--out", str(out),
                             "--no-progress", *sets], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def steps_logged(out: Path) -> int:
    try:
        text = (out / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return 0
    return sum(1 for line in text.splitlines() if line.endswith("}") and json.loads(line)["type"] == "step")


def temp_files(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return [p for p in d.iterdir() if p.name.endswith(".tmp")] if d.is_dir() else []


def kill_after_step(proc: subprocess.Popen, out: Path, step: int, extra_s: float) -> None:
    while proc.poll() is None and steps_logged(out) < step:
        time.sleep(0.005)
    time.sleep(extra_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def kill_during_save(proc: subprocess.Popen, out: Path) -> bool:
    """Kill as soon as a checkpoint's temporary file appears; True when one was left behind."""
    while proc.poll() is None:
        if temp_files(out):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return bool(temp_files(out))
        time.sleep(0.0005)  # lets go of the GIL: the reference trains in this process meanwhile
    return False


def assert_same_model(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == TOTAL_STEPS and a["epoch"] == b["epoch"]
    for part in ("backbone", "head"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after kill and resume"
    assert a["optimizer"].keys() == b["optimizer"].keys()
    for k in a["optimizer"]:
        for s in a["optimizer"][k]:
            assert torch.equal(a["optimizer"][k][s], b["optimizer"][k][s]), f"optimizer {k}.{s} differs"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The data, every trial's killed run (all started at once, each killed by its own watcher thread
    while the uninterrupted reference trains here), and the reference's final checkpoint."""
    import threading

    import numpy as np

    from reliability_inputs import jpeg

    root = tmp_path_factory.mktemp("kill")
    rng = np.random.default_rng(3)
    for c in range(2):
        (root / "data" / f"c{c}").mkdir(parents=True)
        for i in range(3):
            (root / "data" / f"c{c}" / f"{i}.jpg").write_bytes(jpeg(rng, 64))
    plans = {}
    for trial in range(RANDOM_TRIALS):
        r = random.Random(SEED * 100 + trial)
        plans[f"random{trial}"] = (r.randint(1, TOTAL_STEPS - 1), r.uniform(0.0, 0.15))
    plans["save"] = None
    outcome: dict[str, tuple[Path, object]] = {}

    def watch(name, plan):
        out = root / name
        proc = start(root / "data", out)
        if plan is None:
            outcome[name] = (out, kill_during_save(proc, out))
        else:
            kill_after_step(proc, out, *plan)
            outcome[name] = (out, proc.returncode == -signal.SIGKILL)

    threads = [threading.Thread(target=watch, args=item) for item in plans.items()]
    for t in threads:
        t.start()
    torch.set_num_threads(1)   # as in the killed processes: a different thread count may round differently
    cfg = load_config(None, [*SETTINGS, f"data.path='{root / 'data'}'"])
    reference = load_checkpoint(train(cfg, root / "reference", progress=False).last_checkpoint)
    for t in threads:
        t.join()
    return root, cfg, reference, plans, outcome


def resume_and_compare(tiny, out: Path) -> None:
    root, cfg, reference = tiny[:3]
    result = train(cfg, out, resume="auto", progress=False)
    assert not temp_files(out), "a temporary file of the interrupted save survived the restart"
    assert [p.name for p in list_checkpoints(out / "checkpoints")][-1] == "epoch_002.pt"
    assert_same_model(reference, load_checkpoint(result.last_checkpoint))


@pytest.mark.parametrize("trial", range(RANDOM_TRIALS))
def test_killed_at_a_random_moment_resumes_bit_exact(trial, tiny):
    plans, outcome = tiny[3], tiny[4]
    out, killed = outcome[f"random{trial}"]
    step, extra = plans[f"random{trial}"]
    assert killed, f"the run ended before the kill (after step {step} + {extra:.3f} s)"
    resume_and_compare(tiny, out)


def test_killed_while_writing_a_checkpoint_resumes_bit_exact(tiny, tmp_path):
    out, caught = tiny[4]["save"]
    attempt = 0
    while not caught and attempt < 3:  # the kill races the write; retry a missed one
        attempt += 1
        out = tmp_path / f"retry{attempt}"
        proc = start(tiny[0] / "data", out)
        caught = kill_during_save(proc, out)
        proc.wait()
    assert caught, "never caught a checkpoint mid-write"
    assert temp_files(out), "the kill should have left a partial checkpoint"
    resume_and_compare(tiny, out)
