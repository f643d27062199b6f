"""The multi-worker training loader: worker processes decode batches into a ring of shared-memory slots.

Why not torch's DataLoader: it gives every batch a fresh shared-memory segment, which the worker
creates and faults in page by page, sends as a file descriptor, and the trainer maps and unmaps
again: for a batch of 128 112x112 images about 1,200 page faults on each side plus the segment's
set-up, per batch. On a small machine that is a large share of a core taken from decoding. Here the
slots are allocated once, shared with the workers when they start, and reused for the whole run; per
batch only a slot number, the sample indices and the names of unreadable files cross a pipe.

Batches are the ones `BatchDataset` gives (same images, labels, flips, same replacement of
unreadable files), in sampler order, whatever the worker count. A batch's `images` is a view of its
slot: the slot goes back to the ring when the last tensor viewing it is freed (reference counting
makes that immediate), so holding a batch is safe; a consumer that holds every batch (e.g.
`list(loader)`) just gets the rest decoded in its own process. On CUDA the slots are page-locked
once (`pin_memory=True`) so `.to(device, non_blocking=True)` is a real asynchronous copy; a slot
freed while such a copy may still be running is reused only after the work queued on the current
stream at that moment has finished.
"""
from __future__ import annotations

import collections
import multiprocessing.connection as mpc
import os
import traceback
import weakref
from typing import Any

import numpy as np
import torch

from cosface.data.dataset import decode_batch
from cosface.preprocess import MAX_PIXELS

# How long the trainer waits on its workers before checking whether one of them died.
_POLL_S = 5.0
# How often an idle worker checks that the trainer is still alive.
_PARENT_CHECK_S = 1.0


def _worker_loop(conn, source, image_size: int, images, labels, flips, max_pixels: int = MAX_PIXELS,
                 parent_pid: int | None = None) -> None:
    """One worker: receive (seq, slot, indices, flips), decode into the slot, answer (seq, slot, bad).

    It ends when the trainer dies without closing it (SIGTERM, kill -9). The pipe cannot tell: a forked
    worker inherits the trainer's end of its own pipe (and of earlier workers' pipes), so it never reads
    EOF; it would wait forever, keeping its memory and the trainer's stdout (`| tee log` never ends)."""
    torch.set_num_threads(1)
    images_np, labels_np, flips_np = images.numpy(), labels.numpy(), flips.numpy()
    all_labels = np.asarray(source.labels, dtype=np.int64)
    while True:
        try:
            while not conn.poll(_PARENT_CHECK_S):
                if parent_pid is not None and os.getppid() != parent_pid:
                    return
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        seq, slot, idx, flip = task
        try:
            n = len(idx)
            used, bad = decode_batch(source, idx, images_np[slot, :n], image_size, max_pixels)
            labels_np[slot, :n] = all_labels[used]
            flips_np[slot, :n] = flip
            conn.send((seq, slot, bad, None))
        except Exception:
            conn.send((seq, slot, [], traceback.format_exc()))


