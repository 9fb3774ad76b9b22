"""`bench.report.charts`, `bars`, `points` and `style`: PDFs embed TrueType fonts, PNGs are 300 dpi,
each method keeps one colour, builders return None without data and survive records missing
optional fields, SVG is deterministic, and accuracy-vs-memory labels overlap nothing."""
from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.report import charts as report_charts
from bench.report import data as report_data
from bench.report import points
from bench.report import style as report_style
from bench.report import render

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHARTS = [chart.stem for chart in report_charts.CHARTS]


def test_pdf_fonts_are_truetype(cuda_report: Path) -> None:
    for stem in CHARTS:
        pdf = (cuda_report / f"{stem}.pdf").read_bytes()
        assert b"/Type3" not in pdf, f"{stem}.pdf has Type 3 fonts"
        assert b"/TrueType" in pdf or b"/CIDFontType2" in pdf, f"{stem}.pdf has no TrueType font"
        assert b"/FontFile2" in pdf, f"{stem}.pdf does not embed its font"


def _png_dpi(path: Path) -> float:
    data = path.read_bytes()
    i = data.index(b"pHYs")
    x_ppm, _, unit = struct.unpack(">IIB", data[i + 4 : i + 13])
    assert unit == 1  # pixels per metre
    return x_ppm * 0.0254


def test_png_charts_are_300_dpi(cuda_report: Path) -> None:
    for stem in CHARTS:
        assert _png_dpi(cuda_report / f"{stem}.png") == pytest.approx(300, abs=1)


def test_each_method_keeps_one_colour_across_charts(cuda_report: Path) -> None:
    colours = report_style.method_colours(["full", "lora", "qlora"])
    assert len(set(colours.values())) == 3
    for stem in ("memory", "speed", "loss", "accuracy_vs_memory", "accuracy"):
        svg = (cuda_report / f"{stem}.svg").read_text().lower()
        for colour in colours.values():
            assert colour.lower() in svg, f"{stem}.svg lacks {colour}"


@given(st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=7))
def test_method_colours_are_distinct_and_independent_of_order(methods: set[str]) -> None:
    colours = report_style.method_colours(methods)
    assert len(set(colours.values())) == len(methods)
    assert set(colours.values()) <= set(report_style.OKABE_ITO)
    assert report_style.method_colours(sorted(methods, reverse=True)) == colours


def test_every_registered_method_gets_its_own_colour() -> None:
    names = ["full", "lora", "qlora", "int8_lora", "houlsby", "pfeiffer", "prompt_tuning", "prefix_tuning",
             "ia3", "icl", "plugin_a", "plugin_b"]
    assert len(set(report_style.method_colours(names).values())) == len(names)


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), max_size=30))
def test_pareto_front_is_exactly_the_undominated_points(points_: list[tuple[float, float]]) -> None:
    front = points.pareto_front(points_)
    def dominates(a, b) -> bool:
        return a[0] <= b[0] and a[1] >= b[1] and a != b
    for i in front:
        assert not any(dominates(p, points_[i]) for p in points_)
    for i, p in enumerate(points_):
        if i not in front:
            assert any(dominates(points_[j], p) or points_[j] == p for j in front)
    xs = [points_[i][0] for i in front]
    assert xs == sorted(xs)


def test_every_chart_builder_returns_none_without_data() -> None:
    data = report_data.load(FIXTURES / "all_failed")
    colours = report_style.method_colours(data.cells["method"])
    for chart in report_charts.CHARTS:
        assert chart.build(data, colours) is None, chart.stem


DROPPABLE = ["time.step_s", "time.step_s_median", "time.step_s_iqr", "time.tokens_per_s", "memory.breakdown",
             "memory.weights", "memory.nvml_device_peak_bytes", "memory.peak_allocated_bytes", "quality.accuracy",
             "quality.train_loss", "optimizer", "flops", "quant", "params", "device", "settings", "device.kind",
             "model", "variant", "method", "name", "memory"]


def _drop(rec: dict, dotted: str) -> None:
    *path, last = dotted.split(".")
    cur = rec
    for part in path:
        cur = cur.get(part)
        if not isinstance(cur, dict):
            return
    cur.pop(last, None)


def _chart_texts(data: report_data.RunData) -> dict[str, set[str] | None]:
    """Every chart's texts (titles, labels, legend entries), None for a chart not drawn."""
    colours = report_style.method_colours(data.cells["method"])
    out: dict[str, set[str] | None] = {}
    with report_style.style():
        for chart in report_charts.CHARTS:
            fig = chart.build(data, colours)  # building is where records are read
            out[chart.stem] = None if fig is None else {t.get_text() for t in fig.findobj(Text) if t.get_text()}
            if fig is not None:
                plt.close(fig)
    return out


@functools.cache
def _whole() -> tuple[report_data.RunData, dict[str, set[str] | None]]:
    data = report_data.load(FIXTURES / "cuda_run")
    return data, _chart_texts(data)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(DROPPABLE), unique=True, max_size=8), st.integers(0, 7))
