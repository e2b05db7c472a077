"""The report as plain values: sections of text, tables and figures, rendered by :mod:`.html` and
:mod:`.markdown`.

Computing what to say (:mod:`bocb.report.sections`) is kept apart from how it looks, so both output
formats show the same numbers and a caller can append its own :class:`Section` (``extra_sections``
of :func:`bocb.report.build_report`). Text is plain: renderers escape it, so nothing in a caption
can inject markup.

Cell marks (:data:`MARKS`) name how a table cell is emphasised: ``best`` (bold, outlined, a star in
Markdown), ``top`` (bold), ``fail`` (grey, hatched; a cross in Markdown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

MARKS = ("", "best", "top", "fail")


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of already formatted strings; the index is shown as the first column.

    ``marks``: optional frame of the same shape with entries from :data:`MARKS`.
    """

    cells: pd.DataFrame
    caption: str = ""
    marks: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.marks is not None:
            if self.marks.shape != self.cells.shape:
                raise ValueError(f"table marks have shape {self.marks.shape}, cells {self.cells.shape}")
            bad = set(np.unique(self.marks.to_numpy(str))) - set(MARKS)
            if bad:
                raise ValueError(f"unknown table mark(s) {sorted(bad)}: valid: {MARKS}")


@dataclass(frozen=True)
class Plot:
    """A figure, saved as ``<name>.png`` / ``.svg`` next to the Markdown and embedded in the HTML."""

    figure: Figure
    name: str
    caption: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ValueError(f"plot name {self.name!r} must be letters, digits, '_' or '-' (it is a file name)")


Block = Text | Table | Plot


@dataclass(frozen=True)
class Section:
    """A titled part of the report: ``blocks`` in order, a short ``how_to_read`` note and the
    ``gap`` it addresses (a choice the paper leaves unstated, and the one made here), both optional."""

    title: str
    blocks: tuple[Block, ...] = field(default_factory=tuple)
    how_to_read: str = ""
    gap: str = ""

    @property
    def anchor(self) -> str:
        """An id for links: the title in lower case, runs of other characters as '-'."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def fmt(value: object, digits: int = 2) -> str:
    """A number with ``digits`` decimals ('–' for NaN/None, no '-0.00'); other values as str."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return "–"
        return f"{round(float(value), digits) + 0.0:.{digits}f}"
    return str(value)


def fmt_ci(lo: float, hi: float, digits: int = 2) -> str:
    """A confidence interval as '[lo, hi]'."""
    return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


def percent(value: float, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage string."""
    return "–" if value is None or np.isnan(value) else f"{fmt(100 * value, digits)} %"
