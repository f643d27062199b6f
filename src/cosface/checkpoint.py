"""Checkpoints: self-describing, atomic, world-size independent, safe to load.

A checkpoint is a plain dict of tensors, numbers, strings and lists, loaded with
`torch.load(weights_only=True)`. It holds the unwrapped backbone, the *whole* head (a class-sharded
head is gathered before saving and re-sharded on load), optimizer state keyed by parameter name,
RNG states, the resolved config, the class names, the preprocessing and the versions that wrote it.
"""
from __future__ import annotations

import os
import platform
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from cosface import __version__
from cosface.config import Config, config_from_dict
from cosface.errors import CosfaceError
from cosface.preprocess import Preprocessing

FORMAT = "cosface-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?\.pt$")


def checkpoint_name(epoch: int, global_step: int | None = None) -> str:
    """epoch_005.pt after epoch 5; epoch_005_step_00001234.pt for a save inside epoch 5."""
    return f"epoch_{epoch:03d}.pt" if global_step is None else f"epoch_{epoch:03d}_step_{global_step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in training order (oldest first)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            epoch, step = int(m.group(1)), m.group(2)
            # An epoch-end save comes after every save made inside that epoch.
            found.append(((epoch, 1, 0) if step is None else (epoch, 0, int(step)), p))
    return [p for _, p in sorted(found)]


def atomic_save(obj, path: str | Path) -> None:
    """Write to a temporary file beside `path`, flush to disk, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~user_umask())   # mkstemp makes it 0600; a checkpoint gets the usual permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def user_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux /proc), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def versions() -> dict:
    return {"cosface": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(backbone: torch.nn.Module, head: Any, optimizer: torch.optim.Optimizer) -> dict:
    """Weights and optimizer state with the head gathered whole (a collective on a sharded head:
    every rank must call this)."""
    head_params = {id(p) for p in head.parameters()}
    names = {id(p): f"backbone.{n}" for n, p in backbone.named_parameters()}
    names.update({id(p): f"head.{n}" for n, p in head.named_parameters()})
    opt_state = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            tensors = {k: v for k, v in st.items() if torch.is_tensor(v)}
            if id(p) in head_params:
                tensors = {k: head.gather_rows(v) if v.dim() == 2 else v for k, v in tensors.items()}
            opt_state[names[id(p)]] = {k: v.detach().cpu() for k, v in tensors.items()}
    return {
        "backbone": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
        "head": {n: head.gather_rows(p.detach()).cpu() for n, p in head.named_parameters()},
        "optimizer": opt_state,
    }


def restore_training_state(ckpt: dict, backbone, head, optimizer=None) -> None:
    """Load weights (and optimizer state) into possibly sharded modules on any device."""
    backbone.load_state_dict(ckpt["backbone"])
    with torch.no_grad():
        for n, p in head.named_parameters():
            p.copy_(head.scatter_rows(ckpt["head"][n]).to(p.device))  # split on the CPU: never the whole table on a GPU
    if optimizer is None:
        return
    head_params = {id(p) for p in head.parameters()}
    by_name = {f"backbone.{n}": p for n, p in backbone.named_parameters()}
    by_name.update({f"head.{n}": p for n, p in head.named_parameters()})
    for name, tensors in ckpt["optimizer"].items():
        if name not in by_name:
            raise CosfaceError(f"checkpoint optimizer state names unknown parameter {name!r}")
        p = by_name[name]
        optimizer.state[p] = {
            k: (head.scatter_rows(v) if id(p) in head_params and v.dim() == 2 else v).to(p.device)
            for k, v in tensors.items()
        }


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely; every way it can be wrong is a one-line CosfaceError."""
    p = Path(path)
    if not p.exists():
        raise CosfaceError(f"checkpoint {p} does not exist")
    if p.is_dir():
        raise CosfaceError(f"checkpoint {p} is a directory; pass a .pt file (or use --resume auto)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, not a torch file at all
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # torch's weights_only refusal is a long text; its one informative line names the global.
        msg = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[0] if lines else e.__class__.__name__)
        raise CosfaceError(f"checkpoint {p} cannot be read (truncated, corrupt or not a cosface checkpoint): {msg}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CosfaceError(f"{p} is not a cosface checkpoint (no '{FORMAT}' format marker)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CosfaceError(f"checkpoint {p} has format version {ckpt['format_version']}; this cosface reads up to {FORMAT_VERSION}")
    for key in ("config", "num_classes", "class_names", "preprocessing", "backbone", "head"):
        if key not in ckpt:
            raise CosfaceError(f"checkpoint {p} lacks the {key!r} entry")
    return ckpt


def checkpoint_config(ckpt: dict, path: str | os.PathLike = "checkpoint") -> Config:
    return config_from_dict(ckpt["config"], source=f"{path} config")


def load_backbone(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """-> (backbone in eval mode on `device`, Preprocessing, checkpoint dict)."""
    from cosface.backbones import build_backbone

    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    model = build_backbone(cfg.model.backbone, embedding_size=cfg.model.embedding_size,
                           input_size=cfg.model.input_size)
    try:
        model.load_state_dict(ckpt["backbone"])
    except RuntimeError as e:
        raise CosfaceError(f"checkpoint {path}: backbone weights do not fit {cfg.model.backbone}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), Preprocessing.from_dict(ckpt["preprocessing"]), ckpt
