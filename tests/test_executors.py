"""Scale-out: submitit's local executor gives the same records as the default process executor."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli, store
from bench.errors import BenchError
from tests.helpers import tiny_matrix

ROOT = Path(__file__).resolve().parents[1]

MATRIX = tiny_matrix('[[methods]]\nmethod = "lora"\noptions = { r = 2 }\n')


def run(tmp_path: Path, name: str, *extra: str) -> list[dict]:
    pytest.importorskip("submitit")
    (tmp_path / "m.toml").write_text(MATRIX)
    out = subprocess.run([sys.executable, "-m", "bench", "run", str(tmp_path / "m.toml"), "--out",
                          str(tmp_path / name), *extra], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return store.read_records(tmp_path / name)


@pytest.mark.slow
def test_submitit_local_executor_records_match_the_process_executor(tmp_path: Path) -> None:
    local = run(tmp_path, "local", "--executor", "local")
    plain = run(tmp_path, "plain")
    assert [r["status"] for r in local] == [r["status"] for r in plain] == ["ok"]
    assert local[0]["cell_id"] == plain[0]["cell_id"]
    assert local[0]["executor"]["name"] == "local"
    shared = set(plain[0]) - {"duration_s"}
    assert shared <= set(local[0]), f"missing from the submitit record: {shared - set(local[0])}"
    assert len(local[0]["time"]["step_s"]) == 2


def test_gpu_lists_become_one_slot_per_gpu() -> None:
    args = argparse.Namespace(gpus="0,2", jobs=None)
    assert cli._slots(args, 1) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "2"}]
    with pytest.raises(BenchError, match="--gpus 'a,b'"):
        cli._slots(argparse.Namespace(gpus="a,b", jobs=None), 1)
    assert cli._slots(argparse.Namespace(gpus=None, jobs=3), 1) == [{}, {}, {}]


def test_concurrent_slots_append_every_record(tmp_path: Path) -> None:
    from bench import runner
    from bench.config import load_matrix
    from bench.worker import base_record

    (tmp_path / "m.toml").write_text(MATRIX.replace('seq_len = 16', 'seq_len = 16\n[[settings]]\nbatch_size = 1\n'
                                                    '[[settings]]\nbatch_size = 2\n[[settings]]\nbatch_size = 3'))
    matrix = load_matrix(str(tmp_path / "m.toml"))

    class Echo:
        def run(self, cell, run_dir, name, slot_env):
            return {**base_record(cell, name), "status": "ok", "seen_env": slot_env}

    slots = [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    runner.run_matrix(matrix, matrix.cells, tmp_path / "run", False, {"command": "t", "started_at": "n"},
                      slots=slots, launcher=Echo())
    recs = store.read_records(tmp_path / "run")
    assert sorted(r["cell_id"] for r in recs) == sorted(c.cell_id for c in matrix.cells)
    assert all(r["seen_env"] in slots and r["slot"]["of"] == 2 for r in recs)
