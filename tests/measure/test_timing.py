"""Step-time statistics: median and quartiles of the timed steps, throughput over the median step."""
from __future__ import annotations

import pytest
import torch

from bench.measure.timing import StepTimer, summarize


def test_summary_of_the_timed_steps() -> None:
    out = summarize([0.1, 0.2, 0.3, 1.0], tokens=400)
    assert out["step_s"] == [0.1, 0.2, 0.3, 1.0]
    assert out["step_s_median"] == pytest.approx(0.25)
    assert (out["step_s_q1"], out["step_s_q3"]) == pytest.approx((0.175, 0.475))
    assert out["step_s_iqr"] == pytest.approx(0.3)
    assert out["tokens_per_step"] == 100
    assert out["tokens_per_s"] == pytest.approx(100 / 0.25)  # the median step: one slow step does not pull it
    assert out["tokens_per_s_overall"] == pytest.approx(400 / 1.6)


def test_one_step_and_no_steps() -> None:
    one = summarize([0.5], tokens=10)
    assert one["step_s_iqr"] == 0 and one["tokens_per_s"] == 20
    assert summarize([], 0) == {"step_s": [], "step_s_median": None, "step_s_iqr": None, "step_s_q1": None,
                                "step_s_q3": None, "tokens_per_s": None, "tokens_per_s_overall": None,
                                "tokens_per_step": None}


def test_cpu_timer_times_what_is_between_start_and_stop() -> None:
    timer = StepTimer(torch.device("cpu"))
    for _ in range(3):
        timer.start()
        timer.stop()
    assert len(timer.step_s()) == 3 and all(s >= 0 for s in timer.step_s())
