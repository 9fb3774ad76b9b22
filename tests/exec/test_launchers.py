"""Launchers: a cell ends as a Record whatever its process did (the record it wrote, or one saying how
it ended), and submitit's local executor gives the same records as the default process launcher."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.exec import launchers
from bench.exec.launchers import CellLauncher
from bench.results import store
from bench.results.record import Record
from tests.exec.faults import EXIT_CODE, Fault
from tests.helpers import cell, tiny_matrix

ROOT = Path(__file__).resolve().parents[2]

MATRIX = tiny_matrix('[[methods]]\nmethod = "lora"\noptions = { r = 2 }\n')


def _launch(tmp_path: Path, fault: Fault, timeout_s: float = 60) -> Record:
    c = cell("full", timeout_s=timeout_s)
    rec = CellLauncher(target=fault).run(c, tmp_path, "m", {"BENCH_SLOT_TEST": "1"})
    assert (rec.cell_id, rec.name, rec.matrix, rec.method) == (c.cell_id, c.name, "m", "full")
    return rec


def test_the_record_a_cell_process_wrote_comes_back(tmp_path: Path) -> None:
    rec = _launch(tmp_path, Fault("record"))
    assert rec.status == "error" and rec.error == "injected: the cell's process wrote this error record"
    assert rec.worker_pid is None  # the launcher made no record of its own
    assert (tmp_path / "logs" / f"{rec.cell_id}.log").exists()


@pytest.mark.parametrize("kind, says", [
    ("exit", f"worker exited with code {EXIT_CODE} before writing a record; log tail: exiting before any record"),
    ("raise", "worker exited with code 1 before writing a record; log tail: "),
])
def test_a_process_that_ends_without_a_record_is_an_error(tmp_path: Path, kind: str, says: str) -> None:
    rec = _launch(tmp_path, Fault(kind))
    assert rec.status == "error" and rec.error.startswith(says), rec.error
    assert rec.worker_pid is not None and rec.finished_at is not None
    if kind == "raise":  # the traceback went to the cell's log; its last line is in the record
        assert rec.error.endswith("RuntimeError: injected: an exception escaped the cell's process")


def test_a_process_past_its_timeout_is_killed_and_recorded(tmp_path: Path) -> None:
    rec = _launch(tmp_path, Fault("hang"), timeout_s=5)
    assert rec.status == "timeout"
    assert rec.error.startswith("no result after timeout_s = 5 s; the cell's processes were killed (log: ")


def test_the_cell_environment_is_ours_plus_the_slot() -> None:
    env = launchers.cell_env({"CUDA_VISIBLE_DEVICES": "3"})
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["PATH"] == os.environ["PATH"]


def test_slurm_params_pass_flags_and_extra_arguments() -> None:
    params = launchers.slurm_params("gpu", 30, 1, 8, None, ["account=proj", "slurm_qos=high"])
    assert params == {"slurm_partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": None,
                      "timeout_min": 30, "slurm_account": "proj", "slurm_qos": "high"}
    with pytest.raises(BenchError, match="--slurm-arg 'account': expected KEY=VALUE"):
        launchers.slurm_params(None, None, None, None, None, ["account"])


def run(tmp_path: Path, name: str, *extra: str) -> list[Record]:
    import submitit  # noqa: F401  (in the lock, the `dev` extra: missing, these tests fail rather than skip)
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
    assert [r.status for r in local] == [r.status for r in plain] == ["ok"]
    assert local[0].cell_id == plain[0].cell_id
    assert local[0].executor.name == "local" and local[0].executor.job_id
    measured = {k for k, v in plain[0].to_json().items() if v is not None} - {"duration_s"}
    missing = {k for k in measured if local[0].to_json().get(k) is None}
    assert not missing, f"missing from the submitit record: {missing}"
    assert len(local[0].time.step_s) == 2


def test_submitit_local_executor_runs_a_multi_rank_cell_through_torchrun(tmp_path: Path) -> None:
    import submitit  # noqa: F401
    (tmp_path / "m.toml").write_text(MATRIX.replace('options = { r = 2 }', 'options = { r = 2 }\n'
                                                    'settings = { strategy = "ddp", nproc = 2 }'))
    out = subprocess.run([sys.executable, "-m", "bench", "run", str(tmp_path / "m.toml"), "--out",
                          str(tmp_path / "run"), "--executor", "local"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    rec = store.read_records(tmp_path / "run")[0]
    assert rec.status == "ok", rec.error
    assert rec.executor.name == "local" and rec.ranks.world_size == 2 and len(rec.ranks.per_rank) == 2
