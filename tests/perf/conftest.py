"""The `step_case` fixture of the step benchmarks (tests/perf/steps.py holds what it builds)."""
from __future__ import annotations

import gc
from contextlib import ExitStack
from functools import partial
from typing import Callable, Iterator

import pytest
import torch

from tests.perf.steps import StepCase, make_case


@pytest.fixture
def step_case() -> Iterator[Callable[..., StepCase]]:
    """`step_case(method, model, options=None, device=None, **settings)`: see `steps.make_case`.
    What it built is released when the test ends, so one GPU test's memory does not carry into
    the next, and torch's CPU thread count is restored."""
    threads = torch.get_num_threads()
    with ExitStack() as stack:
        yield partial(make_case, stack)
    torch.set_num_threads(threads)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
