"""Early, clear words about the mistakes users make most: bad data shapes, a diverging rate, a changed config.

Each check is a small function or object the trainer calls at one line: warnings go through `say`
(printed on rank 0), failures are CosfaceErrors that say what to change.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from cosface.errors import CosfaceError

# Below this many images a class centre is learnt from too few views for the margin to pay off; every
# public face-recognition training set (CASIA-WebFace, MS1M, Glint360K) has at least this many on average.
FEW_IMAGES = 5
GROWTH = 10.0           # a logged loss this many times the window's lowest means divergence
WINDOW = 10             # logged values the growth is measured over
# Keys whose change makes a resume a different run: the architecture and the held-out split.
FATAL_ON_RESUME = ("model.", "head.type", "data.val_identities", "data.val_pairs")


def data_warnings(labels: np.ndarray, class_names: list[str]) -> list[str]:
    """Warnings about the class sizes of a training set (empty when nothing is wrong)."""
    sizes = np.bincount(np.asarray(labels), minlength=len(class_names))
    out = []
    single = np.flatnonzero(sizes == 1)
    if len(single):
        shown = ", ".join(class_names[i] for i in single[:5]) + (f" and {len(single) - 5} more" if len(single) > 5 else "")
        out.append(f"warning: {len(single)} of {len(sizes)} classes have a single image ({shown}): they cannot "
                   f"form same-identity pairs, and their class centre is learnt from one view")
    few = int(np.sum(sizes < FEW_IMAGES))
    if few > len(sizes) / 2:
        out.append(f"warning: {few} of {len(sizes)} classes have fewer than {FEW_IMAGES} images (median "
                   f"{int(np.median(sizes))}, {int(np.sum(sizes == 1))} with 1, {int(np.sum((sizes >= 2) & (sizes < FEW_IMAGES)))} "
                   f"with 2-{FEW_IMAGES - 1}); a margin loss learns each class centre from its own images, so "
                   f"most classes here get too few for the margin to help: merge or drop small classes")
    return out


class DivergenceWatch:
    """Stops a run whose logged loss grows GROWTH× above the lowest of the last WINDOW logged values."""

    def __init__(self, lr: float):
        self.lr = lr
        self.recent: deque[tuple[float, int]] = deque(maxlen=WINDOW)

    def seed(self, recent) -> None:
        """Start from a checkpoint's `recent_losses` ([loss, global step] pairs, oldest first), so a resumed
        run compares against the losses logged before its save; None (older checkpoints) leaves it empty."""
        for loss, step in recent or ():
            self.recent.append((float(loss), int(step)))

    def state(self) -> list[list[float]]:
        """The window as [loss, global step] pairs, for the checkpoint."""
        return [[loss, step] for loss, step in self.recent]

    def check(self, loss: float, global_step: int) -> None:
        if self.recent:
            low, at = min(self.recent)
            if low > 0 and loss > GROWTH * low:
                raise CosfaceError(f"loss grew {loss / low:.0f}× in {global_step - at} steps (from {low:.4g} at global "
                                   f"step {at} to {loss:.4g} at step {global_step}): training is diverging; lower "
                                   f"optim.lr (now {self.lr:g}) or add schedule.warmup_epochs")
        self.recent.append((loss, global_step))


def config_differences(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every setting that differs between two Config.to_dict() trees."""
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{section}.{key}: {a.get(key, '(unset)')!r} -> {b.get(key, '(unset)')!r}")
    return out


def check_resume_config(saved: dict, cfg, resumed_from, say) -> None:
    """Compare the resumed checkpoint's config with this run's: a changed split or architecture is an
    error, any other change is listed so that it is never silent. Checkpoints store data locations in
    portable form (cosface.portable), so this run's config is compared in that form too."""
    from cosface.portable import portable_config

    diff = config_differences(portable_config(saved), portable_config(cfg.to_dict()))
    if not diff:
        return
    fatal = [d for d in diff if d.startswith(FATAL_ON_RESUME)]
    listing = "; ".join(diff)
    if fatal:
        raise CosfaceError(f"cannot resume from {resumed_from}: the config differs in {', '.join(d.split(':')[0] for d in fatal)}, "
                           f"which would make it another run. All differences: {listing}")
    say(f"note: resuming with a config that differs from the checkpoint's ({len(diff)}): {listing}")
