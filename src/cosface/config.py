"""Typed configuration: one frozen dataclass per component, TOML presets, `--set` overrides.

Each component receives only its own section. Values derived from others (steps per epoch, the
global batch) are computed where needed, never written back here.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from cosface.errors import CosfaceError
from cosface.fsio import read_text
from cosface.preprocess import MAX_PIXELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "mobilefacenet"
    embedding_size: int = 128
    input_size: int = 112
    dropout: float = 0.0     # before the embedding FC (iresnet); mobilefacenet has none


@dataclass(frozen=True)
class HeadConfig:
    type: str = "cosface"    # cosface | arcface | combined | softmax (normalised softmax, no margin)
    s: float = 32.0
    m: float = 0.40          # the margin of cosface (cos θ − m) and arcface (cos(θ + m))
    # type = "combined": insightface's (m1, m2, m3), target cos(m1·θ + m2) − m3
    m1: float = 1.0
    m2: float = 0.0
    m3: float = 0.0
    # Fraction of negative class centres used per step when the head is class-sharded (Partial FC);
    # 1.0 uses every centre. Positives of the batch are always kept.
    sample_rate: float = 1.0
    # > 0: the loss is computed over blocks of this many classes without the (B, C) logits
    # (cosface.margin_ce); 0: the head's plain logits.
    class_chunk: int = 0
    # How the class centres start: "xavier" (uniform, ±√(6 / (C + D))) or "normal" (N(0, init_std²), as
    # insightface's arcface_torch). A resumed run takes them from its checkpoint instead.
    init: str = "xavier"
    init_std: float = 0.01


@dataclass(frozen=True)
class DataConfig:
    path: str = ""           # image folder or packed directory; `--data` overrides
    workers: int = 2
    flip: bool = True        # random horizontal flip, p = 0.5
    prefetch: int = 2        # batches each worker keeps ready
    num_classes: int = 0     # 0 = take it from the data; otherwise the data must have exactly this many
    decoder: str = "cpu"     # cpu | gpu (nvImageCodec, CUDA) | auto (gpu when installed and training on CUDA)
    # Held-out validation identities, removed from training: a count (>= 1) or a fraction of the
    # classes (< 1); 0 = off. Chosen by train.seed (cosface.validation).
    val_identities: float = 0.0
    val_pairs: int = 6000    # verification pairs drawn from them, 10 folds as LFW (fewer if they allow fewer)
    max_pixels: int = MAX_PIXELS  # larger images (width x height, read from the header) are skipped undecoded


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4   # on every parameter, BN and PReLU included, as the reference
    # Multiply lr by global_batch / reference_batch (linear scaling); off in the reference.
    scale_lr: bool = False
    reference_batch: int = 128
    # No weight decay on BatchNorm/PReLU parameters and biases (decay only conv/linear weights and centres).
    no_decay_bn_prelu: bool = False
    clip_grad_norm: float = 0.0  # > 0: clip the backbone's gradient norm to this (insightface: 5); 0 = off
    implementation: str = "auto"  # auto | for-loop | foreach | fused (torch SGD kernels; same update)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "multistep"      # multistep | constant | cosine | poly
    milestones: list[int] = field(default_factory=lambda: [36, 48, 60])
    gamma: float = 0.1
    warmup_epochs: float = 0.0   # linear warm-up from 0; the reference's cosine option uses 3
    min_lr: float = 0.0          # cosine floor
    power: float = 1.0           # poly: lr · (1 − progress after warm-up)^power (insightface: 1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128        # per process
    accumulate: int = 1          # micro-batches per optimizer step
    seed: int = 0
    device: str = "auto"         # auto | cpu | cuda | cuda:N
    amp: str = "none"            # none | bf16 | fp16 (CUDA)
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"   # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    cuda_graph: bool = False     # capture the whole step as one CUDA graph (CUDA, one process)
    cudnn_benchmark: bool = False   # CUDA: cuDNN times its convolution algorithms for the batch's shape once
    log_every: int = 50          # steps between metrics.jsonl records
    # Multi-process runs: a collective that waits longer than this fails (a dead or stalled rank)
    # instead of hanging; must exceed rank 0's longest solo phase (checkpoint write + evaluation).
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class CheckpointConfig:
    save_start_epoch: int = 50
    save_every_epochs: int = 2
    save_every_steps: int = 0    # 0 = only at epoch ends
    keep_last: int = 0           # 0 = keep all
    select: str = "last"         # last | val: also keep best.pt, the save with the best validation accuracy


@dataclass(frozen=True)
class EvalConfig:
    lfw: str = ""                # LFW-style folder checked at each save; `--lfw` overrides
    batch_size: int = 64


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = False    # also write the metrics.jsonl scalars to OUT/tb/ (extra `tensorboard`)


@dataclass(frozen=True)
class FinetuneConfig:
    init_from: str = ""          # a cosface checkpoint whose backbone starts this new run (`--init-from`)
    freeze_backbone_epochs: int = 0   # epochs at the start in which the backbone is not updated
    backbone_lr_scale: float = 1.0    # backbone learning rate = this × the schedule's (the head gets 1×)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **overrides) -> "Config":
        """Copy with dotted keys changed, e.g. replace(**{"data.path": "x"}); values type-checked."""
        return _apply(self, overrides, source="override")

    def to_toml(self) -> str:
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
            lines.append("")
        return "\n".join(lines)


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def is_device_name(text) -> bool:
    """Whether `text` names a device that train.device, every --device and the Embedder accept (DEVICE_NAMES)."""
    return isinstance(text, str) and (text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text) is not None)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


_SECTIONS = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


def _check_value(key: str, value, annotation, source: str):
    """Return value converted to the field's type, or raise naming the key."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise CosfaceError(f"{source}: {key} must be a list of {item.__name__}, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, item, source) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise CosfaceError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CosfaceError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CosfaceError(f"{source}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):  # no setting of ours means anything at NaN or infinity
            raise CosfaceError(f"{source}: {key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise CosfaceError(f"{source}: {key} must be a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {hint} for {key}")


def _apply(cfg: Config, flat: dict, source: str) -> Config:
    sections = {name: getattr(cfg, name) for name in _SECTIONS}
    changes: dict[str, dict] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if section not in _SECTIONS or not name:
            raise CosfaceError(f"{source}: unknown config key {key!r}; sections are {', '.join(_SECTIONS)}")
        hints = typing.get_type_hints(_SECTIONS[section])
        if name not in hints:
            raise CosfaceError(
                f"{source}: unknown config key {key!r}; [{section}] has {', '.join(hints)}"
            )
        changes.setdefault(section, {})[name] = _check_value(key, value, hints[name], source)
    for section, values in changes.items():
        sections[section] = dataclasses.replace(sections[section], **values)
    new = Config(**sections)
    validate(new, source)
    return new


def _flatten(doc: dict, source: str) -> dict:
    flat = {}
    for section, values in doc.items():
        if not isinstance(values, dict):
            raise CosfaceError(f"{source}: top-level key {section!r} must be a [section] table")
        for k, v in values.items():
            flat[f"{section}.{k}"] = v
    return flat


def parse_override(item: str):
    """'key=value' -> (key, value); value read as a TOML literal, else as a bare string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CosfaceError(f"--set {item!r}: expected key=value, e.g. --set optim.lr=0.05")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Defaults <- TOML file <- `key=value` overrides, each step type-checked and validated."""
    cfg = Config()
    if path is not None:
        p = resolve_preset(path)
        try:
            doc = tomllib.loads(read_text(p, "config file"))
        except tomllib.TOMLDecodeError as e:
            raise CosfaceError(f"config file {p}: {e}") from None
        cfg = _apply(cfg, _flatten(doc, str(p)), str(p))
    if overrides:
        cfg = _apply(cfg, dict(parse_override(o) for o in overrides), "--set")
    return cfg


PRESET_DIR = Path(__file__).parent / "configs"


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def resolve_preset(path: str | Path) -> Path:
    """A TOML file path, or the name of a preset shipped with the package (e.g. "demo")."""
    p = Path(path)
    if p.exists():
        return p
    shipped = PRESET_DIR / (p.name if p.suffix == ".toml" else f"{p.name}.toml")
    if p.parent == Path(".") and shipped.exists():
        return shipped
    raise CosfaceError(f"config file {p} does not exist (shipped presets: {', '.join(available_presets())})")


def preset_header(path: str | Path) -> str:
    """The comment lines a preset starts with (its source and reported accuracy), as TOML comments."""
    lines = []
    for line in resolve_preset(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line + "\n")
    return "".join(lines)


def config_from_dict(d: dict, source: str = "checkpoint") -> Config:
    return _apply(Config(), _flatten(d, source), source)


def validate(cfg: Config, source: str = "config") -> None:
    from cosface.backbones import available_backbones
    from cosface.heads import CENTRE_INITS, available_heads
    from cosface.schedules import available_schedules

    def need(cond: bool, key: str, what: str):
        if not cond:
            raise CosfaceError(f"{source}: {key} {what}")

    need(cfg.model.backbone in available_backbones(), "model.backbone",
         f"must be one of {available_backbones()}, got {cfg.model.backbone!r}")
    need(cfg.model.embedding_size > 0, "model.embedding_size", "must be > 0")
    need(cfg.model.input_size > 0 and cfg.model.input_size % 16 == 0, "model.input_size",
         f"must be a positive multiple of 16, got {cfg.model.input_size}")
    need(cfg.head.type in available_heads(), "head.type", f"must be one of {available_heads()}, got {cfg.head.type!r}")
    need(cfg.head.s > 0, "head.s", "must be > 0")
    need(0 <= cfg.head.m < 1, "head.m", f"must be in [0, 1), got {cfg.head.m}")
    need(cfg.head.m1 > 0, "head.m1", f"must be > 0, got {cfg.head.m1}")
    need(0 <= cfg.head.m2 < 1.6, "head.m2", f"must be in [0, 1.6) radians, got {cfg.head.m2}")
    need(0 <= cfg.head.m3 < 1, "head.m3", f"must be in [0, 1), got {cfg.head.m3}")
    need(0 <= cfg.model.dropout < 1, "model.dropout", f"must be in [0, 1), got {cfg.model.dropout}")
    need(cfg.optim.clip_grad_norm >= 0, "optim.clip_grad_norm", f"must be >= 0 (0 = off), got {cfg.optim.clip_grad_norm}")
    need(cfg.schedule.power > 0, "schedule.power", f"must be > 0, got {cfg.schedule.power}")
    need(0 < cfg.head.sample_rate <= 1, "head.sample_rate", f"must be in (0, 1], got {cfg.head.sample_rate}")
    need(cfg.head.class_chunk >= 0, "head.class_chunk", f"must be >= 0, got {cfg.head.class_chunk}")
    need(cfg.head.init in CENTRE_INITS, "head.init", f"must be one of {sorted(CENTRE_INITS)}, got {cfg.head.init!r}")
    need(cfg.head.init_std > 0, "head.init_std", f"must be > 0, got {cfg.head.init_std}")
    need(cfg.data.workers >= 0, "data.workers", "must be >= 0")
    need(cfg.data.prefetch >= 1, "data.prefetch", "must be >= 1")
    need(cfg.data.decoder in ("cpu", "gpu", "auto"), "data.decoder", f"must be cpu, gpu or auto, got {cfg.data.decoder!r}")
    need(cfg.data.num_classes >= 0, "data.num_classes", "must be >= 0")
    need(cfg.data.max_pixels > 0, "data.max_pixels", "must be > 0")
    need(cfg.optim.lr > 0, "optim.lr", f"must be > 0, got {cfg.optim.lr}")
    need(0 <= cfg.optim.momentum < 1, "optim.momentum", "must be in [0, 1)")
    need(not cfg.optim.nesterov or cfg.optim.momentum > 0, "optim.nesterov", "needs optim.momentum > 0")
    need(cfg.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    need(cfg.optim.implementation in ("auto", "for-loop", "foreach", "fused"), "optim.implementation",
         f"must be auto, for-loop, foreach or fused, got {cfg.optim.implementation!r}")
    need(cfg.optim.reference_batch > 0, "optim.reference_batch", "must be > 0")
    need(cfg.schedule.name in available_schedules(), "schedule.name",
         f"must be one of {available_schedules()}, got {cfg.schedule.name!r}")
    need(list(cfg.schedule.milestones) == sorted(cfg.schedule.milestones), "schedule.milestones", "must be increasing")
    need(0 < cfg.schedule.gamma <= 1, "schedule.gamma", "must be in (0, 1]")
    need(cfg.schedule.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0")
    need(cfg.train.epochs > 0, "train.epochs", "must be > 0")
    need(cfg.train.batch_size > 0, "train.batch_size", "must be > 0")
    need(cfg.train.accumulate > 0, "train.accumulate", "must be > 0")
    need(cfg.train.amp in ("none", "bf16", "fp16"), "train.amp", f"must be none, bf16 or fp16, got {cfg.train.amp!r}")
    need(is_device_name(cfg.train.device), "train.device", f"must be {DEVICE_NAMES}, got {cfg.train.device!r}")
    need(cfg.train.compile_mode in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
         "train.compile_mode", f"must be default, reduce-overhead, max-autotune or max-autotune-no-cudagraphs, "
         f"got {cfg.train.compile_mode!r}")
    need(cfg.train.log_every > 0, "train.log_every", "must be > 0")
    need(cfg.train.timeout_s > 0, "train.timeout_s", f"must be > 0, got {cfg.train.timeout_s}")
    need(cfg.checkpoint.save_start_epoch >= 1, "checkpoint.save_start_epoch", "must be >= 1")
    need(cfg.checkpoint.save_every_epochs >= 1, "checkpoint.save_every_epochs", "must be >= 1")
    need(cfg.checkpoint.save_every_steps >= 0, "checkpoint.save_every_steps", "must be >= 0")
    need(cfg.checkpoint.keep_last >= 0, "checkpoint.keep_last", "must be >= 0")
    need(cfg.eval.batch_size > 0, "eval.batch_size", "must be > 0")
    v = cfg.data.val_identities
    need(v == 0 or 0 < v < 1 or (v >= 1 and v == int(v)), "data.val_identities",
         f"must be 0 (off), a fraction in (0, 1) or a whole count >= 1, got {v}")
    need(cfg.data.val_pairs >= 20, "data.val_pairs", f"must be >= 20 (10 folds of same + different pairs), got {cfg.data.val_pairs}")
    need(cfg.checkpoint.select in ("last", "val"), "checkpoint.select", f"must be last or val, got {cfg.checkpoint.select!r}")
    need(cfg.checkpoint.select != "val" or v > 0, "checkpoint.select",
         "= 'val' needs held-out identities: set data.val_identities (a count or a fraction)")
    need(cfg.finetune.freeze_backbone_epochs >= 0, "finetune.freeze_backbone_epochs", "must be >= 0")
    need(cfg.finetune.backbone_lr_scale >= 0, "finetune.backbone_lr_scale", f"must be >= 0, got {cfg.finetune.backbone_lr_scale}")
