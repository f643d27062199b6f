"""Decoding on the GPU (`data.decoder = "gpu"`): the CPU only reads encoded bytes, nvImageCodec decodes.

A background thread reads each micro-batch's encoded images (packed records or folder files, the same
sources as the CPU path), hands them to nvImageCodec's batched decoder on a CUDA stream of its own
(nvJPEG, using the GPU's hardware JPEG engines where it has them) and stacks the result into a
(B, H, W, 3) uint8 tensor on the device; the trainer's flip and normalisation then run there as
usual. Batches come in sampler order with the CPU path's labels and flips.

Differences from the CPU path, by design: pixels are nvJPEG's, not libjpeg-turbo's (JPEG decoders may
differ by one level in a few pixels); images that are not input_size square are resized on the GPU
(bilinear with antialiasing) rather than by Pillow; EXIF orientation is ignored on both paths. An
image nvImageCodec cannot decode (or one that is not 3-channel after decoding) is decoded on the CPU
with cosface.preprocess.decode_image, and an unreadable one is replaced by the next readable sample,
as on the CPU path.

nvImageCodec also carries CPU codecs (libjpeg-turbo, OpenCV), and without its nvJPEG library (the
`nvjpeg` extra of its wheel, which cosface's `gpu-decode` extras bring, or a CUDA toolkit) it quietly decodes with those instead. The decoder is
therefore opened with its GPU backends only and checked on a small JPEG before training starts: a
machine where it cannot decode into GPU memory gets a one-line error ("gpu") or the CPU path with a
note saying why ("auto"), never a CPU decoder under the GPU's name.
"""
from __future__ import annotations

import contextlib
import io
import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

from cosface.errors import CosfaceError
from cosface.optional import require
from cosface.preprocess import MAX_PIXELS, decode_image

DECODERS = ("cpu", "gpu", "auto")
# nvImageCodec's backends that decode on the GPU: nvJPEG's hardware engines, its CUDA decoder and its
# hybrid one (Huffman on the CPU, the rest on the GPU: the fast one for small images). Its CPU-only
# codecs are left out on purpose (see the module's docstring).
GPU_BACKENDS = ("HW_GPU_ONLY", "GPU_ONLY", "HYBRID_CPU_GPU")
NO_GPU_DECODER = ("nvImageCodec cannot decode JPEG into GPU memory here ({why}); it needs the nvJPEG library: "
                  "pip install 'cosface[gpu-decode]' (CUDA 13 builds of torch; 'cosface[gpu-decode-cu12]' for CUDA 12), "
                  "or set data.decoder = 'cpu'")


def decode_params(nvimgcodec):
    """The same decoding on both paths: EXIF orientation ignored, 8-bit interleaved RGB."""
    return nvimgcodec.DecodeParams(apply_exif_orientation=False)


def code_streams(nvimgcodec, blobs: list[bytes]) -> list:
    """What Decoder.decode takes: CodeStreams in recent releases, the bytes themselves in older ones."""
    wrap = getattr(nvimgcodec, "CodeStream", None)
    return [wrap(b) for b in blobs] if wrap is not None else list(blobs)


def _probe_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 90)).save(out, "JPEG", quality=90)
    return out.getvalue()


def check_decodes_on_device(nvimgcodec, decoder) -> None:
    """Raise NO_GPU_DECODER unless `decoder` decodes a small JPEG into device memory."""
    try:
        img = decoder.decode(code_streams(nvimgcodec, [_probe_jpeg()]), params=decode_params(nvimgcodec))[0]
    except RuntimeError as e:
        raise CosfaceError(NO_GPU_DECODER.format(why=f"a test JPEG failed: {e}")) from e
    if img is None:
        raise CosfaceError(NO_GPU_DECODER.format(why="no GPU decoder took a test JPEG"))
    kinds = getattr(nvimgcodec, "ImageBufferKind", None)
    kind = getattr(img, "buffer_kind", None)
    if kinds is not None and kind is not None and kind != kinds.STRIDED_DEVICE:
        raise CosfaceError(NO_GPU_DECODER.format(why=f"a test JPEG was decoded into {getattr(kind, 'name', kind)}, "
                                                     f"not GPU memory"))


def open_gpu_decoder(nvimgcodec, device_index: int):
    """An nvImageCodec Decoder on GPU `device_index` with its GPU backends only, checked on a test JPEG."""
    backends = [nvimgcodec.Backend(getattr(nvimgcodec, kind)) for kind in GPU_BACKENDS if hasattr(nvimgcodec, kind)]
    try:
        decoder = nvimgcodec.Decoder(device_id=device_index, backends=backends)
    except RuntimeError as e:              # no backend could be created (no nvJPEG, no CUDA device)
        raise CosfaceError(NO_GPU_DECODER.format(why=f"no GPU decoder could be created: {e}")) from e
    check_decodes_on_device(nvimgcodec, decoder)
    return decoder


