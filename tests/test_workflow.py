"""The GPU regression workflow: it parses, runs on the self-hosted GPU runner, and every command it
runs exists (scripts, `python -m bench` verbs, matrices, the folders it hands from step to step)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
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


def _doc() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _job() -> dict[str, Any]:
    (job,) = _doc()["jobs"].values()
    return job


def test_pull_requests_from_forks_never_reach_the_self_hosted_runner() -> None:
    condition = " ".join(str(_job().get("if", "")).split())
    # the job runs for anything but a pull request, or a pull request whose head is this repository
    assert "github.event_name != 'pull_request'" in condition
    assert "github.event.pull_request.head.repo.full_name == github.repository" in condition
    assert "pull_request_target" not in _doc().get("on", _doc().get(True)), \
        "pull_request_target runs forks' code with the base repository's token"


def test_manual_runs_take_a_ref_and_can_make_the_baseline() -> None:
    triggers = _doc().get("on", _doc().get(True))
    inputs = triggers["workflow_dispatch"]["inputs"]
    assert inputs["make_baseline"]["type"] == "boolean" and inputs["make_baseline"]["default"] is False
    assert "ref" in inputs
    checkout = next(s for s in _steps() if s.get("uses", "").startswith("actions/checkout@"))
    assert "inputs.ref" in checkout["with"]["ref"]
    make = next(s for s in _steps() if "bench baseline" in s.get("run", ""))
    compare = next(s for s in _steps() if "bench compare" in s.get("run", ""))
    upload = _upload("reports/baselines/gpu-ci")
    assert make["if"] == upload["if"] == "steps.mode.outputs.mode == 'baseline'"
    assert compare["if"] == "steps.mode.outputs.mode == 'compare'"
    assert "make_baseline" in _job()["env"]["MAKE_BASELINE"] and "inputs.ref" in _job()["env"]["TESTED_REF"]


def test_the_token_reads_only_and_no_step_sees_a_secret() -> None:
    for permissions in (_doc()["permissions"], _job()["permissions"]):
        assert permissions == {"contents": "read"}
    assert "secrets." not in WORKFLOW.read_text()
    checkout = next(s for s in _steps() if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False  # no token in .git/config while our code runs


def test_actions_are_pinned_to_commits() -> None:
    uses = [s["uses"] for s in _steps() if "uses" in s]
    assert uses
    for use in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", use), f"{use} is not pinned to a commit"


def test_the_matrix_runs_strict() -> None:
    assert "--strict" in _one("run")  # an error, oom or timeout cell fails the job


def _mode(tmp_path: Path, baseline: bool, ref: str, asked: str = "false", tested: str = "") -> tuple[str, str]:
    """The mode step's script run by bash as the runner would (cwd the checkout): its `mode` output
    and the job summary it writes."""
    (step,) = [s for s in _steps() if s.get("id") == "mode"]
    assert step["shell"] == "bash" and _steps().index(step) == 1  # right after checkout: the summary's first line
    if baseline:
        (tmp_path / "reports/baselines/gpu-ci").mkdir(parents=True)
        (tmp_path / "reports/baselines/gpu-ci/results.jsonl").write_text("{}\n")
    out, summary = tmp_path / "output", tmp_path / "summary"
    env = {"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_REF": ref, "MAKE_BASELINE": asked, "TESTED_REF": tested}
    subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    (mode,) = re.findall(r"^mode=(\w+)$", out.read_text(), re.MULTILINE)
    return mode, summary.read_text() if summary.exists() else ""


def test_a_committed_baseline_is_compared_with_nothing_said_first(tmp_path: Path) -> None:
    assert _mode(tmp_path, True, "refs/heads/main") == ("compare", "")


def test_main_without_a_baseline_makes_one_and_says_so_first(tmp_path: Path) -> None:
    mode, summary = _mode(tmp_path, False, "refs/heads/main")
    first = summary.splitlines()[0]
    assert mode == "baseline"
    assert first.startswith("Nothing was compared: no baseline is committed at reports/baselines/gpu-ci")
    assert "commit it as reports/baselines/gpu-ci/" in first and "gpu-ci-baseline artifact" in first


def test_a_baseline_asked_for_is_made_even_where_one_is_committed(tmp_path: Path) -> None:
    mode, summary = _mode(tmp_path, True, "refs/heads/dev", asked="true")
    assert mode == "baseline" and summary.startswith("Nothing was compared: this run makes the baseline")


@pytest.mark.parametrize("ref, tested", [("refs/pull/7/merge", ""), ("refs/heads/main", "refs/pull/7/head")])
def test_another_ref_without_a_baseline_makes_none_and_says_how_to(tmp_path: Path, ref: str, tested: str) -> None:
    mode, summary = _mode(tmp_path, False, ref, tested=tested)
    assert mode == "none"
    assert summary.startswith("Nothing was compared: no baseline is committed") and "make_baseline = true" in summary


def test_every_run_all_mode_the_workflow_uses_exists() -> None:
    modes = re.findall(r"\./run_all\.sh\s+([\w-]+)", WORKFLOW.read_text())
    assert modes
    cases = set(re.findall(r"^\s*([\w|-]+)\)", (ROOT / "run_all.sh").read_text(), re.MULTILINE))
    labels = {label for case in cases for label in case.split("|")}
    for mode in modes:
        assert mode in labels, f"./run_all.sh {mode}: run_all.sh has no such mode"
