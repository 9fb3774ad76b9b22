"""Step time: CUDA events on the GPU (read once at the end, no sync per step), perf_counter on the CPU."""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch


class StepTimer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._events: list[tuple[Any, Any]] = []
        self._cpu: list[float] = []
        self._t0: Any = None

    def start(self) -> None:
        if self.cuda:
            self._t0 = torch.cuda.Event(enable_timing=True)
            self._t0.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._t0, end))
        else:
            self._cpu.append(time.perf_counter() - self._t0)

    def step_s(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000.0 for a, b in self._events]
        return list(self._cpu)


def summarize(step_s: list[float], tokens: int) -> dict[str, Any]:
    """Median, quartiles and IQR of the timed steps, and throughput over them.

    `tokens_per_s` is the mean real (non-padding) tokens of a timed step over the median step
    time: the same statistic as `step_s_median`, so the two never rank methods differently.
    `tokens_per_s_overall` is all timed tokens over the summed step times (the mean step), which a
    few slow steps pull down."""
    if not step_s:
        return {"step_s": [], "step_s_median": None, "step_s_iqr": None, "step_s_q1": None,
                "step_s_q3": None, "tokens_per_s": None, "tokens_per_s_overall": None, "tokens_per_step": None}
    if len(step_s) >= 2:
        q1, _, q3 = statistics.quantiles(step_s, n=4, method="inclusive")
    else:
        q1 = q3 = step_s[0]
    total, median = sum(step_s), statistics.median(step_s)
    per_step = tokens / len(step_s)
    return {"step_s": step_s, "step_s_median": median, "step_s_iqr": q3 - q1,
            "step_s_q1": q1, "step_s_q3": q3, "tokens_per_step": per_step,
            "tokens_per_s": per_step / median if median > 0 else None,
            "tokens_per_s_overall": tokens / total if total > 0 else None}