class RingLoader:
    """Iterates an EpochSampler's micro-batches as {"images", "labels", "flips", "bad"} dicts.

    `workers` processes, each with at most `prefetch` batches queued, decode into
    `workers * prefetch + 2` slots (the two extra let the consumer hold a batch while the workers stay
    busy). Workers start on the first iteration and live until `close()` (or garbage collection).
    """

    def __init__(self, source, sampler, image_size: int, workers: int, prefetch: int = 2,
                 pin_memory: bool = False, multiprocessing_context=None, max_pixels: int = MAX_PIXELS):
        if workers < 1:
            raise ValueError(f"RingLoader needs workers >= 1, got {workers}")
        self.source, self.sampler, self.image_size = source, sampler, image_size
        self.workers, self.prefetch, self.pin_memory = workers, prefetch, pin_memory
        self.max_pixels = max_pixels
        self._ctx = multiprocessing_context or torch.multiprocessing.get_context()
        b = sampler.plan.batch_size
        self.num_slots = workers * prefetch + 2
        self._images = torch.empty((self.num_slots, b, image_size, image_size, 3), dtype=torch.uint8).share_memory_()
        self._labels = torch.empty((self.num_slots, b), dtype=torch.int64).share_memory_()
        self._flips = torch.empty((self.num_slots, b), dtype=torch.bool).share_memory_()
        self._images_np = self._images.numpy()
        self._procs: list = []
        self._conns: list = []
        self._pinned: list[int] = []          # the ring's address while page-locked
        # Slots the consumer has freed: (slot, CUDA event or None). Appended to from finalizers.
        self._freed: collections.deque = collections.deque()
        self._free: list[int] = []
        self._outstanding: list[int] = []      # tasks queued per worker
        self._in_flight = 0
        self._closed = False
        self._finalizer = weakref.finalize(self, RingLoader._shutdown, self._procs, self._conns, self._pinned)

    def __len__(self) -> int:
        return len(self.sampler)

    # -- workers -----------------------------------------------------------------------------------
    def _start(self) -> None:
        for k in range(self.workers):
            parent, child = self._ctx.Pipe(duplex=True)
            p = self._ctx.Process(target=_worker_loop, name=f"cosface-loader-{k}", daemon=True,
                                  args=(child, self.source, self.image_size, self._images, self._labels, self._flips,
                                        self.max_pixels, os.getpid()))
            p.start()
            child.close()
            self._procs.append(p)
            self._conns.append(parent)
        self._outstanding = [0] * self.workers
        self._free = list(range(self.num_slots))
        if self.pin_memory and torch.cuda.is_available():
            self._pin()

    def _pin(self) -> None:
        """Page-lock the ring once, so host-to-device copies from it are asynchronous DMA."""
        t = self._images
        err = torch.cuda.cudart().cudaHostRegister(t.data_ptr(), t.numel() * t.element_size(), 1)  # portable
        if int(err) == 0:
            self._pinned.append(t.data_ptr())

    @staticmethod
    def _shutdown(procs, conns, pinned) -> None:
        for ptr in pinned:
            try:
                torch.cuda.synchronize()          # nothing may still be copying out of the ring
                torch.cuda.cudart().cudaHostUnregister(ptr)
            except Exception:                     # at interpreter exit CUDA may already be gone
                pass
        pinned.clear()
        for c in conns:
            try:
                c.send(None)
            except (OSError, ValueError):
                pass
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in conns:
            c.close()
        procs.clear()
        conns.clear()

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    # -- slots ---------------------------------------------------------------------------------------
    def _release(self, slot: int) -> None:
        event = None
        if self._pinned:
            # A non_blocking copy out of this slot may still be queued on the stream: reuse the slot
            # only after what is queued now has run.
            event = torch.cuda.Event()
            event.record()
        self._freed.append((slot, event))

    def _take_slot(self) -> int | None:
        while self._freed:
            slot, event = self._freed.popleft()
            if event is not None:
                event.synchronize()
            self._free.append(slot)
        return self._free.pop() if self._free else None

    def _batch_view(self, slot: int, n: int, bad: list[str]) -> dict:
        view = self._images_np[slot, :n].view()      # its own ndarray object, kept alive by the tensor
        weakref.finalize(view, self._release, slot)
        return {"images": torch.from_numpy(view),    # (B, H, W, 3) uint8, shared memory
                "labels": self._labels[slot, :n].clone(),
                "flips": self._flips[slot, :n].clone(),
                "bad": list(dict.fromkeys(bad))}

    # -- iteration -----------------------------------------------------------------------------------
    def _receive(self) -> tuple:
        """The next answer of any worker; a dead worker is an error naming it."""
        while True:
            ready: list[Any] = mpc.wait(self._conns, timeout=_POLL_S)
            for conn in ready:
                k = self._conns.index(conn)
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    raise RuntimeError(self._death(k)) from None
                self._outstanding[k] -= 1
                self._in_flight -= 1
                return msg
            for k, p in enumerate(self._procs):
                if not p.is_alive():
                    raise RuntimeError(self._death(k))

    def _death(self, k: int) -> str:
        p = self._procs[k]
        p.join(timeout=1)
        return (f"loader worker {k} (pid {p.pid}) exited unexpectedly with code {p.exitcode}"
                f"{' (killed: out of memory?)' if p.exitcode == -9 else ''}")

    def _drain(self) -> None:
        """Wait out the answers of an abandoned iteration, returning their slots."""
        while self._in_flight and self._procs:
            _, slot, _, _ = self._receive()
            self._free.append(slot)

    def __iter__(self):
        if self._closed:
            raise RuntimeError("this loader was closed")
        if not self._procs:
            self._start()
        self._drain()
        tasks = iter(self.sampler)
        sizes: dict[int, int] = {}        # seq -> batch size, for batches sent to a worker
        done: dict[int, tuple] = {}       # seq -> (slot, bad), answered but not yet yielded
        next_seq, dispatched, exhausted = 0, 0, False

        def dispatch() -> None:
            nonlocal dispatched, exhausted
            while not exhausted:
                k = min(range(self.workers), key=self._outstanding.__getitem__)
                if self._outstanding[k] >= self.prefetch:
                    return
                slot = self._take_slot()
                if slot is None:
                    return
                task = next(tasks, None)
                if task is None:
                    exhausted = True
                    self._free.append(slot)
                    return
                idx, flip = task
                try:
                    self._conns[k].send((dispatched, slot, idx, flip))
                except OSError:
                    raise RuntimeError(self._death(k)) from None
                sizes[dispatched] = len(idx)
                self._outstanding[k] += 1
                self._in_flight += 1
                dispatched += 1

        try:
            while True:
                dispatch()
                if next_seq == dispatched:
                    task = None if exhausted else next(tasks, None)
                    if task is None:
                        return
                    # Every slot is held by the consumer: decode this batch here, into memory of its own.
                    dispatched += 1
                    next_seq += 1
                    yield self._decode_here(*task)
                    continue
                while next_seq not in done:
                    seq, slot, bad, error = self._receive()
                    if error is not None:
                        self._free.append(slot)
                        raise RuntimeError(f"loader worker failed on batch {seq}:\n{error}")
                    done[seq] = (slot, bad)
                    dispatch()
                slot, bad = done.pop(next_seq)
                n = sizes.pop(next_seq)
                next_seq += 1
                yield self._batch_view(slot, n, bad)
        finally:
            for slot, _ in done.values():     # answers the consumer never took
                self._free.append(slot)

    def _decode_here(self, idx, flip) -> dict:
        images = torch.empty((len(idx), self.image_size, self.image_size, 3), dtype=torch.uint8)
        used, bad = decode_batch(self.source, idx, images.numpy(), self.image_size, self.max_pixels)
        return {"images": images,
                "labels": torch.as_tensor(np.asarray(self.source.labels, dtype=np.int64)[used]),
                "flips": torch.from_numpy(np.asarray(flip, dtype=bool)),
                "bad": list(dict.fromkeys(bad))}
