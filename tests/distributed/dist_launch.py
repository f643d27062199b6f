"""Start the ranks of a small job on this machine, as torchrun would, and collect what they printed."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
WORKERS = HERE / "dist_workers.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **{k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Finished:
    rank: int
    returncode: int | None   # None: still running at the deadline (then killed)
    seconds: float
    output: str


def run_ranks(args: list[str], world: int, log_dir: Path, timeout: float,
              wait_for: list[int] | None = None, port: int | None = None) -> list[Finished]:
    """`python tests/distributed/dist_workers.py *args` as ranks 0..world-1 of one job (env:// rendezvous on
    127.0.0.1). Waits up to `timeout` s for the ranks in `wait_for` (default: all); any rank still
    running then is killed and reported with returncode None. `port`: MASTER_PORT (default: a free one)."""
    waited = set(range(world) if wait_for is None else wait_for)
    port = free_port() if port is None else port
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    t0 = time.monotonic()
    for rank in range(world):
        log = open(log_dir / f"rank{rank}.log", "w")
        env = _env(RANK=rank, WORLD_SIZE=world, LOCAL_RANK=rank, LOCAL_WORLD_SIZE=world,
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, str(WORKERS), *args], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
        logs.append(log)
    ended: dict[int, float] = {}
    while not waited <= set(ended) and time.monotonic() - t0 < timeout:
        for rank, p in enumerate(procs):
            if rank not in ended and p.poll() is not None:
                ended[rank] = time.monotonic() - t0
        time.sleep(0.05)
    results = []
    for rank, p in enumerate(procs):
        if rank not in ended:
            p.kill()
            p.wait()
        logs[rank].close()
        results.append(Finished(rank, p.returncode if rank in ended else None,
                                ended.get(rank, time.monotonic() - t0),
                                (log_dir / f"rank{rank}.log").read_text()))
    return results


def check_all_ok(results: list[Finished]) -> None:
    bad = [r for r in results if r.returncode != 0]
    assert not bad, "\n".join(f"--- rank {r.rank} (exit {r.returncode}):\n{r.output[-3000:]}" for r in bad)


def torchrun(args: list[str], nproc: int, timeout: float) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node nproc *args` (torchrun picks a free port itself)."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *args],
                          env=_env(), capture_output=True, text=True, timeout=timeout)
