"""The bundle (bench/tools/lease/bundle.py): what breaks the device tool's limits is found, files are
written whole, long files are cut to fit, and the logs archive keeps the newest logs under its limit."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from bench.tools.lease import bundle
from bench.tools.lease import state as st


def test_what_breaks_the_device_tools_limits_is_named(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert bundle.problems(out) == []
    for i in range(9):
        (out / f"f{i}.txt").write_text("x")
    (out / "a" / "b" / "c").mkdir(parents=True)
    (out / "a" / "b" / "c" / "deep.txt").write_text("x")
    (out / "bad name.txt").write_text("x")
    (out / f"{bundle.PARTIAL}results.jsonl").write_text("x")
    with open(out / "big.bin", "wb") as fh:
        fh.truncate(bundle.MAX_FILE_BYTES + 1)
    found = "\n".join(bundle.problems(out))
    assert "13 files (at most 8 come back)" in found
    assert "a/b/c/deep.txt: more than 2 folders down" in found
    assert "bad name.txt: a name with characters" in found
    assert f"{bundle.PARTIAL}results.jsonl: a partial file" in found
    assert f"big.bin: {bundle.MAX_FILE_BYTES + 1} bytes" in found


def test_a_file_is_written_whole_under_its_name(tmp_path: Path) -> None:
    bundle.write(tmp_path, "summary.md", b"first")
    bundle.write(tmp_path, "summary.md", b"second")
    assert (tmp_path / "summary.md").read_bytes() == b"second" and os.listdir(tmp_path) == ["summary.md"]


def test_a_long_text_keeps_its_end_and_says_what_it_left_out() -> None:
    data = b"".join(b"line %d\n" % i for i in range(10_000))
    cut = bundle.tail(data, 5000, "pytest.log")
    assert len(cut) <= 5000 + 200 and cut.endswith(b"line 9999\n") and cut.startswith(b"[pytest.log: the first")
    assert bundle.tail(b"short", 5000, "x") == b"short"


def test_the_logs_archive_keeps_the_newest_logs_under_its_limit(tmp_path: Path) -> None:
    logs = tmp_path / st.LOGS
    logs.mkdir()
    for i in range(6):
        path = logs / f"cell{i}.log"
        path.write_bytes(os.urandom(40_000))  # incompressible: each costs its size
        os.utime(path, (1000 + i, 1000 + i))
    data, left = st.pack_logs(tmp_path, 100_000)
    assert len(data) <= 100_000
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        kept = sorted(m.name for m in tar.getmembers())
    assert kept == ["logs/cell4.log", "logs/cell5.log"] and sorted(left) == [f"logs/cell{i}.log" for i in range(4)]
    st.unpack_logs_from(data, tmp_path / "again")
    assert (tmp_path / "again" / "logs" / "cell5.log").read_bytes() == (logs / "cell5.log").read_bytes()


def test_a_summary_that_fails_costs_the_bundle_nothing_else(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "results.jsonl").write_text('{"cell_id": "a", "status": "ok"}\n')
    (out).mkdir()
    (out / f"{bundle.PARTIAL}report.md").write_text("left by a killed call")

    def broken() -> str:
        raise ValueError("a bug")

    bundle.refresh(work, out, st.State(True, calls=[{"stages": {}}]), broken, with_report=False)
    assert "could not be written: ValueError: a bug" in (out / "summary.md").read_text()
    assert (out / "results.jsonl").read_text() == '{"cell_id": "a", "status": "ok"}\n'
    assert bundle.problems(out) == []  # the partial file is gone too
