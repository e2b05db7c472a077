"""A BOCB study's report: one self-contained HTML page and a Markdown summary.

:func:`build_report` turns a result frame (and optionally the best hyper-parameters) into sections,
in this order: the caller's ``lead_sections`` (a study's report leads with the answer,
:mod:`~bocb.report.answer`); the data and its provenance; the failure rule and its counts; Table 1 (heat map and
marked table); the per-backbone summary; coupling beyond the paper (additive model, interaction
residuals, coupling and generality scores, agreement of optimizer orderings, with bootstrap CIs when
the results have seeds); hyper-parameter robustness; the optimizer ranking; the caller's
``extra_sections``; the paper's known gaps and where the report stands on each.

- :mod:`~bocb.report.document`: the sections as plain values (:class:`Section`, :class:`Text`,
  :class:`Table`, :class:`Plot`); build your own ``extra_sections`` from these.
- :mod:`~bocb.report.context`, :mod:`~bocb.report.accuracy`, :mod:`~bocb.report.coupling`,
  :mod:`~bocb.report.tuning`: what each section says.
- :mod:`~bocb.report.html`, :mod:`~bocb.report.markdown`: how it is written out.

The statistics are :mod:`bocb.analysis`'s; this package only arranges and explains them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from bocb import __version__
from bocb.analysis import Results
from bocb.analysis.ranking import DEFAULT_VARIANT
from bocb.report.plots import save_figure
from bocb.report.accuracy import rule_section, summary_section, table_section
from bocb.report.context import ReportAnalysis, data_section, gaps_section
from bocb.report.coupling import coupling_section
from bocb.report.document import Plot, Section, Table, Text
from bocb.report.html import render_html
from bocb.report.markdown import render_markdown
from bocb.report.tuning import ranking_section, robustness_section

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
FIGURE_DIR = "figures"

__all__ = ["Plot", "ReportAnalysis", "Section", "Table", "Text", "build_report", "report_sections"]


def report_sections(
    results: pd.DataFrame | Results | ReportAnalysis,
    *,
    hparams: pd.DataFrame | None = None,
    rule_name: str | None = None,
    gamma: float | None = None,
    ranking: str = DEFAULT_VARIANT,
    cost: pd.DataFrame | None = None,
    provenance: Mapping[str, object],
    bootstrap: bool = True,
    n_resamples: int = 1000,
    extra_sections: Sequence[Section] | None = None,
    lead_sections: Sequence[Section] | None = None,
) -> list[Section]:
    """The report's sections, in order, without writing anything (arguments as :func:`build_report`)."""
    analysis = _analysis(results, rule_name, gamma)
    robustness = robustness_section(analysis, hparams)
    sections = [
        *(lead_sections or ()),
        data_section(analysis, provenance),
        rule_section(analysis),
        table_section(analysis),
        summary_section(analysis),
        coupling_section(analysis, bootstrap, n_resamples),
        robustness.section,
        ranking_section(analysis, robustness, ranking, cost),
        *(extra_sections or ()),
    ]
    sections.append(gaps_section(provenance, analysis.chosen, analysis.results.replicates,
                                 robustness.distances is not None,
                                 [s.title for s in sections if any(isinstance(b, Plot) for b in s.blocks)]))
    return sections


def _analysis(results: pd.DataFrame | Results | ReportAnalysis, rule_name: str | None,
              gamma: float | None) -> ReportAnalysis:
    if not isinstance(results, ReportAnalysis):
        return ReportAnalysis.of(results, rule_name, gamma)
    if rule_name is not None or gamma is not None:
        raise ValueError("the failure rule is given twice: a ReportAnalysis carries its own rule; "
                         "leave rule_name and gamma unset")
    return results


def build_report(
    results: pd.DataFrame | Results | ReportAnalysis,
    out_dir: Path,
    *,
    title: str,
    hparams: pd.DataFrame | None = None,
    rule_name: str | None = None,
    gamma: float | None = None,
    ranking: str = DEFAULT_VARIANT,
    cost: pd.DataFrame | None = None,
    provenance: Mapping[str, object],
    bootstrap: bool = True,
    n_resamples: int = 1000,
    extra_sections: list[Section] | None = None,
    lead_sections: list[Section] | None = None,
    banner: str = "",
) -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (figures in ``figures/``) into ``out_dir``.

    ``results``: a result frame (:func:`bocb.analysis.load_results`), or its
    :class:`~bocb.analysis.Results` or :class:`ReportAnalysis` when the caller already built one
    (its sections then reuse it; a ``ReportAnalysis`` carries the rule, so ``rule_name``/``gamma``
    stay None); ``hparams``: best settings per
    pair for robustness (None: taken from ``results`` when it has lr/weight_decay, else skipped);
    ``rule_name``/``gamma``: the failure rule (:func:`bocb.analysis.rule`; None: the shared
    ``DEFAULT_RULE``); ``ranking``: the ranking variant (``paper`` or ``continuous``,
    :mod:`bocb.analysis.ranking`); ``cost``: :func:`bocb.analysis.cost_table` of the trials' measured
    time and memory (None: the ranking states cost as missing); ``provenance``: shown as
    given, with source, study, trials, epoch, code_version and date always listed ("not given" when
    missing); ``bootstrap``/``n_resamples``: CIs over seeds, when the results have seeds;
    ``extra_sections``: appended before the closing 'Known gaps' section; ``lead_sections``: put
    before everything else (the answer); ``banner``: a warning shown above the contents (a toy
    budget), empty for none.

    Returns ``{"html": ..., "markdown": ..., "<plot name>": <png path>, ...}``; each PNG has an SVG
    beside it. Existing files of the same names are overwritten.
    """
    analysis = _analysis(results, rule_name, gamma)
    sections = report_sections(
        analysis, hparams=hparams, ranking=ranking, cost=cost, provenance=provenance,
        bootstrap=bootstrap, n_resamples=n_resamples, extra_sections=extra_sections, lead_sections=lead_sections,
    )
    plots = [block for s in sections for block in s.blocks if isinstance(block, Plot)]
    names = [p.name for p in plots]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"plot names must be unique in a report (they are file names): repeated: {clash}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for plot in plots:
        png, _ = save_figure(plot.figure, out_dir / FIGURE_DIR / plot.name)
        paths[plot.name] = png
    subtitle = (f"Backbone-optimizer coupling report · failure rule '{analysis.chosen.label}' · "
                f"ranking '{ranking}'")
    footer = (f"Generated by bocb {__version__}. Every method, parameter and choice behind a number is "
              "stated in the section that shows it ('How to read this'); every statistic is computed by "
              "bocb.analysis; figures are also saved as PNG and SVG.")
    html = render_html(title, sections, {n: p.read_bytes() for n, p in paths.items()}, subtitle, footer, banner)
    markdown = render_markdown(title, sections, {n: f"{FIGURE_DIR}/{p.name}" for n, p in paths.items()},
                               subtitle, footer, banner)
    html_path, md_path = out_dir / HTML_NAME, out_dir / MARKDOWN_NAME
    html_path.write_text(html, encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return {"html": html_path, "markdown": md_path, **paths}
