"""The GPU tests stage (bench/tools/lease/gputests.py): outcomes read from pytest's JUnit file by the
node ids pytest itself gives."""
from __future__ import annotations

from pathlib import Path

from bench.tools.lease import gputests

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.exec.test_gpu" name="test_a" time="3.5" />
<testcase classname="tests.exec.test_gpu" name="test_b" time="1.0"><failure message="assert 1 == 2&#10;more">x</failure></testcase>
<testcase classname="tests.perf.test_step" name="test_step_gpu[lora]" time="0.1"><skipped message="needs CUDA" /></testcase>
</testsuite></testsuites>"""


def test_junit_outcomes_are_read_by_node_id(tmp_path: Path) -> None:
    (tmp_path / "j.xml").write_text(JUNIT)
    got = gputests.junit_outcomes(tmp_path / "j.xml")
    assert got == {
        "tests/exec/test_gpu.py::test_a": {"outcome": "passed", "duration_s": 3.5, "message": None},
        "tests/exec/test_gpu.py::test_b": {"outcome": "failed", "duration_s": 1.0, "message": "assert 1 == 2"},
        "tests/perf/test_step.py::test_step_gpu[lora]": {"outcome": "skipped", "duration_s": 0.1,
                                                         "message": "needs CUDA"},
    }
    assert "tests/perf/test_step.py::test_step_gpu[lora]" in gputests.collect(120)  # pytest's own ids
