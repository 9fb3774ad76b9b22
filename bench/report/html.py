"""report.html: the report's document (bench/report/sections.py) as one self-contained page: inline
SVG charts, inline CSS and JS, no external resources (its Content-Security-Policy forbids loading
any), sortable tables."""
from __future__ import annotations

import html
import math
import re
from typing import Any, Sequence

import pandas as pd

from bench.report.document import Block, Bullets, Code, Document, Figure, Pairs, Section, Table, Terms, Text
from bench.report.tables import is_numeric_column

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


def _list(items: Sequence[str], note: bool = False) -> str:
    return "\n".join(['<ul class="note">' if note else "<ul>", *(f"<li>{i}</li>" for i in items), "</ul>"])


def block(b: Block) -> str:
    match b:
        case Text():
            return f'<p class="note">{_esc(b.text)}</p>' if b.note else f"<p>{_esc(b.text)}</p>"
        case Terms():
            return _list([f"<strong>{_esc(term)}</strong>: {_esc(text)}" for term, text in b.items])
        case Bullets():
            return _list([_esc(line) for line in b.lines], b.note)
        case Pairs():
            shown = pd.DataFrame({"Key": [k for k, _ in b.items], "Value": [v for _, v in b.items]})
            return table(shown, sortable=False)
        case Table():
            return table(b.shown, b.bold, b.raw, b.sortable)
        case Code():
            return f"<details><summary>{_esc(b.label)}</summary><pre>{_esc(b.text)}</pre></details>"
        case Figure():
            return f"<figure>{b.svg}<figcaption>{_esc(b.caption)}</figcaption></figure>" if b.svg else ""
    raise TypeError(f"no HTML for {type(b).__name__}")


def section(s: Section) -> list[str]:
    parts = [t for t in map(block, s.blocks) if t] or ([block(Text(s.empty))] if s.empty else [])
    return ([f"<h2>{_esc(s.title)}</h2>"] if s.title else []) + parts


def render(doc: Document) -> str:
    """The whole page."""
    body = "\n".join([f"<h1>{_esc(doc.title)}</h1>", *(p for s in doc.sections for p in section(s))])
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(doc.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
