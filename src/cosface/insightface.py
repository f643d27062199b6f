"""Import insightface arcface_torch backbone weights (`backbone.pth`) as a cosface checkpoint.

The file is a state dict under insightface's key names (cosface.backbones.iresnet uses the same
ones), or arcface_torch's resume file holding one under "state_dict_backbone"; a "module." prefix
from a DistributedDataParallel save is removed. It is read with `torch.load(weights_only=True)`:
tensors only, no code. The checkpoint written is an ordinary cosface checkpoint (no head, no
classes, no training state) whose preprocessing is insightface's, RGB (x − 127.5) / 127.5, so
`eval`, `export`, `embed`, `verify` and every loader of checkpoints use it unchanged.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cosface.checkpoint import safe_torch_load
from cosface.errors import CosfaceError
from cosface.preprocess import INSIGHTFACE

_LAYER = re.compile(r"^layer([1-4])\.(\d+)\.")


@dataclass(frozen=True)
class ImportResult:
    path: Path
    arch: str
    embedding_size: int
    tensors: int
    parameters: int
    sha256: str


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The backbone state dict in an insightface file, keys as insightface names them."""
    p = Path(path)
    if not p.is_file():
        raise CosfaceError(f"insightface weights {p} do not exist" if not p.exists() else f"{p} is not a file")
    obj = safe_torch_load(p, "insightface weights", "a torch weights file")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict_backbone"), dict):
        obj = obj["state_dict_backbone"]                          # arcface_torch's checkpoint_gpu_0.pt
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise CosfaceError(f"{p} is not a state dict of tensors (expected insightface's backbone.pth)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _guess_arch(state: dict) -> str | None:
    """The iresnet whose blocks per stage match the file's layerN.M keys, if one does."""
    from cosface.backbones.iresnet import DEPTHS

    blocks = [0, 0, 0, 0]
    for k in state:
        m = _LAYER.match(k)
        if m:
            stage, index = int(m.group(1)) - 1, int(m.group(2))
            blocks[stage] = max(blocks[stage], index + 1)
    return next((name for name, depths in DEPTHS.items() if tuple(blocks) == depths), None)


def _first_mismatch(expected: dict, got: dict) -> str | None:
    for k, v in expected.items():
        if k not in got:
            if k.endswith("num_batches_tracked"):
                continue                                          # older torch saves lack the counter
            return f"{k!r} is missing from the file"
        if tuple(got[k].shape) != tuple(v.shape):
            return f"{k!r} has shape {tuple(got[k].shape)} in the file, {tuple(v.shape)} in the architecture"
    for k in got:
        if k not in expected:
            return f"{k!r} in the file is not in the architecture"
    return None


def import_insightface(src: str | os.PathLike, arch: str, out: str | os.PathLike,
                       input_size: int = 112) -> ImportResult:
    """Check `src` against `arch` key by key, load it strictly, and write a cosface checkpoint to `out`."""
    from cosface.backbones import available_backbones, build_backbone
    from cosface.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, versions
    from cosface.config import Config

    if not arch.startswith("iresnet") or arch not in available_backbones():
        names = [n for n in available_backbones() if n.startswith("iresnet")]
        raise CosfaceError(f"--arch {arch!r}: insightface backbones importable here are {', '.join(names)}")
    if Path(out).exists() and Path(src).exists() and os.path.samefile(src, out):   # writing would destroy the weights
        raise CosfaceError(f"{out} is the file being imported; give the checkpoint another name")
    state = read_state_dict(src)
    embedding = int(state["features.weight"].shape[0]) if "features.weight" in state else 512
    model = build_backbone(arch, embedding_size=embedding, input_size=input_size)
    expected = model.state_dict()
    problem = _first_mismatch(expected, state)
    if problem:
        guess = _guess_arch(state)
        hint = f"; its blocks per stage are those of {guess} (--arch {guess})" if guess and guess != arch else ""
        raise CosfaceError(f"{src} does not fit {arch} (input {input_size}x{input_size}, {embedding}-d): "
                           f"first mismatched key {problem}{hint}")
    state = {**{k: torch.zeros((), dtype=torch.long) for k in expected if k.endswith("num_batches_tracked")}, **state}
    model.load_state_dict(state, strict=True)
    digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    cfg = Config().replace(**{"model.backbone": arch, "model.embedding_size": embedding, "model.input_size": input_size})
    prep = INSIGHTFACE if input_size == INSIGHTFACE.size else type(INSIGHTFACE)(**{**INSIGHTFACE.to_dict(), "size": input_size})
    atomic_save({
        "format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(),
        "config": cfg.to_dict(), "num_classes": 0, "class_names": [], "preprocessing": prep.to_dict(),
        "backbone": {k: v.detach().clone() for k, v in model.state_dict().items()}, "head": {},
        "imported": {"from": "insightface arcface_torch", "file": Path(src).name, "sha256": digest, "arch": arch},
    }, Path(out))
    return ImportResult(Path(out), arch, embedding, len(expected), sum(p.numel() for p in model.parameters()), digest)
