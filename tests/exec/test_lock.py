"""One live run per run directory; a lock left by a killed run is taken over, and said so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.exec.lock import LOCK, RunDirLocked, RunLock

ROOT = Path(__file__).resolve().parents[2]


def test_a_live_run_holds_the_directory(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        holder = json.loads((tmp_path / LOCK).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunDirLocked, match=f"in use by another run \\(pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK).read_text() == ""  # a clean exit leaves an empty lock file, not a stale one
    with RunLock(tmp_path) as again:  # and the next run takes it without a word
        assert again.took_over is None


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    code = ("import os, sys; from bench.exec.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print(os.getpid(), flush=True); os.kill(os.getpid(), 9)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    dead_pid = int(out.stdout.strip())
    lock = RunLock(tmp_path).acquire()
    assert lock.took_over and lock.took_over["pid"] == dead_pid
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    lock.release()
