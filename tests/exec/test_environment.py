"""What env.json says about a run (bench/exec/environment.py), and the hub check run_all.sh asks."""
from __future__ import annotations

import socket
import subprocess
import sys
import types
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


def test_a_copy_without_git_takes_its_commit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lent GPU machine runs a copy of the tree without .git: the caller names the commit."""
    monkeypatch.setattr(environment, "_git", lambda root, *args: None)
    monkeypatch.setenv(environment.COMMIT_ENV, "abc123")
    assert environment.collect(["bench"])["git"] == {"commit": "abc123", "dirty": None, "commit_from": "BENCH_GIT_COMMIT"}
    monkeypatch.delenv(environment.COMMIT_ENV)
    assert environment.collect(["bench"])["git"] == {"commit": None, "dirty": None}


def test_the_driver_comes_from_nvml_or_says_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlSystemGetDriverVersion = lambda: "550.54.15"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert environment.driver_version() == ("550.54.15", None)

    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver  # type: ignore[attr-defined]
    assert environment.driver_version() == (None, "NVML Shared Library Not Found")


def test_provenance_is_what_env_json_says_produced_the_run() -> None:
    env = environment.collect(["bench", "run", "smoke"])
    prov = environment.provenance(env)
    assert prov["packages"] == env["packages"] and prov["python"] == env["python"]
    assert (prov["git_commit"], prov["git_dirty"]) == (env["git"]["commit"], env["git"]["dirty"])
    assert prov["run_started_at"] == env["started_at"] and prov["platform"] == env["platform"]
    assert environment.provenance({})["packages"] is None  # an older env.json: what it lacks is unknown
