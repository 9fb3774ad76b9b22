"""Forgetting: general-text loss before and after training from a local file; null with a note
when there is no text. The run's text is chosen once (`choose_text`); a cell that cannot read the
text its run chose fails rather than score another."""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.errors import BenchError
from bench.exec.worker import run_cell
from bench.results.record import Quality
from bench.scenarios import forgetting
from tests.helpers import built, cell

TEXT = ("The history of the region begins with small farming villages along the river. Over the "
        "centuries the villages grew into towns, and the towns traded grain, wool and timber. ") * 10


@pytest.fixture(autouse=True)
def _fresh_text() -> Any:
    yield
    forgetting.load_text.cache_clear()  # each test chooses its own text


@pytest.fixture
def text_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "general.txt"
    path.write_text(TEXT, encoding="utf-8")
    monkeypatch.setenv(forgetting.TEXT_ENV, str(path))
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(forgetting.TEXT_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_chunks_are_whole_rows_within_the_token_budget() -> None:
    ids = list(range(1000))
    rows = forgetting.chunks(ids, 64, max_tokens=300)
    assert len(rows) == 4 and all(len(r) == 64 for r in rows)
    assert forgetting.chunks(ids[:10], 64) == [ids[:10]]  # a short text: one shorter row
    assert forgetting.chunks([1], 64) == []


def test_general_loss_on_a_tiny_model(text_file: Path) -> None:
    b = built("lora", options={"r": 4})
    b.model.train()
    loss, tokens = forgetting.general_loss(b.model, b.batcher.tok, TEXT, 32, 4, torch.device("cpu"),
                                           contextlib.nullcontext, max_tokens=256)
    assert tokens == 8 * 31 and math.isfinite(loss) and loss > 0
    assert b.model.training  # the model is put back in training mode


def test_the_record_has_before_after_and_the_difference(text_file: Path) -> None:
    rec = run_cell(cell("lora", options={"r": 4}, steps=3, warmup_steps=1, eval_examples=4, lr=1e-2))
    q = rec.quality
    assert rec.status == "ok", rec.error
    assert q.general_text == f"file:{text_file}" and q.general_tokens > 0
    assert q.forgetting == pytest.approx(q.general_loss_after - q.general_loss_before)
    assert q.general_loss_before != q.general_loss_after
    assert "random weights" in q.forgetting_note


def test_offline_the_shipped_text_gives_the_figure(offline: None) -> None:
    rec = run_cell(cell("lora", options={"r": 4}, steps=1, warmup_steps=0, eval_examples=4, general_tokens=512))
    q = rec.quality
    assert rec.status == "ok", rec.error
    assert q.general_text.startswith("packaged:data/general/sherlock-holmes-i-ii.txt.gz")
    assert q.forgetting == pytest.approx(q.general_loss_after - q.general_loss_before)
    assert 0 < q.general_tokens <= 512  # general_tokens bounds what is scored


def test_the_shipped_text_is_checked_and_a_damaged_copy_is_a_note(offline: None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    text, source = forgetting.shipped_text()
    assert text.startswith("ADVENTURE I. A SCANDAL IN BOHEMIA") and len(text) == 95874 and "packaged:" in source
    monkeypatch.setattr(forgetting, "SHIPPED_SHA256", "0" * 64)
    forgetting.load_text.cache_clear()
    rec = run_cell(cell("lora", options={"r": 4}, steps=1, warmup_steps=0, eval_examples=4))
    q = rec.quality
    assert rec.status == "ok", rec.error
    assert q.general_loss_before is None and q.general_loss_after is None and q.forgetting is None
    assert "does not match its checksum" in q.forgetting_note


def test_an_unreadable_file_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(forgetting.TEXT_ENV, str(tmp_path / "missing.txt"))
    q = Quality()
    f = forgetting.Forgetting(q, "causal", True, False, cell("lora").settings)
    assert f.text is None and "missing.txt" in q.forgetting_note and "unreadable" in q.forgetting_note
    f.measure("before", None, None, cell("lora").settings, None, contextlib.nullcontext)  # nothing to measure
    assert q.general_loss_before is None and q.general_text is None


@pytest.mark.parametrize("kind, trains, settings, note", [
    ("encoder", True, {}, "general-text loss is for causal LMs only"),
    ("causal", False, {}, "the method trains nothing: nothing to forget"),
    ("causal", True, {"eval_examples": 0}, "evaluation off (eval_examples = 0)"),
])
def test_encoders_methods_that_do_not_train_and_no_evaluation_are_skipped(
        text_file: Path, kind: str, trains: bool, settings: dict[str, Any], note: str) -> None:
    q = Quality()
    f = forgetting.Forgetting(q, kind, trains, False, cell("lora", **settings).settings)
    assert q.forgetting_note == note and f.text is None and q.general_text is None


def test_a_failing_measurement_is_a_note(text_file: Path) -> None:
    q = Quality()
    f = forgetting.Forgetting(q, "causal", True, False, cell("lora").settings)
    assert f.text == TEXT and q.forgetting_note is None  # pretrained weights: no caveat
    q.general_loss_before = 1.0

    class Broken(torch.nn.Module):
        def forward(self, **kwargs: Any) -> Any:
            raise RuntimeError("no room")

    f.measure("after", Broken(), built("lora").batcher.tok, cell("lora").settings, torch.device("cpu"),
              contextlib.nullcontext)
    assert q.forgetting_note == "general-text loss failed after training (RuntimeError: no room)"
    assert (q.general_loss_before, q.general_loss_after, q.forgetting) == (None, None, None)


# ---- the run's choice: made once by the runner, used by every cell -------------------------------

def test_the_run_chooses_the_file_given_and_cells_read_that_very_text(text_file: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    choice = forgetting.choose_text(tmp_path)
    assert choice == forgetting.TextChoice(f"file:{text_file}", forgetting._sha256(TEXT), str(text_file), None)
    monkeypatch.setenv(forgetting.CHOICE_ENV, json.dumps(choice.to_json()))
    monkeypatch.setenv(forgetting.TEXT_ENV, str(tmp_path / "another.txt"))  # a cell's own setting is not asked
    q = Quality()
    assert forgetting.Forgetting(q, "causal", True, False, cell("lora").settings).text == TEXT
    assert q.general_text == f"file:{text_file}"
    text_file.write_text(TEXT + "more", encoding="utf-8")  # changed after the run chose it
    with pytest.raises(BenchError, match="changed since the run chose it"):
        forgetting.Forgetting(Quality(), "causal", True, False, cell("lora").settings)


def test_offline_the_run_falls_back_to_the_shipped_text_and_says_why(offline: None, tmp_path: Path) -> None:
    choice = forgetting.choose_text(tmp_path)
    assert choice.source.startswith("packaged:") and choice.path is None
    assert choice.fallback_reason == "wikitext-2 not used: the hub is off (HF_HUB_OFFLINE)"
    assert forgetting.load_chosen(choice) == forgetting.shipped_text()


def test_a_hub_text_is_copied_once_and_a_cell_never_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(forgetting.TEXT_ENV, raising=False)
    monkeypatch.setattr(forgetting, "_wikitext", lambda: (TEXT, "hub:wikitext/wikitext-2-raw-v1/test"))
    choice = forgetting.choose_text(tmp_path)
    assert (choice.source, choice.path, choice.fallback_reason) == (
        "hub:wikitext/wikitext-2-raw-v1/test", str(tmp_path / forgetting.HUB_COPY), None)
    monkeypatch.setattr(forgetting, "_wikitext", lambda: (None, "huggingface.co is unreachable"))  # the cells' hub
    assert forgetting.load_chosen(choice) == (TEXT, choice.source)  # read from the run's copy, not the hub
    (tmp_path / forgetting.HUB_COPY).unlink()
    with pytest.raises(BenchError, match="hub:wikitext.*cannot be used in this cell.*unreadable"):
        forgetting.load_chosen(choice)  # not the shipped text in its place


def test_a_run_without_text_tells_every_cell_why(monkeypatch: pytest.MonkeyPatch) -> None:
    choice = forgetting.TextChoice(None, fallback_reason="wikitext-2 not used: x; no general text: y")
    monkeypatch.setenv(forgetting.CHOICE_ENV, json.dumps(choice.to_json()))
    q = Quality()
    assert forgetting.Forgetting(q, "causal", True, False, cell("lora").settings).text is None
    assert q.forgetting_note == choice.fallback_reason and q.general_text is None


def test_an_unreadable_file_given_to_a_run_stops_it_before_any_cell(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(forgetting.TEXT_ENV, str(tmp_path / "missing.txt"))
    with pytest.raises(BenchError, match="BENCH_GENERAL_TEXT=.*missing.txt.*unreadable"):
        forgetting.choose_text(tmp_path)
