"""One rank of a multi-rank cell, as torchrun starts it: `python -m bench.exec.rank CELL_JSON OUT_DIR MATRIX`.

Every rank joins the process group and runs the cell as a one-rank cell runs (bench/exec/worker.py),
the harness's one loop on its slice of each global batch (bench/parallel.py), and writes its own
record to OUT_DIR/rank<R>.json. A rank whose cell did not finish exits non-zero, and torchrun then
ends the others: the launcher reports the rank that failed first. When all finish, rank 0 gathers
every rank's peaks, step times and energy and writes the cell's one record, OUT_DIR/record.json,
whose energy is the sum over the ranks' distinct devices (bench/parallel.py).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RECORD = "record.json"
WROTE_AT = "rank_wrote_at"  # a field of the rank files only


def rank_file(out_dir: str | Path, rank: int) -> Path:
    return Path(out_dir) / f"rank{rank}.json"


def main(argv: list[str]) -> int:
    from bench import parallel
    from bench.exec import worker
    from bench.spec import Cell

    cell_path, out_dir, matrix = argv
    cell = Cell.from_json(json.loads(Path(cell_path).read_text()))
    rank = int(os.environ.get("RANK", 0))
    try:
        here = parallel.init(cell.settings.timeout_s)
    except Exception as exc:  # noqa: BLE001 - a rank that cannot join is a record, not a crash
        rec = worker.base_record(cell, matrix)
        rec.status, rec.finished_at = "error", worker.now()
        rec.error = f"rank {rank} could not join the process group: {exc}"
        _write(rank_file(out_dir, rank), rec.to_json())
        return 1
    rec = worker.run_cell(cell, matrix)
    rec.ranks.set(world_size=here.size)
    _write(rank_file(out_dir, here.rank), rec.to_json())
    if not rec.ok:
        return 1
    import torch.distributed as dist

    blocks: list[dict | None] = [None] * here.size
    dist.all_gather_object(blocks, parallel.rank_block(rec))
    if here.rank == 0:
        info = {k: v for k, v in rec.ranks.to_json().items() if v is not None}
        gathered = [b for b in blocks if b]
        rec.ranks.set(**parallel.summarize_ranks(gathered, info))
        rec.energy.set(**parallel.energy_over_ranks(gathered))
        _write(Path(out_dir) / RECORD, rec.to_json())
    dist.destroy_process_group()
    return 0


def _write(path: Path, obj: dict) -> None:
    from bench.exec.worker import write_json

    obj[WROTE_AT] = time.time()  # which rank failed first, when several did
    write_json(str(path), obj)


if __name__ == "__main__":
    from bench.exec.worker import die_with_parent

    # before torch loads: die with torchrun's agent (its ranks run in sessions of their own, out of
    # reach of a kill of the agent's), and at once if it is gone already
    die_with_parent()
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
