"""Shared fixtures. GPU tests are marked `gpu` and skipped where CUDA is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MR = ROOT.parent / "shared" / "data" / "mr"


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def mr_dir() -> Path:
    """The movie-review files: $BENCH_MR_DIR, else ../shared/data/mr; skip when neither exists."""
    folder = Path(os.environ.get("BENCH_MR_DIR", SHARED_MR))
    if not (folder / "rt-polarity.pos").is_file():
        pytest.skip(f"movie-review data not found at {folder} (set BENCH_MR_DIR)")
    return folder
