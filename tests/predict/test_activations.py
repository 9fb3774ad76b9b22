"""The activation formula matches what autograd really keeps for the backward (on the CPU)."""
from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch

from bench import build
from bench.catalog.models import BUILTIN
from bench.predict import predict
from tests.helpers import cell, saved_storages

VOCAB = BUILTIN["tiny-llama"].config["vocab_size"]
INT64_BYTES = 8


def _saved_bytes(model: torch.nn.Module, batch: dict[str, torch.Tensor], autocast: Any) -> int:
    """Bytes of the distinct non-parameter storages autograd keeps for the backward."""
    return sum(saved_storages(model, batch, autocast=autocast).values())


@pytest.mark.parametrize("method, options, precision", [
    ("full", {}, "fp32"), ("full", {}, "bf16"), ("full", {}, "bf16-mixed"),
    ("lora", {"r": 4, "dropout": 0.0}, "fp32"), ("lora", {"r": 4, "dropout": 0.1}, "fp32"),
    ("lora", {"r": 4, "dropout": 0.0}, "bf16-mixed"), ("prompt_tuning", {"num_virtual_tokens": 4}, "fp32"),
    ("houlsby", {"m": 8}, "fp32"), ("ia3", {}, "fp32"),
])
def test_activation_formula_matches_what_autograd_keeps(method: str, options: dict, precision: str) -> None:
    c = cell(method, options=options, precision=precision, batch_size=4, seq_len=64)
    s = c.settings
    built = build.build(build.plan(c, torch.device("cpu")))
    batch = next(built.batcher.train_batches(s.batch_size, 1, 0, torch.device("cpu")))
    autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16-mixed"
                else contextlib.nullcontext)
    built.model.train()
    measured = _saved_bytes(built.model, batch, autocast)
    p = predict(c, "cpu")
    detail, tokens = p["detail"], s.batch_size * p["positions"]
    # the forward also keeps the fp32 log-probabilities (part of the predicted loss temporaries)
    # and the batch's ids and labels (int64, counted with the inputs)
    ids_and_labels = 2 * INT64_BYTES * s.batch_size * s.seq_len
    expected = detail["saved_bytes"] + detail["weight_casts_bytes"] + 4 * VOCAB * tokens + ids_and_labels
    assert expected == pytest.approx(measured, rel=0.01)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_padded_rows_bring_a_mask_and_repeated_heads(precision: str) -> None:
    # the packaged movie-review sentences are short: rows are padded to seq_len 256
    c = cell("full", task="mr", precision=precision, batch_size=4, seq_len=256)
    built = build.build(build.plan(c, torch.device("cpu")))
    batch = next(built.batcher.train_batches(c.settings.batch_size, 1, 0, torch.device("cpu")))
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()
    built.model.train()
    measured = _saved_bytes(built.model, batch, contextlib.nullcontext)
    p = predict(c, "cpu", padded=True)
    tokens = c.settings.batch_size * p["positions"]
    ids_and_labels = 2 * INT64_BYTES * tokens
    assert p["detail"]["saved_bytes"] + 4 * VOCAB * tokens + ids_and_labels == pytest.approx(measured, rel=0.01)
    assert p["detail"]["saved_bytes"] > predict(c, "cpu")["detail"]["saved_bytes"]


def test_recipe_axes_move_the_prediction_the_way_they_move_memory() -> None:
    def acts(**settings: Any) -> dict[str, int]:
        return predict(cell("lora", options={"r": 4}, batch_size=4, seq_len=64, **settings), "cpu")["detail"]

    plain, every2, every1 = acts(), acts(gradient_checkpointing=2), acts(gradient_checkpointing=True)
    assert every1["saved_bytes"] < every2["saved_bytes"] < plain["saved_bytes"]
    chunked = acts(loss="chunked", loss_chunks=4)
    assert chunked["loss_bytes"] == plain["loss_bytes"] // 4 and chunked["saved_bytes"] == plain["saved_bytes"]
    assert acts(activation_offload=True)["saved_bytes"] == plain["saved_bytes"]  # on the CPU, nothing moves
