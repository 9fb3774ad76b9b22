"""`bench run`, `compare`, `baseline` and `list` in this process (bench/cli/run.py): exit codes,
what they print, and the flags that reach the code."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import cli
from bench.cli import run as cli_run
from bench.exec.worker import base_record
from bench.results import store
from bench.results.record import Record
from bench.spec import Cell
from tests.helpers import cell, tiny_matrix

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
COMPARE = FIXTURES / "compare"


def test_verbs_are_read_from_the_parser() -> None:
    verbs = cli.verbs()
    assert {"run", "report", "compare", "baseline", "list", "predict", "capacity", "selfcheck"} <= set(verbs)
    for verb in verbs:  # each one parses its own --help
        with pytest.raises(SystemExit) as done:
            cli.build_parser().parse_args([verb, "--help"])
        assert done.value.code == 0


def test_compare_exit_codes_clean_regression_and_unusable(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", str(COMPARE / "base"), str(COMPARE / "noise")]) == 0
    assert cli.main(["compare", str(COMPARE / "base"), str(COMPARE / "slow20"), "--time-tol", "5%"]) == 1
    assert cli.main(["compare", str(COMPARE / "base"), str(FIXTURES / "partial")]) == 2
    assert "partial/results.jsonl:3" in capsys.readouterr().err


def test_compare_metrics_choose_what_is_judged(capsys: pytest.CaptureFixture[str]) -> None:
    base, slow = str(COMPARE / "base"), str(COMPARE / "slow20")
    assert cli.main(["compare", base, slow, "--metrics", "memory,accuracy,status"]) == 0  # time not judged
    assert cli.main(["compare", base, slow, "--metrics", " time "]) == 1
    capsys.readouterr()
    assert cli.main(["compare", base, slow, "--metrics", "speed"]) == 2
    assert "compare metric 'speed' is not known" in capsys.readouterr().err


def test_a_bad_peak_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.exec import runner

    monkeypatch.setattr(runner, "run_matrix", lambda *a, **k: pytest.fail("a cell ran"))
    code = cli.main(["run", "smoke", "--only", "lora", "--out", str(tmp_path / "run"), "--peak-tflops", "0"])
    assert code == 2 and "--peak-tflops 0 must be > 0" in capsys.readouterr().err


def test_a_record_line_says_status_time_accuracy_and_error() -> None:
    rec = base_record(cell("lora"), "m")
    rec.status, rec.error = "error", "RuntimeError at training step 2: boom\nmore"
    assert cli_run._fmt_record(rec) == f"error        {rec.name}  (RuntimeError at training step 2: boom)"
    rec.status, rec.error = "ok", None
    rec.time.step_s_median, rec.quality.accuracy = 0.0125, 0.75
    assert cli_run._fmt_record(rec) == f"ok           {rec.name}  12.5 ms/step  acc 0.750"


def test_baseline_copies_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # baselines go to reports/baselines under the working directory
    assert cli.main(["baseline", str(COMPARE / "base"), "--name", "ci"]) == 0
    copied = tmp_path / "reports" / "baselines" / "ci" / "results.jsonl"
    assert copied.read_bytes() == (COMPARE / "base" / "results.jsonl").read_bytes()
    assert "baseline 'ci' saved to" in capsys.readouterr().out


# One tiny cell per method row (each its own rank, so each its own cell), named after the status its
# launcher ends it with.
STATUS_ROWS = "".join(f'[[methods]]\nname = "{s}"\nmethod = "lora"\noptions = {{ r = {r} }}\n'
                      for r, s in enumerate(("ok", "unsupported", "error", "oom", "timeout"), 2))


class Ends:
    """A launcher that runs nothing: each cell's record ends with the status its row is named after."""

    def run(self, cell: Cell, run_dir: Path, matrix: str, slot_env: dict[str, str]) -> Record:
        rec = base_record(cell, matrix)
        rec.status = cell.method.name
        return rec


@pytest.mark.parametrize("rows, strict, code", [
    (["ok", "unsupported", "error", "oom", "timeout"], False, 0),  # one ok: a result
    (["ok", "unsupported", "error", "oom", "timeout"], True, 1),
    (["ok", "unsupported"], True, 0),  # unsupported is an answer, not a failure
    (["ok", "error"], True, 1),
    (["ok", "oom"], True, 1),
    (["ok", "timeout"], True, 1),
    (["error", "oom", "timeout"], False, 1),  # nothing ok
    (["unsupported"], False, 1),
])
def test_run_exit_code_says_whether_the_matrix_gave_results(
        rows: list[str], strict: bool, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bench.exec import runner

    monkeypatch.setattr(runner, "CellLauncher", Ends)
    (tmp_path / "m.toml").write_text(tiny_matrix(STATUS_ROWS))
    only = [a for row in rows for a in ("--only", row)]
    got = cli.main(["run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"), *only,
                    *(["--strict"] if strict else [])])
    assert sorted(r.status for r in store.read_records(tmp_path / "run")) == sorted(rows)
    assert got == code
    err = capsys.readouterr().err
    assert ("failed: " in err) == bool(code)


def test_a_rerun_that_skips_every_cell_already_ok_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.exec import runner

    monkeypatch.setattr(runner, "CellLauncher", Ends)
    (tmp_path / "m.toml").write_text(tiny_matrix(STATUS_ROWS))
    args = ["run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"), "--only", "ok", "--strict"]
    assert cli.main(args) == 0

    class Never(Ends):
        def run(self, *args: object) -> Record:
            pytest.fail("an ok cell ran again")

    monkeypatch.setattr(runner, "CellLauncher", Never)
    assert cli.main(args) == 0


def test_run_exits_1_on_a_matrix_whose_every_cell_failed_in_its_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The real launcher, each cell's process writing an error record."""
    from bench.exec import launchers, runner
    from tests.exec.faults import Fault

    monkeypatch.setattr(runner, "CellLauncher", lambda: launchers.CellLauncher(target=Fault("record", variant="full")))
    (tmp_path / "m.toml").write_text(tiny_matrix('[[methods]]\nmethod = "full"\n'))
    assert cli.main(["run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run")]) == 1
    (rec,) = store.read_records(tmp_path / "run")
    assert rec.status == "error" and "injected" in (rec.error or "")
    assert "failed: no cell ended ok (exit 1)" in capsys.readouterr().err
