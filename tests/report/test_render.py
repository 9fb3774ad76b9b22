"""`bench.report.render`: every format from the fixture runs (CPU, CUDA, several seeds, failed
cells, missing fields, a torn line); charts with nothing to draw are skipped and said so; clean
errors; rendering never imports torch or the methods."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ConfigError, ResultsFileError
from bench.report import charts as report_charts
from bench.report import render

ROOT = Path(__file__).resolve().parents[2]
CHARTS = [chart.stem for chart in report_charts.CHARTS]


def test_cuda_run_writes_every_format(cuda_report: Path) -> None:
    for name in ("report.md", "results.csv", "groups.csv", "table.tex", "report.html"):
        assert (cuda_report / name).stat().st_size > 0, name
    for stem in CHARTS:
        for fmt in ("png", "svg", "pdf"):
            assert (cuda_report / f"{stem}.{fmt}").stat().st_size > 0, f"{stem}.{fmt}"


def test_cpu_run_renders_every_chart(cpu_report: Path) -> None:
    report = cpu_report
    assert all((report / f"{stem}.png").exists() for stem in CHARTS)
    text = (report / "report.md").read_text()
    assert "skipped" not in text


@pytest.mark.parametrize("name", ["all_failed", "partial"])
def test_runs_without_data_render_and_say_which_charts_were_skipped(rendered, name: str) -> None:
    report = rendered(name)
    text = (report / "report.md").read_text()
    for stem in CHARTS:
        assert f"Chart '{stem}' skipped" in text
        assert not (report / f"{stem}.png").exists()
    assert "## Failed cells" in text
    assert "skipped" in (report / "report.html").read_text()


def test_failed_cells_are_listed_with_status_and_reason(cpu_report: Path) -> None:
    report = cpu_report
    text = (report / "report.md").read_text()
    failed = text.split("## Failed cells")[1].split("##")[0]
    assert "timeout" in failed and "cell exceeded timeout_s = 1800" in failed
    assert "unsupported" in failed and "prefix tuning needs a causal LM" in failed
    assert "worker died" not in failed  # the rerun of that cell succeeded: latest_by_cell keeps the ok one
    html = (report / "report.html").read_text()
    assert "prefix tuning needs a causal LM" in html
    assert "the task has no labelled test split" in text  # why accuracy is null


def test_a_run_with_no_records_yet_renders(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text("")
    report = render(tmp_path, ["md", "csv", "html", "png"])
    assert "0 cells" in (report / "report.md").read_text()
    assert "name" in (report / "results.csv").read_text()


def test_all_failed_run_lists_every_reason(rendered) -> None:
    text = (rendered("all_failed") / "report.md").read_text()
    for reason in ("CUDA out of memory", "ValueError: bad rank", "exceeded 1800 s"):
        assert reason in text


def test_partial_run_notes_the_torn_line(rendered) -> None:
    text = (rendered("partial") / "report.md").read_text()
    assert "torn" in text
    assert "(no reason recorded)" in text


def test_formats_limit_the_output(run) -> None:
    report = render(run("cpu_run"), formats=["md", "svg"])
    assert (report / "report.md").exists() and (report / "memory.svg").exists()
    assert not (report / "memory.png").exists() and not (report / "report.html").exists()
    assert not (report / "results.csv").exists()
    assert "(memory.svg)" in (report / "report.md").read_text()


def test_unknown_format_and_missing_run_are_clean_errors(run, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'pdf'"):
        render(run("cpu_run"), formats=["pfd"])
    with pytest.raises(ResultsFileError, match="no such run folder"):
        render(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsFileError, match="no results file"):
        render(empty)


def test_garbage_line_is_an_error_naming_file_and_line(run) -> None:
    folder = run("cpu_run")
    lines = (folder / "results.jsonl").read_text().splitlines()
    lines.insert(2, "this is not json")
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsFileError, match=r"results\.jsonl:3"):
        render(folder)


def test_rendering_never_imports_torch_transformers_or_methods() -> None:
    code = ("import sys, bench.report, bench.results.compare; "
            "bad = [m for m in ('torch', 'transformers', 'methods') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
    sources = [*ROOT.glob("bench/report/*.py"), ROOT / "bench/results/compare.py", ROOT / "bench/results/values.py"]
    for path in sources:
        source = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(torch|transformers|methods)\b", source, re.M), path

