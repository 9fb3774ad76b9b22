"""The GPU regression workflow: it parses, runs on the self-hosted GPU runner, and every command it
runs exists (scripts, `python -m bench` verbs, matrices, the folders it hands from step to step)."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from bench.cli import verbs
from bench.config import load_matrix
from bench.report import REPORT_DIR

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github/workflows/gpu-regression.yml"


def _bench_commands() -> list[list[str]]:
    """The arguments after `python -m bench` of every command in the workflow (comments dropped,
    pipes cut off)."""
    text = "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in WORKFLOW.read_text().splitlines())
    out = []
    for match in re.finditer(r"python -m bench\b([^\n|;&]*)", text):
        out.append(shlex.split(match.group(1)))
    return out


def _one(verb: str) -> list[str]:
    (args,) = [a for a in _bench_commands() if a and a[0] == verb]
    return args


def _out() -> str:
    run = _one("run")
    return run[run.index("--out") + 1]


def _steps() -> list[dict[str, Any]]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    (job,) = doc["jobs"].values()
    return job["steps"]


def _upload(path: str) -> dict[str, Any]:
    (step,) = [s for s in _steps() if s.get("uses", "").startswith("actions/upload-artifact@")
               and s["with"]["path"] == path]
    return step


def test_workflow_parses_and_targets_the_gpu_runner() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    (job,) = doc["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "gpu"]
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    runs = [s["run"] for s in steps if "run" in s]
    order = [next(i for i, r in enumerate(runs) if needle in r)
             for needle in ("./run_all.sh test", "bench run", "bench compare", "bench report")]
    assert order == sorted(order), "steps must run: tests, run, compare, report"


def test_the_report_is_uploaded_even_when_the_comparison_fails() -> None:
    upload = _upload(f"{_out()}/{REPORT_DIR}")  # where `bench report` writes
    assert upload.get("if") == "always()"  # the report matters most when the comparison failed
    (report,) = [s for s in _steps() if "bench report" in s.get("run", "")]
    assert report.get("if") == "always()"


def test_every_bench_verb_exists() -> None:
    commands = _bench_commands()
    assert {a[0] for a in commands} >= {"run", "compare", "report", "baseline"}
    for args in commands:
        assert args and args[0] in verbs(), f"unknown verb in `python -m bench {' '.join(args)}`"


def test_run_compare_baseline_and_report_use_the_same_folders() -> None:
    out, matrix = _out(), _one("run")[1]
    base, current = _one("compare")[1:3]
    assert current == out
    assert base == f"reports/baselines/{matrix}"  # save_baseline's default root, named after the matrix
    assert _one("report")[1] == out
    baseline = _one("baseline")
    assert baseline[1] == out and baseline[baseline.index("--name") + 1] == matrix
    assert _upload(base)  # the baseline it makes is uploaded to be committed


def test_run_all_script_exists_and_is_executable() -> None:
    script = ROOT / "run_all.sh"
    assert script.is_file(), "run_all.sh is missing"
    assert os.access(script, os.X_OK), "run_all.sh is not executable (chmod +x run_all.sh)"
    assert "./run_all.sh test" in WORKFLOW.read_text()
    assert re.search(r"^\s*test\)", script.read_text(), re.MULTILINE), "run_all.sh has no `test` command"


def test_the_matrix_named_by_the_workflow_loads() -> None:
    matrix = load_matrix(_one("run")[1])  # a built-in name: it must exist and validate
    assert matrix.cells and matrix.path.parent == ROOT / "bench" / "matrices"
