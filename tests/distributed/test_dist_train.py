"""`torchrun --nproc_per_node 2 -m cosface train` against one process accumulating 2 micro-batches:
the same steps, one log, one set of checkpoints, and resume across world sizes in both directions.

Every comparison is one optimizer step from identical states. MobileFaceNet at initialisation on a
tiny batch is chaotic: a 1e-7 relative change of its weights changes the next gradient by ~0.3 %, so
two runs whose sums are merely ordered differently (2 processes vs 1) drift apart after a few steps
although each step is the same computation. Chaining one-step comparisons through checkpoints tests
every step, the momentum carried between steps, and the resume at another world size.
"""
import json
import shutil

import pytest
import torch

from cosface.backbones import build_backbone
from cosface.checkpoint import list_checkpoints, load_checkpoint
from cosface.config import load_config
from cosface.trainer import train

from image_folders import write_image_folder
from dist_launch import torchrun

# Global batch 8 = 4 per micro-batch × (2 processes | 2 accumulated); 24 images = 3 steps; a save after
# every step. Not batch 2: MobileFaceNet's last BatchNorms see 1×1 maps, and over 2 samples their output
# is ±1 whatever the input, so the gradient below them is rounding noise.
COMMON = ["train.batch_size=4", "optim.lr=0.01", "train.epochs=1", "data.workers=0", "train.log_every=1",
          "train.device='cpu'", "checkpoint.save_start_epoch=1", "checkpoint.save_every_steps=1",
          "train.timeout_s=60.0"]
SAVES = ["epoch_001_step_00000001.pt", "epoch_001_step_00000002.pt", "epoch_001.pt"]
PARAMS = [n for n, _ in build_backbone("mobilefacenet").named_parameters()]


def one_process(data, out, resume=None):
    cfg = load_config(None, [*COMMON, "train.accumulate=2", f"data.path='{data}'"])
    # One thread, as each torchrun rank (OMP_NUM_THREADS=1): the same kernels on the same micro-batches.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(cfg, out, resume=resume, progress=False)
    finally:
        torch.set_num_threads(threads)


