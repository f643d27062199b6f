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
