"""Batches (bench/catalog/batches.py): causal rows train on the label word only, encoder rows are
truncated, fixed shapes, a seeded order; demonstrations go in whole, and every row cut to seq_len
is counted, training's and evaluation's apart."""
from __future__ import annotations

import pytest
import torch

from bench.catalog import tasks
from bench.catalog.batches import IGNORE, Batcher
from bench.catalog.tokenizer import ByteTokenizer
from bench.errors import UnsupportedError
from bench.spec import TaskSpec

CPU = torch.device("cpu")


def _task() -> tasks.Task:
    return tasks.load_task(TaskSpec("synthetic", {}))


def test_causal_rows_train_on_the_label_word_only() -> None:
    task = _task()
    b = Batcher(task, ByteTokenizer(), "causal", 48)
    enc = b.encode(task.train[0])
    answer = ByteTokenizer().encode(" " + task.label_words[task.train[0].label], False)
    assert enc.labels[-len(answer):] == answer
    assert set(enc.labels[:-len(answer)]) == {IGNORE}
    assert len(enc.input_ids) <= 48
    batch = b.collate([enc], CPU)
    assert batch["input_ids"].shape == (1, 48)
    # any label can be scored after the same prompt (evaluation scores each)
    other = b.encode(task.train[0], 1 - task.train[0].label)
    prompt = enc.labels.count(IGNORE)
    assert other.input_ids[:prompt] == enc.input_ids[:prompt] and other.labels[prompt:] != enc.labels[prompt:]


def test_encoder_rows_are_truncated_to_seq_len() -> None:
    task = _task()
    b = Batcher(task, ByteTokenizer(), "encoder", 16)
    batch = b.collate([b.encode(e) for e in task.train[:3]], CPU)
    assert batch["input_ids"].shape == (3, 16) and batch["labels"].tolist() == [e.label for e in task.train[:3]]


def test_encoder_rows_of_long_texts_fill_seq_len() -> None:
    task = _task()  # synthetic sentences are long enough to fill any seq_len
    b = Batcher(task, ByteTokenizer(), "encoder", 16)
    batch = b.collate([b.encode(e) for e in task.train[:3]], CPU)
    assert batch["attention_mask"].all()


def _short(texts: list[str], validation: list[str] | None = None) -> tasks.Task:
    """A classification task of the given texts (train, validation and test alike), labels alternating."""
    rows = [tasks.Example(t, i % 2) for i, t in enumerate(texts)]
    valid = [tasks.Example(t, i % 2) for i, t in enumerate(validation or [])]
    return tasks.make_task("short", (rows, valid, list(rows)), False, "test", "classify")


# byte tokens: a demonstration is "Review: TEXT\nSentiment: WORD\n\n" (30 bytes and its text), a
# query the start token, "Review: TEXT\nSentiment:" and the longest label word (29 and its text)
DEMO, QUERY = 30, 29


def test_demonstrations_go_in_whole_as_many_as_fit_beside_the_longest_query() -> None:
    task = _short(["a" * 10, "b" * 20])  # the longest query: 29 + 20 tokens
    demos = [tasks.Example("x" * 10, 0), tasks.Example("y" * 10, 1), tasks.Example("z" * 10, 0)]
    b = Batcher(task, ByteTokenizer(), "causal", QUERY + 20 + 2 * (DEMO + 10) + DEMO, demos)  # two, not three
    assert b.shots_asked == 3 and b.demos == demos[:2]
    for ex in task.test:
        enc = b.encode(ex)
        text = bytes(i - 3 for i in enc.input_ids[1:]).decode()
        assert text.count("Sentiment:") == 3 and not enc.cut  # two demonstrations and the query
        assert "Review: xxxxxxxxxx\nSentiment: negative\n\nReview: yyyyyyyyyy\nSentiment: positive\n\n" in text
        assert f"Review: {ex.text}\nSentiment: {task.label_words[ex.label]}" in text and "z" not in text
        assert len(enc.input_ids) <= b.seq_len
    answer = ByteTokenizer().encode(" " + task.label_words[task.test[0].label], False)
    enc = b.encode(task.test[0])
    assert enc.labels[-len(answer):] == answer and set(enc.labels[:-len(answer)]) == {IGNORE}


