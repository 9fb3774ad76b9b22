"""One live run per run directory: an flock'ed `.lock` file holding the runner's pid.

The kernel drops an flock when its holder dies, even by SIGKILL, so a lock file left by a killed
run is stale by construction: the next run takes it over and says so.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from bench.errors import BenchError

LOCK = ".lock"


class RunDirLocked(BenchError):
    pass


class RunLock:
    def __init__(self, run_dir: Path, name: str = LOCK) -> None:
        self.path = Path(run_dir) / name
        self._fh: IO[str] | None = None
        self.took_over: dict[str, Any] | None = None  # the stale holder, when there was one

    def acquire(self) -> "RunLock":
        fh = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fh)
            fh.close()
            raise RunDirLocked(
                f"{self.path.parent} is in use by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it, or use another --out"
            ) from None
        previous = _read(fh)
        if previous.get("pid"):
            self.took_over = previous
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()  # an empty lock file: a clean exit, not a stale one
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fh: IO[str]) -> dict[str, Any]:
    fh.seek(0)
    try:
        data = json.loads(fh.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
