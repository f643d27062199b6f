"""Embedding every distinct image once, with its horizontal mirror, behind a framework-free interface.

An `embed_fn` maps a (B, H, W, 3) uint8 RGB batch to (B, D) float32 embeddings, so eager PyTorch
(`torch_embed_fn`) and ONNX Runtime plug in alike. Decoding runs in a thread pool a few batches
ahead of the model (libjpeg-turbo and torch both release the GIL), so the wall time stays close to
the model's own.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from cosface.errors import CosfaceError
from cosface.preprocess import DEFAULT, Preprocessing, decode_image

EmbedFn = Callable[[np.ndarray], np.ndarray]


class PathSource:
    """Image files by path, as the embedding pipeline reads them (read, describe; a subclass may add decode)."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [os.fspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> bytes:
        try:
            with open(self.paths[i], "rb") as f:
                return f.read()
        except OSError as e:
            raise CosfaceError(f"cannot read image {self.paths[i]}: {e.strerror or e}") from None

    def describe(self, i: int) -> str:
        return self.paths[i]


def _decode_batch(source, indices: range, size: int) -> np.ndarray:
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    # A source may prepare its own pixels (IJB: decode the loose crop, then align it from its landmarks).
    decode = getattr(source, "decode", None) or (lambda i, size: decode_image(source.read(i), size))
    for j, i in enumerate(indices):
        try:
            out[j] = decode(i, size)
        except ValueError as e:
            raise CosfaceError(f"{source.describe(i)}: {e}") from None
    return out


def embed_images(
    embed_fn: EmbedFn,
    images,
    *,
    batch_size: int = 64,
    size: int = DEFAULT.size,
    progress: bool = True,
    workers: int | None = None,
    desc: str = "embedding",
) -> np.ndarray:
    """Embed each image and its mirror; returns (N, 2D) float32 rows [emb(image), emb(mirror)].

    `images` is a list of paths or a source (len(src), src.read(i) -> bytes, src.describe(i), and
    optionally src.decode(i, size) -> (size, size, 3) uint8 pixels in place of decoding read(i)).
    Image and mirror go through `embed_fn` together as one batch of 2B.
    """
    if batch_size < 1:
        raise CosfaceError(f"batch size must be >= 1, got {batch_size}")
    source = images if hasattr(images, "read") else PathSource(images)
    n = len(source)
    if n == 0:
        raise CosfaceError("no images to embed")
    workers = workers or min(8, os.cpu_count() or 1)
    batches = [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    out = None
    # An embed_fn may take the B images alone and add their mirrors itself (torch_embed_fn: on the device).
    with_mirrors = getattr(embed_fn, "with_mirrors", None)

    from tqdm import tqdm

    with ThreadPoolExecutor(workers) as pool, tqdm(
        total=n, desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False
    ) as bar:
        pending: deque = deque()
        todo = iter(batches)
        for b in todo:
            pending.append((b, pool.submit(_decode_batch, source, b, size)))
            if len(pending) > workers:
                break
        while pending:
            idx, fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_decode_batch, source, nxt, size)))
            batch = fut.result()
            if with_mirrors is not None:
                emb = np.asarray(with_mirrors(batch))
            else:
                emb = np.asarray(embed_fn(np.concatenate([batch, batch[:, :, ::-1]])))   # mirror = flip along W
            if emb.ndim != 2 or emb.shape[0] != 2 * len(idx):
                raise CosfaceError(f"embed_fn returned shape {emb.shape} for a batch of {2 * len(idx)} images")
            if out is None:
                dim = emb.shape[1]
                out = np.empty((n, 2 * dim), dtype=np.float32)
            out[idx.start : idx.stop, :dim] = emb[: len(idx)]
            out[idx.start : idx.stop, dim:] = emb[len(idx) :]
            bar.update(len(idx))
    assert out is not None   # n > 0 was checked
    return out


def torch_embed_fn(model, device=None, prep: Preprocessing = DEFAULT) -> EmbedFn:
    """An embed_fn running an nn.Module backbone under torch.inference_mode, in eval mode.

    The module's train/eval mode is restored after each call, so the trainer can pass the model it
    is training. `device` defaults to where the model's parameters are.
    """
    import torch

    if device is None:
        device = next(model.parameters()).device
    return _TorchEmbed(model, torch.device(device), prep)


class _TorchEmbed:
    """torch_embed_fn's embed_fn; `with_mirrors(batch)` embeds a batch and its mirrors in one call, the
    mirrors made on the device from one (page-locked, on CUDA) copy of the uint8 batch."""

    def __init__(self, model, device, prep: Preprocessing):
        self.model, self.device, self.prep = model, device, prep

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch, mirror=False)

    def with_mirrors(self, batch: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (2B, D): the images' features, then their mirrors'."""
        return self._run(batch, mirror=True)

    def _run(self, batch: np.ndarray, mirror: bool) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            return embed_uint8(self.model, self.device, self.prep, batch, mirror)
        finally:
            self.model.train(was_training)


def embed_uint8(model, device, prep: Preprocessing, batch: np.ndarray, mirror: bool = False) -> np.ndarray:
    """A torch model's raw (N, D) float32 features of (N, S, S, 3) uint8 RGB images, or (2N, D) with
    `mirror` (the images, then their mirrors). Only bytes cross to the device (page-locked on CUDA);
    channel order, mirror and normalisation happen there (cosface.preprocess.model_input)."""
    import torch

    from cosface.preprocess import model_input

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(batch))
        # Page-locked on CUDA; any other device (a model on "mps", say) gets the bytes too, as before.
        x = x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x.to(device)
        return model(model_input(x, prep, mirror)).float().cpu().numpy()


def checkpoint_embed_fn(path: str | os.PathLike, device: str = "auto") -> tuple[EmbedFn, Preprocessing]:
    """(embed_fn, preprocessing) for a cosface checkpoint's backbone; device "auto" picks CUDA when present."""
    import torch

    from cosface.checkpoint import load_backbone

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise CosfaceError(f"device {device!r} requested but CUDA is not available on this machine")
    model, prep, _ = load_backbone(path, device)
    return torch_embed_fn(model, device, prep), prep
