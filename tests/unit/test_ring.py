"""The shared-memory ring loader gives exactly the in-process batches, whatever the consumer does."""
import os
import signal

import pytest
import torch

from cosface.data.dataset import Plan, make_loader
from cosface.data.ring import RingLoader
from cosface.data.sources import ImageFolderSource


def _batches(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [(b["images"].clone(), b["labels"].clone(), b["flips"].clone()) for b in loader]


def _same(a, b):
    return len(a) == len(b) and all(all(torch.equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


@pytest.fixture
def source(image_folder):
    return ImageFolderSource(image_folder)


def test_ring_batches_equal_in_process_batches_across_epochs_and_abandoned_iterations(source):
    plan = Plan(len(source), batch_size=4)
    plain = make_loader(source, plan, rank=0, seed=3, flip=True, image_size=112, workers=0)
    ring = make_loader(source, plan, rank=0, seed=3, flip=True, image_size=112, workers=2, prefetch=1)
    assert isinstance(ring, RingLoader) and ring.num_slots == 4
    try:
        for epoch in (0, 1):
            assert _same(_batches(ring, epoch), _batches(plain, epoch))
        ring.sampler.set_epoch(5)
        next(iter(ring))                      # abandoned with batches in flight
        assert _same(_batches(ring, 1), _batches(plain, 1))
    finally:
        ring.close()


def test_holding_every_batch_keeps_every_batch_intact(source):
    # 6 batches, 4 slots: the consumer holds them all (no copies), so the last ones are decoded in-process.
    plan = Plan(len(source), batch_size=4)
    plain = make_loader(source, plan, rank=0, seed=1, flip=False, image_size=112, workers=0)
    ring = make_loader(source, plan, rank=0, seed=1, flip=False, image_size=112, workers=1)
    try:
        held = list(ring)
        expected = _batches(plain, 0)
        assert len(held) == len(expected) == 6
        for b, (images, labels, _) in zip(held, expected):
            assert torch.equal(b["images"], images) and torch.equal(b["labels"], labels)
        # Once the consumer lets go, the slots come back and the workers decode again.
        del held, b
        assert ring._take_slot() is not None
    finally:
        ring.close()


def test_a_killed_worker_is_a_clear_error(source):
    ring = make_loader(source, Plan(len(source), batch_size=4), rank=0, seed=0, flip=True, image_size=112, workers=1)
    try:
        next(iter(ring))
        os.kill(ring._procs[0].pid, signal.SIGKILL)
        ring._procs[0].join(5)
        with pytest.raises(RuntimeError, match=r"loader worker 0 \(pid \d+\) exited unexpectedly with code -9"):
            for _ in ring:
                pass
    finally:
        ring.close()
    assert ring._procs == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"    # a zombie nobody reaps has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_end_when_the_trainer_is_killed(image_folder, tmp_path):
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    code = f"""
import os, signal
from cosface.data.dataset import Plan, make_loader
from cosface.data.sources import ImageFolderSource
src = ImageFolderSource({str(image_folder)!r})
ring = make_loader(src, Plan(len(src), batch_size=4), rank=0, seed=0, flip=False, image_size=32, workers=2)
ring.sampler.set_epoch(0)
next(iter(ring))
open({str(pids)!r}, "w").write(" ".join(str(p.pid) for p in ring._procs))
os.kill(os.getpid(), signal.SIGKILL)
"""
    # Output to a file: a surviving worker would hold a pipe open, and reading it would never end.
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=err, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr").read_text()
    workers = [int(p) for p in pids.read_text().split()]
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, "loader workers outlived the killed trainer"