def two_processes(data, out, resume=None):
    args = ["-m", "cosface", "train", "--data", str(data), "--out", str(out), "--no-progress"]
    args += [a for kv in COMMON for a in ("--set", kv)] + (["--resume", resume] if resume else [])
    done = torchrun(args, nproc=2, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def start_from(src, out):
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(src, out / "checkpoints")


def assert_same_training_state(a: dict, b: dict):
    """Every parameter and the whole head within 1e-5; the momentum buffers (the step's gradients) as
    one vector within 1e-5 of its norm, since the deepest layers' gradients carry the summation-order
    noise of everything above them. BatchNorm running statistics are not compared: one process
    updates them per micro-batch, DDP keeps rank 0's."""
    assert a["global_step"] == b["global_step"]
    for name in PARAMS:
        assert torch.allclose(a["backbone"][name], b["backbone"][name], rtol=0, atol=1e-5), name
    assert a["head"]["weight"].shape == b["head"]["weight"].shape
    assert torch.allclose(a["head"]["weight"], b["head"]["weight"], rtol=0, atol=1e-5)
    assert set(a["optimizer"]) == set(b["optimizer"])
    ma = torch.cat([s["momentum_buffer"].flatten() for _, s in sorted(a["optimizer"].items())])
    mb = torch.cat([b["optimizer"][k]["momentum_buffer"].flatten() for k, _ in sorted(a["optimizer"].items())])
    assert (ma - mb).norm() <= 1e-5 * ma.norm()


def ckpt(run, name):
    return load_checkpoint(run / "checkpoints" / name)


def records(out, kind):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """one: 1 process, steps 1-3.  two: 2 processes from scratch.  one_to_two: 2 processes resumed from
    one's step 1.  two_to_one: 1 process resumed from one_to_two's step 2."""
    root = tmp_path_factory.mktemp("train")
    data = write_image_folder(root / "data", classes=4, per_class=6)
    one_process(data, root / "one")
    fresh = two_processes(data, root / "two")
    start_from(root / "one" / "checkpoints" / SAVES[0], root / "one_to_two")
    resumed = two_processes(data, root / "one_to_two", resume="auto")
    start_from(root / "one_to_two" / "checkpoints" / SAVES[1], root / "two_to_one")
    one_process(data, root / "two_to_one", resume="auto")
    return root, fresh, resumed


def test_first_step_on_two_processes_equals_one_process_accumulating_two(runs):
    root, _, _ = runs
    a, b = ckpt(root / "one", SAVES[0]), ckpt(root / "two", SAVES[0])
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert_same_training_state(a, b)
    assert records(root / "two", "step")[0]["loss"] == pytest.approx(records(root / "one", "step")[0]["loss"], abs=1e-5)
    # The step moved the weights, so the equality above is not that of two untouched initialisations.
    assert (a["head"]["weight"] - ckpt(root / "one", SAVES[-1])["head"]["weight"]).abs().max() > 1e-3


def test_saved_on_one_process_continues_on_two(runs):
    root, _, resumed = runs
    assert "resumed from" in resumed.stdout and "step 1, global step 1" in resumed.stdout
    assert [r["global_step"] for r in records(root / "one_to_two", "step")] == [2, 3]
    assert_same_training_state(ckpt(root / "one", SAVES[1]), ckpt(root / "one_to_two", SAVES[1]))
    loss_one = records(root / "one", "step")[1]["loss"]
    assert records(root / "one_to_two", "step")[0]["loss"] == pytest.approx(loss_one, abs=1e-5)


def test_saved_on_two_processes_continues_on_one(runs):
    root, _, _ = runs
    assert [r["global_step"] for r in records(root / "two_to_one", "step")] == [3]
    a, b = ckpt(root / "one_to_two", SAVES[2]), ckpt(root / "two_to_one", SAVES[2])
    assert (a["world_size"], b["world_size"]) == (2, 1)
    assert_same_training_state(a, b)


def test_rank_zero_alone_logs_and_writes_checkpoints(runs):
    root, fresh, _ = runs
    assert [p.name for p in list_checkpoints(root / "two" / "checkpoints")] == SAVES
    assert not [p for p in (root / "two" / "checkpoints").iterdir() if p.name.startswith(".")]
    assert len(records(root / "two", "step")) == 3 and len(records(root / "two", "epoch")) == 1
    assert len(records(root / "two", "checkpoint")) == 3
    assert fresh.stdout.count("training mobilefacenet") == 1
    assert fresh.stdout.count("epoch 1/1: epoch time") == 1
    assert "2 process(es)" in fresh.stdout
    assert ckpt(root / "two", SAVES[-1])["head"]["weight"].shape == (4, 128)


def test_partial_fc_resumed_mid_epoch_continues_as_the_uninterrupted_run(tmp_path):
    """With head.sample_rate < 1 each step draws its sampled centres from torch's random state, which the
    checkpoint carries: a run resumed from a mid-epoch save on the same number of processes must sample
    the same centres and end bit for bit where the uninterrupted run ends."""
    data = write_image_folder(tmp_path / "data", classes=24, per_class=2)     # 6 steps of 8; 12 centres per rank
    sets = [*COMMON, "head.sample_rate=0.75", "checkpoint.save_every_steps=3"]   # 9 of 12 scored: always a draw

    def run(out, resume=None):
        args = ["-m", "cosface", "train", "--data", str(data), "--out", str(out), "--no-progress"]
        args += [a for kv in sets for a in ("--set", kv)] + (["--resume", resume] if resume else [])
        done = torchrun(args, nproc=2, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run(tmp_path / "whole")
    start_from(tmp_path / "whole" / "checkpoints" / "epoch_001_step_00000003.pt", tmp_path / "resumed")
    run(tmp_path / "resumed", resume="auto")
    a, b = ckpt(tmp_path / "whole", "epoch_001.pt"), ckpt(tmp_path / "resumed", "epoch_001.pt")
    assert torch.equal(a["head"]["weight"], b["head"]["weight"])
    for name in PARAMS:
        assert torch.equal(a["backbone"][name], b["backbone"][name]), name
