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
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from cosface import __version__
from cosface.config import Config, config_from_dict
from cosface.errors import CosfaceError
from cosface.fsio import atomic_write
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
    """Write to a temporary file beside `path`, flush to disk, then rename over it; a failed write
    (disk full, no permission) is a one-line CosfaceError and leaves `path` as it was."""
    atomic_write(path, lambda f: torch.save(obj, f), "checkpoint")


def nonfinite_entries(state: dict) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf in a training state or checkpoint
    (backbone, head and optimizer entries); empty when every value is finite."""
    bad = []
    for part in ("backbone", "head"):
        for name, t in state.get(part, {}).items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(f"{part}.{name}")
    for name, tensors in state.get("optimizer", {}).items():
        for k, t in tensors.items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(f"optimizer[{name}].{k}")
    return bad


def checkpoint_problem(ckpt: dict) -> str | None:
    """Why a loaded checkpoint is not a good model to resume or deploy, or None when it is."""
    bad = nonfinite_entries(ckpt)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        return f"non-finite values (NaN or inf) in {bad[0]}{more}"
    return None


def missing_training_state(ckpt: dict) -> list[str]:
    """The keys a checkpoint needs to be resumed from (epoch, position, optimizer, RNG) that it lacks."""
    return [k for k in ("epoch", "epoch_samples", "global_step", "optimizer", "rng") if k not in ckpt]


def latest_good_checkpoint(directory: str | Path, say: Callable[[str], None] = print,
                           fallback: Path | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint in `directory` that loads and holds only finite values, with its loaded
    contents (so the caller need not read it again); each newer one that fails is reported through `say`
    and skipped. When every `epoch_*.pt` fails, `fallback` (the run's best.pt, a full copy of one save) is
    tried; it must also hold the training state to resume from.

    None when the directory holds no checkpoint at all; a CosfaceError naming the skipped files when it
    holds some but none is usable (starting over there would silently throw the run away)."""
    skipped = []
    for path in reversed(list_checkpoints(directory)):
        ckpt, problem = _load_for_resume(path)
        if ckpt is not None:
            return path, ckpt
        skipped.append(path)
        say(f"--resume auto: skipping {path}: {problem}")
    if fallback is not None and fallback.exists():
        ckpt, problem = _load_for_resume(fallback)
        if ckpt is not None:
            if skipped:
                say(f"--resume auto: every epoch_*.pt checkpoint in {directory} is unusable; resuming from "
                    f"{fallback.name}, a full copy of the best save")
            return fallback, ckpt
        skipped.append(fallback)
        say(f"--resume auto: skipping {fallback}: {problem}")
    if skipped:
        raise CosfaceError(f"--resume auto: no usable checkpoint in {directory} (skipped "
                           f"{', '.join(p.name for p in skipped)}); resume from a good file with --resume PATH, "
                           f"or start over with --overwrite (the old run is moved aside)")
    return None


def _load_for_resume(path: Path) -> tuple[dict | None, str | None]:
    """(the loaded checkpoint, None), or (None, why it cannot be resumed from: unreadable, no training
    state, non-finite)."""
    try:
        ckpt = load_checkpoint(path)
    except CosfaceError as e:
        return None, str(e)
    missing = missing_training_state(ckpt)
    problem = f"it holds no training state (no {', '.join(missing)})" if missing else checkpoint_problem(ckpt)
    return (None, problem) if problem else (ckpt, None)


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


def safe_torch_load(p: Path, what: str, kind: str) -> Any:
    """torch.load(weights_only=True) of `p`, every failure a one-line CosfaceError naming `what` and `p`.

    torch's refusal of a pickled object names the global it tried to load and suggests
    weights_only=False, which would run it: the message names the global and never repeats that advice.
    """
    try:
        with warnings.catch_warnings():   # torch warns before refusing a TorchScript archive; the error below says it
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, not a torch file at all
        if "TorchScript archive" in str(e):
            raise CosfaceError(f"{what} {p} is a TorchScript model (an export), not {kind}") from None
        forbidden = re.search(r"GLOBAL ([\w.]+)", str(e))
        if forbidden:
            raise CosfaceError(f"{what} {p} cannot be read: it tries to load the forbidden global {forbidden.group(1)}; "
                               f"refused: {kind} holds only tensors and plain data, and code inside a "
                               f"file is never run") from None
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "weights_only" not in ln]
        msg = lines[0] if lines else e.__class__.__name__
        raise CosfaceError(f"{what} {p} cannot be read (truncated, corrupt or not {kind}): {msg}") from None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely; every way it can be wrong is a one-line CosfaceError."""
    p = Path(path)
    if not p.exists():
        raise CosfaceError(f"checkpoint {p} does not exist")
    if p.is_dir():
        raise CosfaceError(f"checkpoint {p} is a directory; pass a .pt file (or use --resume auto)")
    ckpt = safe_torch_load(p, "checkpoint", "a cosface checkpoint")
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
    problem = checkpoint_problem({"backbone": ckpt["backbone"]})
    if problem:
        raise CosfaceError(f"checkpoint {path} holds {problem}: a diverged model, not usable")
    cfg = checkpoint_config(ckpt, path)
    model = build_backbone(cfg.model.backbone, embedding_size=cfg.model.embedding_size,
                           input_size=cfg.model.input_size)
    try:
        model.load_state_dict(ckpt["backbone"])
    except RuntimeError as e:
        raise CosfaceError(f"checkpoint {path}: backbone weights do not fit {cfg.model.backbone}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), Preprocessing.from_dict(ckpt["preprocessing"]), ckpt