def test_demonstrations_fit_beside_the_validation_queries_too() -> None:
    demos = [tasks.Example("x" * 10, 0)]
    fits = Batcher(_short(["a" * 10]), ByteTokenizer(), "causal", QUERY + 10 + DEMO + 10, demos)
    longer = Batcher(_short(["a" * 10], validation=["b" * 11]), ByteTokenizer(), "causal", QUERY + 10 + DEMO + 10,
                     demos)
    assert fits.demos == demos and longer.demos == []


def test_a_query_too_long_even_alone_is_cut_after_no_demonstration() -> None:
    task = _short(["a" * 10, "b" * 200])
    demos = [tasks.Example("x" * 10, 0)]
    b = Batcher(task, ByteTokenizer(), "causal", 100, demos)
    assert b.demos == demos  # the short query fits beside it: the long one does not count
    short, long = (b.encode(ex) for ex in task.test)
    assert not short.cut and ByteTokenizer().decode(short.input_ids).count("xxxxxxxxxx") == 1
    assert long.cut and "x" not in ByteTokenizer().decode(long.input_ids) and len(long.input_ids) == 100
    assert b.rows_cut()["eval_rows_cut"] == 1


def test_demonstrations_longer_than_seq_len_are_left_out_whole() -> None:
    task = _task()  # synthetic sentences fill any seq_len: no query fits whole, no demonstration goes in
    b = Batcher(task, ByteTokenizer(), "causal", 192, task.train[:4])
    assert b.shots_asked == 4 and b.demos == []
    enc = b.encode(task.test[0])
    assert enc.cut and len(enc.input_ids) == 192
    assert bytes(i - 3 for i in enc.input_ids[1:]).decode().count("Sentiment:") == 1


def test_train_batches_are_seeded() -> None:
    b = Batcher(_task(), ByteTokenizer(), "encoder", 16)
    one = [x["input_ids"] for x in b.train_batches(4, 3, 7, CPU)]
    two = [x["input_ids"] for x in b.train_batches(4, 3, 7, CPU)]
    other = [x["input_ids"] for x in b.train_batches(4, 3, 8, CPU)]
    assert len(one) == 3 and all(x.shape == (4, 16) for x in one)
    assert all(torch.equal(a, c) for a, c in zip(one, two))
    assert not all(torch.equal(a, c) for a, c in zip(one, other))


def test_train_batches_cycle_through_a_small_split() -> None:
    task = tasks.load_task(TaskSpec("synthetic", {"train_size": 3, "test_size": 1, "validation_size": 1}))
    b = Batcher(task, ByteTokenizer(), "encoder", 8)
    batches = list(b.train_batches(2, 4, 0, CPU))  # 8 rows from 3 examples
    assert len(batches) == 4 and all(x["input_ids"].shape == (2, 8) for x in batches)


def test_too_short_a_row_for_the_template_alone_is_unsupported() -> None:
    task = _task()  # "Review: {text}\nSentiment:" is 19 bytes before any text
    with pytest.raises(UnsupportedError, match="seq_len = 16 leaves no room for the query: .*19-token template"):
        Batcher(task, ByteTokenizer(), "causal", 16).encode(task.test[0])
    with pytest.raises(UnsupportedError, match="seq_len = 16 leaves no room for the query"):  # demonstrations go first
        Batcher(task, ByteTokenizer(), "causal", 16, task.train[:4]).encode(task.test[0])
    assert len(Batcher(task, ByteTokenizer(), "causal", 32).encode(task.test[0]).input_ids) <= 32


# Rows cut to seq_len, counted exactly. Byte tokens: a causal row is the start token, "Review: ",
# the text, "\nSentiment:" and the label word (29 bytes and its text); an encoder row the start
# token and the text. The counts below come from the texts' lengths, not from the Batcher.
CAUSAL_FIXED, ENCODER_FIXED = 29, 1
VARIED = {"words": 12, "min_words": 1, "train_size": 8, "validation_size": 6, "test_size": 10}


