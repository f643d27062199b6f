"""Log sinks: TensorBoard holds exactly the numbers of metrics.jsonl; a missing extra is one clear error."""
import importlib.util
import json

import pytest

from cosface.config import LogConfig
from cosface.errors import CosfaceError
from cosface.logsinks import MetricsLog, scalars


def read_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_flatten_every_number_but_the_bookkeeping():
    rec = {"type": "val", "epoch": 2, "global_step": 14, "val_mean": 0.9, "val_tar_at_far": {"0.001": 0.5},
           "path": "x.pt", "ok": True}
    assert scalars(rec) == [("val/val_mean", 0.9), ("val/val_tar_at_far/0.001", 0.5)]


def test_tensorboard_holds_the_jsonl_scalars(tmp_path):
    log = MetricsLog(tmp_path, LogConfig(tensorboard=True), is_main=True)
    records = [{"type": "step", "epoch": 1, "step": s, "global_step": s, "loss": 20.0 - s, "lr": 0.1,
                "images_per_s": 50.0 + s} for s in (1, 2, 3)]
    records.append({"type": "val", "epoch": 1, "global_step": 3, "val_mean": 0.75, "val_tar_at_far": {"0.01": 0.25}})
    for r in records:
        log.write(r)
    log.close()
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == records
    events = read_events(tmp_path / "tb")
    assert events["step/loss"] == [(1, 19.0), (2, 18.0), (3, 17.0)]
    assert [v for _, v in events["step/lr"]] == pytest.approx([0.1] * 3)
    assert events["val/val_mean"] == [(3, 0.75)] and events["val/val_tar_at_far/0.01"] == [(3, 0.25)]


def test_other_ranks_write_nothing(tmp_path):
    log = MetricsLog(tmp_path, LogConfig(tensorboard=True), is_main=False)
    log.write({"type": "step", "global_step": 1, "loss": 1.0})
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_is_named(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(CosfaceError, match=r"log.tensorboard = true.*pip install 'cosface\[tensorboard\]'"):
        MetricsLog(tmp_path, LogConfig(tensorboard=True), is_main=False)
    MetricsLog(tmp_path, LogConfig(tensorboard=False), is_main=True)   # off: no need for the extra


def test_resuming_drops_what_a_killed_run_logged_after_the_checkpoint(tmp_path):
    def step(s):
        return {"type": "step", "epoch": 1, "step": s, "global_step": s, "loss": 20.0 - s}

    log = MetricsLog(tmp_path, LogConfig(tensorboard=True), is_main=True)
    for s in (1, 2, 3, 4, 5):
        log.write(step(s))
    log.write({"type": "unreadable", "files": ["x.jpg"], "total": 1})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"type": "step", "glo')            # killed in the middle of a line
    # The checkpoint it resumes from was saved at step 3: steps 4 and 5 are trained and logged again.
    log = MetricsLog(tmp_path, LogConfig(tensorboard=True), is_main=True, resume_step=3)
    assert log.dropped == 3
    for s in (4, 5):
        log.write({**step(s), "loss": 30.0 - s})
    log.close()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("global_step") for r in records] == [1, 2, 3, None, 4, 5]
    assert read_events(tmp_path / "tb")["step/loss"] == [(1, 19.0), (2, 18.0), (3, 17.0), (4, 26.0), (5, 25.0)]


def test_a_fresh_start_of_resume_auto_keeps_no_step_of_the_earlier_attempt(tmp_path):
    log = MetricsLog(tmp_path, LogConfig(), is_main=True)
    log.write({"type": "step", "global_step": 1, "loss": 1.0})
    log = MetricsLog(tmp_path, LogConfig(), is_main=True, resume_step=0)
    assert (tmp_path / "metrics.jsonl").read_text() == "" and log.dropped == 1
