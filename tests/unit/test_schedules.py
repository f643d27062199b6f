import pytest

from cosface.config import ScheduleConfig
from cosface.schedules import learning_rate


def test_multistep_drops_tenfold_at_the_milestones():
    cfg = ScheduleConfig(name="multistep", milestones=[36, 48, 60], gamma=0.1)
    lr = lambda e: learning_rate(cfg, 0.1, e, 100)  # noqa: E731
    assert lr(0) == 0.1 and lr(35.99) == 0.1
    assert lr(36) == pytest.approx(0.01) and lr(47.5) == pytest.approx(0.01)
    assert lr(48) == pytest.approx(0.001) and lr(60) == pytest.approx(1e-4) and lr(99) == pytest.approx(1e-4)


def test_cosine_with_warmup_and_constant():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=3, min_lr=0.0)
    assert learning_rate(cfg, 0.1, 0.0, 23) == 0.0
    assert learning_rate(cfg, 0.1, 1.5, 23) == pytest.approx(0.05)
    assert learning_rate(cfg, 0.1, 3.0, 23) == pytest.approx(0.1)
    assert learning_rate(cfg, 0.1, 13.0, 23) == pytest.approx(0.05)
    assert learning_rate(cfg, 0.1, 23.0, 23) == pytest.approx(0.0, abs=1e-12)
    const = ScheduleConfig(name="constant")
    assert {learning_rate(const, 0.3, e, 10) for e in (0, 5.5, 9.9)} == {0.3}
