"""The memory tracker on the CPU: peak RSS above the pre-load baseline, per interval; the capacity
cap, which binds only torch's CUDA allocator."""
from __future__ import annotations

import pytest
import torch

from bench.errors import UnsupportedError
from bench.measure import memory


def test_the_cap_needs_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memory.CAP_ENV, raising=False)
    assert memory.apply_cap(torch.device("cpu")) is None
    monkeypatch.setenv(memory.CAP_ENV, str(2**30))
    with pytest.raises(UnsupportedError, match=f"{memory.CAP_ENV} caps torch's CUDA allocator"):
        memory.apply_cap(torch.device("cpu"))


def test_cpu_intervals_measure_the_peak_since_the_last_reset() -> None:
    with memory.MemoryTracker(torch.device("cpu")) as tracker:
        assert not tracker.cuda and tracker.nvml is None and tracker.allocated_bytes() is None
        tracker.reset()
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
        big = tracker.read()
        tracker.reset()  # a new interval: the freed block is not in its peak
        small = tracker.read()
    for out in (big, small):
        assert out["peak_allocated_bytes"] is None and out["nvml_device_peak_bytes"] is None  # CUDA only
        assert out["rss_baseline_bytes"] == tracker.rss_baseline_bytes
        assert out["peak_rss_above_baseline_bytes"] == out["peak_rss_bytes"] - out["rss_baseline_bytes"]
    if tracker.notes:  # /proc/self/clear_refs refused: the peak covers the process's life, as noted
        assert "could not be reset" in tracker.notes[0]
        return
    assert big["peak_rss_bytes"] - small["peak_rss_bytes"] > 32 * 2**20


def test_an_excluded_interval_stays_out_of_the_peak_and_earlier_peaks_are_kept() -> None:
    with memory.MemoryTracker(torch.device("cpu")) as tracker:
        tracker.reset()
        kept = torch.ones(48 * 2**20 // 4)  # 48 MiB of "training", freed before the evaluation
        del kept
        with tracker.excluded():  # an "evaluation": 128 MiB, freed again
            block = torch.ones(128 * 2**20 // 4)
            del block
        after = tracker.read()
    if tracker.notes:  # /proc/self/clear_refs refused: the peak covers the process's life, as noted
        return
    assert 40 * 2**20 < after["peak_rss_above_baseline_bytes"] < 100 * 2**20  # the 48, not the 128
    assert after["peak_rss_above_baseline_bytes"] == after["peak_rss_bytes"] - after["rss_baseline_bytes"]


def test_rss_reads_are_bytes_of_this_process() -> None:
    now, peak = memory.rss_bytes(), memory.peak_rss_bytes()
    assert 0 < now <= peak