def _cut(examples: list[tasks.Example], room: int) -> int:
    return sum(len(e.text.encode()) > room for e in examples)


@pytest.mark.parametrize("kind, fixed", [("causal", CAUSAL_FIXED), ("encoder", ENCODER_FIXED)])
def test_rows_cut_are_counted_for_training_and_evaluation_apart(kind: str, fixed: int) -> None:
    task = tasks.load_task(TaskSpec("synthetic", VARIED))
    b = Batcher(task, ByteTokenizer(), kind, 48)
    expect_train = _cut(task.train, 48 - fixed)
    assert 0 < expect_train < len(task.train)  # some rows fit, some do not
    list(b.train_batches(4, 4, 0, CPU))  # two epochs of the 8 training examples
    for ex in task.test[:7] + task.test[:7] + task.validation[:5]:  # scored twice: counted once
        for label in (0, 1):
            b.encode(ex, label)
    assert b.rows_cut() == {
        "train_rows": 16, "train_rows_cut": 2 * expect_train,
        "eval_rows": 7, "eval_rows_cut": _cut(task.test[:7], 48 - fixed),
        "validation_rows": 5, "validation_rows_cut": _cut(task.validation[:5], 48 - fixed),
        "note": b.rows_cut()["note"]}
    assert all(len(b.encode(ex).input_ids) <= 48 for ex in task.test)


def test_a_generative_row_is_cut_in_its_target_and_counted() -> None:
    arith = tasks.load_task(TaskSpec("arith", {}))
    rows = arith.train[:8]
    task = tasks.make_generative_task("g", (rows, [], rows[:3]), "test", "solve", arith.prompt)
    prompts = [1 + len(arith.prompt.replace("{text}", e.text).encode()) for e in rows]
    whole = [p + len((" " + e.target).encode()) + 1 for p, e in zip(prompts, rows)]  # the target and EOS
    seq_len = sorted(whole)[4]  # the longest 3 rows do not fit (lengths may tie: counted from them)
    b = Batcher(task, ByteTokenizer(), "causal", seq_len)
    list(b.train_batches(4, 2, 0, CPU))
    expect = sum(w > seq_len for w in whole)
    assert 0 < expect < 8 and max(prompts) < seq_len
    assert b.rows_cut()["train_rows"] == 8 and b.rows_cut()["train_rows_cut"] == expect
    for ex in task.test:
        b.prompt(ex)  # generation starts from the prompt: never cut
    assert b.rows_cut()["eval_rows"] == 3 and b.rows_cut()["eval_rows_cut"] == 0
    assert "its target" in b.rows_cut()["note"]


@pytest.mark.parametrize("model, fixed", [("tiny-llama", CAUSAL_FIXED), ("tiny-bert", ENCODER_FIXED)])
def test_the_record_counts_the_rows_each_cell_cut(model: str, fixed: int) -> None:
    import dataclasses

    from bench.exec.worker import run_cell
    from tests.helpers import cell

    c = cell("lora", model, {"r": 2}, seq_len=48, batch_size=4, steps=1, warmup_steps=1, eval_examples=10,
             target_accuracy=0.99, target_every=1, target_examples=6)
    rec = run_cell(dataclasses.replace(c, task=TaskSpec("synthetic", VARIED)))
    assert rec.status == "ok", rec.error
    task = tasks.load_task(TaskSpec("synthetic", VARIED))
    room = 48 - fixed
    assert rec.rows.train_rows == 8 and rec.rows.train_rows_cut == _cut(task.train, room)  # one epoch
    assert rec.rows.eval_rows == 10 and rec.rows.eval_rows_cut == _cut(task.test, room) > 0
    assert rec.rows.validation_rows == 6 and rec.rows.validation_rows_cut == _cut(task.validation, room)
    assert "seq_len = 48" in rec.rows.note and rec.quality.shots_used is None
