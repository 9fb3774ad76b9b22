"""Shared fixtures. GPU tests are marked `gpu` and skipped where CUDA is absent; every other test
runs its cells on the CPU, even on a machine with a GPU (its assertions are about the CPU's
figures: peak RSS, no allocator peak, bitsandbytes' CPU fallbacks). The libraries' known warnings,
named below, are filtered in every test; any other warning shows in pytest's summary."""
from __future__ import annotations

import warnings
from typing import Iterator

import pytest

# (category, message regex, why it is expected and not ours to fix)
KNOWN_WARNINGS = [
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated",
     "peft's PeftModel reads transformers' old name for it when it wraps a model (peft 0.21.2, transformers 5.24)"),
    (DeprecationWarning, r"`torch\.jit\.script_method` is deprecated",
     "torch's own torch.utils.mkldnn, imported by torch.fx, at its first import"),
    (FutureWarning, r"`past_key_values` is deprecated and will be removed",
     "peft's prefix tuning hands its prefixes to the model as past_key_values, which transformers 5.24 renamed `cache`"),
    (UserWarning, r"Paged optimizers are not supported on CPU",
     "bitsandbytes' CPU fallback for the paged optimizers, which the record notes (`optimizer.paged_note`)"),
]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """The known warnings above, and only those, filtered for the test."""
    with warnings.catch_warnings():
        for category, message, _ in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


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
