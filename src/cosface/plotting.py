"""Curves of finished (or running) runs from their metrics.jsonl: one PNG, several runs overlaid.

Panels: training loss (log scale) and learning rate over global steps, throughput over steps,
then every evaluation over epochs: held-out validation and LFW accuracy, their TAR at FAR and AUC.
A run's best.pt choice is marked on the accuracy panel.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from cosface.errors import CosfaceError
from cosface.optional import require


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of RUN_DIR/metrics.jsonl (a path to the file itself works too)."""
    p = Path(run_dir)
    path = p if p.is_file() else p / "metrics.jsonl"
    if not path.is_file():
        raise CosfaceError(f"{path} not found: pass run directories written by `cosface train`")
    records = []
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # The last line of a run killed mid-write can be cut short; anything else is a real error.
            if lineno == len(lines):
                continue
            raise CosfaceError(f"{path}, line {lineno}: not a JSON record") from None
    return records


def run_names(run_dirs: list[str | os.PathLike]) -> list[str]:
    """Short distinct names: the directory names, with parents added where two would collide."""
    paths = [Path(os.path.abspath(d)) for d in run_dirs]
    depth = 1
    while True:
        names = [str(Path(*p.parts[-depth:])) for p in paths]
        if len(set(names)) == len(names) or depth >= max(len(p.parts) for p in paths):
            return names
        depth += 1


def _series(records, kind: str, key: str, x: str = "global_step"):
    pts = [(r[x], r[key]) for r in records if r.get("type") == kind and key in r and x in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_runs(run_dirs: list[str | os.PathLike], out: str | os.PathLike = "curves.png", *, title: str | None = None) -> Path:
    """Draw the curves of `run_dirs` into the PNG `out`; returns its path."""
    if not run_dirs:
        raise CosfaceError("no run directories given")
    runs = [(name, read_metrics(d)) for name, d in zip(run_names(run_dirs), run_dirs)]
    require("matplotlib", purpose="cosface plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.ticker import MaxNLocator
    plt = require("matplotlib.pyplot", purpose="cosface plot")

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (ax_loss, ax_lr, ax_ips), (ax_acc, ax_tar, ax_auc) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    far_styles = ["-", "--", ":"]
    drew_eval = False
    for i, (name, rec) in enumerate(runs):
        c = colors[i % len(colors)]
        x, y = _series(rec, "step", "loss")
        ax_loss.plot(x, y, color=c, label=name)
        x, y = _series(rec, "step", "lr")
        ax_lr.plot(x, y, color=c, label=name)
        x, y = _series(rec, "step", "images_per_s")
        ax_ips.plot(x, y, color=c, label=name, alpha=0.8)
        for kind, key, style, what in (("val", "val_mean", "-o", "validation"), ("eval", "lfw_mean", "--s", "LFW")):
            x, y = _series(rec, kind, key, x="epoch")
            if x:
                drew_eval = True
                ax_acc.plot(x, [100 * v for v in y], style, color=c, label=f"{name}: {what}")
            x, y = _series(rec, kind, key.replace("mean", "auc"), x="epoch")
            if x:
                ax_auc.plot(x, y, style, color=c, label=f"{name}: {what}")
            tar_key = key.replace("mean", "tar_at_far")
            tars = [(r["epoch"], r[tar_key]) for r in rec if r.get("type") == kind and isinstance(r.get(tar_key), dict)]
            if tars:
                for far, ls in zip(list(tars[0][1]), far_styles):
                    # null: the FAR was not measurable on that set's pairs; there is no point to draw
                    pts = [(e, t[far]) for e, t in tars if t.get(far) is not None]
                    if pts:
                        ax_tar.plot([e for e, _ in pts], [100 * v for _, v in pts], ls,
                                    marker="o" if kind == "val" else "s", color=c, label=f"{name}: {what} FAR={far}")
        for b in [r for r in rec if r.get("type") == "best"][-1:]:
            ax_acc.plot([b["epoch"]], [100 * b["value"]], marker="*", markersize=16, color=c, linestyle="none",
                        label=f"{name}: best.pt (epoch {b['epoch']})")

    ax_loss.set(title="training loss", xlabel="global step", ylabel="loss (log scale)", yscale="log")
    ax_lr.set(title="learning rate", xlabel="global step", ylabel="learning rate")
    ax_ips.set(title="throughput", xlabel="global step", ylabel="images / s")
    ax_acc.set(title="verification accuracy (10-fold, reference protocol)", xlabel="epoch", ylabel="mean accuracy (%)")
    ax_tar.set(title="TAR at FAR (all pairs)", xlabel="epoch", ylabel="TAR (%)")
    ax_auc.set(title="ROC AUC (all pairs)", xlabel="epoch", ylabel="AUC")
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        elif ax in (ax_acc, ax_tar, ax_auc) and not drew_eval:
            ax.text(0.5, 0.5, "no evaluations in these runs\n(set data.val_identities or --lfw)",
                    ha="center", va="center", transform=ax.transAxes, color="gray")
    for ax in (ax_acc, ax_tar, ax_auc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or "cosface runs: " + ", ".join(name for name, _ in runs))
    fig.tight_layout()
    out = save_figure(fig, out, 100, "plot")
    plt.close(fig)
    return out


def figure_format(path: str | os.PathLike) -> str:
    """The format of a figure written to `path`: its suffix's, or PNG for a name without one (written under
    exactly that name: matplotlib would add .png). Call it before the work that leads to the figure."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    from matplotlib.backend_bases import FigureCanvasBase

    if suffix not in FigureCanvasBase.get_supported_filetypes():
        raise CosfaceError(f"{path}: matplotlib cannot write .{suffix} pictures; name a .png file")
    return suffix


def save_figure(fig, path: str | os.PathLike, dpi: int, what: str) -> Path:
    """Write `fig` to exactly `path`, atomically (an interrupted write leaves no half picture)."""
    from cosface.fsio import atomic_write

    fmt = figure_format(path)
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi), what)
