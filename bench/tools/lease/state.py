"""What the check has done over its calls, kept in the work folder and in the bundle's env.json, so a
call on a fresh machine resumes from a bundle brought back from the last one. Torch-free."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.results import store

STATE = "check-state.json"  # in the work folder
ENV_KEY = "check_stages"  # the state's key in the bundle's env.json
LOGS = "logs"  # the cells' logs, in the work folder (the runner's)
SELFCHECK = "selfcheck"  # the overhead check's runs, in the work folder
PYTEST_LOG = "pytest.log"
ARCHIVE = "logs.tar.gz"


@dataclass
class State:
    rehearse: bool
    calls: list[dict[str, Any]] = field(default_factory=list)
    selfcheck: dict[str, Any] | None = None  # the overhead check's result
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> outcome, duration_s
    refresh_s: list[float] = field(default_factory=list)  # how long rewriting the bundle took

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "State":
        return cls(bool(d.get("rehearse")), list(d.get("calls") or []), d.get("selfcheck"), dict(d.get("tests") or {}),
                   list(d.get("refresh_s") or []))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def call(self) -> dict[str, Any]:
        return self.calls[-1]

    def stage(self, name: str) -> dict[str, Any]:
        """This call's entry for a stage."""
        return self.call["stages"].setdefault(name, {"wall_s": 0.0, "ran": 0, "skipped_done": 0, "stopped": None})

    def save(self, work: Path) -> None:
        _write(work / STATE, json.dumps(self.to_json(), indent=2, default=str) + "\n")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _lines(path: Path) -> int:
    return sum(1 for ln in path.read_bytes().split(b"\n") if ln.strip()) if path.exists() else 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError:
        return {}


def resume(work: Path, out: Path, rehearse: bool) -> State:
    """The state to go on from. Where the bundle in `out` is ahead of the work folder (a fresh machine,
    handed the bundle of the last call), the work folder is rebuilt from it first: its records, its
    env.json, its pytest log and the cells' logs from its archive."""
    work.mkdir(parents=True, exist_ok=True)
    here = _read_json(work / STATE)
    bundle_env = _read_json(out / store.ENV)
    there = bundle_env.get(ENV_KEY) or {}
    ahead = (_lines(out / store.RESULTS), len(there.get("calls") or [])) > (
        _lines(work / store.RESULTS), len(here.get("calls") or []))
    if ahead and there:
        if (out / store.RESULTS).exists():
            shutil.copyfile(out / store.RESULTS, work / store.RESULTS)
        store.write_env(work, {k: v for k, v in bundle_env.items() if k != ENV_KEY})
        if (out / PYTEST_LOG).exists():
            shutil.copyfile(out / PYTEST_LOG, work / PYTEST_LOG)
        if (out / ARCHIVE).exists():
            unpack_logs(out / ARCHIVE, work)
        here = there
    state = State.from_json(here) if here else State(rehearse)
    if state.rehearse != rehearse:
        kind = "a rehearsal" if state.rehearse else "a GPU run"
        raise BenchError(f"{work} (or the bundle in {out}) holds {kind}'s check; use other folders, or --fresh "
                         "to start over")
    return state


def unpack_logs(archive: Path, work: Path) -> None:
    """The cells' logs of an earlier call back into the work folder."""
    unpack_logs_from(archive.read_bytes(), work)


def unpack_logs_from(data: bytes, work: Path) -> None:
    """The logs of an archive made by `pack_logs` into `work` (members that are relative paths under
    logs/ and selfcheck/ only: nothing else is unpacked)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or ".." in parts or parts[0] not in (LOGS, SELFCHECK):
                continue
            target = work / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member)
            if data is not None:
                target.write_bytes(data.read())


def pack_logs(work: Path, limit_bytes: int, per_log_bytes: int = 2 * 2**20) -> tuple[bytes, list[str]]:
    """The cells' logs as one .tar.gz of at most `limit_bytes`: the newest first, each log's last
    `per_log_bytes`; the names of those left out."""
    logs = sorted((p for d in (LOGS, SELFCHECK) for p in (work / d).rglob("*.log") if p.is_file()),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    budget = limit_bytes
    while True:
        left: list[str] = []
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for path in logs:
                data = path.read_bytes()[-per_log_bytes:]
                if buf.tell() + len(data) > budget:  # uncompressed: what is added stays under the budget
                    left.append(str(path.relative_to(work)))
                    continue
                info = tarfile.TarInfo(str(path.relative_to(work)))
                info.size, info.mtime = len(data), int(path.stat().st_mtime)
                tar.addfile(info, io.BytesIO(data))
        if len(buf.getvalue()) <= limit_bytes:
            return buf.getvalue(), left
        budget //= 2  # gzip's buffer held more than tell() showed: try again with less


def clear(work: Path) -> None:
    """--fresh: the work folder goes."""
    if work.exists():
        shutil.rmtree(work)

