"""Argument helpers the verbs share (bench/cli/args.py)."""
from __future__ import annotations

import argparse

import pytest

from bench.cli import args
from bench.errors import BenchError


def test_gpu_lists_become_one_slot_per_gpu() -> None:
    ns = argparse.Namespace(gpus="0,2", jobs=None)
    assert args.slots(ns, 1) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "2"}]
    with pytest.raises(BenchError, match="--gpus 'a,b'"):
        args.slots(argparse.Namespace(gpus="a,b", jobs=None), 1)
    assert args.slots(argparse.Namespace(gpus=None, jobs=3), 1) == [{}, {}, {}]
    assert args.slots(argparse.Namespace(gpus=None, jobs=None), 2) == [{}, {}]  # the matrix's jobs


def test_all_gpus_are_the_visible_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert args.gpu_ids("all") == ["3", "5"]


@pytest.mark.parametrize("text, value", [("1", 1), ("12", 12)])
def test_positive_int(text: str, value: int) -> None:
    assert args.positive_int(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "two", "1.5"])
def test_positive_int_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a positive integer"):
        args.positive_int(text)


def test_select_cells_by_glob() -> None:
    matrix, cells = args.select_cells("smoke", "lora")
    assert cells and all(c.method.name == "lora" for c in cells)
    assert args.select_cells("smoke", None)[1] == matrix.cells
    with pytest.raises(BenchError, match="matches no cell"):
        args.select_cells("smoke", "nothing*")
