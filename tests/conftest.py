"""Shared fixtures. GPU tests are marked `gpu` and skipped where CUDA is absent; every other test
runs its cells on the CPU, even on a machine with a GPU (its assertions are about the CPU's
figures: peak RSS, no allocator peak, bitsandbytes' CPU fallbacks)."""
from __future__ import annotations

from typing import Iterator

import pytest


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


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Cells built in this process pick the CPU, and cell processes started from it see no GPU."""
    if request.node.get_closest_marker("gpu") is not None or not _cuda():
        yield
        return
    import torch

    import bench.build

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(bench.build, "pick_device", lambda: torch.device("cpu"))
    yield
