"""Where training records go: metrics.jsonl always, TensorBoard when asked; rank 0 writes, the others hold nothing.

A record is a flat dict with a "type" (step, epoch, eval, val, checkpoint, ...). The JSON-lines sink
writes it as is. The TensorBoard sink writes every number in it as the scalar `<type>/<key>` (nested
dicts as `<type>/<key>/<subkey>`) at the record's global step, so the two always hold the same values.
"""
from __future__ import annotations

import json
from pathlib import Path

from cosface.fsio import append_text, read_text, write_text
from cosface.optional import check, require

TB_DIR = "tb"
# Bookkeeping fields: the x axis and the record's kind, not curves.
_NOT_SCALARS = {"type", "epoch", "step", "global_step"}


class JsonLinesSink:
    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        self.dropped = 0
        if resume_step is not None and path.exists():
            self._cut(resume_step)

    def _cut(self, resume_step: int) -> None:
        """Drop the records of steps after `resume_step`: the resumed run trains (and logs) them again, and
        the killed run's half line if it left one."""
        kept = []
        lines = read_text(self.path, "metrics log").splitlines(keepends=True)
        for line in lines:
            try:
                record = json.loads(line) if line.endswith("\n") else None
            except ValueError:
                record = None
            if isinstance(record, dict) and record.get("global_step", 0) <= resume_step:
                kept.append(line)
        self.dropped = len(lines) - len(kept)
        if self.dropped:
            write_text(self.path, "".join(kept), "metrics log")

    def write(self, record: dict) -> None:
        append_text(self.path, json.dumps(record) + "\n", "metrics log")   # a failed write leaves no half line

    def close(self) -> None:
        pass


class TensorBoardSink:
    def __init__(self, log_dir: Path, resume_step: int | None = None):
        require("tensorboard", purpose="log.tensorboard = true")
        tb = require("torch.utils.tensorboard", "tensorboard", purpose="log.tensorboard = true")
        # purge_step hides the events a killed run wrote after the resumed checkpoint from TensorBoard's readers.
        purge = None if resume_step is None else resume_step + 1
        self.writer = tb.SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def write(self, record: dict) -> None:
        if "global_step" not in record:
            return
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, global_step=record["global_step"])
        self.writer.flush()    # a crash or kill keeps everything logged so far

    def close(self) -> None:
        self.writer.close()


def scalars(record: dict) -> list[tuple[str, float]]:
    """(tag, value) for every number of a record: `type/key`, nested dicts as `type/key/subkey`."""
    out = []

    def walk(prefix: str, d: dict):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}/{k}", v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append((f"{prefix}/{k}", float(v)))

    walk(record.get("type", "misc"), {k: v for k, v in record.items() if k not in _NOT_SCALARS})
    return out


def check_extras(log_cfg) -> None:
    """Fail before anything is written when a configured sink's extra is missing."""
    if log_cfg.tensorboard:
        check("tensorboard", purpose="log.tensorboard = true")


class MetricsLog:
    """Fans a record out to the run's sinks. Built on every rank (so a missing extra fails everywhere at
    start), writing only on the main one. `resume_step`: the global step a resumed run continues from (0 for
    `--resume auto` that starts afresh); what the logs hold beyond it is dropped, so no step is logged twice."""

    def __init__(self, out_dir: Path, log_cfg, is_main: bool, resume_step: int | None = None):
        check_extras(log_cfg)
        self.sinks: list = []
        self.dropped = 0     # metrics.jsonl lines dropped on resuming
        if is_main:
            jsonl = JsonLinesSink(Path(out_dir) / "metrics.jsonl", resume_step)
            self.dropped = jsonl.dropped
            self.sinks.append(jsonl)
            if log_cfg.tensorboard:
                self.sinks.append(TensorBoardSink(Path(out_dir) / TB_DIR, resume_step))

    def write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
