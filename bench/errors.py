"""Exceptions the harness raises on purpose; each carries a message meant for the user."""
from __future__ import annotations

import difflib
from typing import Any, Iterable


class BenchError(Exception):
    """Base class: anything the CLI reports as a clean message with exit code 2."""


class ConfigError(BenchError):
    """A matrix, option or command-line value is invalid. Raised before any model loads."""


class UnsupportedError(BenchError):
    """A method cannot run on this model, task or platform. The cell is recorded `unsupported`."""


class ResultsFileError(BenchError):
    """A results file cannot be read (names the file and line)."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?) valid choices: a, b, c' for an error message."""
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid choices: {', '.join(choices) or '(none)'}"


def require(cond: bool, field: str, value: Any, rule: str) -> None:
    """Raise ConfigError naming the field and value unless `cond` (for __post_init__ checks)."""
    if not cond:
        raise ConfigError(f"{field} = {value!r}: {rule}")
