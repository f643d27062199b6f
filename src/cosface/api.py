"""The Python API: train, configure and evaluate from a notebook or a sweep, with what the CLI uses.

    import cosface
    result = cosface.train("demo", data="faces/train", out="runs/try", overrides={"train.epochs": 1})
    print(result.best_checkpoint or result.last_checkpoint, result.final_loss)
    report = cosface.evaluate(result.last_checkpoint, lfw="faces/lfw")
    print(report.mean)

These are reached as `cosface.train`, `cosface.load_config` and `cosface.evaluate` (loaded on first use).
"""
from __future__ import annotations

import os
from pathlib import Path

from cosface.config import Config
from cosface.errors import CosfaceError


def load_config(path: str | os.PathLike | None = None, overrides: dict | list | tuple | None = None) -> Config:
    """A Config from a TOML file or shipped preset name (None = defaults), with `overrides` applied.

    `overrides` is a dict of dotted keys ({"optim.lr": 0.05}) or a list of "key=value" strings as `--set`
    takes them; every value is type-checked and the result validated (a CosfaceError names a bad key).
    """
    from cosface.config import load_config as _load

    where = None if path is None else Path(path)
    if isinstance(overrides, dict):
        return _load(where).replace(**overrides)
    return _load(where, list(overrides or ()))


def train(config_or_path: Config | str | os.PathLike | None = None, *, data: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, overrides: dict | list | None = None, lfw: str | os.PathLike | None = None,
          init_from: str | os.PathLike | None = None, resume: str | None = None, progress: bool = False,
          overwrite: bool = False):
    """Train and return a `TrainResult` (run directory, last and best checkpoint, final figures).

    config_or_path: a Config, a TOML path or a preset name ("demo"), or None for the defaults.
    data / lfw / init_from: set data.path / eval.lfw / finetune.init_from, as --data / --lfw / --init-from do.
    out: the run directory (default runs/<config name>). overrides: as in `load_config`.
    resume: None (a new run), "auto" (the newest checkpoint in `out`) or a checkpoint path.
    overwrite: start a new run in an `out` that holds one, moving the old run aside (as --overwrite).
    """
    from cosface.trainer import train as _train

    if isinstance(config_or_path, Config):
        cfg = config_or_path.replace(**overrides) if isinstance(overrides, dict) else (
            _with_list(config_or_path, overrides) if overrides else config_or_path)
        name = "default"
    else:
        cfg = load_config(config_or_path, overrides)
        name = Path(config_or_path).stem if config_or_path is not None else "default"
    paths = {"data.path": data, "eval.lfw": lfw, "finetune.init_from": init_from}
    cfg = cfg.replace(**{k: os.fspath(v) for k, v in paths.items() if v is not None})
    return _train(cfg, Path(out) if out is not None else Path("runs") / name, resume=resume, progress=progress,
                  overwrite=overwrite)


def _with_list(cfg: Config, overrides) -> Config:
    from cosface.config import parse_override

    return cfg.replace(**dict(parse_override(o) for o in overrides))


def evaluate(model_or_ckpt, *, lfw: str | os.PathLike | None = None, bin: str | os.PathLike | None = None,
             protocol: str = "insightface", batch_size: int = 64, device: str = "auto", progress: bool = False):
    """Verify a model on an LFW folder (`lfw`, reference protocol) or an insightface `.bin` (`bin`) -> Report.

    model_or_ckpt: a cosface checkpoint path (its preprocessing is used), or a backbone nn.Module
    (default preprocessing, on the module's device). Report.mean is the mean fold accuracy; Report.format()
    prints the reference's lines plus AUC and TAR at FAR. `protocol` applies to `.bin` sets only.
    """
    from cosface.evaluation import checkpoint_embed_fn, evaluate_bin, evaluate_lfw, torch_embed_fn
    from cosface.preprocess import DEFAULT

    if (lfw is None) == (bin is None):
        raise CosfaceError("evaluate needs exactly one of lfw=DIR or bin=FILE")
    if isinstance(model_or_ckpt, (str, os.PathLike)):
        embed_fn, prep = checkpoint_embed_fn(model_or_ckpt, device)
    else:
        embed_fn, prep = torch_embed_fn(model_or_ckpt, None if device == "auto" else device), DEFAULT
    if lfw is not None:
        return evaluate_lfw(embed_fn, lfw, batch_size=batch_size, progress=progress, size=prep.size)
    assert bin is not None
    return evaluate_bin(embed_fn, bin, protocol_name=protocol, batch_size=batch_size, progress=progress, size=prep.size)
