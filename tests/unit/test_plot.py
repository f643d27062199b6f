"""`cosface plot`: two runs' metrics.jsonl -> one readable PNG; bad input is one clear error."""
import json
import subprocess
import sys

import pytest

from cosface.errors import CosfaceError
from cosface.plotting import plot_runs, read_metrics, run_names


def fake_run(d, scale):
    d.mkdir(parents=True)
    recs = [{"type": "step", "epoch": 1 + s // 10, "step": s, "global_step": s, "loss": scale * 20 / s, "lr": 0.1,
             "images_per_s": 100.0} for s in range(1, 31)]
    for e in (1, 2, 3):
        recs.append({"type": "val", "epoch": e, "global_step": 10 * e, "val_mean": 0.6 + 0.1 * e, "val_auc": 0.7,
                     "val_tar_at_far": {"0.1": 0.5, "0.01": 0.3, "0.001": 0.1}})
        recs.append({"type": "eval", "epoch": e, "global_step": 10 * e, "lfw_mean": 0.7, "lfw_auc": 0.8,
                     "lfw_tar_at_far": {"0.1": 0.6}})
    recs.append({"type": "best", "global_step": 30, "epoch": 3, "value": 0.9})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"type": "st')  # cut last line
    return d


def test_two_runs_make_one_png(tmp_path):
    a, b = fake_run(tmp_path / "x" / "run", 1.0), fake_run(tmp_path / "y" / "run", 2.0)
    assert run_names([a, b]) == ["x/run", "y/run"]
    assert len(read_metrics(a)) == 30 + 6 + 1        # the cut-off last line is dropped
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, "-m", "cosface", "plot", str(a), str(b), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1600 and int.from_bytes(data[20:24], "big") == 900


def test_unmeasurable_far_is_left_out_not_a_crash(tmp_path):
    # A small LFW or validation set logs TAR at FAR 1e-3 as null (fewer than 1000 different pairs).
    d = tmp_path / "run"
    d.mkdir()
    recs = [{"type": "step", "epoch": 1, "step": 1, "global_step": 1, "loss": 5.0, "lr": 0.1, "images_per_s": 9.0}]
    for e in (1, 2):
        recs.append({"type": "val", "epoch": e, "global_step": e, "val_mean": 0.7, "val_auc": 0.8,
                     "val_tar_at_far": {"0.1": 0.4 if e == 2 else None, "0.01": None, "0.001": None}})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    import matplotlib.pyplot as plt
    drawn = []
    real = plt.Axes.plot
    def spy(ax, *args, **kw):
        drawn.append(kw.get("label"))
        return real(ax, *args, **kw)
    plt.Axes.plot = spy
    try:
        out = plot_runs([d], tmp_path / "c.png")
    finally:
        plt.Axes.plot = real
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "run: validation FAR=0.1" in drawn
    assert not any(label and ("FAR=0.01" in label or "FAR=0.001" in label) for label in drawn)


def test_bad_run_dirs_are_clear_errors(tmp_path):
    with pytest.raises(CosfaceError, match="metrics.jsonl not found"):
        plot_runs([tmp_path], tmp_path / "c.png")
    (tmp_path / "metrics.jsonl").write_text('{"type": "step"}\nnot json\n{"type": "step"}\n')
    with pytest.raises(CosfaceError, match="line 2: not a JSON record"):
        read_metrics(tmp_path)
