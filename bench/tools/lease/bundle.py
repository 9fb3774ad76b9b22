"""The bundle: what a GPU lease brings back from `$OUT`, rewritten after every cell so that a call
killed at any moment still returns whole, current files.

At most 8 files, none over 16 MiB, 64 MiB together, no folder, names of letters, digits, '.', '_'
and '-' only (the device tool's limits). Each file is written under a temporary name in the same
folder and renamed into place, so at most one partial file exists at a time and no file is ever
half written. Torch-free.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

from bench.results import store
from bench.tools.lease import state as st

RESULTS, ENV, SUMMARY, HTML, MARKDOWN = store.RESULTS, store.ENV, "summary.md", "report.html", "report.md"
FILES = (RESULTS, ENV, SUMMARY, HTML, MARKDOWN, st.PYTEST_LOG, st.ARCHIVE)
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
MAX_TOTAL_BYTES = 64 * 2**20
MAX_DEPTH = 2  # folders below the bundle's
NAME = re.compile(r"[A-Za-z0-9._-]+")
PARTIAL = ".partial-"


def write(out: Path, name: str, data: bytes) -> None:
    """`data` as out/name, whole or not at all."""
    tmp = out / f"{PARTIAL}{name}"
    tmp.write_bytes(data)
    os.replace(tmp, out / name)


def tail(data: bytes, limit: int, what: str) -> bytes:
    """A text file's last `limit` bytes, saying so, where it is longer."""
    if len(data) <= limit:
        return data
    note = f"[{what}: the first {len(data) - limit + 200} bytes are left out to keep the file under {limit} bytes]\n"
    return note.encode() + data[-(limit - 200):]


def fitted_results(path: Path) -> bytes:
    """results.jsonl; past the file limit, the last record of each cell only (still one record a line)."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) <= MAX_FILE_BYTES:
        return data
    latest = store.latest_by_cell(store.read_records(path))
    return "".join(json.dumps(r.to_json(), default=str) + "\n" for r in latest.values()).encode()


def refresh(work: Path, out: Path, state: st.State, summary: Callable[[], str], with_report: bool = True) -> float:
    """Rewrite every file of the bundle from the work folder; returns the seconds it took (the
    report's render is the most of it)."""
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{PARTIAL}*"):  # a write a killed call left unfinished
        stale.unlink()
    write(out, RESULTS, fitted_results(work / store.RESULTS))
    env: dict[str, Any] = {**store.read_env(work), st.ENV_KEY: state.to_json()}
    write(out, ENV, (json.dumps(env, indent=2, default=str) + "\n").encode())
    if (work / st.PYTEST_LOG).exists():
        write(out, st.PYTEST_LOG, tail((work / st.PYTEST_LOG).read_bytes(), MAX_FILE_BYTES, st.PYTEST_LOG))
    archive, left_out = st.pack_logs(work, MAX_FILE_BYTES)
    write(out, st.ARCHIVE, archive)
    if with_report and (work / store.RESULTS).exists():
        _report(work, out)
    try:
        text = summary()
    except Exception as exc:  # noqa: BLE001 - a summary that fails must not cost the lease its results
        text = f"# GPU check\n\nThe summary could not be written: {type(exc).__name__}: {exc}\n"
    if left_out:
        text += f"\n{len(left_out)} cell log(s) left out of {st.ARCHIVE} to keep it under 16 MiB: {', '.join(left_out)}\n"
    write(out, SUMMARY, tail(text.encode(), MAX_FILE_BYTES, SUMMARY))
    return time.monotonic() - t0


def _report(work: Path, out: Path) -> None:
    from bench import report

    try:
        folder = report.render(work, ("md", "html"))
    except Exception as exc:  # noqa: BLE001 - a report that cannot render must not cost the lease its results
        message = f"the report could not be rendered: {type(exc).__name__}: {exc}\n"
        write(out, MARKDOWN, message.encode())
        write(out, HTML, f"<!doctype html><meta charset=utf-8><p>{message}</p>".encode())
        return
    for name in (MARKDOWN, HTML):
        data = (folder / name).read_bytes()
        if len(data) > MAX_FILE_BYTES:
            data = (f"{name} came to {len(data)} bytes, over the bundle's 16 MiB: render it from results.jsonl "
                    "with `python -m bench report DIR`\n").encode()
        write(out, name, data)


def problems(out: Path) -> list[str]:
    """What in `out` breaks the device tool's limits (empty: the bundle comes back whole)."""
    found: list[str] = []
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > MAX_FILES:
        found.append(f"{len(files)} files (at most {MAX_FILES} come back): {', '.join(sorted(p.name for p in files))}")
    total = 0
    for p in files:
        rel = p.relative_to(out)
        size = p.stat().st_size
        total += size
        if size > MAX_FILE_BYTES:
            found.append(f"{rel}: {size} bytes (at most {MAX_FILE_BYTES})")
        if len(rel.parts) - 1 > MAX_DEPTH:
            found.append(f"{rel}: more than {MAX_DEPTH} folders down")
        if not all(NAME.fullmatch(part) for part in rel.parts):
            found.append(f"{rel}: a name with characters other than letters, digits, '.', '_' and '-'")
        if p.name.startswith(PARTIAL):
            found.append(f"{rel}: a partial file left by a write that did not finish")
    if total > MAX_TOTAL_BYTES:
        found.append(f"{total} bytes in all (at most {MAX_TOTAL_BYTES})")
    return found


def clear(out: Path) -> None:
    """The bundle's own files go (a fresh start); nothing else in `out` is touched."""
    for name in FILES:
        (out / name).unlink(missing_ok=True)
    for p in out.glob(f"{PARTIAL}*"):
        p.unlink()

