"""`bench predict`, `capacity` and `selfcheck` in this process (bench/cli/measure.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench.cli import measure as cli_measure
from bench.errors import BenchError
from bench.exec.worker import base_record
from bench.results.record import Record
from bench.spec import Cell
from bench.tools import capacity


def _args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    base = dict(matrix="smoke", only="lora", budget="1MiB", vary="batch_size", limit=None, out=str(tmp_path / "run"),
                allow_busy_gpu=False)
    return argparse.Namespace(**{**base, **kw})


def test_capacity_without_cuda_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_measure, "_cuda", lambda: False)
    with pytest.raises(BenchError, match="needs a CUDA GPU"):
        cli_measure.cmd_capacity(_args(tmp_path))
    assert not (tmp_path / "run" / capacity.CAPACITY).exists()


def test_capacity_records_the_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The command's wiring, with a probe function standing in for capped CUDA cells."""
    monkeypatch.setattr(cli_measure, "_cuda", lambda: True)
    asked: list[tuple[Path, str, int]] = []

    def probes(run_dir: Path, matrix: str, budget: int, say: object = print) -> object:
        asked.append((run_dir, matrix, budget))

        def probe(c: Cell, vary: str, value: int) -> Record:
            rec = base_record(c, matrix)
            rec.status = "ok" if 10_000 * c.settings.batch_size <= budget else "oom"
            return rec
        return probe

    monkeypatch.setattr(capacity, "launcher_probe", probes)
    assert cli_measure.cmd_capacity(_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert asked == [(tmp_path / "run", "smoke", 2**20)]
    assert "largest batch_size = 104" in out and "paged optimizers are outside it" in out
    rec = json.loads((tmp_path / "run" / capacity.CAPACITY).read_text().splitlines()[0])
    assert rec["best"] == 104 and rec["budget_bytes"] == 2**20


def test_selfcheck_takes_exactly_one_cell(tmp_path: Path) -> None:
    args = argparse.Namespace(matrix="smoke", only="qlora*", rounds=1, steps=None, out=str(tmp_path))
    with pytest.raises(BenchError, match=r"--only 'qlora\*' matches \d+ cells .*selfcheck takes exactly one"):
        cli_measure.cmd_selfcheck(args)


def test_predict_prints_a_line_per_cell(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(matrix="smoke", only="lora", device="cpu", padded=False)
    assert cli_measure.cmd_predict(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("predicted training memory, GiB (2^30 bytes), for CPU")
    (row,) = [ln for ln in lines if ln.startswith("tiny-llama/lora/")]
    assert "unsupported" not in row
