"""Render a report's sections as ONE self-contained HTML page.

Self-contained means: CSS inline in a ``<style>`` element, every image a ``data:image/png;base64``
URI, no scripts, no fonts or links to fetch; the file opens offline and can be mailed as is. All
text is escaped (:func:`html.escape`), so names in the results cannot inject markup.

Images are shown at their physical size (figure inches x 96 CSS px) but never wider than the page;
the PNGs are 150 dpi, so they stay sharp on high-density screens and when zoomed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from html import escape

from bocb.analysis.summary import TOP_K
from bocb.report.document import Plot, Section, Table, Text

CSS_PX_PER_INCH = 96
WIDE_COLUMNS = 12  # above this, a table is set compact so the paper's 20 backbones fit a laptop screen
NUMBER = re.compile(r"^[-+−]?\d[\d.,]*(e[-+]?\d+)?( %)?$|^\[.*\]$|^–$")

STYLE = """
:root { --ink: #1a1a1a; --muted: #5a5a5a; --rule: #d8d8d8; --accent: #1f5f99; --note: #f3f7fb; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1480px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.8em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.35em; margin: 2.2em 0 0.5em; padding-bottom: 0.2em; border-bottom: 2px solid var(--rule); }
p { margin: 0.6em 0; max-width: 60em; }
.subtitle { color: var(--muted); margin-top: 0; }
nav ol { columns: 2; max-width: 44em; padding-left: 1.4em; }
nav a, a { color: var(--accent); }
.read { background: var(--note); border-left: 4px solid var(--accent); padding: 0.5em 0.9em;
  max-width: 60em; margin: 0.8em 0; }
.gap { color: var(--muted); font-size: 0.92em; max-width: 60em; }
figure { margin: 1.2em 0; }
figcaption { color: var(--muted); font-size: 0.9em; margin: 0.35em 0; max-width: 60em; }
img { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--rule); text-align: left; white-space: nowrap; }
thead th { background: #f4f4f4; border-bottom: 2px solid #bbb; position: sticky; top: 0; }
tbody th { font-weight: 600; }
td.num { text-align: right; }
table.wide { font-size: 12px; }
table.wide th, table.wide td { padding: 2px 4px; }
td.wrap { white-space: normal; min-width: 16em; }
tbody tr:hover { background: #fafafa; }
.top { font-weight: 700; }
.best { font-weight: 700; outline: 2px solid #000; outline-offset: -3px; }
.fail { color: #555;
  background: repeating-linear-gradient(135deg, #e6e6e6 0 3px, #f7f7f7 3px 7px); }
.legend { margin: 0.3em 0; font-size: 0.88em; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 8px; border: 1px solid var(--rule); }
.banner { background: #fff4e0; border: 2px solid #d08a00; padding: 0.7em 1em; max-width: 60em;
  margin: 1em 0; font-weight: 600; }
footer { margin-top: 3em; color: var(--muted); font-size: 0.85em; }
"""


def _table(table: Table) -> str:
    cells, marks = table.cells, table.marks
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cells.columns)
    index_name = escape(str(cells.index.name or ""))
    # Right-align a column only when every cell in it is a number: mixed columns (a key/value
    # table) read better ragged-right than zig-zagging.
    numeric = [bool(cells[c].map(lambda v: bool(NUMBER.match(str(v)))).all()) for c in cells.columns]
    rows = []
    for i, (label, row) in enumerate(cells.iterrows()):
        tds = []
        for j, value in enumerate(row):
            text = str(value)
            classes = []
            if numeric[j]:
                classes.append("num")
            elif len(text) > 40:
                classes.append("wrap")
            mark = "" if marks is None else str(marks.iat[i, j])
            if mark:
                classes.append(mark)
            attr = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{attr}>{escape(text)}</td>")
        rows.append(f"<tr><th>{escape(str(label))}</th>{''.join(tds)}</tr>")
    caption = f"<figcaption>{escape(table.caption)}</figcaption>" if table.caption else ""
    legend = ""
    if marks is not None:
        legend = ('<div class="legend"><span class="best">best</span><span class="top">top 4</span>'
                  '<span class="fail">flagged</span></div>').replace("top 4", f"top {TOP_K}")
    wide = ' class="wide"' if cells.shape[1] > WIDE_COLUMNS else ""
    return (f'<figure class="table">{caption}{legend}<div class="scroll"><table{wide}><thead><tr><th>{index_name}</th>'
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></figure>")


def _plot(plot: Plot, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    width_in, _ = plot.figure.get_size_inches()
    width = round(width_in * CSS_PX_PER_INCH)
    caption = f"<figcaption>{escape(plot.caption)}</figcaption>" if plot.caption else ""
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(plot.caption or plot.name)}" '
            f'style="width: {width}px">{caption}</figure>')


def _section(number: int, section: Section, images: Mapping[str, bytes]) -> str:
    parts = [f'<section id="{section.anchor}"><h2>{number}. {escape(section.title)}</h2>']
    if section.how_to_read:
        parts.append(f'<p class="read"><strong>How to read this.</strong> {escape(section.how_to_read)}</p>')
    for block in section.blocks:
        if isinstance(block, Text):
            parts.append(f"<p>{escape(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append(_table(block))
        elif isinstance(block, Plot):
            parts.append(_plot(block, images[block.name]))
        else:
            raise TypeError(f"cannot render report block {type(block).__name__}: valid: Text, Table, Plot")
    if section.gap:
        parts.append(f'<p class="gap"><strong>Gap addressed.</strong> {escape(section.gap)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_html(
    title: str, sections: Sequence[Section], images: Mapping[str, bytes], subtitle: str = "", footer: str = "",
    banner: str = "",
) -> str:
    """The whole page. ``images`` maps each :class:`Plot`'s name to its PNG bytes; ``banner``, when
    given, stands between the title and the contents."""
    toc = "".join(f'<li><a href="#{s.anchor}">{escape(s.title)}</a></li>' for s in sections)
    body = "\n".join(_section(i, s, images) for i, s in enumerate(sections, start=1))
    sub = f'<p class="subtitle">{escape(subtitle)}</p>' if subtitle else ""
    foot = f"<footer>{escape(footer)}</footer>" if footer else ""
    if banner:
        sub += f'\n<p class="banner" role="note">{escape(banner)}</p>'
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n{sub}\n<nav><ol>{toc}</ol></nav>\n{body}\n{foot}\n</main>\n</body>\n</html>\n"
    )
