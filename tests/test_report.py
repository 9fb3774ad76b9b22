"""`bench.report`: every table and chart renders from the fixture runs (CPU, CUDA, several seeds,
failed cells, missing fields, a torn line), PDFs embed TrueType fonts, and the HTML page is
self-contained and runs in a headless browser."""
from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from bench import report_charts, report_data, report_style
from bench.errors import ConfigError, ResultsFileError
from bench.report import render

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]
CHARTS = [stem for stem, _, _ in report_charts.CHARTS]
CHROMIUM = Path("/usr/bin/chromium")


def _generator():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(tmp_path: Path):
    """Copy a fixture run into tmp_path (rendering writes into the run folder)."""
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / name, dest)
        return dest
    return copy


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    """Each fixture run rendered once per module, in every format (rendering is the slow part)."""
    cache: dict[str, Path] = {}
    def get(name: str) -> Path:
        if name not in cache:
            dest = tmp_path_factory.mktemp(name) / name
            shutil.copytree(FIXTURES / name, dest)
            cache[name] = render(dest)
        return cache[name]
    return get


@pytest.fixture
def cuda_report(rendered) -> Path:
    return rendered("cuda_run")


@pytest.fixture
def cpu_report(rendered) -> Path:
    return rendered("cpu_run")


def _csv(report: Path, name: str = "results.csv") -> pd.DataFrame:
    return pd.read_csv(report / name, keep_default_na=True)


def test_committed_fixtures_are_what_the_generator_writes(tmp_path: Path) -> None:
    _generator().main(tmp_path)
    for path in FIXTURES.rglob("*"):
        if path.is_file() and path.suffix in (".jsonl", ".json"):
            fresh = tmp_path / path.relative_to(FIXTURES)
            assert fresh.read_bytes() == path.read_bytes(), f"{path} is stale: run make_fixtures.py"


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


def test_results_csv_has_one_row_per_cell_and_units_in_headers(cpu_report: Path) -> None:
    cells = _csv(cpu_report)
    records = [json.loads(ln) for ln in (FIXTURES / "cpu_run/results.jsonl").read_text().splitlines()]
    assert len(cells) == len({r["cell_id"] for r in records}) == 7
    for header in ("peak_mem_GiB", "peak_rss_GiB", "step_ms_median", "step_ms_iqr", "step_cv_%", "tokens_per_s",
                   "accuracy_%", "checkpoint_MiB"):
        assert header in cells.columns
    full = cells[cells["variant"] == "full"].iloc[0]
    assert full["peak_mem_GiB"] == pytest.approx(0.40, abs=1e-4)  # 0.40 * 2^30 bytes
    assert math.isnan(full["peak_alloc_GiB"])  # a CPU run has no CUDA counters
    assert cells[cells["variant"] == "lora-r16"].iloc[0]["status"] == "ok"


def test_memory_columns_are_gib_and_step_times_ms(cuda_report: Path) -> None:
    cells = _csv(cuda_report)
    rec = json.loads((FIXTURES / "cuda_run/results.jsonl").read_text().splitlines()[0])
    row = cells[cells["cell_id"] == rec["cell_id"]].iloc[0]
    assert row["peak_alloc_GiB"] == pytest.approx(rec["memory"]["peak_allocated_bytes"] / 2**30, abs=1e-4)
    assert row["nvml_device_peak_GiB"] == pytest.approx(rec["memory"]["nvml_device_peak_bytes"] / 2**30, abs=1e-4)
    assert row["step_ms_median"] == pytest.approx(rec["time"]["step_s_median"] * 1e3, abs=1e-3)
    assert row["accuracy_%"] == pytest.approx(100 * rec["quality"]["accuracy"])


def test_paged_optimizer_state_is_counted_in_the_headline_peak(cuda_report: Path) -> None:
    paged = _csv(cuda_report).set_index("variant").loc["lora-paged8bit"]
    assert paged["optimizer_managed_GiB"] > 0
    assert paged["peak_mem_GiB"] == pytest.approx(paged["peak_alloc_GiB"] + paged["optimizer_managed_GiB"], abs=1e-3)


def test_seed_groups_have_mean_and_t_interval(cuda_report: Path) -> None:
    groups = _csv(cuda_report, "groups.csv").set_index("group")
    accs = [86.0, 87.0, 85.0]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(accs) / math.sqrt(3)
    assert groups.loc["lora-r8", "accuracy_%"] == pytest.approx(86.0)
    assert groups.loc["lora-r8", "accuracy_%_ci95"] == pytest.approx(half, abs=1e-3)
    assert groups.loc["lora-r8", "seeds"] == 3
    assert math.isnan(groups.loc["lora-paged8bit", "accuracy_%_ci95"])  # one seed: no interval
    assert groups.loc["full / batch_size=64", "status"] == "oom 1/1"


