"""Export a trained backbone to one self-contained ONNX or TorchScript file, checked against eager.

The head is not exported (docs/protocol.md, "The deployment path"): a deployed model maps (N, 3, S, S) normalised images to (N, D)
embeddings. The model's `ModelInfo` (preprocessing from the checkpoint's one definition, embedding
size, backbone, class count, version, the evaluation's threshold) goes into ONNX metadata_props or
the TorchScript extra file `cosface.json`.

Exporter: torch.onnx's dynamo exporter (`dynamo=True`, torch.export based). The TorchScript-based
one (`dynamo=False`) also writes a correct file, in a tenth of the time, but torch 2.9+ deprecates
it and announces its removal; the dynamo exporter gives a symbolic batch dimension from
`dynamic_shapes` and, with `external_data=False`, keeps the weights inside the one file.

Parity: the written file is loaded back through `cosface.inference` (metadata and all), fed random
uint8 images, and compared with the eager backbone fed the same images through the training
preprocessing. For a dynamic batch the check uses another batch size than the one exported with,
so it also proves the batch axis free. The file appears at its final path only after it passes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosface.errors import CosfaceError
from cosface.fsio import ensure_dir, os_reason, remove_orphaned_temp_files
from cosface.inference import TORCHSCRIPT_METADATA_FILE, Embedder, ModelInfo, require_kind
from cosface.optional import check, require
from cosface.portable import portable_path
from cosface.preprocess import normalize

FORMATS = ("onnx", "torchscript")
# Largest allowed |exported - eager| on raw embeddings, relative to the largest |eager| value (at least 1).
# float32 carries ~6e-8 relative precision; an exported graph reorders and fuses ops (conv+BN folding),
# which over MobileFaceNet's ~50 layers costs ~1e-6 relative. Real export bugs (training-mode BN,
# wrong weights, channel order, layout) are O(1). 1e-4 sits well between the two.
TOLERANCE = 1e-4
_EXAMPLE_BATCH = 2   # traced with this batch ...
_PARITY_BATCH = 3    # ... and checked with another, when the batch is dynamic


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    batch: int | None            # None: dynamic
    opset: int | None            # ONNX default-domain opset
    max_abs_diff: float          # exported vs eager, on `parity_batch` random images
    parity_batch: int
    scale: float                 # largest |eager| value; the tolerance is relative to max(1, scale)
    tolerance: float
    info: ModelInfo
    seconds: float


def export_model(ckpt_path: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "onnx", batch: int | None = None,
                 opset: int | None = None, tolerance: float = TOLERANCE, seed: int = 0) -> ExportResult:
    """Export the checkpoint's backbone (eval mode) to `out`; raise, leaving no file, if parity fails."""
    from cosface.checkpoint import load_backbone

    if fmt not in FORMATS:
        raise CosfaceError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "torchscript" and (batch is not None or opset is not None):
        raise CosfaceError("--batch and --opset apply to ONNX; a TorchScript model takes any batch size")
    if batch is not None and batch < 1:
        raise CosfaceError(f"--batch must be 'dynamic' or a positive integer, got {batch}")
    if not tolerance > 0:
        raise CosfaceError(f"tolerance must be > 0, got {tolerance}")
    if fmt == "onnx":   # the exporter, and ONNX Runtime for the parity check
        check("onnx", "onnxscript", "onnxruntime", purpose="ONNX export")
    require_kind(ckpt_path, "checkpoint", "export reads the training checkpoint (a .pt from `cosface train`)")
    out = Path(out)
    if out.is_dir():
        raise CosfaceError(f"output {out} is a directory; give a file name")
    if out.exists() and os.path.samefile(out, ckpt_path):   # the export would replace the training checkpoint
        raise CosfaceError(f"output {out} is the checkpoint being exported; give another file name")
    t0 = time.perf_counter()
    model, prep, ckpt = load_backbone(ckpt_path, "cpu")     # eval mode: BN uses its running statistics
    info = ModelInfo.from_checkpoint(ckpt)
    if info.evaluation and info.evaluation.get("dataset"):   # checkpoints written before paths were made portable
        info = dataclasses.replace(info, evaluation={**info.evaluation, "dataset": portable_path(info.evaluation["dataset"])})
    example = torch.from_numpy(_random_images(batch or _EXAMPLE_BATCH, prep.size, seed))
    example = normalize(example, prep).contiguous()

    ensure_dir(out.parent, "output directory")
    remove_orphaned_temp_files(out.parent, out.name)     # left by an export that was killed
    # A hidden name beside the target (same file system, so the final rename is atomic); the writers
    # create it themselves, so it gets the usual permissions rather than mkstemp's 0600.
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        if fmt == "onnx":
            opset_used = export_onnx(model, example, tmp, info, dynamic=batch is None, opset=opset)
        else:
            opset_used = None
            export_torchscript(model, example, tmp, info)
        n = batch or _PARITY_BATCH
        diff, scale = _parity(model, tmp, out, info, n, seed + 1)
        if not diff <= tolerance * max(1.0, scale):   # `not <=` also catches NaN
            raise CosfaceError(f"exported {fmt} model differs from the eager model by {diff:.3g} (max |eager| "
                               f"{scale:.3g}, tolerance {tolerance:g} x max(1, that)); {out} not written")
        os.replace(tmp, out)
    except OSError as e:  # no permission, disk full: the earlier file at `out` (if any) is untouched
        raise CosfaceError(f"cannot write {out}: {os_reason(e)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, fmt, batch, opset_used, diff, n, scale, tolerance, info, time.perf_counter() - t0)


def _random_images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _parity(model, path: Path, out: Path, info: ModelInfo, n: int, seed: int) -> tuple[float, float]:
    """max |exported - eager| and max |eager| on n random images, each through its own preprocessing."""
    images = _random_images(n, info.preprocessing.size, seed)
    with torch.inference_mode():
        want = model(normalize(torch.from_numpy(images), info.preprocessing).contiguous()).numpy()   # (n, D)
    # Checked before loading the file back, which would refuse it naming the temporary file. With the
    # shape comparison below this pins the exported graph's output width to the metadata's embedding_size.
    if want.ndim != 2 or want.shape[1] != info.embedding_size:
        raise CosfaceError(f"the backbone outputs shape {tuple(want.shape)} for {n} images, but the metadata says "
                           f"embedding_size = {info.embedding_size}; {out} not written")
    exported = Embedder(path, device="cpu", quiet=True)
    # Compared as written (a NaN evaluation figure is written as null, and the tuples of `info` as lists).
    assert exported.info.to_metadata() == info.to_metadata(), "metadata did not survive the round trip through the file"
    got = exported.features(images)
    if got.shape != want.shape:
        raise CosfaceError(f"exported model returns shape {got.shape} for {n} images, eager {want.shape}")
    return float(np.max(np.abs(got - want))), float(np.max(np.abs(want)))


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter logs optional-dependency notes (torchvision ops), its own deprecations and,
    from onnxscript's opset converter, a traceback when a conversion fails; the caller checks the
    result and says what went wrong in one line instead."""
    logs = [logging.getLogger("torch.onnx"), logging.getLogger("onnxscript")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def export_onnx(model, example: torch.Tensor, path: Path, info: ModelInfo, *, dynamic: bool, opset: int | None) -> int:
    """Write an eval-mode module to `path` as ONNX with `info` in its metadata; returns the opset. No parity check."""
    onnx = require("onnx", purpose="ONNX export")
    require("onnxscript", purpose="ONNX export")   # torch's dynamo exporter needs it; fail with the extra named

    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    try:
        with _quiet_exporter():
            program = torch.onnx.export(model, (example,), dynamo=True, verbose=False, opset_version=opset,
                                        input_names=["input"], output_names=["embedding"],
                                        dynamic_shapes=dynamic_shapes)
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise CosfaceError(f"ONNX export failed{f' at opset {opset}' if opset else ''}: "
                           f"{lines[0] if lines else e.__class__.__name__}") from None
    assert program is not None   # dynamo=True always returns the program
    proto = program.model_proto
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and written != opset:
        # The exporter converts from its native opset and keeps the model unchanged when that fails.
        raise CosfaceError(f"ONNX export cannot target opset {opset}: the exporter's converter failed and "
                           f"left opset {written}; pick an opset nearer {written}")
    for key, value in info.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save_model(proto, str(path), save_as_external_data=False)   # weights inline: one file
    return written


def export_torchscript(model, example: torch.Tensor, path: Path, info: ModelInfo) -> None:
    """Write an eval-mode module to `path` as a traced TorchScript archive with `info`. No parity check."""
    # Tracing works for any backbone that is a pure tensor function; the parity check then runs
    # another batch size, which a trace specialised to the example shape would fail.
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(info.to_metadata())})
