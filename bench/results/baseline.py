"""A run folder as the regression gate reads it (`load_run`: every line must parse, the latest record
of each cell) and keeps it as a baseline (`save_baseline`). Torch-free."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.errors import ConfigError, ResultsFileError
from bench.results import store
from bench.results.record import Record


def load_run(run_dir: Path, side: str) -> dict[str, Record]:
    """The latest record of each cell of a run folder, read strictly; `side` names the folder in errors."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsFileError(f"{run_dir}: {side} run folder does not exist")
    records = store.read_records(run_dir, strict=True)  # a torn line here is an error: CI must not guess
    if not records:
        raise ResultsFileError(f"{run_dir / store.RESULTS}: no result records")
    store.read_env(run_dir)  # fail on a garbled env.json here rather than later
    return store.latest_by_cell(records)


def save_baseline(run_dir: Path, name: str, root: Path = Path("reports/baselines")) -> Path:
    """Copy RUN_DIR/results.jsonl and env.json into ROOT/NAME/ (replacing an older baseline of that
    name) and return that folder. The results must read cleanly: a baseline is not a partial run."""
    if not name or name in (".", "..") or any(ch in name for ch in "/\\") or name.strip() != name:
        raise ConfigError(f"baseline name {name!r} must be a plain folder name (no '/', '\\' or surrounding spaces)")
    load_run(run_dir, "run")
    dest = Path(root) / name
    dest.mkdir(parents=True, exist_ok=True)
    for fname in (store.RESULTS, store.ENV):
        src, target = Path(run_dir) / fname, dest / fname
        if not src.exists():
            target.unlink(missing_ok=True)  # an env.json from an older baseline would describe another run
            continue
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)  # readers never see half a baseline file
    return dest
