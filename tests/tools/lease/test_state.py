"""The check's state (bench/tools/lease/state.py): a call resumes from whichever of the work folder
and the bundle is ahead, and refuses a folder holding the other kind of check."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.results import store
from bench.tools.lease import state as st


def _state(folder: Path, calls: int, lines: int, rehearse: bool = True) -> st.State:
    folder.mkdir(parents=True, exist_ok=True)
    state = st.State(rehearse, calls=[{"stages": {}} for _ in range(calls)])
    (folder / store.RESULTS).write_text("".join(json.dumps({"cell_id": f"c{i}", "status": "ok"}) + "\n"
                                                for i in range(lines)))
    return state


def test_a_call_resumes_from_whichever_of_work_and_bundle_is_ahead(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    _state(work, 1, 2).save(work)
    ahead = _state(out, 2, 5)
    (out / store.ENV).write_text(json.dumps({"python": "3.12", st.ENV_KEY: ahead.to_json()}))
    assert len(st.resume(work, out, True).calls) == 2  # a fresh machine handed the last bundle
    assert len(store.read_records(work)) == 5 and store.read_env(work) == {"python": "3.12"}
    (out / store.RESULTS).unlink()
    (out / store.ENV).unlink()  # a warm machine: $OUT emptied, the work folder kept
    assert len(st.resume(work, out, True).calls) == 1  # the work folder's own state (saved above)
    with pytest.raises(BenchError, match="holds a rehearsal's check"):
        st.resume(work, out, False)
