"""Fixture runs for the report tests: copied into a temporary folder (rendering writes into the run
folder), and each rendered once per session in every format (rendering is the slow part)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from bench.report import render

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def run(tmp_path: Path) -> Callable[[str], Path]:
    """Copy a fixture run into tmp_path."""
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / name, dest)
        return dest
    return copy


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`rendered(name)`: the report folder of fixture run NAME, rendered in every format."""
    cache: dict[str, Path] = {}
    def get(name: str) -> Path:
        if name not in cache:
            dest = tmp_path_factory.mktemp(name) / name
            shutil.copytree(FIXTURES / name, dest)
            cache[name] = render(dest)
        return cache[name]
    return get


@pytest.fixture
def cuda_report(rendered: Callable[[str], Path]) -> Path:
    return rendered("cuda_run")


@pytest.fixture
def cpu_report(rendered: Callable[[str], Path]) -> Path:
    return rendered("cpu_run")
