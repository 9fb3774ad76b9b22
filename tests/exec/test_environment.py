"""What env.json says about a run (bench/exec/environment.py), and the hub check run_all.sh asks."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from bench.exec import environment

ROOT = Path(__file__).resolve().parents[2]


def test_collect_names_the_command_versions_git_and_hardware() -> None:
    env = environment.collect(["bench", "run", "smoke"])
    assert env["command"] == "bench run smoke" and env["started_at"]
    assert env["packages"]["torch"] and set(env["packages"]) == set(environment.PACKAGES)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (an sdist has no history to name)
        assert env["git"]["commit"] == head.stdout.strip() and isinstance(env["git"]["dirty"], bool)
    assert env["cpu"] and env["cuda_available"] in (True, False) and isinstance(env["gpus"], list)


def test_an_unreachable_hub_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert environment.hub_reachable(0.1) is False
