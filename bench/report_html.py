"""report.html: one self-contained page (inline SVG charts, inline CSS and JS, no external resources;
its Content-Security-Policy forbids loading any) with sortable tables, the failed cells and the
environment."""
from __future__ import annotations

import html
import json
import math
import re
from typing import Any, Sequence

import pandas as pd

from bench.report_data import DEFINITIONS, UNITS_NOTE, RunData, versions_line
from bench.report_tables import CELLS, SUMMARY, cells_frame, failed_frame, is_numeric_column, summary_frame, tracebacks

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; background: #fff; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 13px; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #e5e5e5; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { border-bottom: 2px solid #444; background: #f6f6f6; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
.status-fail { color: #B3001B; } .note { color: #555; }
figure { margin: 1rem 0 2rem; } figure svg { width: min(100%, 960px); height: auto; }
figcaption { color: #555; font-size: 13px; }
.scroll { overflow-x: auto; }
"""

# Click a header to sort by it (numbers by value, empty cells last); clicking again reverses.
SCRIPT = """
(function () {
  function key(td) {
    var v = td.getAttribute('data-v');
    if (v !== null) { return v === '' ? null : parseFloat(v); }
    return td.textContent.trim().toLowerCase();
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var c = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.title = 'Sort by this column';
      th.addEventListener('click', function () { sortBy(table, col, th); });
    });
  });
  document.documentElement.setAttribute('data-report-ready', String(tables.length));
})();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(shown: pd.DataFrame, bold: pd.DataFrame | None = None, raw: dict[str, Sequence[float]] | None = None,
          sortable: bool = True) -> str:
    """An HTML table of display strings; `raw` gives numbers to sort columns by, `bold` marks the best."""
    raw = raw or {}
    numeric = {c: is_numeric_column(shown[c]) or c in raw for c in shown.columns}
    if bold is not None:
        bold = bold.reindex(index=shown.index, columns=shown.columns, fill_value=False)
    head = "".join(f'<th class="num">{_esc(c)}</th>' if numeric[c] else f"<th>{_esc(c)}</th>" for c in shown.columns)
    rows = []
    for i in range(len(shown)):
        tds = []
        for j, col in enumerate(shown.columns):
            text = _esc(shown.iat[i, j])
            if bold is not None and bool(bold.iat[i, j]):
                text = f"<strong>{text}</strong>"
            attrs = ' class="num"' if numeric[col] else ""
            if col in raw:
                v = raw[col][i]
                attrs += f' data-v="{"" if v is None or math.isnan(v) else repr(float(v))}"'
            if col == "Status" and not re.fullmatch(r"ok( \d+/\d+)?", str(shown.iat[i, j])):
                attrs += ' data-failed="1"'
                text = f'<span class="status-fail">{text}</span>'
            tds.append(f"<td{attrs}>{text}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    cls = ' class="sortable"' if sortable else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def flatten(env: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested env.json as (dotted key, value) pairs."""
    if isinstance(env, dict):
        out: list[tuple[str, str]] = []
        for k, v in env.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    text = env if isinstance(env, str) else json.dumps(env, default=str)
    return [(prefix, text)]


def _summary_table(data: RunData) -> str:
    shown, bold = summary_frame(data)
    raw = {h: data.groups[m].tolist() for h, m, _ in SUMMARY if h in shown.columns}
    return table(shown, bold, raw)


def _cells_table(data: RunData) -> str:
    shown, bold = cells_frame(data)
    raw = {h: data.cells[c].tolist() for h, c, _, _ in CELLS if h in shown.columns}
    return table(shown, bold, raw)


def page(data: RunData, title: str, figures: Sequence[tuple[str, str]], skipped: Sequence[str]) -> str:
    """The whole page. `figures` are (caption, inline SVG); `skipped` says which charts were left out."""
    counts = ", ".join(f"{n} {s}" for s, n in data.cells["status"].value_counts().items()) or "no cells"
    parts = [f"<h1>{_esc(title)}</h1>", f"<p>{_esc(versions_line(data.env, data.records))}</p>",
             f"<p>{len(data.cells)} cells: {_esc(counts)}.</p>", "<h2>How each column is computed</h2>", "<ul>"]
    parts += [f"<li><strong>{_esc(name)}</strong>: {_esc(text)}</li>" for name, text in DEFINITIONS]
    parts += [f"<li><strong>Units</strong>: {_esc(UNITS_NOTE)}</li>", "</ul>"]
    if data.skipped_torn:
        parts.append('<p class="note">The last line of results.jsonl is torn and was skipped.</p>')
    if len(data.groups):
        parts += ["<h2>Summary (mean ± 95% CI over seeds; best in bold)</h2>", _summary_table(data),
                  "<h2>Cells</h2>", _cells_table(data)]
    failed = failed_frame(data, width=2000)
    parts.append("<h2>Failed cells</h2>")
    parts.append(table(failed) if len(failed) else "<p>None: every cell finished.</p>")
    for name, tb in tracebacks(data):
        parts.append(f"<details><summary>Traceback of {_esc(name)} (last frames; the whole one is in the "
                     f"cell's log)</summary><pre>{_esc(tb)}</pre></details>")
    parts.append("<h2>Charts</h2>")
    for caption, svg in figures:
        parts.append(f"<figure>{svg}<figcaption>{_esc(caption)}</figcaption></figure>")
    parts += [f'<p class="note">{_esc(line)}</p>' for line in skipped]
    parts.append("<h2>Environment</h2>")
    pairs = flatten(data.env)
    if pairs:
        env = pd.DataFrame({"Key": [k for k, _ in pairs], "Value": [v for _, v in pairs]})
        parts.append(table(env, sortable=False))
    else:
        parts.append("<p>No env.json in the run folder.</p>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
