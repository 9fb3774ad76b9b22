"""A multi-rank cell's energy (bench/parallel.py energy_over_ranks), from fake rank blocks on the CPU:
the ranks' distinct devices summed (two GPUs of one model are two: their scopes name their UUIDs),
a counter the ranks share (RAPL's packages of one machine) counted once, no sum where a rank
measured none. The real ranks run in tests/exec/test_torchrun.py."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench import parallel
from bench.results.costs import Energy


def _block(rank: int, scope: str | None, train_j: float | None, host: str = "node0",
           source: str | None = "nvml_total_energy", eval_j: float | None = 30.0,
           note: str | None = None) -> dict[str, Any]:
    """A rank's block as rank_block makes it, with this rank's energy figures."""
    energy = {"source": source, "scope": scope,
              "reading": "counter read at its ticks at both ends", "note": note, "train_j": train_j,
              "train_s": 2.0 + 0.01 * rank, "train_mean_w": None if train_j is None else train_j / (2.0 + 0.01 * rank),
              "eval_j": eval_j, "eval_mean_w": None if eval_j is None else eval_j / 0.1}
    return {"rank": rank, "local_rank": rank, "host": host, "step_s": [0.05] * 40, "tokens_per_step": 2048.0,
            "energy": energy}


def test_two_gpus_of_one_model_are_summed() -> None:
    blocks = [_block(0, "GPU NVIDIA H200 (GPU-aaaa; whole device)", 800.0),
              _block(1, "GPU NVIDIA H200 (GPU-bbbb; whole device)", 820.0)]
    e = parallel.energy_over_ranks(blocks)
    assert e["train_j"] == pytest.approx(1620.0) and e["eval_j"] == pytest.approx(60.0)
    assert e["train_j_per_step"] == pytest.approx(1620.0 / 40)
    assert e["train_j_per_1k_tokens"] == pytest.approx(1000 * 1620.0 / (2 * 40 * 2048))  # both ranks' tokens
    assert e["train_mean_w"] == pytest.approx(800 / 2.0 + 820 / 2.01) and e["train_s"] == pytest.approx(2.01)
    assert e["scope"].startswith("the sum over 2 distinct counters of the 2 ranks: ")
    assert "GPU-aaaa" in e["scope"] and "GPU-bbbb" in e["scope"] and e["source"] == "nvml_total_energy"
    assert e["note"] is None and e["reading"] == "counter read at its ticks at both ends"


def test_a_counter_the_ranks_share_counts_once() -> None:
    rapl = "CPU packages (package-0; the whole machine's, other processes included)"
    blocks = [_block(0, rapl, 100.0, source="rapl"), _block(1, rapl, 101.0, source="rapl")]
    e = parallel.energy_over_ranks(blocks)
    assert e["train_j"] == pytest.approx(100.0) and e["eval_j"] == pytest.approx(30.0)
    assert e["train_j_per_1k_tokens"] == pytest.approx(1000 * 100.0 / (2 * 40 * 2048))
    assert "1 distinct counter of the 2 ranks (ranks sharing one count it once)" in e["scope"]
    # the same packages' name on another machine is another counter
    other = parallel.energy_over_ranks([_block(0, rapl, 100.0, source="rapl"),
                                        _block(1, rapl, 90.0, host="node1", source="rapl")])
    assert other["train_j"] == pytest.approx(190.0)


def test_no_sum_where_a_rank_measured_nothing_and_nothing_where_none_did() -> None:
    blocks = [_block(0, "GPU H200 (GPU-aaaa; whole device)", 800.0),
              _block(1, None, None, source=None, note="NVML unavailable: boom")]
    e = parallel.energy_over_ranks(blocks)
    assert e["train_j"] is None and e["train_mean_w"] is None and e["eval_j"] is None
    assert e["note"] == "no sum over the ranks: rank 1 (NVML unavailable: boom) measured none"
    none = [_block(r, None, None, source=None, note="no RAPL counters") for r in (0, 1)]
    assert parallel.energy_over_ranks(none) == {}  # rank 0's own note stays in the record


def test_each_rank_block_carries_its_own_energy() -> None:
    energy = Energy(source="nvml_total_energy", scope="GPU H200 (GPU-aaaa; whole device)", train_j=5.0, train_s=2.0)
    rec = SimpleNamespace(memory=SimpleNamespace(peak_allocated_bytes=1, peak_reserved_bytes=2,
                                                 nvml_process_peak_bytes=None, peak_rss_above_baseline_bytes=3),
                          time=SimpleNamespace(step_s=[0.1], step_s_median=0.1, tokens_per_step=10.0), energy=energy)
    block = parallel.rank_block(rec)
    assert block["energy"]["train_j"] == 5.0 and block["energy"]["scope"].startswith("GPU H200 (GPU-aaaa")
    assert set(block["energy"]) == set(parallel.RANK_ENERGY)
