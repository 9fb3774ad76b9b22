"""The GPU regression workflow: it parses, runs on the self-hosted GPU runner, and every command it
runs exists (scripts, `python -m bench` verbs, matrices, the folders it hands from step to step)."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from bench.report import REPORT_DIR

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github/workflows/gpu-regression.yml"
VERBS = {"run", "report", "compare", "baseline", "list", "predict", "capacity", "selfcheck"}
MATRICES = ROOT / "bench/matrices"


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


def test_workflow_parses_and_targets_the_gpu_runner() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the YAML structure is not checked")
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert triggers, "the workflow has no triggers"
    (job,) = doc["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "gpu"]
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == f"{_one('run')[_one('run').index('--out') + 1]}/{REPORT_DIR}"
    assert upload.get("if") == "always()"  # the report matters most when the comparison failed
    runs = [s["run"] for s in steps if "run" in s]
    order = [next(i for i, r in enumerate(runs) if needle in r)
             for needle in ("./run_all.sh test", "bench run", "bench compare", "bench report")]
    assert order == sorted(order), "steps must run: tests, run, compare, report"


def test_every_bench_verb_exists() -> None:
    commands = _bench_commands()
    assert {a[0] for a in commands} >= {"run", "compare", "report"}
    for args in commands:
        assert args and args[0] in VERBS, f"unknown verb in `python -m bench {' '.join(args)}`"


def test_run_compare_and_report_use_the_same_folders() -> None:
    run = _one("run")
    out = run[run.index("--out") + 1]
    matrix = run[1]
    base, current = _one("compare")[1:3]
    assert current == out
    assert base == f"reports/baselines/{matrix}"  # save_baseline's default root, named after the matrix
    assert _one("report")[1] == out


def test_run_all_script_exists_and_is_executable() -> None:
    script = ROOT / "run_all.sh"
    if not script.exists():
        pytest.skip("run_all.sh is not in the tree yet")
    assert os.access(script, os.X_OK), "run_all.sh is not executable (chmod +x run_all.sh)"
    assert "./run_all.sh test" in WORKFLOW.read_text()


def test_matrices_named_by_the_workflow_exist() -> None:
    matrix = _one("run")[1]
    path = MATRICES / f"{matrix}.toml"
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not in the tree yet")
    assert path.is_file()
