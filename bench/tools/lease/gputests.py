"""The GPU check's last stage: the tests marked gpu, collected and run by pytest in a process of
their own, their outcomes read by node id from pytest's JUnit file. Torch-free."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.tools.lease import state as st

ROOT = Path(__file__).resolve().parents[3]  # the project folder (tests/ lives there)
PASSED = ("passed", "skipped")  # a GPU test with either outcome is not run again


def collect(timeout_s: float) -> list[str]:
    """The node ids of every test marked gpu."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                          "tests"], cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, timeout_s))
    return [line.strip() for line in out.stdout.splitlines() if "::" in line and not line.startswith(" ")]


def run(nodes: list[str], work: Path, timeout_s: float) -> dict[str, dict[str, Any]]:
    """Run the tests; their outcomes by node id (a test the time limit cut off is `timeout`). The output
    is appended to the work folder's pytest.log."""
    xml = work / "pytest.xml"
    xml.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", f"--junitxml={xml}", *nodes]
    with open(work / st.PYTEST_LOG, "a", encoding="utf-8") as log:
        log.write(f"\n===== {datetime.now(timezone.utc).isoformat(timespec='seconds')}: {' '.join(cmd[3:])}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.write(f"\n===== killed after {timeout_s:.0f} s (the call's budget)\n")
    found = junit_outcomes(xml) if xml.exists() else {}
    return {n: found.get(n, {"outcome": "timeout" if proc.returncode != 0 else "not collected", "duration_s": None})
            for n in nodes}


def junit_outcomes(path: Path) -> dict[str, dict[str, Any]]:
    """Node id -> outcome, seconds and the failure's first line, from pytest's JUnit XML."""
    out: dict[str, dict[str, Any]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            child = case.find(tag)
            if child is not None:
                outcome, message = name, (child.get("message") or "").strip().splitlines()[:1]
                message = message[0][:300] if message else None
                break
        out[_node(case.get("classname") or "", case.get("name") or "")] = {
            "outcome": outcome, "duration_s": float(case.get("time") or 0.0), "message": message}
    return out


def _node(classname: str, name: str) -> str:
    """pytest's node id from JUnit's dotted class name: the longest prefix that is a file of ROOT."""
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        if (ROOT / Path(*parts[:cut])).with_suffix(".py").is_file():
            return "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], name])
    return f"{classname}::{name}"
