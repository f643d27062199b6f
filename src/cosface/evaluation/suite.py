"""Every verification set in a folder, evaluated at once: LFW folders, insightface `.bin` files, IJB folders.

    from cosface.evaluation.suite import discover, evaluate_suite, suite_table
    reports = evaluate_suite(embed_fn, "data/eval", size=prep.size)
    print(suite_table(reports))

A set is recognised by its content, in the folder itself and up to two levels below it: a folder with
`pairs.txt` is an LFW folder (reference 10-fold protocol), a `*.bin` file an insightface set
(insightface's protocol unless told otherwise), a folder with `meta/ijbc_face_tid_mid.txt` or
`meta/ijbb_face_tid_mid.txt` an IJB-C / IJB-B release (template protocol, 1:1 and 1:N).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cosface.errors import CosfaceError
from cosface.evaluation import ijb_metrics
from cosface.evaluation.evaluate import evaluate_bin, evaluate_lfw
from cosface.evaluation.extract import EmbedFn
from cosface.evaluation.ijb import evaluate_ijb
from cosface.evaluation.ijb_data import detect_target

KINDS = ("lfw", "bin", "ijb")
SUMMARY_FARS = (1e-5, 1e-4, 1e-3)
_MAX_DEPTH = 2


def discover(root: str | os.PathLike) -> list[tuple[str, str]]:
    """[(kind, path)] of the sets under root, sorted by path; an empty result is an error."""
    root = Path(root)
    if not root.is_dir():
        raise CosfaceError(f"{root}: not a directory")
    found: list[tuple[str, str]] = []

    def visit(d: Path, depth: int) -> None:
        if (d / "pairs.txt").is_file():
            found.append(("lfw", str(d)))
            return
        if detect_target(d) is not None:
            found.append(("ijb", str(d)))
            return
        try:
            entries = sorted(d.iterdir())
        except OSError as e:
            raise CosfaceError(f"{d}: cannot list ({e.strerror or e})") from None
        for p in entries:
            if p.is_file() and p.suffix == ".bin":
                found.append(("bin", str(p)))
            elif p.is_dir() and depth < _MAX_DEPTH and not p.name.startswith("."):
                visit(p, depth + 1)

    visit(root, 0)
    if not found:
        raise CosfaceError(f"{root}: no verification sets (an LFW folder with pairs.txt, *.bin files, or an IJB "
                           "folder with meta/ijbc_face_tid_mid.txt) in it or two levels below")
    return sorted(found, key=lambda kp: kp[1])


def evaluate_suite(
    embed_fn: EmbedFn,
    root: str | os.PathLike,
    *,
    bin_protocol: str = "insightface",
    size: int = 112,
    batch_size: int = 64,
    progress: bool = True,
    workers: int | None = None,
    ijb_options: dict | None = None,
    log=None,
) -> dict:
    """{set name (path relative to root): report} for every set `discover` finds."""
    opts: dict[str, Any] = dict(batch_size=batch_size, progress=progress, workers=workers, size=size)
    reports: dict[str, Any] = {}
    for kind, path in discover(root):
        name = os.path.relpath(path, root) if os.path.abspath(path) != os.path.abspath(root) else os.path.basename(path)
        if log:
            log(f"evaluating {name} ({kind})")
        if kind == "lfw":
            reports[name] = evaluate_lfw(embed_fn, path, **opts)
        elif kind == "bin":
            reports[name] = evaluate_bin(embed_fn, path, protocol_name=bin_protocol, **opts)
        else:
            reports[name] = evaluate_ijb(embed_fn, path, **(ijb_options or {}), **opts)
    return reports


def summary(report) -> dict:
    """The figures a suite table shows for any report: protocol, pairs, k-fold accuracy (None for IJB),
    TAR at SUMMARY_FARS over all pairs (None where not measurable), IJB 1:N rank-1 mean (None otherwise)."""
    ijb = report.protocol == "ijb"
    tar = ijb_metrics.tar_at_far(report.scores, report.issame, fars=SUMMARY_FARS)
    rank1 = None
    if ijb and report.identification is not None:
        rank1 = report.identification["mean"]["rank"].get(1)
    return {
        "protocol": report.protocol,
        "pairs": report.pairs,
        "accuracy": None if ijb else report.mean,
        "accuracy_std": None if ijb else report.std,
        "tar_at_far": tar,
        "rank1": rank1,
    }


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.2f}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def suite_table(reports: dict) -> str:
    """One row per set; the protocols named below the table."""
    rows = [["set", "protocol", "pairs", "acc %"] + [f"TAR@FAR={f:g}" for f in SUMMARY_FARS] + ["1:N rank-1"]]
    for name, r in reports.items():
        s = summary(r)
        acc = "-" if s["accuracy"] is None else f"{s['accuracy'] * 100:.2f}±{s['accuracy_std'] * 100:.2f}"
        rows.append([name, s["protocol"], str(s["pairs"]), acc] + [_pct(v) for v in s["tar_at_far"].values()]
                    + [_pct(s["rank1"])])
    return "\n".join([_table(rows), "", *protocol_notes(reports)])


def protocol_notes(reports: dict) -> list[str]:
    from cosface.evaluation.ijb import DESCRIPTION
    from cosface.evaluation.report import PROTOCOLS

    used = sorted({r.protocol for r in reports.values()})
    notes = [f"{p}: {DESCRIPTION if p == 'ijb' else PROTOCOLS[p]}" for p in used]
    notes.append("acc %: the protocol's k-fold accuracy (mean±std); TAR@FAR over all pairs of the set "
                 "(cosine; IJB: of templates), '-' where the set has fewer than 1/FAR different pairs; "
                 "1:N rank-1: IJB mixed probes, mean over the two galleries")
    return notes


def suite_json(reports: dict) -> dict:
    out = {}
    for name, r in reports.items():
        s = summary(r)
        s["tar_at_far"] = {f"{f:g}": v for f, v in s["tar_at_far"].items()}
        out[name] = {**r.to_json_dict(), "summary": s}
    return out


# ---------------------------------------------------------------- comparing models

def compare_table(per_model: dict[str, dict]) -> str:
    """Rows: each set's figures; columns: the models. A figure no model has on a set is left out."""
    models = list(per_model)
    sets = list(next(iter(per_model.values())))
    rows = [["set / figure"] + models]
    for name in sets:
        s = {m: summary(per_model[m][name]) for m in models}
        first = s[models[0]]
        figures = [("acc %", lambda x: x["accuracy"])]
        figures += [(f"TAR@FAR={f:g}", (lambda f: lambda x: x["tar_at_far"][f])(f)) for f in SUMMARY_FARS]
        figures.append(("1:N rank-1", lambda x: x["rank1"]))
        for label, get in figures:
            values = [get(s[m]) for m in models]
            if all(v is None for v in values):
                continue
            rows.append([f"{name} ({first['protocol']}) {label}"] + [_pct(v) for v in values])
    return _table(rows)


