"""The results store: `results.jsonl` (one record per line, appended) and `env.json`.

Appends are flushed and fsynced per record, under an exclusive file lock so concurrent writers
never interleave. A torn last line (a writer killed mid-append) is tolerated when reading; a bad
line anywhere else is an error naming the file and line. Torch-free.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from bench.errors import ResultsFileError

RESULTS = "results.jsonl"
ENV = "env.json"


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=False, allow_nan=False, default=str) + "\n"
    path = Path(run_dir) / RESULTS
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


def iter_records(path: Path, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Records of a results file. A torn line is skipped where it is the last; elsewhere (or with
    `strict`) any unparsable line raises ResultsFileError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot read results: {exc.strerror}") from None
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict) or "cell_id" not in rec or "status" not in rec:
                raise ValueError("not a result record (needs 'cell_id' and 'status')")
        except (ValueError, UnicodeDecodeError) as exc:
            torn = i == last and not raw.endswith(b"}") and not strict
            if torn:
                continue
            raise ResultsFileError(f"{path}:{i + 1}: unreadable result line: {exc}") from None
        yield rec


def read_records(run_dir_or_file: Path, strict: bool = False) -> list[dict[str, Any]]:
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / RESULTS
    if not path.exists():
        raise ResultsFileError(f"{path}: no results file")
    return list(iter_records(path, strict))


def latest_by_cell(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each cell, preferring an `ok` one (a rerun after success is a retry)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        prev = out.get(rec["cell_id"])
        if prev is None or rec["status"] == "ok" or prev["status"] != "ok":
            out[rec["cell_id"]] = rec
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
