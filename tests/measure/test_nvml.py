"""The cell's GPU in NVML (bench/measure/nvml.py): found by the UUID torch reports, which NVML
shares, never by torch's index, which NVML does not (it ignores CUDA_VISIBLE_DEVICES); the energy
counter and the memory sampler both find it so. A fake NVML and a fake torch device."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from bench.measure import energy, memory, nvml

CUDA0 = torch.device("cuda", 0)  # torch's index: no CUDA needed to name it


class UuidNvml:
    """Two GPUs that NVML numbers 0 and 1, torch's cuda:0 being NVML's 1 (CUDA_VISIBLE_DEVICES=1)."""

    NVMLError = RuntimeError

    def __init__(self) -> None:
        self.reads: list[object] = []

    def nvmlInit(self) -> None: ...  # noqa: N802
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:  # noqa: N802
        return {"GPU-1111": "handle-of-nvml-1"}[uuid]

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        return f"handle-of-nvml-{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:  # noqa: N802
        self.reads.append(handle)
        return 1000

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(used=2**30)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list:  # noqa: N802
        return []


@pytest.fixture
def visible_gpu_1(monkeypatch: pytest.MonkeyPatch) -> UuidNvml:
    fake = UuidNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)  # what open_counter imports
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="1111"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "H200")
    return fake


def test_the_energy_counter_and_the_memory_sampler_find_the_gpu_by_its_uuid(visible_gpu_1: UuidNvml) -> None:
    assert nvml.device_handle(visible_gpu_1, CUDA0) == ("handle-of-nvml-1", "GPU-1111", None)
    counter, note = energy.open_counter(CUDA0)
    assert isinstance(counter, energy.NvmlEnergy) and note is None
    assert visible_gpu_1.reads == ["handle-of-nvml-1"] and "GPU-1111" in counter.scope
    sampler = memory.NvmlSampler(CUDA0, visible_gpu_1)
    sampler.close()
    assert sampler.handle == "handle-of-nvml-1"


def test_without_a_uuid_from_torch_the_gpu_is_found_by_index_and_a_note_says_so(
        visible_gpu_1: UuidNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace())
    handle, identity, note = nvml.device_handle(visible_gpu_1, CUDA0)
    assert handle == "handle-of-nvml-0" and identity == "NVML index 0" and "CUDA_VISIBLE_DEVICES" in note
    counter, why = energy.open_counter(CUDA0)
    assert counter is not None and why == note