# a single-seed group losing the figure each chart is drawn from, whatever the random examples draw
@example(["quality.accuracy"], 0)
@example(["time.step_s", "time.step_s_median"], 7)
@example(["memory"], 6)
def test_charts_survive_records_missing_optional_fields(tmp_path: Path, dropped: list[str], which: int) -> None:
    """One record missing fields costs the charts that record at most: every chart is still drawn,
    and every group of the other records it showed is still shown."""
    lines = (FIXTURES / "cuda_run/results.jsonl").read_text().splitlines()
    records = [json.loads(ln) for ln in lines]
    for field in dropped:
        _drop(records[which], field)
    folder = tmp_path / f"run{abs(hash((tuple(dropped), which)))}"
    folder.mkdir(exist_ok=True)  # hypothesis replays a failing example in the same tmp_path
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (whole, before), data = _whole(), report_data.load(folder)
    after = _chart_texts(data)
    assert all(before.values()), "every chart is drawn from the whole fixture"
    # the other records' groups that kept their label (a record losing its settings or model may rename
    # them all: then only the drawing itself is checked)
    others = {label for i, label in enumerate(whole.cells["group"])
              if i not in whole.cells.index[whole.cells["group"] == whole.cells["group"][which]]
              and label in set(data.cells["group"].drop(index=which))}
    for stem, texts in after.items():
        assert texts is not None, f"chart {stem!r} was dropped for one record missing {dropped}"
        missing = (others & before[stem]) - texts
        assert not missing, f"chart {stem!r} lost the groups {missing} for record {which} missing {dropped}"


def test_tasks_and_models_get_their_own_panels(tmp_path: Path) -> None:
    records = [json.loads(ln) for ln in (FIXTURES / "cuda_run/results.jsonl").read_text().splitlines()]
    records[1].update(task="sst2", cell_id="other-task")  # accuracies of two tasks share no scale
    records[2].update(model="tiny-bert", cell_id="other-model")
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = report_data.load(tmp_path)
    colours = report_style.method_colours(data.cells["method"])
    with report_style.style():
        pareto = points.pareto_chart(data, colours)
        loss = points.loss_chart(data, colours)
    titles = {ax.get_title() for ax in pareto.axes if ax.get_visible()}
    assert titles == {"mr", "sst2"}
    titles = {ax.get_title() for ax in loss.axes if ax.get_visible()}
    assert titles == {"smollm2-135m / mr", "smollm2-135m / sst2", "tiny-bert / mr"}
    assert "sst2" in data.groups["group"].str.cat()  # labels name the task once tasks differ
    plt.close(pareto)
    plt.close(loss)


def test_a_skipped_chart_removes_its_stale_files(run) -> None:
    folder = run("all_failed")
    (folder / "report").mkdir()
    (folder / "report/memory.png").write_bytes(b"stale")
    render(folder, ["md", "png"])
    assert not (folder / "report/memory.png").exists()


def test_rendering_twice_gives_the_same_svg() -> None:
    data = report_data.load(FIXTURES / "cpu_run")
    colours = report_style.method_colours(data.cells["method"])
    texts = []
    with report_style.style():
        for _ in range(2):
            fig = points.loss_chart(data, colours)
            texts.append(report_style.svg_text(fig))
            plt.close(fig)
    assert texts[0] == texts[1]
    assert "<metadata>" not in texts[0] and texts[0].startswith("<svg")


# Nine methods of the cpu matrix, several within a hundredth of a GiB and a point of accuracy of
# each other (the crowd where labels used to overlap and sit by the wrong marker).
CROWD = [("full", "full", .782, .50), ("lora-r8", "lora", .780, .21), ("houlsby", "houlsby", .768, .212),
         ("pfeiffer", "pfeiffer", .760, .206), ("ia3", "ia3", .760, .204),
         ("prompt-tuning-20", "prompt_tuning", .626, .19), ("qlora-nf4-dq", "qlora", .764, .185),
         ("int8-lora", "int8_lora", .776, .192), ("icl-4shot", "icl", .64, .6)]


def test_accuracy_vs_memory_labels_overlap_nothing(tmp_path: Path) -> None:
    lines = []
    for i, (variant, method, acc, gib) in enumerate(CROWD):
        lines.append(json.dumps({
            "cell_id": f"c{i}", "status": "ok", "name": f"minilm-l6/{variant}/mr/b16x64/seed0", "variant": variant,
            "method": method, "model": "minilm-l6", "task": "mr", "matrix": "cpu", "device": {"kind": "cpu"},
            "memory": {"peak_rss_above_baseline_bytes": int(gib * 2**30)}, "quality": {"accuracy": acc}}))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    data = report_data.load(tmp_path)
    with report_style.style():
        fig = points.pareto_chart(data, report_style.method_colours(data.cells["method"]))
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    assert sorted(labels) == sorted(v for v, _, _, _ in CROWD)
    boxes = list(labels.items())
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"
    markers = ax.transData.transform([(gib, 100 * acc) for _, _, acc, gib in CROWD])
    for name, box in boxes:
        inside = [CROWD[j][0] for j, (x, y) in enumerate(markers) if box.contains(x, y)]
        assert not inside, f"label {name!r} covers the marker of {inside}"
    plt.close(fig)


def test_a_chart_that_fails_is_skipped_with_the_reason(run, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data, colours):
        raise ValueError("odd record")
    charts = [report_charts.Chart("memory", broken, "never", "caption"), *report_charts.CHARTS[1:]]
    monkeypatch.setattr(report_charts, "CHARTS", charts)
    with pytest.warns(UserWarning, match="odd record"):
        report = render(run("cpu_run"), ["md", "png"])
    text = (report / "report.md").read_text()
    assert "Chart 'memory' skipped: could not be drawn: ValueError: odd record." in text
    assert not (report / "memory.png").exists() and (report / "loss.png").exists()
