"""The HTML/Markdown report: built from the paper's tables (no seeds) and a small seeded table."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bocb import paper
from bocb.report import Section, Table, Text, build_report
from cli_inproc import bocb

PROVENANCE = {
    "source": "Li et al. 2024, arXiv 2410.06373v1, Table 1 and Tables A4/A5",
    "study": "paper CIFAR-100",
    "trials": "400 pairs, one published value each",
    "epoch": "not stated by the paper",
    "code_version": "test",
    "date": "2024-10",
}


class Page(HTMLParser):
    """Collects images, tables (rows with cells), sections and visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.tables: list[dict[str, int]] = []
        self.sections: list[str] = []
        self.text: list[str] = []
        self._open: list[dict[str, int]] = []
        self._row_cells = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "section":
            self.sections.append(attrs.get("id", ""))
        if tag == "table":
            self._open.append({"rows": 0, "cells": 0})
        if tag == "tr":
            self._row_cells = 0
        if tag in ("td", "th") and self._open:
            self._open[-1]["cells"] += 1
            self._row_cells += 1

    def handle_endtag(self, tag):
        if tag == "tr" and self._open and self._row_cells:
            self._open[-1]["rows"] += 1
        if tag == "table" and self._open:
            self.tables.append(self._open.pop())

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> tuple[Page, str]:
    page = Page()
    html = path.read_text(encoding="utf-8")
    page.feed(html)
    return page, " ".join(" ".join(page.text).split())


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("paper_report")
    extra = [Section("Notes from the study", (Text("A caller's own section."),
                                              Table(pd.DataFrame({"n": ["1"]}, index=["x"]))))]
    return build_report(
        paper.top1(), out, title="BOCB paper, CIFAR-100", hparams=paper.best_hparams(),
        provenance=PROVENANCE, extra_sections=extra,
    )


@pytest.mark.slow
def test_paper_report_images_are_embedded_pngs(paper_report):
    page, _ = parse(paper_report["html"])
    assert len(page.images) == 4
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True))) as image:
            assert image.format == "PNG" and image.width > 500
    # Self-contained: nothing to fetch, links only within the page.
    assert all(link.startswith("#") for link in page.links)
    html = paper_report["html"].read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<script" not in html


@pytest.mark.slow
def test_paper_report_tables_and_order(paper_report):
    page, text = parse(paper_report["html"])
    assert len(page.tables) >= 10
    assert all(t["rows"] >= 2 and t["cells"] >= 2 for t in page.tables)
    assert max(t["rows"] for t in page.tables) == 21  # Table 1: header + 20 optimizers
    assert page.sections == [
        "the-data", "failure-rule", "table-1-top-1-per-backbone-and-optimizer", "per-backbone-summary",
        "coupling-beyond-the-paper", "hyper-parameter-robustness", "optimizer-ranking",
        "notes-from-the-study", "known-gaps",
    ]
    for value in PROVENANCE.values():
        assert value in text


@pytest.mark.slow
def test_paper_report_states_rule_counts_and_missing_cis(paper_report):
    _, text = parse(paper_report["html"])
    assert "Failure rule 'fitted (gamma 2)'" in text
    assert "r < median(R) - max(0.75 x IQR(R), 2)" in text
    assert "floor (gamma)" in text and "numpy 'linear'" in text
    assert "It flags 48 of 400 pairs" in text
    assert "48 flagged here too, 2 missed, 0 flagged here only" in text
    assert "No seeds, no CIs" in text and "95 % CI" not in text
    assert "median polish" in text and "Kendall tau-b" in text
    assert "Missing, so left out: cost (no measured time or memory)" in text
    assert "Variant 'paper', failure rule 'fitted (gamma 2)'" in text
    # Robustness in decades, compared with the paper's Fig. 5 reading; ranking with its Table 4.
    assert "in decades" in text and "Against the paper's reading of its Fig. 5" in text
    assert "Spearman rho 0.66, Kendall tau-b 0.60" in text
    assert "Spearman rho 0.87, Kendall tau-b 0.73" in text
    # The report stands on its own: it cites no document outside the package.
    assert "method" + ".md" not in paper_report["html"].read_text(encoding="utf-8")


