"""Numbers read from result records, coerced once for every reader (report, compare). Torch-free.

Records hold raw units (bytes, seconds, fractions) and may lack any optional field: a reader turns
a field into a finite float or NaN here, never an error, and converts units only for display.
"""
from __future__ import annotations

import math
from typing import Any

GIB = 2**30  # the one meaning of "GiB" in reports and comparisons
MIB = 2**20


def num(value: Any) -> float:
    """A finite float, or NaN for None, strings, bools and non-finite values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def samples(value: Any) -> list[float]:
    """The finite numbers of a list field (e.g. `time.step_s`); [] when absent."""
    if not isinstance(value, list):
        return []
    return [x for x in (num(v) for v in value) if not math.isnan(x)]
