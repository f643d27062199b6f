"""The training input pipeline: a deterministic epoch sampler and a batch-decoding dataset.

Every random choice (the epoch's order, each sample's flip) is a function of (seed, epoch), so a
resumed run sees exactly the batches an uninterrupted one would, whatever the worker count. The
order is cut into global batches of batch_size × world_size × accumulate images; rank r's micro-batch
j of a step is slice (r·accumulate + j) of it, so N processes and one process accumulating N
micro-batches consume the same images.

Workers decode whole batches into one uint8 NHWC array; flip and normalisation happen later as
tensor ops on the training device (cosface.preprocess.normalize).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cosface.preprocess import MAX_PIXELS, decode_image


@dataclass(frozen=True)
class Plan:
    """How one epoch is cut: derived from the dataset size and the run's shape, never stored."""

    num_samples: int
    batch_size: int          # per micro-batch, per process
    world_size: int = 1
    accumulate: int = 1

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.accumulate

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch  # the last partial batch is dropped


def epoch_order(num_samples: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(permutation, flip mask) for an epoch; identical on every rank."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    perm = torch.randperm(num_samples, generator=g)
    flips = torch.rand(num_samples, generator=g) < 0.5
    return perm, flips


class EpochSampler(torch.utils.data.Sampler):
    """Yields (indices, flips) micro-batches for one rank, in step order, from `start_step` on."""

    def __init__(self, plan: Plan, rank: int, seed: int, flip: bool):
        self.plan, self.rank, self.seed, self.flip = plan, rank, seed, flip
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.plan.steps_per_epoch - self.start_step) * self.plan.accumulate

    def __iter__(self):
        p = self.plan
        perm, flips = epoch_order(p.num_samples, self.seed, self.epoch)
        if not self.flip:
            flips = torch.zeros_like(flips)
        for step in range(self.start_step, p.steps_per_epoch):
            for j in range(p.accumulate):
                lo = step * p.global_batch + (self.rank * p.accumulate + j) * p.batch_size
                idx = perm[lo:lo + p.batch_size]
                yield idx.numpy(), flips[idx].numpy()


class BatchDataset(torch.utils.data.Dataset):
    """Decodes a whole micro-batch per call; an unreadable sample is replaced by the next readable one.

    Replacement (rather than a shorter batch) keeps every batch the same shape on every rank; the
    unreadable files are returned with the batch so the trainer can report them.
    """

    def __init__(self, source, image_size: int, max_pixels: int = MAX_PIXELS):
        self.source, self.image_size, self.max_pixels = source, image_size, max_pixels
        self.labels = torch.as_tensor(source.labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item):
        indices, flips = item
        batch = torch.empty((len(indices), self.image_size, self.image_size, 3), dtype=torch.uint8)
        if torch.utils.data.get_worker_info() is not None:
            # Decode straight into shared memory: the batch then reaches the main process as a handle,
            # not as a second copy of every pixel.
            batch.share_memory_()
        used, bad = decode_batch(self.source, indices, batch.numpy(), self.image_size, self.max_pixels)
        return {
            "images": batch,                                    # (B, H, W, 3) uint8
            "labels": self.labels[torch.from_numpy(used)],      # (B,)
            "flips": torch.from_numpy(np.asarray(flips, dtype=bool)),  # (B,)
            "bad": list(dict.fromkeys(bad)),
        }


def decode_batch(source, indices, images: np.ndarray, image_size: int,
                 max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Decode samples `indices` of `source` into `images` ((B, H, W, 3) uint8, written in place).

    An unreadable sample is replaced by the next readable one (wrapping around). Returns (the sample
    actually used for each row, descriptions of the unreadable samples met).
    """
    n = len(source)
    used = np.empty(len(indices), dtype=np.int64)
    bad: list[str] = []
    for k, i in enumerate(indices):
        i = int(i)
        for attempt in range(n):
            j = (i + attempt) % n
            try:
                decode_image(source.read(j), image_size, out=images[k], max_pixels=max_pixels)
                used[k] = j
                break
            except (ValueError, OSError) as e:
                bad.append(f"{source.describe(j)} ({e})")
        else:
            raise RuntimeError("no readable image in the whole dataset")
    return used, bad


def make_loader(source, plan: Plan, *, rank: int, seed: int, flip: bool, image_size: int,
                workers: int, prefetch: int = 2, pin_memory: bool = False, ring: bool = True,
                decoder: str = "cpu", device=None, max_pixels: int = MAX_PIXELS):
    """The training loader for one rank, driven by an EpochSampler; call `loader.sampler.set_epoch`.

    With workers, a RingLoader (cosface.data.ring: decoding into reused shared-memory slots); with
    `ring=False`, torch's DataLoader over BatchDataset (kept for comparison in benchmarks). Both give
    the same batches. With decoder = "gpu" (see cosface.data.gpu_decode.resolve_decoder), images are
    decoded by nvImageCodec on `device` and batches arrive there. Images over `max_pixels` (read from
    their header) are unreadable samples, skipped and reported like corrupt ones.
    """
    sampler = EpochSampler(plan, rank, seed, flip)
    if decoder == "gpu":
        from cosface.data.gpu_decode import GpuDecodeLoader

        return GpuDecodeLoader(source, sampler, image_size, device, prefetch=prefetch, max_pixels=max_pixels)
    if workers > 0 and ring:
        from cosface.data.ring import RingLoader

        return RingLoader(source, sampler, image_size, workers, prefetch=prefetch, pin_memory=pin_memory,
                          max_pixels=max_pixels)
    # Its own generator: a DataLoader draws a worker base seed at every iteration, from torch's global RNG
    # otherwise, which Partial FC's sampling uses and a checkpoint restores (a resumed run would be a draw ahead).
    kwargs: dict[str, Any] = dict(num_workers=workers, pin_memory=pin_memory,
                                  generator=torch.Generator().manual_seed(seed))
    if workers > 0:
        kwargs.update(prefetch_factor=prefetch, persistent_workers=True)  # no restart per epoch
    return torch.utils.data.DataLoader(
        BatchDataset(source, image_size, max_pixels), batch_size=None, sampler=sampler,
        collate_fn=_identity, **kwargs,
    )


def _identity(batch):
    return batch