@pytest.mark.slow
def test_paper_report_markdown(paper_report):
    md = paper_report["markdown"]
    assert md.name == "report.md"
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# BOCB paper, CIFAR-100")
    assert "**87.51** ★" in text and "33.26 ✗" in text
    for name in ("table1_heatmap", "violins_per_backbone", "interaction_residuals", "hparam_distances"):
        assert f"](figures/{name}.png)" in text
        assert paper_report[name].is_file() and paper_report[name].with_suffix(".svg").is_file()


def seeded() -> pd.DataFrame:
    """4 backbones x 5 optimizers x 3 seeds, one optimizer failing on two backbones."""
    rng = np.random.default_rng(0)
    backbones, optimizers = ["R-50", "DeiT-S", "CNX-T", "VGG-13"], ["SGD-M", "AdamW", "LAMB", "Adan", "AdaGrad"]
    rows = []
    for b_i, backbone in enumerate(backbones):
        for o_i, optimizer in enumerate(optimizers):
            level = 75 + b_i + 0.5 * o_i - (25 if optimizer == "AdaGrad" and b_i < 2 else 0)
            rows += [(optimizer, backbone, seed, level + rng.normal(0, 0.4)) for seed in range(3)]
    return pd.DataFrame(rows, columns=["optimizer", "backbone", "seed", "top1"])


@pytest.mark.slow
def test_seeded_report_has_cis(tmp_path):
    paths = build_report(seeded(), tmp_path, title="demo", hparams=None, rule_name="paper", gamma=1.5,
                         provenance={"study": "demo"}, n_resamples=20)
    page, text = parse(paths["html"])
    assert "No seeds, no CIs" not in text
    assert "95 % percentile bootstrap over seeds, 20 resamples" in text
    assert "95 % CI" in text and "effect 95 % CI" in text
    assert "r < max(R) - min(IQR(R), 1.5)" in text
    assert "seeds per pair (best setting) 3" in text
    assert "robustness is not assessed" in text
    assert "not given" in text  # the provenance keys the caller left out
    assert len(page.images) == 3  # no hyper-parameters, no box plots
    assert all(t["rows"] >= 2 for t in page.tables)
    assert paths["markdown"].is_file()


@pytest.mark.slow
def test_seeded_report_without_bootstrap_says_so(tmp_path):
    paths = build_report(seeded(), tmp_path, title="demo", provenance={}, bootstrap=False)
    _, text = parse(paths["html"])
    assert "confidence intervals were not computed (bootstrap off)" in text



@pytest.mark.slow
def test_cli_report_on_a_study_in_the_store(tmp_path):
    """`bocb report STUDY --store` reads the store (never the trainer) and names left-out trials."""
    from bocb.store import SQLiteStore
    from stores import study_in_store, trial_spec

    study_file, study, store_path = study_in_store(tmp_path, "s", ["R-50", "CNX-T"], ["SGD-M", "AdamW", "LAMB"])
    pairs = [(b, o) for b in ("R-50", "CNX-T") for o in ("SGD-M", "AdamW", "LAMB")]
    with SQLiteStore(store_path) as store:
        store.add_trials(study.study_id, [(f"t{i}", trial_spec(b, o)) for i, (b, o) in enumerate(pairs)])
        for i in range(len(pairs)):
            tid, _ = store.claim("r", 60, study.study_id)
            failed = i == len(pairs) - 1
            store.finish(tid, "r", {"status": "failed" if failed else "done", "final_top1": 40.0 + 3 * i,
                                    "best_top1": 41.0 + 3 * i, "epochs": [],
                                    "error": "boom" if failed else None, "code_version": "test"})
    out = tmp_path / "report"
    proc = bocb("report", study_file, "--store", store_path, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (out / "report.html").read_text()
    assert "Trials that are not results" in html and "boom" in html
    assert "final-epoch test top-1" in html
