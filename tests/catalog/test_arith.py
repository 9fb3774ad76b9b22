"""`arith`: generated word problems whose worked solutions add up, fixed splits, no worked solution in
two splits; and GSM8K's and MetaMathQA's rows turned into prompt / target / answer (the hub is not needed for that)."""
from __future__ import annotations

import re

import pytest

from bench.catalog.gsm8k import gsm8k_example, metamath_example
from bench.catalog.tasks import load_task
from bench.errors import ConfigError, UnsupportedError
from bench.spec import TaskSpec


def _arith(**options):
    return load_task(TaskSpec("arith", options))


def test_every_worked_solution_is_right_and_ends_in_the_answer() -> None:
    task = _arith(steps=3)
    assert task.generative and task.label_words == []
    for ex in task.train[:300] + task.test:
        lines = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", ex.target)
        assert len(lines) == 3, ex.target
        for a, op, b, c in lines:
            assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c) >= 0
        assert lines[0][0] in ex.text and ex.target.endswith(f"The answer is {ex.answer}.")
        assert ex.answer == lines[-1][3]
        for (_, _, _, c), (a, _, _, _) in zip(lines, lines[1:]):
            assert c == a  # each step starts from the last one's result


def test_the_splits_are_fixed_disjoint_and_the_test_split_does_not_depend_on_train_size() -> None:
    a, b = _arith(), _arith(train_size=500)
    assert a.test == b.test and a.validation == b.validation and a.train[:500] == b.train
    assert a.data["split_sha256"] == _arith().data["split_sha256"] != b.data["split_sha256"]
    texts = [{e.text for e in split} for split in (a.train, a.validation, a.test)]
    assert sum(map(len, texts)) == len(a.train) + len(a.validation) + len(a.test)  # distinct within
    assert _arith(seed=1).test != a.test


def _shared_solutions(task) -> int:
    """Examples whose worked solution (the training target) another split also holds."""
    splits = (task.train, task.validation, task.test)
    targets = [{e.target for e in split} for split in splits]
    return sum(e.target in targets[j] for i, split in enumerate(splits) for e in split for j in range(3) if j != i)


def _cpu_gen_arith_options() -> list[dict]:
    from bench.config import load_matrix

    return [dict(c.task.options) for c in load_matrix("cpu-gen").cells if c.task.name == "arith"]


@pytest.mark.parametrize("options", [{}, {"steps": 1}, {"steps": 3}, {"max_number": 5}, "cpu-gen"])
def test_no_worked_solution_is_in_two_splits(options) -> None:
    # the same worked solution under another name or item is the same problem: with the defaults,
    # 48 of the 200 test problems had a training problem's solution when only the texts were compared
    for opts in _cpu_gen_arith_options() if options == "cpu-gen" else [options]:
        assert _shared_solutions(_arith(**opts)) == 0, opts


def test_difficulty_is_the_number_of_steps_and_bad_options_are_named() -> None:
    assert _arith(steps=1).test[0].target.count("=") == 1
    with pytest.raises(ConfigError, match="steps"):
        _arith(steps=0)
    with pytest.raises(ConfigError, match="max_number"):
        _arith(max_number=1)


def test_gsm8k_rows_keep_the_reasoning_without_calculator_notes_and_the_final_number() -> None:
    ex = gsm8k_example("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                       "clips in May. How many clips did Natalia sell altogether?",
                       "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
                       "clips altogether in April and May.\n#### 1,072")
    assert ex.answer == "1072" and "<<" not in ex.target and ex.target.endswith("The answer is 1072.")
    assert metamath_example("q", "So x = 5.\nThe answer is: 5").answer == "5"
    assert metamath_example("q", "The answer is: \\frac{1}{2}") is None  # not a number: skipped


def test_gsm8k_offline_is_unsupported_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnsupportedError, match="arith"):
        load_task(TaskSpec("gsm8k", {"revision": "offline-test"}))
