"""Chart style shared by every figure: one fixed colour per method, fonts, and saving.

Colours come from the Okabe-Ito palette, which stays distinguishable under the common forms of
colour blindness. A method keeps its colour across every chart of a report and, as long as two
methods do not want the same slot, across reports too: its preferred slot is a hash of its name.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import re
import textwrap
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # rendering must work on headless CI machines

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# Okabe-Ito first; past seven methods, Paul Tol's "muted" scheme (also designed to survive colour
# blindness), then Okabe-Ito's yellow (hard to see on white) and grey. Ten registered methods must
# never share a colour.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"]
OVERFLOW = ["#332288", "#117733", "#882255", "#44AA99", "#999933", "#AA4499", "#DDCC77", "#88CCEE",
            "#CC6677", "#F0E442", "#999999"]

RC = {
    "pdf.fonttype": 42,  # TrueType in PDFs: journals reject Type 3 fonts
    "ps.fonttype": 42,
    "svg.fonttype": "none",  # text stays text, so the HTML report is searchable
    "svg.hashsalt": "ft-bench",  # stable element ids: re-rendering the same data gives the same file
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "figure.dpi": 100,
    "savefig.dpi": 300,
}
CHART_FORMATS = ("png", "svg", "pdf")
GREY = "#555555"  # text and marks that belong to no method
GIB_LABEL = "GiB (1 GiB = 2$^{30}$ bytes)"
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """A fixed colour per method: the slot its name hashes to, or the next free one."""
    colours: dict[str, str] = {}
    taken: set[int] = set()
    for method in sorted(set(methods)):
        if len(taken) >= len(OKABE_ITO):
            colours[method] = OVERFLOW[(len(colours) - len(OKABE_ITO)) % len(OVERFLOW)]
            continue
        slot = int(hashlib.sha256(method.encode()).hexdigest(), 16) % len(OKABE_ITO)
        while slot in taken:
            slot = (slot + 1) % len(OKABE_ITO)
        taken.add(slot)
        colours[method] = OKABE_ITO[slot]
    return colours


def wrap(label: str, width: int = 36) -> str:
    """Long labels over several lines, so they never squeeze the plot away."""
    return textwrap.fill(label, width, break_on_hyphens=False)


def tint(colour: str, amount: float) -> tuple[float, float, float]:
    """`colour` mixed with white: 0 keeps it, 1 gives white."""
    r, g, b = matplotlib.colors.to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def style() -> contextlib.AbstractContextManager[None]:
    """The rc settings above; build *and* save figures inside it (text takes its size when made)."""
    return plt.rc_context(RC)


def new_figure(width_in: float, height_in: float, ncols: int = 1, nrows: int = 1,
               **kwargs: object) -> tuple[Figure, list[plt.Axes]]:
    """A figure and its axes, row by row."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width_in, height_in), squeeze=False, layout="constrained",
                             **kwargs)
    return fig, [ax for row in axes for ax in row]


def panels(keys: Sequence[str], title: str, panel_in: tuple[float, float] = (3.2, 2.6),
           single_in: tuple[float, float] = (6.5, 3.5)) -> tuple[Figure, dict[str, plt.Axes]]:
    """One axes per key, up to three a row, each titled with its key where there are several."""
    if len(keys) == 1:
        fig, (ax,) = new_figure(*single_in)
        ax.set_title(title)
        return fig, {keys[0]: ax}
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = new_figure(panel_in[0] * ncols, panel_in[1] * nrows, ncols, nrows)
    for ax, key in zip(axes, keys):
        ax.set_title(key, fontsize=8)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    return fig, dict(zip(keys, axes))


def figure_legend(fig: Figure, axes: Iterable[plt.Axes]) -> None:
    """One legend for several axes; entries named alike appear once."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:  # below the panels: beside them it would collide with the figure title
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", frameon=False,
                   ncols=min(3, len(entries)))


def save(fig: Figure, stem: Path, formats: Sequence[str]) -> dict[str, Path]:
    """Write `stem.<fmt>` for each chart format asked for; returns the written paths."""
    written = {}
    for fmt in formats:
        if fmt in CHART_FORMATS:
            path = stem.with_suffix(f".{fmt}")
            fig.savefig(path, format=fmt, bbox_inches="tight", metadata=_METADATA[fmt])
            written[fmt] = path
    return written


def svg_text(fig: Figure, written: Path | None = None) -> str:
    """The figure as an SVG element for inlining into HTML: no XML prolog, DOCTYPE or RDF metadata.
    Reads `written` (the figure's SVG file) where given rather than rendering again."""
    if written is not None:
        text = written.read_text(encoding="utf-8")
    else:
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata=_METADATA["svg"])
        text = buf.getvalue()
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    return text[text.index("<svg"):]


def legend_outside(ax: plt.Axes, **kwargs: object) -> None:
    """A legend to the right of the axes, so it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  frameon=False, **kwargs)
