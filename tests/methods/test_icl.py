"""In-context learning (methods/icl.py): demonstrations (whole, as many as fit, `shots_used`), frozen
weights, and its record (the evaluation-only scenario: the inference peak is the cell's only peak)."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bench.catalog.tasks import Example, load_task
from bench.errors import ConfigError
from bench.exec.worker import run_cell
from bench.spec import TaskSpec
from methods.icl import IclOptions, pick_demonstrations
from tests.helpers import cell

ICL = dict(seq_len=192, steps=1, warmup_steps=0, eval_examples=16, eval_batch_size=8)


def icl(model: str, shots: int = 4) -> Any:
    return cell("icl", model, {"shots": shots}, **ICL)


def test_record_on_a_causal_lm() -> None:
    rec = run_cell(icl("tiny-llama"))
    assert rec.status == "ok", rec.error
    q, t, m = rec.quality, rec.time, rec.memory
    assert 0.0 <= q.accuracy <= 1.0 and q.accuracy_before is None
    assert q.eval_examples == 16 and q.train_loss == []
    assert rec.params.trainable == 0
    assert t.step_s == [] and t.step_s_median is None and t.train_s is None
    assert t.eval_examples_per_s > 0
    assert m.peak_rss_bytes > 0
    # the inference peak is this method's only peak: the training fields hold evaluation's interval
    assert m.peak_rss_above_baseline_bytes == m.eval_peak_rss_above_baseline_bytes
    assert rec.flops.flops_per_step is None and "trains nothing" in rec.flops.mfu_note
    assert rec.quality.forgetting_note == "the method trains nothing: nothing to forget"
    assert rec.checkpoint_bytes == 0


def test_encoder_is_unsupported_with_the_reason() -> None:
    rec = run_cell(icl("tiny-bert"))
    assert rec.status == "unsupported"
    assert "causal LM" in rec.error and "tiny-bert" in rec.error


def test_without_evaluation_it_is_refused_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.catalog import models

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model loaded")

    monkeypatch.setattr(models, "load_model", no_load)
    rec = run_cell(cell("icl", "tiny-llama", {"shots": 4}, **{**ICL, "eval_examples": 0}))
    assert rec.status == "unsupported", rec.error
    assert "trains nothing" in rec.error and "eval_examples = 0" in rec.error and "eval_examples > 0" in rec.error
    assert rec.failed_phase is None and rec.params.total is None and rec.memory.peak_rss_bytes is None


def test_every_method_that_trains_nothing_needs_an_evaluation() -> None:
    from bench import build
    from bench.method import Method
    from tests.helpers import TINY

    class Looker(Method):  # decided by `trains`, not by a method's name
        name = "looker"
        trains = False

    off = dataclasses.replace(TINY, eval_examples=0)
    assert "method 'looker' trains nothing" in build.unmeasured_reason(Looker(None), off)
    assert build.unmeasured_reason(Looker(None), TINY) is None
    assert build.unmeasured_reason(Method(None), off) is None  # a method that trains measures its steps


# short sentences (6 words), so that whole demonstrations fit in a few hundred byte tokens
SHORT = TaskSpec("synthetic", {"words": 6, "train_size": 40, "validation_size": 8, "test_size": 16})


def short(shots: int, seq_len: int) -> Any:
    c = icl("tiny-llama", shots)
    return dataclasses.replace(c, task=SHORT, settings=dataclasses.replace(c.settings, seq_len=seq_len))


def _built(c: Any) -> Any:
    import torch

    from bench import build

    return build.build(build.plan(c, torch.device("cpu")))


def _lengths(shots: int) -> tuple[list[int], int]:
    """Byte tokens of each demonstration the cell picks (prompt and answer line), and of the longest
    query of the test and validation splits (start token, prompt, label word), counted here from the text."""
    task = load_task(SHORT)
    demos = pick_demonstrations(task.train, shots, 2, seed=0)
    pieces = [len(f"Review: {d.text}\nSentiment: {task.label_words[d.label]}\n\n".encode()) for d in demos]
    longest = max(1 + len(f"Review: {q.text}\nSentiment: negative".encode()) for q in task.test + task.validation)
    return pieces, longest


def test_every_parameter_is_frozen_and_prompts_carry_the_demonstrations_whole() -> None:
    b = _built(short(2, 1000))
    assert not any(p.requires_grad for p in b.model.parameters())
    assert len(b.batcher.demos) == 2 and all(d in b.plan.task.train for d in b.batcher.demos)
    assert _built(short(0, 1000)).batcher.demos == []
    task = b.plan.task
    for ex in task.test:
        text = bytes(i - 3 for i in b.batcher.encode(ex).input_ids[1:]).decode()
        assert text.count("Sentiment:") == 3  # two demonstrations, the question
        for d in b.batcher.demos:
            assert f"Review: {d.text}\nSentiment: {task.label_words[d.label]}\n\n" in text
        assert f"Review: {ex.text}\nSentiment:" in text


@pytest.mark.parametrize("fit", [0, 1, 2, 3, 4])
def test_as_many_whole_demonstrations_as_fit_and_the_record_says_how_many(fit: int) -> None:
    pieces, longest = _lengths(4)
    seq_len = longest + sum(pieces[:fit]) + (pieces[fit] - 1 if fit < 4 else 0)  # one token short of one more
    rec = run_cell(short(4, seq_len))
    assert rec.status == "ok", rec.error
    assert rec.quality.shots_used == fit and rec.rows.eval_rows == 16 and rec.rows.eval_rows_cut == 0
    assert (f"{fit} of the 4 demonstrations fit whole" in rec.rows.note) == (fit < 4)
    b = _built(short(4, seq_len))
    task = b.plan.task
    assert b.batcher.demos == pick_demonstrations(task.train, 4, 2, seed=0)[:fit]  # the first ones, in order
    whole = "".join(f"Review: {d.text}\nSentiment: {task.label_words[d.label]}\n\n" for d in b.batcher.demos)
    for ex in task.test:
        enc = b.batcher.encode(ex)
        text = bytes(i - 3 for i in enc.input_ids[1:]).decode()
        assert text.startswith(whole) and text[len(whole):].startswith(f"Review: {ex.text}\nSentiment:")
        assert text.count("Sentiment:") == fit + 1 and len(enc.input_ids) <= seq_len and not enc.cut


def test_zero_shot_records_no_shots_and_a_query_that_cannot_fit_is_refused() -> None:
    assert run_cell(short(0, 192)).quality.shots_used is None  # nothing was asked
    rec = run_cell(short(4, 24))  # the start token, the template and the label word take 29
    assert rec.status == "unsupported" and "seq_len = 24 leaves no room for the query" in rec.error


def test_demonstrations_are_seeded_and_balanced() -> None:
    train = [Example(f"text {i}", int(i % 3 == 0)) for i in range(60)]  # one positive in three
    first = pick_demonstrations(train, 6, 2, seed=0)
    assert first == pick_demonstrations(train, 6, 2, seed=0)
    assert first != pick_demonstrations(train, 6, 2, seed=1)
    assert sorted(e.label for e in first) == [0, 0, 0, 1, 1, 1]
    assert len({e.text for e in first}) == 6
    # a label that runs out leaves the rest to the others
    few = [Example("only positive", 1)] + [Example(f"neg {i}", 0) for i in range(5)]
    assert sorted(e.label for e in pick_demonstrations(few, 4, 2, seed=0)) == [0, 0, 0, 1]
    assert len(pick_demonstrations(few, 10, 2, seed=0)) == len(few)


def test_negative_shots_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="shots = -1: must be >= 0"):
        IclOptions(shots=-1)
