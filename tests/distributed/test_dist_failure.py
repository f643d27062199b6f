"""A rank that dies or stalls makes the others stop with a clear one-line error, not hang."""
import socket
import subprocess
import sys

import pytest

from image_folders import write_image_folder
from dist_launch import WORKERS, _env, run_ranks

ERROR = "cosface train: error: rank 0 of 2: a collective operation failed, so training stops"


def cli_args(data, out, timeout_s):
    sets = ["train.batch_size=4", "train.epochs=1", "data.workers=0", "train.device='cpu'", "train.log_every=1",
            f"train.timeout_s={timeout_s}"]
    return ["--data", str(data), "--out", str(out), "--no-progress", *[a for kv in sets for a in ("--set", kv)]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("fail") / "data", classes=4, per_class=6)


def test_a_dead_rank_makes_the_other_fail_at_once(data, tmp_path):
    rank0, rank1 = run_ranks(["fail", "die", *cli_args(data, tmp_path / "run", 60.0)], 2, tmp_path / "logs",
                             timeout=90, wait_for=[0])
    assert rank1.returncode == 17
    assert rank0.returncode == 2, rank0.output[-3000:]
    assert ERROR in rank0.output and "timeout_s = 60 s" in rank0.output
    # Not the 60 s timeout: the lost connection is noticed at the next collective.
    assert rank0.seconds - rank1.seconds < 20, (rank0.seconds, rank1.seconds)


def test_a_stalled_rank_makes_the_other_fail_after_the_timeout(data, tmp_path):
    rank0, rank1 = run_ranks(["fail", "stall", *cli_args(data, tmp_path / "run", 5.0)], 2, tmp_path / "logs",
                             timeout=90, wait_for=[0])
    assert rank1.returncode is None            # still asleep when rank 0 gave up; killed by run_ranks
    assert rank0.returncode == 2, rank0.output[-3000:]
    assert ERROR in rank0.output and "timeout_s = 5 s" in rank0.output
    assert "Traceback" not in rank0.output
    assert rank0.seconds < 60


def test_master_port_in_use_is_one_line(data, tmp_path):
    """Another program listens on MASTER_PORT: rank 0 cannot open the rendezvous there and says so in one
    line (rank 1, connected to that program, waits until killed, as torchrun would kill it)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rank0, _ = run_ranks(["train", *cli_args(data, tmp_path / "run", 10.0)], 2, tmp_path / "logs",
                             timeout=60, wait_for=[0], port=port)
    assert rank0.returncode == 2, rank0.output[-3000:]
    assert "Traceback" not in rank0.output, rank0.output[-3000:]
    assert f"cosface train: error: rank 0 of 2: cannot set up the process group at 127.0.0.1:{port}" in rank0.output
    assert "address already in use" in rank0.output


def test_torchrun_environment_without_master_addr_is_one_line(data, tmp_path):
    """RANK/WORLD_SIZE set (a launcher that exports only those, or a leaked environment) but no MASTER_ADDR."""
    done = subprocess.run([sys.executable, str(WORKERS), "train", *cli_args(data, tmp_path / "run", 10.0)],
                          env=_env(RANK=0, WORLD_SIZE=2, LOCAL_RANK=0), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "cosface train: error: rank 0 of 2: cannot set up the process group at ?:?" in done.stderr
    assert "MASTER_ADDR expected, but not set" in done.stderr
