"""Batching inference across concurrent requests: one worker thread runs the model on whatever is queued.

A request's crops join the queue; the worker takes everything waiting (up to `max_batch` crops, after
waiting at most `max_wait_s` for company when the queue is short) and runs one forward pass. Under
load many requests share a pass; a lone request waits only `max_wait_s`. The model is called from
this one thread only.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np


class Batcher:
    def __init__(self, embed_fn, *, max_batch: int = 64, max_wait_s: float = 0.002):
        self.embed_fn = embed_fn            # (N, S, S, 3) uint8 -> (N, D) float32
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.batches = 0                    # forward passes run, for /healthz and tests
        self.items = 0
        self._thread = threading.Thread(target=self._loop, name="cosface-batcher", daemon=True)
        self._thread.start()

    def submit(self, crops: np.ndarray) -> Future:
        fut: Future = Future()
        if len(crops) == 0:
            fut.set_result(np.empty((0, 0), np.float32))
        else:
            self._queue.put((crops, fut))
        return fut

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            first = self._queue.get()
            if first is None:
                break
            jobs, n = [first], len(first[0])
            deadline = time.monotonic() + self.max_wait_s
            while n < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self._stop.set()
                    break
                jobs.append(job)
                n += len(job[0])
            # A request whose future was cancelled (its caller gave up) is dropped; the rest are marked running,
            # so a late cancel cannot make set_result raise here and end this thread for every later request.
            jobs = [(c, fut) for c, fut in jobs if fut.set_running_or_notify_cancel()]
            if not jobs:
                continue
            n = sum(len(c) for c, _ in jobs)
            try:
                out = self.embed_fn(np.concatenate([c for c, _ in jobs]))
            except BaseException as e:   # every waiting request gets the error, the worker lives on
                for _, fut in jobs:
                    fut.set_exception(e)
                continue
            self.batches += 1
            self.items += n
            start = 0
            for crops, fut in jobs:
                fut.set_result(out[start:start + len(crops)])
                start += len(crops)
