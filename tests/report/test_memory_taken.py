"""Each CPU memory figure says which glibc allocator it was taken under, in the cell table."""
from __future__ import annotations

from pathlib import Path

from bench.report import data
from bench.report.cells import memory_taken
from bench.report.tables import MEMORY_UNDER, cells_table
from bench.results import store
from bench.results.record import Record


def _rec(cell_id: str, kind: str, **memory: object) -> Record:
    rec = Record(cell_id=cell_id, name=cell_id, status="ok", variant=cell_id, settings={"cpu_allocator": "default"})
    rec.device.kind = kind
    rec.memory.set(peak_rss_above_baseline_bytes=2**28, peak_allocated_bytes=2**28 if kind == "cuda" else None,
                   **memory)
    return rec


def test_the_cell_table_names_the_allocator_of_each_cpu_figure(tmp_path: Path) -> None:
    recs = [_rec("pass", "cpu", cpu_allocator="release", memory_pass_steps=2,
                 timed_peak_rss_above_baseline_bytes=2**29),
            _rec("timed", "cpu", cpu_allocator="default"), _rec("older", "cpu"), _rec("gpu", "cuda")]
    assert [memory_taken(r) for r in recs] == ["release (memory pass, 2 steps)", "default", "default", ""]
    for rec in recs:
        store.append_record(tmp_path, rec)
    run = data.load(tmp_path)
    table = cells_table(run)
    assert list(table.shown[MEMORY_UNDER]) == ["release (memory pass, 2 steps)", "default", "default", ""]
    assert run.cells["timed_peak_mem_GiB"].iloc[0] == 0.5
