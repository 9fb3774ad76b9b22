"""`bench.report.sections`, `markdown` and `html`: one description of the report's sections, walked
by both renderers, so report.md and report.html have the same sections in the same order and say
the same things in the same words."""
from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from bench.report import data as report_data
from bench.report import html as report_html
from bench.report import markdown
from bench.report.charts import Skipped
from bench.report.document import Bullets, Code, Figure, Pairs, Section, Table, Terms, Text
from bench.report.sections import TORN, describe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RUNS = ["cpu_run", "cuda_run", "all_failed", "partial"]


def _headings(report: Path) -> tuple[list[str], list[str]]:
    md = re.findall(r"^#{1,2} (.+)$", (report / "report.md").read_text(), re.M)
    page = (report / "report.html").read_text()
    tags = [html.unescape(t) for t in re.findall(r"<h[12]>(.*?)</h[12]>", page)]
    return md, tags


@pytest.mark.parametrize("name", RUNS)
def test_markdown_and_html_have_the_same_sections_in_the_same_order(rendered, name: str) -> None:
    md, tags = _headings(rendered(name))
    assert md == tags
    assert md[0].startswith("Benchmark report: ")
    for title in ("How each column is computed", "Failed cells", "Charts", "Environment"):
        assert title in md


def _texts(block) -> list[str]:
    """The strings a block shows in every format (tables and figures are checked elsewhere)."""
    match block:
        case Text():
            return [block.text]
        case Terms() | Pairs():
            return [t for item in block.items for t in item]
        case Bullets():
            return list(block.lines)
        case Code():
            return [block.label, *block.text.splitlines()]
        case Figure():
            return [block.caption]
    return []


@pytest.mark.parametrize("name", RUNS)
def test_every_sentence_of_the_description_is_in_both_renderings(rendered, name: str) -> None:
    report = rendered(name)
    data = report_data.load(report.parent)
    doc = describe(data, [])
    text = (report / "report.md").read_text()
    page = html.unescape(re.sub(r"<[^>]+>", "", (report / "report.html").read_text()))
    for section in doc.sections:
        for block in section.blocks:
            for sentence in _texts(block):
                assert sentence in text, sentence
                assert sentence in page, sentence


def test_the_torn_note_and_the_cells_without_accuracy_read_alike(rendered) -> None:
    for name, sentence in (("partial", TORN), ("cpu_run", "the task has no labelled test split")):
        report = rendered(name)
        assert sentence in (report / "report.md").read_text()
        assert html.escape(sentence, quote=True) in (report / "report.html").read_text()


def test_tracebacks_of_failed_cells_are_in_both_renderings(cuda_report: Path) -> None:
    text = (cuda_report / "report.md").read_text()
    page = (cuda_report / "report.html").read_text()
    title = "Tracebacks of failed cells (last frames; the whole one is in the cell's log)"
    assert f"## {title}" in text and f"<h2>{html.escape(title, quote=True)}</h2>" in page
    frame = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "```\nTraceback (most recent call last):" in text and frame in text
    assert "<details><summary>smollm2-135m/full/mr/b64x32/seed0</summary><pre>" in page and frame in page


def test_a_section_with_nothing_to_show_says_so_in_each_format() -> None:
    figure = Figure("memory", "A caption.", files={}, svg="<svg></svg>")  # HTML only: no chart files
    section = Section("Charts", [figure], empty="No charts were asked for.")
    assert markdown.section(section) == "## Charts\n\nNo charts were asked for.\n"
    assert report_html.section(section) == ["<h2>Charts</h2>", "<figure><svg></svg><figcaption>A caption."
                                            "</figcaption></figure>"]
    assert report_html.section(Section("Failed cells", [], empty="None: every cell finished.")) == [
        "<h2>Failed cells</h2>", "<p>None: every cell finished.</p>"]


def test_skipped_charts_are_one_list_of_notes_in_chart_order() -> None:
    data = report_data.load(FIXTURES / "all_failed")
    figure = Figure("speed", "Speed.", {"png": "speed.png"})
    doc = describe(data, [Skipped("memory", "none"), Skipped("accuracy_vs_memory", "none"), figure,
                          Skipped("loss", "none")])
    (charts,) = [s for s in doc.sections if s.title == "Charts"]
    assert [type(b) for b in charts.blocks] == [Bullets, Figure, Bullets]
    assert charts.blocks[0].lines == ["Chart 'memory' skipped: none.", "Chart 'accuracy_vs_memory' skipped: none."]
    body = markdown.section(charts)
    assert body.index("'accuracy_vs_memory'") < body.index("![speed](speed.png)") < body.index("'loss'")


def test_summary_and_cells_are_tables_only_where_there_are_groups(tmp_path: Path) -> None:
    data = report_data.load(FIXTURES / "cuda_run")
    titles = {s.title: s for s in describe(data, []).sections}
    assert isinstance(titles["Summary (mean ± 95% CI over seeds; best in bold)"].blocks[0], Table)
    assert isinstance(titles["Cells"].blocks[0], Table)
    (tmp_path / "results.jsonl").write_text("")
    empty = {s.title for s in describe(report_data.load(tmp_path), []).sections}
    assert "Cells" not in empty and "Failed cells" in empty
