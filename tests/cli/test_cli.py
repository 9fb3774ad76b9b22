"""The command line as a user runs it (subprocesses, exit codes, messages)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config import builtin_matrices, load_matrix

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_dry_run_prints_the_plan_without_loading() -> None:
    out = bench("run", "smoke", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "matrix smoke" in out.stdout and "tiny-llama/lora/synthetic" in out.stdout
    assert len(out.stdout.splitlines()) == 1 + len(load_matrix("smoke").cells)  # a line per cell, nothing ran
    assert "running" not in out.stdout


def test_bad_matrix_exits_2_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('models = ["tiny-llama"]\ntasks = ["synthetic"]\n[[methods]]\nmethod = "lorra"\n')
    out = bench("run", str(bad), "--dry-run")
    assert out.returncode == 2
    assert "bad.toml: methods[0].method: unknown method 'lorra' (did you mean 'lora'?)" in out.stderr
    assert "Traceback" not in out.stderr


def test_only_glob_that_matches_nothing_is_an_error() -> None:
    out = bench("run", "smoke", "--only", "nothing*", "--dry-run")
    assert out.returncode == 2 and "--only 'nothing*' matches no cell of matrix 'smoke'" in out.stderr


def test_only_repeated_runs_the_cells_matching_any_glob() -> None:
    out = bench("run", "smoke", "--only", "full", "--only", "lora+packed*", "--dry-run")
    assert out.returncode == 0, out.stderr
    variants = sorted(line.split()[1].split("/")[1] for line in out.stdout.splitlines()[1:])
    assert variants == ["full", "lora+packed", "lora+packed+chunked-ce", "lora+packed+chunked-ce+compile",
                        "lora+packed+chunked-ce+compile+ckpt", "lora+packed+chunked-ce+compile+ckpt+offload"]


def test_list_shows_methods_models_tasks_matrices() -> None:
    out = bench("list")
    assert out.returncode == 0, out.stderr
    for word in ("lora", "r: int = 8", "llama-3.2-1b", "synthetic", "mr", "source: 'packaged' | 'hub' | 'dir'"):
        assert word in out.stdout
    assert f"matrices: {', '.join(builtin_matrices())}" in out.stdout


@pytest.mark.parametrize("verb", ["report", "compare"])
def test_garbage_results_give_exit_2_with_file_and_line(tmp_path: Path, verb: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps({"cell_id": "a", "status": "ok", "name": "x"})
    (run / "results.jsonl").write_text(f"{good}\n<<garbage>>\n{good}\n")
    args = ["report", str(run)] if verb == "report" else ["compare", str(run), str(run)]
    out = bench(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "results.jsonl:2" in out.stderr and "Traceback" not in out.stderr
