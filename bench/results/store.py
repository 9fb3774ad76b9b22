"""The results store: `results.jsonl` (one Record per line, appended) and `env.json`.

Appends are flushed and fsynced per line, under an exclusive file lock so concurrent writers
never interleave. A torn last line (a writer killed mid-append) is tolerated when reading; a bad
line anywhere else is an error naming the file and line. `append_line` serves any JSON-lines file
of a run directory (capacity.jsonl too). Torch-free.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import ResultsFileError
from bench.results.record import Record

RESULTS = "results.jsonl"
ENV = "env.json"


def append_record(run_dir: Path, record: Record) -> None:
    append_line(Path(run_dir) / RESULTS, record.to_json())


def append_line(path: Path, obj: dict[str, Any]) -> None:
    """One JSON object as one line, appended under an exclusive lock and fsynced."""
    line = json.dumps(obj, sort_keys=False, allow_nan=False, default=str) + "\n"
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            # A torn tail left by a killed writer would glue onto this line: start on a fresh one.
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Results:
    """The records of a results file, and whether its last line was torn (and skipped)."""

    records: list[Record]
    torn_tail: bool = False


def read_results(run_dir_or_file: Path, strict: bool = False) -> Results:
    """Records of a results file (a folder means its results.jsonl). A torn line is skipped where it
    is the last; elsewhere (or with `strict`) any unparsable line raises ResultsFileError naming the
    file and line."""
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / RESULTS
    if not path.exists():
        raise ResultsFileError(f"{path}: no results file")
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot read results: {exc.strerror}") from None
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    out = Results([])
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict) or "cell_id" not in obj or "status" not in obj:
                raise ValueError("not a result record (needs 'cell_id' and 'status')")
        except (ValueError, UnicodeDecodeError) as exc:
            if i == last and not raw.endswith(b"}") and not strict:
                out.torn_tail = True
                continue
            raise ResultsFileError(f"{path}:{i + 1}: unreadable result line: {exc}") from None
        out.records.append(Record.from_json(obj))
    return out


def read_records(run_dir_or_file: Path, strict: bool = False) -> list[Record]:
    return read_results(run_dir_or_file, strict).records


def latest_by_cell(records: list[Record]) -> dict[str, Record]:
    """The last record of each cell, preferring an `ok` one (a rerun after success is a retry)."""
    out: dict[str, Record] = {}
    for rec in records:
        prev = out.get(rec.cell_id)
        if prev is None or rec.ok or not prev.ok:
            out[rec.cell_id] = rec
    return out


def write_env(run_dir: Path, env: dict[str, Any]) -> None:
    path = Path(run_dir) / ENV
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(env, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_env(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / ENV
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ResultsFileError(f"{path}: not valid JSON: {exc}") from None