def plot_compare(per_model: dict[str, dict], path: str | os.PathLike) -> None:
    """One PNG: a panel per set, one ROC curve per model in each."""
    from matplotlib.figure import Figure

    from cosface.plotting import save_figure

    sets = list(next(iter(per_model.values())))
    cols = min(3, len(sets))
    rows = (len(sets) + cols - 1) // cols
    fig = Figure(figsize=(4.5 * cols, 4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax, name in zip(axes, sets):
        low = 1.0
        for model, reports in per_model.items():
            r = reports[name]
            far, tar = ijb_metrics.roc_points(r.scores, r.issame)
            low = min(low, far[far > 0].min(initial=1.0))
            ax.plot(far, tar, label=model)
        ax.set_xscale("log")
        ax.set_xlim(max(low, 1e-6), 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_title(f"{name} ({reports[name].protocol})", fontsize=9)
        ax.set_xlabel("false accept rate")
        ax.set_ylabel("true accept rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    for ax in axes[len(sets):]:
        ax.set_visible(False)
    fig.tight_layout()
    save_figure(fig, path, 110, "ROC plot")


def resolve_model(path: str | os.PathLike) -> str:
    """A model file as given; a run folder -> its newest checkpoint (checkpoints/ or the folder itself)."""
    from cosface.checkpoint import list_checkpoints

    p = Path(path)
    if p.is_file():
        return str(p)
    if p.is_dir():
        found = list_checkpoints(p / "checkpoints") or list_checkpoints(p)
        if not found:
            raise CosfaceError(f"{p}: a folder without checkpoints (expected checkpoints/epoch_NNN.pt or epoch_NNN.pt)")
        print(f"{p}: using its newest checkpoint {found[-1]}", file=sys.stderr)
        return str(found[-1])
    raise CosfaceError(f"{p}: no such model file or run folder")


def model_embed_fn(path: str | os.PathLike, device: str = "auto"):
    """(embed_fn, preprocessing) for any model file: checkpoint, TorchScript or ONNX."""
    from cosface.inference.models import open_model
    from cosface.preprocess import normalize_numpy

    _, runner, info = open_model(path, device)
    prep = info.preprocessing

    def embed(batch: np.ndarray) -> np.ndarray:
        if prep.channel_order == "BGR":
            batch = batch[..., ::-1]
        return np.asarray(runner(normalize_numpy(batch, prep)), dtype=np.float32)

    return embed, prep
