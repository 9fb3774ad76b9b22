"""The one training loop (bench/loop.py): warm-up steps untimed, the instruments told of every
phase of every step, the loss of each step kept, the step in progress named."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from bench.loop import Instruments, LoopState, Step, train
from tests.helpers import built


class Log:
    """A timer, a watch and a progress bar that write down what the loop tells them."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")

    def mark(self, step: int, phase: str) -> None:
        self.events.append((step, phase))

    def update(self, n: int) -> None:
        self.events.append(("+", n))


def _batches(b: Any, n: int) -> list[dict[str, torch.Tensor]]:
    return list(b.batcher.train_batches(4, n, 0, torch.device("cpu")))


def test_warm_up_is_untimed_and_every_phase_is_marked() -> None:
    b = built("lora", options={"r": 2}, steps=2, warmup_steps=1)
    opt = torch.optim.AdamW(b.trainable, lr=1e-2)
    log, state = Log(), LoopState()
    train(Step(b.model, opt, b.trainable, b.plan.cell.settings), _batches(b, 3), state, Instruments(log, log, log))
    # the optimizer step is inside the timed interval; its mark comes after the timer stops
    assert log.events == [(0, "forward"), (0, "backward"), (0, "optimizer"), ("+", 1),
                          "start", (1, "forward"), (1, "backward"), "stop", (1, "optimizer"), ("+", 1),
                          "start", (2, "forward"), (2, "backward"), "stop", (2, "optimizer"), ("+", 1)]
    assert state.step == 2 and state.losses.shape == (3,) and torch.isfinite(state.losses).all()
    assert b.model.training and all(p.grad is None for p in b.trainable)  # gradients freed after each step


def test_the_default_instruments_do_nothing() -> None:
    b = built("full", steps=1, warmup_steps=0)
    opt = torch.optim.AdamW(b.trainable, lr=1e-3)
    log, state = Log(), LoopState()
    train(Step(b.model, opt, b.trainable, b.plan.cell.settings), _batches(b, 1), state, Instruments(log))
    assert log.events == ["start", "stop"]


def test_a_failing_step_leaves_its_number(monkeypatch: pytest.MonkeyPatch) -> None:
    b = built("full", steps=3, warmup_steps=0, max_grad_norm=1.0)
    opt = torch.optim.AdamW(b.trainable, lr=1e-3)
    calls = {"n": 0}
    real = opt.step

    def step(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(opt, "step", step)
    state = LoopState()
    with pytest.raises(RuntimeError, match="boom"):
        train(Step(b.model, opt, b.trainable, b.plan.cell.settings), _batches(b, 3), state, Instruments(Log()))
    assert state.step == 1  # what the worker's failure record names