def _device_index(device: torch.device) -> int:
    if device.index is not None:
        return device.index
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def resolve_decoder(decoder: str, device: torch.device, note: Callable[[str], None] | None = None) -> str:
    """"cpu" or "gpu" for `data.decoder` on `device`. "auto" is the GPU when nvImageCodec is installed,
    training is on CUDA and a test JPEG decodes into GPU memory; otherwise the CPU, and when it was
    installed but failed the check, `note` is told why."""
    if decoder not in DECODERS:
        raise CosfaceError(f"data.decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "auto":
        if device.type != "cuda":
            return "cpu"
        try:
            nvimgcodec = require("nvidia.nvimgcodec", purpose="GPU decoding")
        except CosfaceError:
            return "cpu"
        try:
            open_gpu_decoder(nvimgcodec, _device_index(device))
        except CosfaceError as e:
            if note is not None:
                note(f"data.decoder = 'auto' decodes on the CPU: {e}")
            return "cpu"
        return "gpu"
    if decoder == "gpu":
        if device.type != "cuda":
            raise CosfaceError(f"data.decoder = 'gpu' needs a CUDA training device (train.device is {device}); "
                               f"use data.decoder = 'cpu' or 'auto'")
        require("nvidia.nvimgcodec", purpose="data.decoder = 'gpu'")
    return decoder


class GpuDecodeLoader:
    """Iterates an EpochSampler's micro-batches as {"images" (on the device), "labels", "flips", "bad"}."""

    def __init__(self, source, sampler, image_size: int, device: torch.device, prefetch: int = 2,
                 max_pixels: int = MAX_PIXELS):
        nvimgcodec = require("nvidia.nvimgcodec", purpose="data.decoder = 'gpu'")
        self.source, self.sampler, self.image_size = source, sampler, image_size
        self.device, self.prefetch, self.max_pixels = device, max(1, prefetch), max_pixels
        self._nvimgcodec = nvimgcodec
        self._decoder = open_gpu_decoder(nvimgcodec, _device_index(device))
        self._params = decode_params(nvimgcodec)
        self._labels = torch.as_tensor(np.asarray(source.labels, dtype=np.int64))
        # Held by the decode thread around each batch's GPU work (decode, copies, their wait, the
        # buffers' release): whoever holds it knows the thread issues no GPU work meanwhile.
        self._gpu_work = threading.Lock()

    def quiet(self) -> threading.Lock:
        """A context (the lock itself) inside which the decode thread issues no GPU work: it finishes the
        batch it is decoding, then waits. The CUDA-graph step captures inside it (cosface.step.GraphedStep),
        since a capture fails when another thread allocates or synchronises on the GPU meanwhile."""
        return self._gpu_work

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._produce, args=(out, stop), name="cosface-gpu-decode", daemon=True)
        thread.start()
        consumer = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, event = item
                if consumer is not None:
                    consumer.wait_event(event)
                    # Allocated on the decode stream, used on this one: keep the allocator from reusing it early.
                    batch["images"].record_stream(consumer)
                yield batch
        finally:
            stop.set()
            while thread.is_alive():            # unblock a producer waiting on a full queue
                try:
                    out.get(timeout=0.1)
                except queue.Empty:
                    pass
            thread.join()

    # -- the decode thread -------------------------------------------------------------------------
    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        # The device is CUDA in training (resolve_decoder); the CPU case exists so the loader's own
        # logic (order, fallback, replacement, shutdown) is tested without a GPU.
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        try:
            for idx, flips in self.sampler:
                if stop.is_set():
                    return
                event = None
                with self._gpu_work, torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                    batch = self._decode(idx, flips, stream)
                    if stream is not None:
                        event = torch.cuda.Event()
                        event.record(stream)
                out.put((batch, event))                 # never blocks holding the lock
            out.put(None)
        except BaseException as e:            # surfaces in the training loop, not as a silent stall
            out.put(e)

    def _decode(self, idx, flips, stream) -> dict:
        size, n = self.image_size, len(self.source)
        blobs, where = [], []                                              # readable bytes, their rows
        for k, i in enumerate(idx):
            try:
                blobs.append(self.source.read(int(i)))
                where.append(k)
            except (ValueError, OSError):
                pass                                                       # the CPU fallback reports it
        cuda_stream = stream.cuda_stream if stream is not None else 0
        decoded = (self._decoder.decode(code_streams(self._nvimgcodec, blobs), params=self._params,
                                        cuda_stream=cuda_stream) if blobs else [])
        got = dict(zip(where, decoded))
        images = torch.empty((len(idx), size, size, 3), dtype=torch.uint8, device=self.device)
        used = np.asarray(idx, dtype=np.int64).copy()
        bad: list[str] = []
        views = [torch.as_tensor(got[k], device=self.device) if got.get(k) is not None else None
                 for k in range(len(idx))]
        if all(t is not None and t.shape == (size, size, 3) for t in views):
            torch.stack([t for t in views if t is not None], out=images)                               # the usual case: one kernel
            views = []
        for k, t in enumerate(views):
            if t is None or t.dim() != 3 or t.shape[2] != 3:
                used[k] = self._cpu_fallback(int(idx[k]), images[k], bad, n)
            elif t.shape[0] == size and t.shape[1] == size:
                images[k].copy_(t)
            else:
                x = t.permute(2, 0, 1).unsqueeze(0).float()
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                    align_corners=False)
                images[k].copy_(x[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8))
        # nvImageCodec owns the decoded buffers and frees them with their Image objects: let the copies
        # out of them finish before `decoded` goes (this thread only; the training loop does not wait).
        if stream is not None:
            stream.synchronize()
        return {"images": images,                                          # (B, H, W, 3) uint8, on the device
                "labels": self._labels[torch.from_numpy(used)],
                "flips": torch.from_numpy(np.asarray(flips, dtype=bool)),
                "bad": list(dict.fromkeys(bad))}

    def _cpu_fallback(self, i: int, row: torch.Tensor, bad: list[str], n: int) -> int:
        """Decode sample i (or, if unreadable, the next readable one) on the CPU into `row`."""
        for attempt in range(n):
            j = (i + attempt) % n
            try:
                img = decode_image(self.source.read(j), self.image_size, max_pixels=self.max_pixels)
            except (ValueError, OSError) as e:
                bad.append(f"{self.source.describe(j)} ({e})")
                continue
            row.copy_(torch.from_numpy(img))
            return j
        raise RuntimeError("no readable image in the whole dataset")
