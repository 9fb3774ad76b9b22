"""Capacity: the search against a fake budget, budget parsing, probe cells, and the command on a
machine without CUDA (a clear refusal, or fake probes through the test hook)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bench import capacity, cli_measure
from bench.errors import BenchError, ConfigError, UnsupportedError
from tests.helpers import cell


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


def test_the_cap_needs_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(capacity.CAP_ENV, raising=False)
    assert capacity.apply_cap(torch.device("cpu")) is None
    monkeypatch.setenv(capacity.CAP_ENV, str(2**30))
    with pytest.raises(UnsupportedError, match="CUDA"):
        capacity.apply_cap(torch.device("cpu"))


def _args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    base = dict(matrix="smoke", only="lora", budget="1MiB", vary="batch_size", limit=None, out=str(tmp_path / "run"),
                allow_busy_gpu=False)
    return argparse.Namespace(**{**base, **kw})


def test_command_without_cuda_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(capacity.FAKE_ENV, raising=False)
    monkeypatch.setattr(cli_measure, "_cuda", lambda: False)
    with pytest.raises(BenchError, match="needs a CUDA GPU"):
        cli_measure.cmd_capacity(_args(tmp_path))


def test_command_with_fake_probes_records_the_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(capacity.FAKE_ENV, str(10_000))  # 10 kB per batch row: 104 rows fit in 1 MiB
    assert cli_measure.cmd_capacity(_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "largest batch_size = 104" in out and "paged optimizers are outside it" in out
    rec = json.loads((tmp_path / "run" / capacity.CAPACITY).read_text().splitlines()[0])
    assert rec["best"] == 104 and rec["budget_bytes"] == 2**20 and rec["fake"] is True
    assert rec["probes"][0] == {"value": 4, "status": "ok", "peak_allocated_bytes": 40_000,
                                "peak_reserved_bytes": None, "error": None}
    assert any(p["status"] == "oom" for p in rec["probes"])


def test_a_probe_that_fails_otherwise_stops_the_search() -> None:
    def probe(c: object, vary: str, value: int) -> dict[str, object]:
        return {"status": "ok" if value < 16 else "error", "error": "boom", "memory": None}
    rec = capacity.cell_capacity(cell("lora"), "batch_size", 2**30, 4096, probe)
    assert rec["status"] == "error" and "batch_size = 16 ended error: boom" in rec["error"]
    assert [p["value"] for p in rec["probes"]] == [4, 8, 16]