def test_step_time_cv_per_cell(cuda_report: Path) -> None:
    cells = _csv(cuda_report).set_index("cell_id")
    rec = json.loads((FIXTURES / "cuda_run/results.jsonl").read_text().splitlines()[1])
    steps = rec["time"]["step_s"]
    expected = 100 * statistics.stdev(steps) / statistics.fmean(steps)
    assert cells.loc[rec["cell_id"], "step_cv_%"] == pytest.approx(expected, abs=1e-3)


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
def test_pareto_front_is_exactly_the_undominated_points(points: list[tuple[float, float]]) -> None:
    front = report_data.pareto_front(points)
    def dominates(a, b) -> bool:
        return a[0] <= b[0] and a[1] >= b[1] and a != b
    for i in front:
        assert not any(dominates(p, points[i]) for p in points)
    for i, p in enumerate(points):
        if i not in front:
            assert any(dominates(points[j], p) or points[j] == p for j in front)
    xs = [points[i][0] for i in front]
    assert xs == sorted(xs)


def test_every_chart_builder_returns_none_without_data() -> None:
    data = report_data.load(FIXTURES / "all_failed")
    colours = report_style.method_colours(data.cells["method"])
    for stem, build, _ in report_charts.CHARTS:
        assert build(data, colours) is None, stem


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


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(DROPPABLE), unique=True, max_size=8), st.integers(0, 7))
def test_charts_survive_records_missing_optional_fields(tmp_path: Path, dropped: list[str], which: int) -> None:
    lines = (FIXTURES / "cuda_run/results.jsonl").read_text().splitlines()
    records = [json.loads(ln) for ln in lines]
    for field in dropped:
        _drop(records[which], field)
    folder = tmp_path / f"run{abs(hash((tuple(dropped), which)))}"
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = report_data.load(folder)
    colours = report_style.method_colours(data.cells["method"])
    with report_style.style():
        for _, build, _ in report_charts.CHARTS:
            fig = build(data, colours)
            if fig is not None:  # building is where records are read; drawing is matplotlib's business
                plt.close(fig)


def test_tasks_and_models_get_their_own_panels(tmp_path: Path) -> None:
    records = [json.loads(ln) for ln in (FIXTURES / "cuda_run/results.jsonl").read_text().splitlines()]
    records[1].update(task="sst2", cell_id="other-task")  # accuracies of two tasks share no scale
    records[2].update(model="tiny-bert", cell_id="other-model")
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = report_data.load(tmp_path)
    colours = report_style.method_colours(data.cells["method"])
    with report_style.style():
        pareto = report_charts.pareto_chart(data, colours)
        loss = report_charts.loss_chart(data, colours)
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


def test_formats_limit_the_output(run) -> None:
    report = render(run("cpu_run"), formats=["md", "svg"])
    assert (report / "report.md").exists() and (report / "memory.svg").exists()
    assert not (report / "memory.png").exists() and not (report / "report.html").exists()
    assert not (report / "results.csv").exists()
    assert "(memory.svg)" in (report / "report.md").read_text()


def test_rendering_twice_gives_the_same_svg() -> None:
    data = report_data.load(FIXTURES / "cpu_run")
    colours = report_style.method_colours(data.cells["method"])
    texts = []
    with report_style.style():
        for _ in range(2):
            fig = report_charts.loss_chart(data, colours)
            texts.append(report_style.svg_text(fig))
            plt.close(fig)
    assert texts[0] == texts[1]
    assert "<metadata>" not in texts[0] and texts[0].startswith("<svg")


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


def test_html_is_self_contained(cuda_report: Path) -> None:
    page = (cuda_report / "report.html").read_text()
    assert page.count("<svg") == len(CHARTS)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for pattern in (r"<link\b", r"\bsrc\s*=", r"url\(\s*['\"]?https?:", r"@import"):
        assert not re.search(pattern, page), pattern
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert all(u.startswith(("http://www.w3.org/", "http://purl.org/dc/", "http://creativecommons.org/"))
               for u in urls), urls
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in page  # failed cell and reason
    assert "git_commit" in page and "0123456789abcdef" in page  # environment
    assert 'class="sortable"' in page


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (CI installs it)")
def test_html_runs_in_headless_chromium_without_console_errors(cuda_report: Path, tmp_path: Path) -> None:
    url = (cuda_report / "report.html").resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-report-ready="3"' in dom.stdout  # the script ran and wired all three sortable tables
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert not console, "\n".join(console)  # includes Content-Security-Policy violations

    shot = tmp_path / "shot.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = plt.imread(shot)
    assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.01, "the screenshot is blank"


def test_rendering_never_imports_torch_transformers_or_methods() -> None:
    code = ("import sys, bench.report, bench.compare; "
            "bad = [m for m in ('torch', 'transformers', 'methods') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
    for path in [*ROOT.glob("bench/report*.py"), ROOT / "bench/compare.py"]:
        source = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(torch|transformers|methods)\b", source, re.M), path



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
        fig = report_charts.pareto_chart(data, report_style.method_colours(data.cells["method"]))
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
