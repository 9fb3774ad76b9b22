"""`bench.report.html`: the page is self-contained and runs in a headless browser."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from bench.report import charts as report_charts

CHARTS = [chart.stem for chart in report_charts.CHARTS]
CHROMIUM = Path("/usr/bin/chromium")


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
