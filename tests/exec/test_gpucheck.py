"""A GPU that other processes use is refused before any cell runs, unless allowed; either way env.json
says what was found, and what NVML refused to list."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.config import load_matrix
from bench.exec import gpucheck, runner
from bench.exec.worker import base_record
from bench.results import store
from bench.results.record import Record
from tests.helpers import tiny_matrix


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
    quiet = gpucheck.check(False, FakeNvml([(4343, 100 * 2**20)]))  # under the threshold: not busy
    assert quiet["allow_busy_gpu"] is False and quiet["busy_threshold_bytes"] == gpucheck.BUSY_BYTES


class RefusingNvml(FakeNvml):
    """Three GPUs: the first lists its processes, the second refuses its compute listing, the third
    its handle (NVML_ERROR_NO_PERMISSION, a lost GPU). This stand-in has no NVMLError class."""

    def nvmlDeviceGetCount(self) -> int: return 3

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i == 2:
            raise RuntimeError("GPU is lost")
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list:
        if h == 1:
            raise RuntimeError("Insufficient Permissions")
        return self.procs


def test_what_nvml_refuses_is_recorded_and_the_check_goes_on() -> None:
    nvml = RefusingNvml([(4242, 600 * 2**20)])
    with pytest.raises(gpucheck.GpuBusy, match="pid 4242"):  # the first GPU's processes are still seen
        gpucheck.check(False, nvml)
    recorded = gpucheck.check(True, nvml)
    assert [p["gpu"] for p in recorded["other_gpu_processes"]] == [0]
    assert recorded["errors"] == [
        "GPU 1: nvmlDeviceGetComputeRunningProcesses: RuntimeError: Insufficient Permissions",
        "GPU 2: nvmlDeviceGetHandleByIndex: RuntimeError: GPU is lost"]


def test_with_pynvml_only_its_own_errors_are_caught() -> None:
    class PynvmlError(Exception): ...

    class Real(RefusingNvml):
        NVMLError = PynvmlError  # a module with NVML's error class: anything else is a bug, and raises

    with pytest.raises(RuntimeError, match="Insufficient Permissions"):
        gpucheck.check(True, Real([]))

    class Refusing(Real):
        def nvmlDeviceGetCount(self) -> int:
            raise PynvmlError("Uninitialized")

    assert gpucheck.check(True, Refusing([]))["errors"] == ["nvmlDeviceGetCount: PynvmlError: Uninitialized"]


def test_a_busy_gpu_stops_the_run_before_any_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpucheck, "other_processes", lambda nvml=None: ([
        {"gpu": 0, "pid": 4242, "name": "x", "used_bytes": 2**30}], []))
    (tmp_path / "m.toml").write_text(tiny_matrix())
    matrix = load_matrix(str(tmp_path / "m.toml"))

    class Never:
        def run(self, *args: object) -> Record:
            raise AssertionError("a cell ran on a busy GPU")

    with pytest.raises(gpucheck.GpuBusy, match="--allow-busy-gpu"):
        runner.run_matrix(matrix, matrix.cells, tmp_path / "run", False, {"command": "t", "started_at": "now"},
                          launcher=Never())
    assert not (tmp_path / "run" / store.RESULTS).exists()


def test_busy_gpu_check_is_written_to_env_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpucheck, "other_processes", lambda nvml=None: ([], []))
    (tmp_path / "m.toml").write_text(tiny_matrix())
    matrix = load_matrix(str(tmp_path / "m.toml"))

    class Instant:
        def run(self, cell, run_dir, matrix_name, slot_env) -> Record:  # a launcher that runs nothing
            rec = base_record(cell, matrix_name)
            rec.status = "ok"
            return rec

    runner.run_matrix(matrix, matrix.cells[:1], tmp_path / "run", False, {"command": "t", "started_at": "now"},
                      launcher=Instant(), allow_busy_gpu=True)
    env = store.read_env(tmp_path / "run")
    assert env["gpu_check"] == {"allow_busy_gpu": True, "other_gpu_processes": [],
                                "busy_threshold_bytes": gpucheck.BUSY_BYTES, "errors": []}
