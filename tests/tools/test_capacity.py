"""Capacity (bench/tools/capacity.py): the search against a budget, budget parsing, probe cells, and
the records of a whole run, with probe functions of the tests' own (a real probe caps a CUDA
allocator: tests/cli/test_measure.py checks the command refuses without one)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.errors import ConfigError
from bench.exec.lock import RunDirLocked, RunLock
from bench.exec.worker import base_record
from bench.measure.memory import OUTSIDE_CAP
from bench.results import peaks
from bench.results.record import Record
from bench.spec import Cell
from bench.tools import capacity
from tests.helpers import cell, tiny_config

ROW_BYTES = 10_000  # what one batch row costs the fake probes


def budget_probe(budget: int, seen: list[Cell] | None = None):
    """A probe that says ok while ROW_BYTES per batch row fit in `budget`, else oom."""
    def probe(c: Cell, vary: str, value: int) -> Record:
        if seen is not None:
            seen.append(c)
        rec = base_record(c, "m")
        peak = ROW_BYTES * c.settings.batch_size
        rec.status = "ok" if peak <= budget else "oom"
        rec.memory.peak_allocated_bytes = peak if rec.ok else None
        return rec
    return probe


@pytest.mark.parametrize("threshold, start, limit, best", [
    (100, 8, 4096, 100), (8, 8, 4096, 8), (3, 8, 4096, 3), (0, 8, 4096, 0), (5000, 8, 4096, 4096),
    (1, 1, 1, 1), (7, 1, 7, 7),
])
def test_search_finds_the_largest_value_that_fits(threshold: int, start: int, limit: int, best: int) -> None:
    found, probes = capacity.search(lambda v: v <= threshold, start, limit)
    assert found == best
    assert [v for v, ok in probes if ok and v > found] == []


@given(threshold=st.integers(0, 5000), start=st.integers(1, 600), limit=st.integers(1, 4096))
def test_search_is_exact_and_logarithmic(threshold: int, start: int, limit: int) -> None:
    found, probes = capacity.search(lambda v: v <= threshold, start, limit)
    assert found == min(threshold, limit)
    assert len(probes) <= 2 * math.ceil(math.log2(limit + 1)) + 2
    assert len({v for v, _ in probes}) == len(probes)  # never the same value twice


def test_search_grows_exponentially_then_bisects() -> None:
    _, probes = capacity.search(lambda v: v <= 100, 8, 4096)
    assert [v for v, _ in probes] == [8, 16, 32, 64, 128, 96, 112, 104, 100, 102, 101]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        capacity.search(lambda v: True, 1, 0)


@pytest.mark.parametrize("text, value", [("24GiB", 24 * 2**30), ("80GB", 80 * 10**9), ("512 MiB", 512 * 2**20),
                                         ("1e9", 10**9), ("1.5gib", 3 * 2**29)])
def test_parse_bytes(text: str, value: int) -> None:
    assert capacity.parse_bytes(text) == value


@pytest.mark.parametrize("text", ["24 parsecs", "", "-1GiB", "0"])
def test_parse_bytes_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        capacity.parse_bytes(text)


def test_probe_cell_changes_the_setting_and_shortens_the_run() -> None:
    probe = capacity.probe_cell(cell("lora"), "seq_len", 256)
    s = probe.settings
    assert (s.seq_len, s.steps, s.warmup_steps, s.eval_examples) == (256, 2, 1, 0)
    assert probe.method == cell("lora").method and probe.cell_id != cell("lora").cell_id


def test_default_limits() -> None:
    assert capacity.default_limit(cell("lora"), "batch_size") == 4096
    assert capacity.default_limit(cell("lora"), "seq_len") == tiny_config("tiny-llama").max_position_embeddings


def test_a_run_records_each_search_with_its_probes(tmp_path: Path) -> None:
    said: list[str] = []
    seen: list[Cell] = []
    out = capacity.run_capacity("m", [cell("lora")], tmp_path, "batch_size", 2**20, None,
                                budget_probe(2**20, seen), say=said.append)
    rec = json.loads((tmp_path / capacity.CAPACITY).read_text().splitlines()[0])
    assert out == [rec]
    assert rec["best"] == 104 and rec["budget_bytes"] == 2**20 and rec["status"] == "ok"  # 104 rows fit in 1 MiB
    assert (rec["matrix"], rec["vary"], rec["start"], rec["limit"]) == ("m", "batch_size", 4, 4096)
    assert rec["probes"][0] == {"value": 4, "status": "ok", "peak_allocated_bytes": 40_000,
                                "peak_reserved_bytes": None, "peak_bytes": 40_000, "peak_source": peaks.TORCH,
                                "error": None}
    assert rec["best_peak_bytes"] == 104 * ROW_BYTES  # the headline peak of the largest probe that fit
    assert any(p["status"] == "oom" for p in rec["probes"])
    assert rec["note"] == OUTSIDE_CAP
    assert all(c.settings.eval_examples == 0 and c.settings.steps == capacity.PROBE_STEPS for c in seen)
    assert said == [f"{cell('lora').name:<60} largest batch_size = 104 (headline peak 0.0010 GiB)  "
                    f"({len(rec['probes'])} probes)"]


def test_a_limit_that_fits_says_the_capacity_may_be_larger(tmp_path: Path) -> None:
    (rec,) = capacity.run_capacity("m", [cell("lora")], tmp_path, "batch_size", 2**30, 16,
                                   budget_probe(2**30), say=lambda _: None)
    assert rec["best"] == 16 and rec["note"].endswith("; the limit (16) fits: the capacity may be larger")


def test_a_run_holds_the_run_directory(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunDirLocked):
        capacity.run_capacity("m", [cell("lora")], tmp_path, "batch_size", 2**20, None, budget_probe(2**20))


def test_a_probe_that_fails_otherwise_stops_the_search() -> None:
    def probe(c: Cell, vary: str, value: int) -> Record:
        rec = base_record(c, "m")
        rec.status, rec.error = ("ok", None) if value < 16 else ("error", "boom")
        return rec
    rec = capacity.cell_capacity(cell("lora"), "batch_size", 2**30, 4096, probe)
    assert rec["status"] == "error" and "batch_size = 16 ended error: boom" in rec["error"]
    assert rec["best"] is None
    assert [p["value"] for p in rec["probes"]] == [4, 8, 16]


def test_gpus_needed_is_the_fewest_ranks_whose_predicted_peak_fits() -> None:
    from tests.helpers import cell

    seen = []

    def predict(c, device):  # a rank's peak halves with every doubling of FSDP ranks
        seen.append((c.settings.strategy, c.settings.nproc, c.settings.nnodes))
        return {"peak_bytes": 100 * 2**30 // c.settings.world_size}

    out = capacity.gpus_needed(cell("full"), 30 * 2**30, predict=predict, per_node=2)
    assert out["gpus"] == 4 and (out["nproc"], out["nnodes"], out["strategy"]) == (2, 2, "fsdp")
    assert seen == [("single", 1, 1), ("fsdp", 2, 1), ("fsdp", 2, 2)]
    ddp = capacity.gpus_needed(cell("full", strategy="ddp", nproc=2), 30 * 2**30,
                               predict=lambda c, d: {"peak_bytes": 100 * 2**30})
    assert ddp["gpus"] is None and "ddp replicates" in ddp["note"] and len(ddp["tried"]) == 2


def test_the_memory_model_shards_fsdp_and_not_ddp() -> None:
    from bench.predict import predict
    from tests.helpers import cell

    one, ddp = predict(cell("full"), "cuda"), predict(cell("full", strategy="ddp", nproc=4), "cuda")
    fsdp = predict(cell("full", strategy="fsdp", nproc=4), "cuda")
    assert ddp["peak_bytes"] == one["peak_bytes"] and ddp["sharding"] is None
    s = fsdp["sharding"]
    assert s["shard_bytes"] == one["parameters_bytes"] // 4
    assert fsdp["parameters_bytes"] == s["shard_bytes"] + s["root_gathered_bytes"] + s["layers_gathered_bytes"]
    assert fsdp["optimizer_bytes"] == one["optimizer_bytes"] // 4
    assert fsdp["gradients_bytes"] == one["gradients_bytes"] // 4 + s["unsharded_layer_gradients_bytes"]


def test_capacity_answers_how_many_gpus_from_the_cli(tmp_path, capsys) -> None:
    from bench.cli import main

    assert main(["capacity", "gpu-multi", "--budget", "80GiB", "--vary", "gpus",
                 "--only", "*8b/full-fsdp/*fsdp2/*"]) == 0
    out = capsys.readouterr().out
    assert "llama-3.1-8b/full-fsdp" in out and "GPU(s): strategy fsdp" in out


def test_past_one_node_gpus_come_in_whole_nodes() -> None:
    from tests.helpers import cell

    tried = capacity.gpus_needed(cell("full"), 1, limit=48, per_node=6,
                                 predict=lambda c, d: {"peak_bytes": 2**40 // c.settings.world_size})["tried"]
    assert [t["gpus"] for t in tried] == [1, 2, 4, 6, 12, 24, 48]


def test_fsdp_over_quantized_weights_has_no_sharded_prediction() -> None:
    from bench.errors import UnsupportedError
    from bench.predict import predict
    from tests.helpers import cell

    with pytest.raises(UnsupportedError, match="quantized"):
        predict(cell("qlora", strategy="fsdp", nproc=2), "cuda")
