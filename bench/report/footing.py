"""Whether the accuracies that stand side by side were scored on the same footing: within a task,
every shown group's test accuracy on as many examples of the fixed test order (and its validation
accuracy on as many validation examples), and each in-context-learning row with all the shots it
asked for. Where not, one sentence a task says who differs, for the summary and the charts."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from bench.report.cells import name_of
from bench.report.groups import Group
from bench.results.record import Record


def _counts(groups: Sequence[Group], field: str) -> dict[str, dict[str, set[int]]]:
    """task -> group label -> the numbers of examples its ok cells scored (`field` of quality)."""
    out: dict[str, dict[str, set[int]]] = defaultdict(dict)
    for g in groups:
        for rec in g.records:
            n = getattr(rec.quality, field, None)
            if rec.status == "ok" and n:
                out[name_of(rec.task)].setdefault(g.label, set()).add(int(n))
    return out


def _said(counts: set[int]) -> str:
    return " and ".join(str(n) for n in sorted(counts))


def _differ(task: str, by_group: dict[str, set[int]], what: str) -> str | None:
    """'On TASK, ...' where the groups' counts are not all one number; None where they are."""
    if len({n for c in by_group.values() for n in c}) < 2:
        return None
    usual: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for label, c in by_group.items():
        usual[tuple(sorted(c))].append(label)
    most = max(usual, key=lambda k: len(usual[k]))
    odd = "; ".join(f"{', '.join(labels)} on {_said(set(k))}" for k, labels in usual.items() if k != most)
    return (f"On {task}, {what} is not scored on the same number of examples by every row: {odd}, the other "
            f"rows on {_said(set(most))} (the first ones of the same fixed order); read the rows side by side "
            "with that in mind.")


def notes(groups: Sequence[Group]) -> list[str]:
    """One sentence for each task whose shown groups were scored on different numbers of test (or
    validation) examples, and one for each in-context-learning group that fit fewer shots than asked."""
    out = []
    for field, what in (("eval_examples", "test accuracy"), ("validation_examples", "validation accuracy")):
        for task, by_group in sorted(_counts(groups, field).items()):
            line = _differ(task, by_group, what)
            if line:
                out.append(line)
    for g in groups:
        short = sorted({(int(r.quality.shots_used), _asked(r)) for r in g.records
                        if r.status == "ok" and r.quality.shots_used is not None and r.quality.shots_used < _asked(r)})
        if short:
            used = ", ".join(f"{u} of {asked}" for u, asked in short)
            out.append(f"{g.label} fit {used} demonstrations in its seq_len (whole demonstrations only; "
                       "quality.shots_used).")
    return out


def _asked(rec: Record) -> int:
    return int((rec.method_config or {}).get("shots") or 0)
