"""`bench.results.compare`: regressions need the tolerance and, for step time, statistical
significance; `metrics` limits what is judged; unusable input raises ResultsFileError naming the
file and line; baselines are copied whole."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.results import peaks
from bench.results.baseline import save_baseline
from bench.results.compare import HEADLINE, CompareResult, compare, min_p, parse_percent
from bench.errors import BenchError, ConfigError, ResultsFileError
from bench.results.values import GIB, MIB

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
COMPARE = FIXTURES / "compare"


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (folder / "results.jsonl").read_text().splitlines() if ln.strip()]


def _write(folder: Path, records: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _variant(tmp_path: Path, change: Callable[[list[dict[str, Any]]], None], source: Path = COMPARE / "base") -> Path:
    """A copy of `source` with `change` applied to its records."""
    records = _records(source)
    change(records)
    return _write(tmp_path / "current", records)


def _lora(records: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in records if r["variant"] == "lora-r8")


@pytest.mark.parametrize("run", [COMPARE / "base", FIXTURES / "cpu_run", FIXTURES / "cuda_run"])
def test_a_run_against_itself_is_clean(run: Path) -> None:
    res = compare(run, run)
    assert res.exit_code == 0, res.markdown
    assert not res.regressions and res.matched > 0
    assert "clean" in res.markdown


def test_a_real_20_percent_step_time_regression_fails() -> None:
    res = compare(COMPARE / "base", COMPARE / "slow20")
    assert res.exit_code == 1
    (reg,) = res.regressions
    assert reg.metric.startswith("step time") and "lora-r8" in reg.cell
    assert "Mann-Whitney" in reg.why
    assert "REGRESSION" in res.markdown and "lora-r8" in res.markdown.split("### Regressions")[1]


@pytest.mark.parametrize("current", ["noise", "shift2"])
def test_differences_within_noise_or_tolerance_pass(current: str) -> None:
    res = compare(COMPARE / "base", COMPARE / current)
    assert res.exit_code == 0, res.markdown


def test_beyond_tolerance_but_not_significant_passes() -> None:
    # With no tolerance at all, only the significance test stands between noise and a failure.
    res = compare(COMPARE / "base", COMPARE / "noise", time_tol=0.0)
    assert res.exit_code == 0, res.markdown
    assert any("within noise" in f.why for f in res.findings)


def test_a_significant_shift_within_tolerance_passes_and_fails_without_it() -> None:
    assert compare(COMPARE / "base", COMPARE / "shift2").exit_code == 0
    assert compare(COMPARE / "base", COMPARE / "shift2", time_tol=0.01).exit_code == 1


def test_too_few_samples_is_a_warning_not_a_regression(tmp_path: Path) -> None:
    def few(records: list[dict[str, Any]], scale: float) -> None:
        for r in records:
            r["time"]["step_s"] = [s * scale for s in r["time"]["step_s"][:3]]
    base = _variant(tmp_path / "b", lambda rs: few(rs, 1.0))
    cur = _variant(tmp_path / "c", lambda rs: few(rs, 1.5))
    res = compare(base, cur)
    assert res.exit_code == 0
    assert res.of("warning") and "cannot reach" in res.markdown


@pytest.mark.parametrize(("field", "factor", "code"), [
    ("peak_allocated_bytes", 1.05, 1), ("peak_allocated_bytes", 1.01, 0), ("nvml_device_peak_bytes", 1.05, 1),
    ("peak_allocated_bytes", 0.80, 0),
])
def test_memory_regression_beyond_tolerance(tmp_path: Path, field: str, factor: float, code: int) -> None:
    def grow(records: list[dict[str, Any]]) -> None:
        _lora(records)["memory"][field] = int(_lora(records)["memory"][field] * factor)
    res = compare(COMPARE / "base", _variant(tmp_path, grow))
    assert res.exit_code == code, res.markdown


def test_cpu_runs_compare_peak_rss(tmp_path: Path) -> None:
    def grow(records: list[dict[str, Any]]) -> None:
        for r in records:
            if r["status"] == "ok":
                r["memory"]["peak_rss_above_baseline_bytes"] = int(r["memory"]["peak_rss_above_baseline_bytes"] * 1.2)
    res = compare(FIXTURES / "cpu_run", _variant(tmp_path, grow, FIXTURES / "cpu_run"))
    assert res.exit_code == 1
    assert {f.metric for f in res.regressions} == {f"{HEADLINE} ({peaks.CPU})"}
    assert len(res.regressions) == 5  # every ok cell: full, lora-r8's three seeds, lora-r16


@pytest.mark.parametrize(("new_acc", "code"), [(0.84, 1), (0.855, 0), (0.95, 0), (None, 1)])
def test_accuracy_drop_beyond_tolerance(tmp_path: Path, new_acc: float | None, code: int) -> None:
    def drop(records: list[dict[str, Any]]) -> None:
        _lora(records)["quality"]["accuracy"] = new_acc  # baseline 0.86
    res = compare(COMPARE / "base", _variant(tmp_path, drop))
    assert res.exit_code == code, res.markdown


def test_a_cell_that_now_fails_is_a_regression_and_says_why(tmp_path: Path) -> None:
    def fail(records: list[dict[str, Any]]) -> None:
        _lora(records).update(status="oom", error="CUDA out of memory. Tried to allocate 1.00 GiB")
    res = compare(COMPARE / "base", _variant(tmp_path, fail))
    assert res.exit_code == 1
    assert "Tried to allocate 1.00 GiB" in res.markdown


def test_a_cell_that_now_passes_is_an_improvement(tmp_path: Path) -> None:
    def fail(records: list[dict[str, Any]]) -> None:
        _lora(records).update(status="error", error="boom")
    base = _variant(tmp_path / "b", fail)
    res = compare(base, COMPARE / "base")
    assert res.exit_code == 0
    assert [f.metric for f in res.of("improved")] == ["status"]


def test_cells_missing_on_either_side_are_listed(tmp_path: Path) -> None:
    def swap(records: list[dict[str, Any]]) -> None:
        gone = records.pop(0)
        extra = json.loads(json.dumps(records[0]))
        extra.update(cell_id="new-cell", name="smollm2-135m/new/mr/b4x32/seed0")
        records.append(extra)
        assert gone["name"]
    res = compare(COMPARE / "base", _variant(tmp_path, swap))
    assert res.exit_code == 0
    assert res.missing_in_current == ["smollm2-135m/full/mr/b4x32/seed0"]
    assert res.missing_in_baseline == ["smollm2-135m/new/mr/b4x32/seed0"]
    assert "Cells missing from the current run" in res.markdown and "smollm2-135m/new/mr" in res.markdown


def test_no_cell_in_common_is_not_clean(tmp_path: Path) -> None:
    def rename(records: list[dict[str, Any]]) -> None:
        for r in records:
            r["cell_id"] += "-other"
    res = compare(COMPARE / "base", _variant(tmp_path, rename))
    assert res.exit_code == 1 and res.matched == 0
    assert "NOTHING COMPARED" in res.markdown


def test_the_latest_record_of_a_rerun_cell_is_compared(tmp_path: Path) -> None:
    def rerun(records: list[dict[str, Any]]) -> None:
        failed = json.loads(json.dumps(_lora(records)))
        failed.update(status="error", error="first try crashed")
        records.insert(0, failed)  # the ok record after it is the retry
    assert compare(COMPARE / "base", _variant(tmp_path, rerun)).exit_code == 0


def test_torn_last_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    cur = tmp_path / "current"
    shutil.copytree(COMPARE / "base", cur)
    with open(cur / "results.jsonl", "a") as fh:
        fh.write('{"cell_id": "x", "status": "o')
    with pytest.raises(ResultsFileError, match=r"current/results\.jsonl:4"):
        compare(COMPARE / "base", cur)


def test_garbage_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(COMPARE / "base", base)
    lines = (base / "results.jsonl").read_text().splitlines()
    lines[1] = "\x00\x01 garbage"
    (base / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsFileError, match=r"base/results\.jsonl:2"):
        compare(base, COMPARE / "noise")


def test_missing_folder_empty_file_and_bad_env_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match="baseline run folder does not exist"):
        compare(tmp_path / "nope", COMPARE / "base")
    empty = _write(tmp_path / "empty", [])
    with pytest.raises(ResultsFileError, match="no result records"):
        compare(COMPARE / "base", empty)
    bad_env = tmp_path / "bad_env"
    shutil.copytree(COMPARE / "base", bad_env)
    (bad_env / "env.json").write_text("{not json")
    with pytest.raises(ResultsFileError, match="env.json"):
        compare(COMPARE / "base", bad_env)
    assert issubclass(ResultsFileError, BenchError)  # the CLI's exit code 2


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("2.5%", 0.025), ("0.05", 0.05), (" 10% ", 0.10),
                                             ("0%", 0.0), ("150%", 1.5)])
def test_parse_percent(text: str, value: float) -> None:
    assert parse_percent(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5", "abc", "-1%", "nan%", "", "%"])
def test_parse_percent_rejects_ambiguous_or_bad_values(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_percent(text)


@given(st.floats(0, 1000, allow_nan=False))
def test_parse_percent_reads_any_percentage(x: float) -> None:
    assert parse_percent(f"{x}%") == pytest.approx(x / 100)


def test_min_p_matches_the_exact_test() -> None:
    assert min_p(4, 4) == pytest.approx(1 / 70)
    assert min_p(5, 5) < 0.01 < min_p(4, 4)
    assert min_p(0, 10) == 1.0


def test_negative_tolerance_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="time_tol"):
        compare(COMPARE / "base", COMPARE / "base", time_tol=-0.1)


def test_save_baseline_copies_results_and_env(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    dest = save_baseline(COMPARE / "base", "gpu-ci", root=root)
    assert dest == root / "gpu-ci"
    for name in ("results.jsonl", "env.json"):
        assert (dest / name).read_bytes() == (COMPARE / "base" / name).read_bytes()
    assert compare(dest, COMPARE / "base").exit_code == 0
    # Replacing it with a run that has no env.json drops the old env.json too.
    bare = _write(tmp_path / "bare", _records(COMPARE / "noise"))
    save_baseline(bare, "gpu-ci", root=root)
    assert not (dest / "env.json").exists()
    assert (dest / "results.jsonl").read_bytes() == (bare / "results.jsonl").read_bytes()


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", " x", "a\\b"])
def test_save_baseline_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="baseline name"):
        save_baseline(COMPARE / "base", name, root=tmp_path)


def test_save_baseline_refuses_a_torn_run(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match=r"results\.jsonl:3"):
        save_baseline(FIXTURES / "partial", "x", root=tmp_path)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("metrics", "code"), [("memory,accuracy", 0), (["memory", "accuracy"], 0), (["time"], 1),
                                               (" time , status ", 1), (None, 1)])
def test_metrics_limit_what_is_judged(metrics: object, code: int) -> None:
    res = compare(COMPARE / "base", COMPARE / "slow20", metrics=metrics)
    assert res.exit_code == code, res.markdown
    judged = {f.metric for f in res.findings}
    if code == 0:
        assert judged == {f"{HEADLINE} ({peaks.TORCH})", "NVML device peak", "accuracy"}
        assert "Judged: memory, accuracy only" in res.markdown
    else:
        assert "step time (median)" in judged


def test_a_cell_that_now_fails_is_a_warning_where_status_is_not_judged(tmp_path: Path) -> None:
    def fail(records: list[dict[str, Any]]) -> None:
        _lora(records).update(status="oom", error="CUDA out of memory. Tried to allocate 1.00 GiB")
    cur = _variant(tmp_path, fail)
    res = compare(COMPARE / "base", cur, metrics="memory")
    assert res.exit_code == 0, res.markdown
    (warning,) = res.of("warning")
    assert warning.metric == "status" and "not among the judged metrics" in warning.why
    assert compare(COMPARE / "base", cur, metrics="memory,status").exit_code == 1


@pytest.mark.parametrize("metrics", ["memroy", ["time", "speed"], "", []])
def test_an_unknown_metric_is_a_config_error_naming_it_and_the_choices(metrics: object) -> None:
    with pytest.raises(ConfigError, match="valid choices: accuracy, memory, status, time") as err:
        compare(COMPARE / "base", COMPARE / "base", metrics=metrics)
    bad = {"memroy": "'memroy' is not known (did you mean 'memory'?)", "speed": "'speed' is not known"}
    assert all(text in str(err.value) for name, text in bad.items() if name in str(metrics))


def test_compare_reads_typed_records_and_imports_nothing_of_the_report() -> None:
    code = "import sys, bench.results.compare; print(sorted(m for m in sys.modules if m.startswith('bench.report')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def _cpu_cell(variant: str, seed: int, rss: float) -> dict[str, Any]:
    """A CPU record of a cell of `variant` and `seed` whose headline peak is `rss` bytes."""
    r = json.loads(json.dumps(_records(FIXTURES / "cpu_run")[0]))
    r.update(variant=variant, seed=seed, cell_id=f"{variant}-seed{seed}", name=f"m/{variant}/t/b4x32/seed{seed}")
    r["memory"]["peak_rss_above_baseline_bytes"] = int(rss)
    return r


def _rss_runs(tmp_path: Path, base_rss: list[float], cur_rss: list[float], variant: str = "big") -> CompareResult:
    """Seeds 0, 1, ... of one CPU cell with these peaks in the baseline and the current run."""
    base = _write(tmp_path / "b", [_cpu_cell(variant, s, x) for s, x in enumerate(base_rss)])
    cur = _write(tmp_path / "c", [_cpu_cell(variant, s, x) for s, x in enumerate(cur_rss)])
    return compare(base, cur, metrics="memory")


def test_a_larger_models_noise_is_its_own_not_a_tiny_models_constant(tmp_path: Path) -> None:
    # 8 GiB of RSS whose three seeds spread over 307 MiB: seed 0 moving 256 MiB (3%) is within that
    res = _rss_runs(tmp_path, [8.0 * GIB, 8.2 * GIB, 8.3 * GIB], [8.25 * GIB, 8.2 * GIB, 8.3 * GIB])
    assert res.exit_code == 0, res.markdown
    assert "noise floor 307.2 MiB: spread of the cell's 3 seeds in the baseline" in res.markdown
    # one seed only, in neither run repeated: 10% of the baseline figure; 400 MiB (4.9%) is within it
    one = _rss_runs(tmp_path / "one", [8.0 * GIB], [8.0 * GIB + 400 * MIB])
    assert one.exit_code == 0, one.markdown
    assert "noise floor 819.2 MiB: 10% of the baseline figure (neither run repeats the cell's seeds)" in one.markdown


def test_a_regression_above_the_derived_floor_still_fails(tmp_path: Path) -> None:
    spread = _rss_runs(tmp_path, [8.0 * GIB, 8.2 * GIB, 8.3 * GIB], [9.0 * GIB, 9.2 * GIB, 9.3 * GIB])
    assert spread.exit_code == 1 and len(spread.regressions) == 3
    assert all("and the noise floor; noise floor 307.2 MiB" in f.why for f in spread.regressions)
    one = _rss_runs(tmp_path / "one", [8.0 * GIB], [9.0 * GIB])  # +12.5%, above 10%
    assert one.exit_code == 1 and "10% of the baseline figure" in one.regressions[0].why


def test_seeds_without_spread_leave_only_the_tolerance(tmp_path: Path) -> None:
    # cpu_run's lora-r8 has three seeds of the same RSS: a 5% growth is beyond its zero floor
    def grow(records: list[dict[str, Any]]) -> None:
        for r in records:
            if r["status"] == "ok":
                r["memory"]["peak_rss_above_baseline_bytes"] = int(r["memory"]["peak_rss_above_baseline_bytes"] * 1.05)
    res = compare(FIXTURES / "cpu_run", _variant(tmp_path, grow, FIXTURES / "cpu_run"), metrics="memory")
    assert sorted(f.cell for f in res.regressions) == [f"tiny-llama/lora-r8/synthetic/b4x32/seed{s}" for s in range(3)]


def test_the_current_runs_seeds_give_the_floor_where_the_baseline_has_one(tmp_path: Path) -> None:
    base = _write(tmp_path / "b", [_cpu_cell("big", 0, 8.0 * GIB)])
    cur = _write(tmp_path / "c", [_cpu_cell("big", s, x) for s, x in enumerate([8.25 * GIB, 8.0 * GIB, 8.3 * GIB])])
    res = compare(base, cur, metrics="memory")
    assert res.exit_code == 0 and "spread of the cell's 3 seeds in the current run" in res.markdown


def test_a_tiny_models_few_mib_are_judged_against_its_own_figure(tmp_path: Path) -> None:
    # identical runs of a tiny model moved RSS by up to 2.5 MiB (10%): 20 -> 21 MiB is noise; 20 -> 23 MiB
    # is beyond the 2 MiB floor (the old 4 MiB constant called it noise)
    assert _rss_runs(tmp_path / "a", [20 * MIB], [21 * MIB]).exit_code == 0
    assert _rss_runs(tmp_path / "b", [20 * MIB], [23 * MIB]).exit_code == 1


def test_cells_measured_on_different_devices_are_a_warning(tmp_path: Path) -> None:
    cuda = _lora(_records(COMPARE / "base"))
    cpu = json.loads(json.dumps(cuda))
    cpu["device"]["kind"] = "cpu"
    cpu["memory"].update(peak_rss_above_baseline_bytes=cuda["memory"]["peak_allocated_bytes"] // 2)
    res = compare(_write(tmp_path / "b", [cuda]), _write(tmp_path / "c", [cpu]), metrics="memory")
    assert res.exit_code == 0 and [f.verdict for f in res.findings] == ["warning"]
    assert "different devices" in res.findings[0].why
