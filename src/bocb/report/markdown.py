"""Render a report's sections as Markdown (GitHub-flavoured tables), figures as files beside it.

Marks become text, since Markdown has no cell styles: ``best`` -> ``**x** ★``, ``top`` -> ``**x**``,
``fail`` -> ``x ✗``. Pipes in cell text are escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bocb.report.document import Plot, Section, Table, Text

MARK_TEXT = {"": "{}", "best": "**{}** ★", "top": "**{}**", "fail": "{} ✗"}


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> str:
    cells, marks = table.cells, table.marks
    header = [str(cells.index.name or ""), *map(str, cells.columns)]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for i, (label, row) in enumerate(cells.iterrows()):
        values = [
            MARK_TEXT["" if marks is None else str(marks.iat[i, j])].format(_cell(v))
            for j, v in enumerate(row)
        ]
        lines.append("| " + " | ".join([_cell(label), *values]) + " |")
    caption = f"*{table.caption}*\n\n" if table.caption else ""
    return caption + "\n".join(lines)


def render_markdown(
    title: str, sections: Sequence[Section], figures: Mapping[str, str], subtitle: str = "", footer: str = "",
    banner: str = "",
) -> str:
    """The whole document. ``figures`` maps each :class:`Plot`'s name to its PNG path relative to
    the Markdown file."""
    out = [f"# {title}", ""]
    if subtitle:
        out += [subtitle, ""]
    if banner:
        out += [f"> **{banner}**", ""]
    for number, section in enumerate(sections, start=1):
        out += [f"## {number}. {section.title}", ""]
        if section.how_to_read:
            out += [f"> **How to read this.** {section.how_to_read}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                out.append(block.text)
            elif isinstance(block, Table):
                out.append(_table(block))
            elif isinstance(block, Plot):
                out.append(f"![{block.name}]({figures[block.name]})\n\n*{block.caption}*")
            else:
                raise TypeError(f"cannot render report block {type(block).__name__}: valid: Text, Table, Plot")
            out.append("")
        if section.gap:
            out += [f"*Gap addressed.* {section.gap}", ""]
    if footer:
        out += ["---", footer, ""]
    return "\n".join(out)
