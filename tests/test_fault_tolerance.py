"""Faults injected on purpose: each one loses nothing and ends with a clear outcome."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import gpucheck, runner, store
from bench.config import load_matrix
from bench.runlock import RunDirLocked, RunLock
from tests.helpers import FULL_AND_LORA, tiny_matrix

ROOT = Path(__file__).resolve().parents[1]

MATRIX = tiny_matrix(FULL_AND_LORA + """
[[methods]]
method = "ia3"
[[methods]]
method = "prompt_tuning"
options = { num_virtual_tokens = 2 }
""")


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def wait_for_records(path: Path, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len([ln for ln in path.read_text().splitlines() if ln.strip()]) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} records in {path} after {timeout} s")


@pytest.mark.slow
def test_killed_runner_resumes_without_losing_or_repeating(tmp_path: Path) -> None:
    matrix, out = tmp_path / "m.toml", tmp_path / "run"
    matrix.write_text(MATRIX)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(bench_cmd("run", str(matrix), "--out", str(out)), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_records(out / store.RESULTS, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = store.read_records(out)
    assert before and all(r["status"] == "ok" for r in before)
    again = subprocess.run(bench_cmd("run", str(matrix), "--out", str(out)), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    lines = (out / store.RESULTS).read_text().splitlines()
    records = [json.loads(ln) for ln in lines if ln.strip()]  # no line is corrupt
    assert records[: len(before)] == before  # nothing recorded before the kill is lost or rewritten
    ok = [r["cell_id"] for r in records if r["status"] == "ok"]
    assert sorted(ok) == sorted({c.cell_id for c in load_matrix(str(matrix)).cells})  # one ok each


def test_a_live_run_holds_the_directory(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(RunDirLocked, match=f"in use by another run \\(pid {os.getpid()}"):
            RunLock(tmp_path).acquire()


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    code = ("import os, sys; from bench.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print(os.getpid(), flush=True); os.kill(os.getpid(), 9)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    dead_pid = int(out.stdout.strip())
    lock = RunLock(tmp_path).acquire()
    assert lock.took_over and lock.took_over["pid"] == dead_pid
    lock.release()


def test_a_second_run_into_a_held_directory_is_refused_by_the_cli(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run"):
        out = subprocess.run(bench_cmd("run", "smoke", "--out", str(tmp_path / "run")), cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert f"pid {os.getpid()}" in out.stderr and "Traceback" not in out.stderr


class FakeNvml:
    """Just enough of pynvml for gpucheck: one GPU with the given (pid, bytes) processes."""

    def __init__(self, procs: list[tuple[int, int]]) -> None:
        self.procs = [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in procs]

    def nvmlInit(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return 1
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int: return i
    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list: return self.procs
    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list: return []
    def nvmlSystemGetProcessName(self, pid: int) -> bytes: return b"python train.py"


def test_a_busy_gpu_is_refused_naming_the_processes() -> None:
    nvml = FakeNvml([(4242, 600 * 2**20), (4343, 100 * 2**20)])
    with pytest.raises(gpucheck.GpuBusy, match=r"pid 4242 \(python train.py\) holds 600 MiB on GPU 0"):
        gpucheck.check(False, nvml)
    recorded = gpucheck.check(True, nvml)
    assert recorded["allow_busy_gpu"] is True and {p["pid"] for p in recorded["other_gpu_processes"]} == {4242, 4343}
    assert gpucheck.check(False, FakeNvml([(4343, 100 * 2**20)]))["allow_busy_gpu"] is False


def test_busy_gpu_check_is_written_to_env_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpucheck, "other_processes", lambda nvml=None: [])
    (tmp_path / "m.toml").write_text(MATRIX)
    matrix = load_matrix(str(tmp_path / "m.toml"))

    class Instant:
        def run(self, cell, run_dir, matrix_name, slot_env):  # a launcher that runs nothing
            from bench.worker import base_record
            return {**base_record(cell, matrix_name), "status": "ok"}

    runner.run_matrix(matrix, matrix.cells[:1], tmp_path / "run", False, {"command": "t", "started_at": "now"},
                      launcher=Instant(), allow_busy_gpu=True)
    env = store.read_env(tmp_path / "run")
    assert env["gpu_check"]["allow_busy_gpu"] is True


def test_a_full_disk_is_refused_before_any_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.shutil, "disk_usage", lambda p: SimpleNamespace(free=10 * 2**20, total=0, used=0))
    with pytest.raises(Exception, match="has only 10.0 MiB free"):
        runner.check_writable(tmp_path / "run")


@pytest.mark.parametrize("verb", ["report", "compare"])
def test_garbage_results_give_exit_2_with_file_and_line(tmp_path: Path, verb: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps({"cell_id": "a", "status": "ok", "name": "x"})
    (run / store.RESULTS).write_text(f"{good}\n<<garbage>>\n{good}\n")
    args = ["report", str(run)] if verb == "report" else ["compare", str(run), str(run)]
    out = subprocess.run(bench_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "results.jsonl:2" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_killed_runner_takes_its_running_cell_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matrix, out = tmp_path / "m.toml", tmp_path / "run"
    matrix.write_text(MATRIX)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_FAULT": "hang@0", "BENCH_FAULT_CELLS": "*"}
    proc = subprocess.Popen(bench_cmd("run", str(matrix), "--out", str(out)), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.monotonic() + 120
    while not children and time.monotonic() < deadline:  # the cell process, once it has started
        time.sleep(0.5)
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert children, "the cell process never started"
    time.sleep(3)  # past the cell's prctl
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() and
                                              "Z" not in Path(f"/proc/{c}/stat").read_text().split()[2]
                                              for c in children):
        time.sleep(0.2)
    alive = [c for c in children if Path(f"/proc/{c}").exists()
             and Path(f"/proc/{c}/stat").read_text().split()[2] != "Z"]
    assert not alive, f"cell processes outlived the runner: {alive}"
