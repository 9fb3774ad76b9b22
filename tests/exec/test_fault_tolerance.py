"""The runner killed from outside, as a user's SIGKILL or a lost node would: `python -m bench run` in a
subprocess loses and repeats nothing on the rerun, and takes its running cell with it."""
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

from bench.config import load_matrix
from bench.errors import BenchError
from bench.exec import runner
from bench.results import store
from tests.exec.faults import alive
from tests.helpers import FULL_AND_LORA, tiny_matrix

ROOT = Path(__file__).resolve().parents[2]

MATRIX = tiny_matrix(FULL_AND_LORA + """
[[methods]]
method = "ia3"
[[methods]]
method = "prompt_tuning"
options = { num_virtual_tokens = 2 }
""")

# A real cell that would train far longer than the test waits: no fault injected, the runner is
# killed while the cell's process works.
LONG_CELL = tiny_matrix('[[methods]]\nmethod = "lora"\noptions = { r = 2 }\nsettings = { steps = 1000000 }\n',
                        timeout=3600)


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def wait_for_records(path: Path, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len([ln for ln in path.read_text().splitlines() if ln.strip()]) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} records in {path} after {timeout} s")


def start_run(tmp_path: Path, matrix_text: str) -> tuple[subprocess.Popen, Path, Path, dict[str, str]]:
    """`bench run` of `matrix_text` in its own process, its output discarded: (process, matrix, out, env)."""
    matrix, out = tmp_path / "m.toml", tmp_path / "run"
    matrix.write_text(matrix_text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(bench_cmd("run", str(matrix), "--out", str(out)), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, matrix, out, env


@pytest.mark.slow
def test_killed_runner_resumes_without_losing_or_repeating(tmp_path: Path) -> None:
    proc, matrix, out, env = start_run(tmp_path, MATRIX)
    wait_for_records(out / store.RESULTS, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before_text = (out / store.RESULTS).read_text()
    before = store.read_records(out)
    assert before and all(r.ok for r in before)
    again = subprocess.run(bench_cmd("run", str(matrix), "--out", str(out)), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "took over the stale lock" in again.stderr  # the killed run's lock, said so
    text = (out / store.RESULTS).read_text()
    assert text.startswith(before_text)  # nothing recorded before the kill is lost or rewritten
    records = [json.loads(ln) for ln in text.splitlines() if ln.strip()]  # no line is corrupt
    ok = [r["cell_id"] for r in records if r["status"] == "ok"]
    assert sorted(ok) == sorted({c.cell_id for c in load_matrix(str(matrix)).cells})  # one ok each


@pytest.mark.slow
def test_a_killed_runner_takes_its_running_cell_with_it(tmp_path: Path) -> None:
    proc, _, out, _ = start_run(tmp_path, LONG_CELL)
    children: list[int] = []
    deadline = time.monotonic() + 120
    while not children and time.monotonic() < deadline:  # the cell process, once it has started
        time.sleep(0.5)
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert children, "the cell process never started"
    time.sleep(3)  # past the cell's prctl
    children = sorted({*children, *(int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split())})
    assert all(alive(c) for c in children), "the cell ended before the runner was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(c) for c in children):
        time.sleep(0.2)
    assert not [c for c in children if alive(c)], "cell processes outlived the runner"
    assert not (out / store.RESULTS).exists()  # the cell never finished: no record, none invented


def test_a_second_run_into_a_held_directory_is_refused_by_the_cli(tmp_path: Path) -> None:
    from bench.exec.lock import RunLock

    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run"):
        out = subprocess.run(bench_cmd("run", "smoke", "--out", str(tmp_path / "run")), cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert f"pid {os.getpid()}" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / store.RESULTS).exists()


def test_a_full_disk_is_refused_before_any_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.shutil, "disk_usage", lambda p: SimpleNamespace(free=10 * 2**20, total=0, used=0))
    with pytest.raises(BenchError, match="has only 10.0 MiB free"):
        runner.check_writable(tmp_path / "run")
