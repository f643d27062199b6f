"""Checkpoint selection: keep `best.pt`, a copy of the save with the best held-out validation accuracy.

The copy is the whole checkpoint (it loads, exports and resumes like any other) plus a `best` entry
naming the metric, its value, the epoch and the save it copies. A resumed run starts from the value
recorded in the run's best.pt, so the choice is the one an uninterrupted run would make.
"""
from __future__ import annotations

from pathlib import Path

from cosface.checkpoint import atomic_save, load_checkpoint

BEST_NAME = "best.pt"
METRIC = "validation accuracy (reference protocol, held-out identities)"


class BestCheckpoint:
    def __init__(self, ckpt_dir: Path, select: str, resuming: bool):
        self.path = Path(ckpt_dir) / BEST_NAME
        self.active = select == "val"
        self.value: float | None = None
        if self.active and resuming and self.path.exists():
            self.value = float(load_checkpoint(self.path)["best"]["value"])

    @property
    def chosen(self) -> Path | None:
        return self.path if self.active and self.value is not None else None

    def offer(self, payload: dict, saved_as: Path) -> dict | None:
        """Copy the checkpoint `payload` (just written to `saved_as`) to best.pt if its validation beats the
        best so far (ties keep the earlier save). Returns the `best` record written, else None."""
        validation = payload.get("validation")
        if not self.active or validation is None:
            return None
        value = float(validation["mean"])
        if self.value is not None and value <= self.value:
            return None
        best = {"metric": METRIC, "value": value, "epoch": payload["epoch"], "global_step": payload["global_step"],
                "copy_of": Path(saved_as).name}
        atomic_save({**payload, "best": best}, self.path)
        self.value = value
        return best
