"""The hand-written loop's figures (bench/data/gpu-check/handloop.toml, its source named there): what
the GPU check's stage-1 rows must reproduce on the same card. Torch-free."""
from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from bench.errors import ConfigError, did_you_mean

DATA = Path(__file__).resolve().parents[2] / "data" / "gpu-check"
MIB = 2**20


@dataclass(frozen=True)
class HandRow:
    variant: str  # the gpu matrix's method row that takes this row's settings
    label: str  # the row as the notes name it
    trainable: int
    step_ms: float  # median of the timed steps
    tokens_per_s: int
    torch_peak_mib: int  # torch's peak allocated
    nvml_process_mib: int
    nvml_device_rise_mib: int | None = None  # how much the device's used memory rose (paged state)


@dataclass(frozen=True)
class HandLoop:
    device: str  # a substring of torch's name for the card the figures were measured on
    model: str
    seen: str
    differences: tuple[str, ...]
    rows: tuple[HandRow, ...]

    def row(self, variant: str) -> HandRow | None:
        return next((r for r in self.rows if r.variant == variant), None)


@functools.lru_cache(maxsize=None)
def load(path: Path = DATA / "handloop.toml") -> HandLoop:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    names = {f.name for f in fields(HandRow)}
    rows = []
    for i, row in enumerate(doc["rows"]):
        for key in row:
            if key not in names:
                raise ConfigError(f"{path}: rows[{i}]: unknown key {key!r}{did_you_mean(key, names)}")
        rows.append(HandRow(**row))
    return HandLoop(doc["device"], doc["model"], doc["seen"], tuple(doc["differences"]), tuple(rows))
