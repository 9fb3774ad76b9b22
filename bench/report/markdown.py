"""report.md: the report's document (bench/report/sections.py) in GitHub-flavoured Markdown."""
from __future__ import annotations

import pandas as pd

from bench.report.document import Block, Bullets, Code, Document, Figure, Pairs, Section, Table, Terms, Text
from bench.report.tables import DASH, cut, is_numeric_column

CELL_CHARS = 300  # a table row is one line: long free text (a failure's reason) is cut


def md_table(shown: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """A GitHub-flavoured Markdown table of strings; `bold` marks cells to wrap in **."""
    def cell(value: object, strong: bool) -> str:
        text = cut(str(value), CELL_CHARS).replace("|", "\\|").replace("\n", " ")
        return f"**{text}**" if strong and text != DASH else text
    head = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "|" + "|".join("---:" if is_numeric_column(shown[c]) else "---" for c in shown.columns) + "|"
    if bold is not None:
        bold = bold.reindex(index=shown.index, columns=shown.columns, fill_value=False)
    body = []
    for i in range(len(shown)):
        flags = [bool(bold.iat[i, j]) if bold is not None else False for j in range(shown.shape[1])]
        body.append("| " + " | ".join(cell(v, f) for v, f in zip(shown.iloc[i], flags)) + " |")
    return "\n".join([head, rule, *body])


def _figure(fig: Figure) -> str:
    """The chart's image (PNG where written, else SVG, else the first file) and links to every file;
    nothing where no chart file was asked for."""
    if not fig.files:
        return ""
    shown = fig.files.get("png") or fig.files.get("svg") or next(iter(fig.files.values()))
    links = ", ".join(f"[{fmt.upper()}]({name})" for fmt, name in fig.files.items())
    return f"![{fig.stem}]({shown})\n\n{fig.caption} ({links})"


def block(b: Block) -> str:
    match b:
        case Text():
            return b.text
        case Terms():
            return "\n".join(f"- **{term}**: {text}" for term, text in b.items)
        case Bullets():
            return "\n".join(f"- {line}" for line in b.lines)
        case Pairs():
            return "\n".join(f"- {key}: {value}" for key, value in b.items)
        case Table():
            return md_table(b.shown, b.bold)
        case Code():
            return f"{b.label}:\n\n```\n{b.text}\n```"
        case Figure():
            return _figure(b)
    raise TypeError(f"no Markdown for {type(b).__name__}")


def section(s: Section) -> str:
    texts = [t for t in map(block, s.blocks) if t] or ([s.empty] if s.empty else [])
    head = f"## {s.title}\n\n" if s.title else ""
    return head + "\n\n".join(texts) + "\n"


def render(doc: Document) -> str:
    return f"# {doc.title}\n\n" + "\n".join(section(s) for s in doc.sections)
