"""Model files of every kind: what they are (by content), the metadata they carry, and running them.

A model file is recognised by its content, never its extension: a zip with a `code/` folder is a
TorchScript archive, any other torch zip (or a legacy pickle) a training checkpoint, anything else is
offered to ONNX Runtime. Exported models carry a `ModelInfo` as flat string metadata (ONNX
metadata_props; the TorchScript extra file cosface.json); a checkpoint's is derived from its entries.
ONNX models run without importing torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from cosface import __version__
from cosface.config import DEVICE_NAMES, is_device_name
from cosface.errors import CosfaceError
from cosface.preprocess import Preprocessing

METADATA_FORMAT = 1
TORCHSCRIPT_METADATA_FILE = "cosface.json"
KINDS = {"checkpoint": "a cosface training checkpoint", "torchscript": "a TorchScript model", "onnx": "an ONNX model"}

_REQUIRED = ("cosface_format", "cosface_version", "backbone", "embedding_size", "num_classes",
             "input_size", "channel_order", "mean", "std", "layout")
_CHANNEL_ORDERS = ("RGB", "BGR")
# Written out here (not imported from cosface.faces) so reading a model never loads the detection package;
# tests/unit/test_faces_embed.py checks they match cosface.faces.align.
DEFAULT_ALIGNMENT_TEMPLATE = "arcface"
DEFAULT_ALIGNMENT_METHOD = "umeyama-similarity-5pt+bilinear"


@dataclass(frozen=True)
class ModelInfo:
    """What an exported model says about itself; written by export, read by every runtime here."""

    preprocessing: Preprocessing
    embedding_size: int
    backbone: str
    num_classes: int
    cosface_version: str
    threshold: float | None = None      # from the evaluation: see from_checkpoint
    evaluation: dict | None = None      # the checkpoint's evaluation: protocol, mean, std, thresholds, dataset,
                                        # verify_threshold, far_thresholds (NaN figures are written as null)
    # How the training crops were aligned, so photos are aligned the same way: the project's data (CASIA /
    # LFW 112x112 releases, `cosface align`, synthetic faces) follow the ArcFace five-point template.
    alignment_template: str = DEFAULT_ALIGNMENT_TEMPLATE
    alignment_method: str = DEFAULT_ALIGNMENT_METHOD

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "ModelInfo":
        model = ckpt["config"]["model"]
        ev = ckpt.get("evaluation")
        # The trainer stores a threshold chosen on plain flip-concatenated cosines (what `similarity`
        # computes); otherwise the mean of the reference protocol's fold thresholds approximates it.
        if ev and ev.get("verify_threshold") is not None:
            threshold = float(ev["verify_threshold"])
        elif ev and ev.get("protocol") == "reference" and ev.get("thresholds"):
            threshold = float(np.mean(ev["thresholds"]))
        else:
            threshold = None
        align = ckpt.get("alignment") or {}
        return cls(preprocessing=Preprocessing.from_dict(ckpt["preprocessing"]),
                   embedding_size=int(model["embedding_size"]), backbone=str(model["backbone"]),
                   num_classes=int(ckpt["num_classes"]), cosface_version=__version__,
                   threshold=threshold, evaluation=dict(ev) if ev else None,
                   alignment_template=str(align.get("template", DEFAULT_ALIGNMENT_TEMPLATE)),
                   alignment_method=str(align.get("method", DEFAULT_ALIGNMENT_METHOD)))

    def to_metadata(self) -> dict[str, str]:
        """Flat string pairs, as ONNX metadata_props hold them (and a C++ runtime can read them)."""
        p = self.preprocessing
        meta = {
            "cosface_format": str(METADATA_FORMAT), "cosface_version": self.cosface_version,
            "backbone": self.backbone, "embedding_size": str(self.embedding_size),
            "num_classes": str(self.num_classes), "input_size": str(p.size),
            "channel_order": p.channel_order, "mean": repr(float(p.mean)), "std": repr(float(p.std)),
            "layout": p.layout,
            "alignment_template": self.alignment_template, "alignment_method": self.alignment_method,
        }
        if self.threshold is not None:
            meta["threshold"] = repr(self.threshold)
        if self.evaluation is not None:
            meta["evaluation"] = json.dumps(_finite_or_null(self.evaluation), allow_nan=False)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str) -> "ModelInfo":
        missing = [k for k in _REQUIRED if k not in meta]
        if len(missing) == len(_REQUIRED):
            raise CosfaceError(f"{source} is not a cosface model: its metadata has none of the keys "
                               f"{', '.join(_REQUIRED)} (models for cosface come from `cosface export`; for another tool's ONNX model "
                               f"state its normalisation, e.g. --mean 127.5 --std 127.5 for insightface's)")
        if missing:
            raise CosfaceError(f"{source}: model metadata lacks {', '.join(missing)}")

        def num(key, kind):
            try:
                return kind(meta[key])
            except ValueError:
                raise CosfaceError(f"{source}: metadata {key} = {meta[key]!r} is not a{'n integer' if kind is int else ' number'}") from None

        if num("cosface_format", int) > METADATA_FORMAT:
            raise CosfaceError(f"{source}: metadata format {meta['cosface_format']} is newer than this cosface reads "
                               f"({METADATA_FORMAT}); upgrade cosface")
        prep = Preprocessing(size=num("input_size", int), channel_order=meta["channel_order"],
                             mean=num("mean", float), std=num("std", float), layout=meta["layout"])
        if prep.channel_order not in _CHANNEL_ORDERS:
            raise CosfaceError(f"{source}: metadata channel_order = {prep.channel_order!r}; expected one of {_CHANNEL_ORDERS}")
        if prep.layout != "NCHW":
            raise CosfaceError(f"{source}: metadata layout = {prep.layout!r}; cosface runs NCHW models")
        if prep.size < 1 or prep.std == 0:
            raise CosfaceError(f"{source}: metadata input_size = {prep.size}, std = {prep.std} cannot be right")
        evaluation = None
        if "evaluation" in meta:
            try:
                evaluation = json.loads(meta["evaluation"])
            except json.JSONDecodeError:
                raise CosfaceError(f"{source}: metadata evaluation is not JSON") from None
        return cls(preprocessing=prep, embedding_size=num("embedding_size", int), backbone=meta["backbone"],
                   num_classes=num("num_classes", int), cosface_version=meta["cosface_version"],
                   threshold=num("threshold", float) if "threshold" in meta else None, evaluation=evaluation,
                   alignment_template=meta.get("alignment_template", DEFAULT_ALIGNMENT_TEMPLATE),
                   alignment_method=meta.get("alignment_method", DEFAULT_ALIGNMENT_METHOD))


def _finite_or_null(value):
    """NaN and infinities (a degenerate evaluation's figures) as None: JSON has no such numbers (Python's json
    writes them, strict parsers such as a C++ runtime's reject them), and a NaN read back never equals itself."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def model_kind(path: str | os.PathLike) -> str:
    """"checkpoint", "torchscript" or "onnx", from the file's content."""
    p = Path(path)
    if not p.exists():
        raise CosfaceError(f"model file {p} does not exist")
    if not p.is_file():
        raise CosfaceError(f"model file {p} is not a file")
    with open(p, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise CosfaceError(f"{p} is a damaged zip archive, not a readable model") from None
        # Both torch formats are zips with one top folder; only TorchScript stores code.
        if any(n.split("/")[1:2] == ["code"] for n in names):
            return "torchscript"
        if any(n.endswith("/data.pkl") for n in names):
            return "checkpoint"
        raise CosfaceError(f"{p} is a zip archive but neither a torch checkpoint nor a TorchScript model")
    if head[:1] == b"\x80":  # a pickle protocol marker: torch.save's pre-zip format
        return "checkpoint"
    return "onnx"  # protobuf has no magic number; ONNX Runtime's parser decides


def require_kind(path: str | os.PathLike, kind: str, advice: str) -> None:
    """Raise, naming what the file really is, when it is not of `kind`."""
    found = model_kind(path)
    if found == kind:
        return
    # "onnx" is model_kind's answer for anything that is not a torch file: say so only for a real ONNX model.
    if found == "onnx" and not _parses_as_onnx(Path(path)):
        raise CosfaceError(f"{path} is not {KINDS[kind]}: it is neither a torch file nor a readable ONNX model "
                           f"(truncated, or another kind of file); {advice}")
    raise CosfaceError(f"{path} is {KINDS[found]}, not {KINDS[kind]}; {advice}")


def _parses_as_onnx(path: Path) -> bool:
    """Whether `path` holds an ONNX ModelProto with a graph (False when the onnx package is absent)."""
    from cosface.optional import require

    try:
        onnx = require("onnx")
    except CosfaceError:
        return False
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception:   # protobuf's DecodeError, or anything else the parser raises on foreign bytes
        return False
    return proto.HasField("graph") and proto.ir_version > 0


def check_output_width(path: str | os.PathLike, width: int, embedding_size: int) -> None:
    """Raise, naming the file, when the model's output width is not the embedding_size its metadata states."""
    if width != embedding_size:
        raise CosfaceError(f"{path}: the model outputs {width} values per image, but its metadata says embedding_size = "
                           f"{embedding_size}")


Runner = Callable[[np.ndarray], np.ndarray]   # (N, 3, S, S) float32 -> (N, D) float32


def _resolve_torch_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CosfaceError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


class TorchRunner:
    """A torch module as a Runner, plus `from_uint8`: the same features from uint8 pixels, with the
    normalisation (and the mirror) done by torch where the model runs, so on a GPU the host only
    decodes and copies bytes (a quarter of the float batch's size)."""

    def __init__(self, module, device):
        self.module, self.device = module, device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(x).to(self.device)).float().cpu().numpy()

    def from_uint8(self, batch: np.ndarray, prep, mirror: bool) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, D) raw features, or (2N, D) for the images then their mirrors
        (flipped along the width): what calling the runner on normalize_numpy(batch) gives (the same
        float32 arithmetic; a channels_last input, so convolutions may round differently)."""
        from cosface.evaluation.extract import embed_uint8

        return embed_uint8(self.module, self.device, prep, batch, mirror)


def _open_checkpoint(path: Path, device: str) -> tuple[Runner, ModelInfo]:
    from cosface.checkpoint import load_backbone

    dev = _resolve_torch_device(device)
    model, _, ckpt = load_backbone(path, dev)
    return TorchRunner(model, dev), ModelInfo.from_checkpoint(ckpt)


def _open_torchscript(path: Path, device: str) -> tuple[Runner, ModelInfo]:
    import torch

    dev = _resolve_torch_device(device)
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=dev, _extra_files=extra)
    except Exception as e:
        raise CosfaceError(f"{path}: cannot load the TorchScript archive ({_first_line(e)})") from None
    raw = extra[TORCHSCRIPT_METADATA_FILE]
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        raise CosfaceError(f"{path}: {TORCHSCRIPT_METADATA_FILE} inside the archive is not JSON") from None
    info = ModelInfo.from_metadata(meta, str(path))
    return TorchRunner(module.eval(), dev), info


# The input element types a normalised float batch can be cast to (ONNX Runtime's names); integer or
# quantised inputs expect other values than (pixel - mean) / std, and numpy has no bfloat16.
_ONNX_FLOAT_INPUTS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _onnx_input_dtype(session, path: Path) -> np.dtype:
    inp = session.get_inputs()[0]
    if inp.type not in _ONNX_FLOAT_INPUTS:
        raise CosfaceError(f"{path}: the graph's input {inp.name} is {inp.type}; cosface feeds normalised images to "
                           f"{', '.join(_ONNX_FLOAT_INPUTS)} inputs only")
    return np.dtype(_ONNX_FLOAT_INPUTS[inp.type])


def _foreign_onnx_info(session, path: Path, prep: Preprocessing, dtype: np.dtype) -> ModelInfo:
    """ModelInfo for an ONNX model without cosface metadata (e.g. insightface's w600k_r50.onnx): the
    input size and embedding size from the graph, the normalisation as the caller states it."""
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    if len(inp.shape) != 4 or inp.shape[1] != 3 or not isinstance(inp.shape[2], int) or inp.shape[2] != inp.shape[3]:
        raise CosfaceError(f"{path}: the graph's input {inp.name} has shape {inp.shape}; expected (N, 3, S, S) with a fixed S")
    dim = out.shape[-1] if len(out.shape) == 2 and isinstance(out.shape[-1], int) else None
    if dim is None:   # a symbolic output size: ask the graph once
        batch = inp.shape[0] if isinstance(inp.shape[0], int) else 1
        probe = np.zeros((batch, 3, inp.shape[2], inp.shape[2]), dtype)
        dim = int(session.run(None, {inp.name: probe})[0].shape[-1])
    return ModelInfo(preprocessing=dataclasses.replace(prep, size=int(inp.shape[2])), embedding_size=int(dim),
                     backbone=f"external ONNX ({path.name})", num_classes=0, cosface_version=__version__)


def _open_onnx(path: Path, device: str, preprocessing: Preprocessing | None = None) -> tuple[Runner, ModelInfo]:
    from cosface.optional import require

    ort = require("onnxruntime", purpose="running ONNX models")

    providers: list[Any] = ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device.startswith("cuda") and not has_cuda:
        raise CosfaceError(f"device {device!r}: this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)")
    if device != "cpu" and has_cuda:
        index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0   # cuda:N runs on GPU N
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3   # errors only: ORT's warnings about its own graph rewrites are not the user's
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:
        raise CosfaceError(f"{path} is not a model file: no checkpoint or TorchScript header, and ONNX Runtime "
                           f"cannot load it ({_first_line(e)})") from None
    dtype = _onnx_input_dtype(session, path)
    meta = session.get_modelmeta().custom_metadata_map
    if preprocessing is None:
        info = ModelInfo.from_metadata(meta, str(path))
    elif any(k in meta for k in _REQUIRED):
        raise CosfaceError(f"{path} carries its own preprocessing metadata; --mean/--std are for models without it")
    else:
        info = _foreign_onnx_info(session, path, preprocessing, dtype)
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    size = info.preprocessing.size
    if len(inp.shape) != 4 or list(inp.shape[1:]) != [3, size, size]:
        raise CosfaceError(f"{path}: the graph's input {inp.name} has shape {inp.shape}, but its metadata "
                           f"says (N, 3, {size}, {size})")
    if len(out.shape) == 2 and isinstance(out.shape[1], int):   # a symbolic width is checked on each run (Embedder.features)
        check_output_width(path, out.shape[1], info.embedding_size)
    name = inp.name
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def run(x: np.ndarray) -> np.ndarray:
        x = x.astype(dtype, copy=False)   # the graph's own input type (e.g. a float16 model); outputs back to float32
        if fixed is None:
            return session.run(None, {name: x})[0].astype(np.float32, copy=False)
        # A fixed-batch export (the reference's deployment shape is batch 1): feed it in chunks.
        outs = []
        for s in range(0, len(x), fixed):
            chunk = x[s:s + fixed]
            n = len(chunk)
            if n < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append(session.run(None, {name: chunk})[0][:n])
        return np.concatenate(outs).astype(np.float32, copy=False)

    return run, info


_OPENERS = {"checkpoint": _open_checkpoint, "torchscript": _open_torchscript, "onnx": _open_onnx}


def open_model(path: str | os.PathLike, device: str = "auto",
               preprocessing: Preprocessing | None = None) -> tuple[str, Runner, ModelInfo]:
    """-> (kind, runner, info) for any model file; `device` is "auto" (CUDA when available), "cpu" or "cuda".

    `preprocessing` is for ONNX models that carry no cosface metadata (insightface's exports): their
    normalisation and channel order, the input size being read from the graph."""
    if not is_device_name(device):
        # torch would raise its own RuntimeError, and ONNX Runtime would silently take any other word as "auto"
        raise CosfaceError(f"device must be {DEVICE_NAMES}, got {device!r}")
    kind = model_kind(path)
    if preprocessing is not None:
        if kind != "onnx":
            raise CosfaceError(f"{path} is {KINDS[kind]}, which records its own preprocessing; "
                               f"--mean/--std are for ONNX models without metadata")
        runner, info = _open_onnx(Path(path), device, preprocessing)
        return kind, runner, info
    runner, info = _OPENERS[kind](Path(path), device)
    return kind, runner, info


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else e.__class__.__name__
