"""The environment of a run, for env.json: versions, hardware, git state, command line (what of it
every record carries: `provenance`); and whether the Hugging Face hub is reachable
(`python -m bench.exec.environment --hub-reachable`, which run_all.sh asks before going offline)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "pandas", "matplotlib",
            "nvidia-ml-py", "ft-bench")


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """GPU (through torch and NVML) or CPU description. Imports torch."""
    import torch

    info: dict[str, Any] = {"cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                            "cpu": cpu_name(), "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": p.name, "total_memory_bytes": p.total_memory,
                                 "capability": f"{p.major}.{p.minor}"})
        info["driver"], error = driver_version()
        if error:
            info["nvml_error"] = error
    return info


def driver_version() -> tuple[str | None, str | None]:
    """(the NVIDIA driver's version, None), or (None, why NVML could not say). Torch-free; a few ms
    where NVML is already loaded, as in a CUDA cell."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return str(pynvml.nvmlSystemGetDriverVersion()), None
    except Exception as exc:  # noqa: BLE001 - the driver version is nice to have
        return None, str(exc) or type(exc).__name__


COMMIT_ENV = "BENCH_GIT_COMMIT"  # the commit of a copied tree without .git (a lent GPU machine's copy)


def collect(argv: list[str]) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    status = _git(root, "status", "--porcelain")
    commit = _git(root, "rev-parse", "HEAD")
    given = os.environ.get(COMMIT_ENV) if commit is None else None
    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(argv),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git": {"commit": commit or given, "dirty": bool(status) if status is not None else None,
                **({"commit_from": COMMIT_ENV} if given else {})},
        **hardware(),
    }


def provenance(env: dict[str, Any]) -> dict[str, Any]:
    """The record's `provenance` block from the run's env.json (collected once per run, so no cell
    pays for it): packages, python, platform, git commit and dirty flag, the invocation's start."""
    git = env.get("git") or {}
    return {"packages": env.get("packages"), "python": env.get("python"), "platform": env.get("platform"),
            "git_commit": git.get("commit"), "git_dirty": git.get("dirty"), "git_commit_from": git.get("commit_from"),
            "run_started_at": env.get("started_at")}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether huggingface.co answers on its HTTPS port."""
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    if sys.argv[1:] != ["--hub-reachable"]:
        sys.exit("usage: python -m bench.exec.environment --hub-reachable")
    sys.exit(0 if hub_reachable(5.0) else 1)
