"""Optimizers (bench/optim.py): where their state lives, and what the record says about paging,
decided from the state measured after training (parameter shapes on the meta device stand in for a
model; no CUDA needed)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bench import optim
from bench.predict.static import PAGED_MIN_NUMEL
from tests.helpers import TINY

BIG, SMALL = torch.empty(151936, 896, device="meta"), torch.empty(896, device="meta")
TINY_ONLY = [torch.empty(320, 64, device="meta"), torch.empty(64, device="meta")]  # largest: 20,480


def test_state_in_managed_memory_is_named_with_its_bytes() -> None:
    out = optim.paging("paged_adamw8bit", "cuda", 123_456_789, [BIG, SMALL])
    assert out["paged_active"] is True
    assert "123456789 bytes" in out["paged_note"] and "NVML" in out["paged_note"]
    assert "torch's counters do not see" in out["paged_note"]


def test_a_paged_optimizer_that_paged_nothing_says_why() -> None:
    out = optim.paging("paged_adamw", "cuda", 0, TINY_ONLY)
    assert out["paged_active"] is False
    note = out["paged_note"]
    assert note.startswith("no state was paged") and str(PAGED_MIN_NUMEL) in note and "20480" in note
    assert "managed memory" not in note


def test_on_the_cpu_paging_falls_back_and_other_optimizers_have_no_note() -> None:
    cpu = optim.paging("paged_adamw8bit", "cpu", 0, [BIG])
    assert cpu["paged_active"] is False and "not paged" in cpu["paged_note"] and "CPU" in cpu["paged_note"]
    for name in ("adamw", "adamw8bit"):
        assert optim.paging(name, "cuda", 0, [BIG]) == {"paged_active": False, "paged_note": None}


@pytest.mark.parametrize("name", ["adamw", "paged_adamw"])
def test_the_note_is_not_written_before_the_state_exists(name: str) -> None:
    params = [torch.nn.Parameter(torch.zeros(4, 4))]
    opt, info = optim.build_optimizer(params, dataclasses.replace(TINY, optimizer=name), torch.device("cpu"))
    assert info == {"name": name}
    params[0].grad = torch.ones(4, 4)
    opt.step()
    state = optim.state_bytes(opt)
    assert state["state_bytes_device"] > 0 and state["state_bytes_managed"] == 0
