"""The blocks a report is made of. bench/report/sections.py says what the report contains, once, in
these terms; each renderer (bench/report/markdown.py, bench/report/html.py) only decides how a
block looks in its format."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import pandas as pd


@dataclass
class Text:
    """A paragraph; a note is a remark about the report itself (shown muted where the format can)."""

    text: str
    note: bool = False


@dataclass
class Terms:
    """A list of "term: explanation", the term in bold."""

    items: Sequence[tuple[str, str]]


@dataclass
class Bullets:
    lines: Sequence[str]
    note: bool = False


@dataclass
class Pairs:
    """Keys and values (the environment): a list in Markdown, a two-column table in HTML."""

    items: Sequence[tuple[str, str]]


@dataclass
class Table:
    """Display strings; `bold` marks the best values, `raw` gives the numbers a column sorts by."""

    shown: pd.DataFrame
    bold: pd.DataFrame | None = None
    raw: dict[str, list[float]] = field(default_factory=dict)
    sortable: bool = True


@dataclass
class Code:
    """Preformatted text under a label (a traceback under its cell's name)."""

    label: str
    text: str


@dataclass
class Figure:
    """A drawn chart: its files in the report folder (format -> file name) and its inline SVG
    (None unless the HTML page was asked for)."""

    stem: str
    caption: str
    files: dict[str, str]
    svg: str | None = None


Block = Union[Text, Terms, Bullets, Pairs, Table, Code, Figure]


@dataclass
class Section:
    """A titled part of the report (untitled: paragraphs between sections). `empty` is what a
    renderer shows when none of the blocks has anything to show in its format."""

    title: str | None
    blocks: list[Block]
    empty: str = ""


@dataclass
class Document:
    title: str
    sections: list[Section]
