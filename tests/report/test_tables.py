"""`bench.report.tables`: LaTeX with booktabs and bold best values; the Markdown summary bolds the
lower memory and step time and the higher throughput."""
from __future__ import annotations

from pathlib import Path

from bench.report import data as report_data
from bench.report import tables

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_latex_table_has_booktabs_units_and_bold_best(cuda_report: Path) -> None:
    tex = (cuda_report / "table.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in tex
    assert "Peak memory (GiB)" in tex and r"Accuracy (\%)" in tex and "Step time (ms)" in tex
    assert r"batch\_size" in tex  # text is escaped
    qlora = next(ln for ln in tex.splitlines() if ln.startswith("qlora-nf4"))
    assert r"\textbf{2.100 $\pm$ 0.000}" in qlora  # least memory: bold
    full = next(ln for ln in tex.splitlines() if ln.startswith(r"full / batch\_size=4"))
    assert r"\textbf{88.0}" in full  # highest accuracy: bold


def test_markdown_summary_bolds_lower_memory_and_higher_throughput(cuda_report: Path) -> None:
    text = (cuda_report / "report.md").read_text()
    assert "GiB (1 GiB = 2^30 bytes)" in text
    summary = text.split("## Summary")[1].split("## Cells")[0]
    lora = next(ln for ln in summary.splitlines() if ln.startswith("| lora-r8 |"))
    assert "**1,422 ± 27**" in lora  # highest tokens/s
    assert "**90.0 ± 1.7**" in lora  # lowest step time


def test_failed_table_says_where_each_cell_failed() -> None:
    data = report_data.load(FIXTURES / "all_failed")
    shown = tables.failed_table(data).shown.set_index("Status")
    assert shown.loc["error", "Failed in"] == "adapt"
    assert shown.loc["error", "Reason"] == "ValueError: bad rank"
    assert [name for name, _ in tables.tracebacks(data)] == ["tiny-llama/lora/synthetic/b4x32/seed0"]
