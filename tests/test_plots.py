"""The analysis figures on the paper's Table 1 and a demo-sized table: files written, PNG sane."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from bocb import paper
from bocb.analysis import fit_additive, flag, hparam_distances
from bocb.report.plots import (
    DPI,
    heatmap_table,
    hparam_boxplots,
    interaction_heatmap,
    save_figure,
    violins_per_backbone,
)


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return paper.top1()


def demo() -> pd.DataFrame:
    """4 backbones x 6 optimizers, one optimizer collapsing on three backbones."""
    rng = np.random.default_rng(1)
    backbones = ["R-18", "ViT-T", "CNX-A", "MobV3"]
    optimizers = ["SGD-M", "AdamW", "LAMB", "LION", "Adan", "AdaGrad"]
    rows = [(o, b, 70 + rng.normal(0, 2) - (30 if o == "AdaGrad" and b != "MobV3" else 0))
            for b in backbones for o in optimizers]
    return pd.DataFrame(rows, columns=["optimizer", "backbone", "top1"])


def check_files(fig: Figure, stem, landscape: bool | None = None) -> None:
    png, svg = save_figure(fig, stem)
    assert png.suffix == ".png" and svg.suffix == ".svg"
    assert 10_000 < png.stat().st_size < 5_000_000
    assert 10_000 < svg.stat().st_size < 5_000_000
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    width_in, height_in = fig.get_size_inches()
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG"
        # Saved at the figure's exact size, so the PNG has the figure's aspect.
        assert abs(image.width - width_in * DPI) <= 2 and abs(image.height - height_in * DPI) <= 2
        if landscape is not None:
            assert (image.width > image.height) == landscape


@pytest.mark.slow
def test_heatmap_table_paper(results, tmp_path):
    fig = heatmap_table(results, "fitted")
    check_files(fig, tmp_path / "table1", landscape=True)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "flagged by rule 'fitted (gamma 2)' (48)" in labels
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == paper.backbone_order()
    assert [t.get_text() for t in ax.get_yticklabels()] == paper.optimizer_order()
    # One text per cell, the paper's numbers to two decimals.
    cells = {t.get_text() for t in ax.texts}
    assert "87.51" in cells and len(ax.texts) == 400


def test_heatmap_takes_flag_output_and_names_the_rule(results):
    fig = heatmap_table(results, flag(results, "paper"), rule_name="paper")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "flagged by rule 'paper' (258)" in labels


@pytest.mark.slow
def test_violins_per_backbone_paper(results, tmp_path):
    fig = violins_per_backbone(results)
    check_files(fig, tmp_path / "violins", landscape=True)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == paper.backbone_order()


@pytest.mark.slow
def test_hparam_boxplots_paper(tmp_path):
    distances = hparam_distances(paper.best_hparams())
    fig = hparam_boxplots(distances)
    check_files(fig, tmp_path / "hparams")
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    assert len(top.get_xticklabels()) == distances["backbone"].nunique()
    assert len(bottom.get_xticklabels()) == distances["optimizer"].nunique()


def test_hparam_boxplots_rejects_other_frames(results):
    with pytest.raises(ValueError, match="distance"):
        hparam_boxplots(results)


@pytest.mark.slow
def test_interaction_heatmap_paper(results, tmp_path):
    fit = fit_additive(results)
    fig = interaction_heatmap(fit)
    check_files(fig, tmp_path / "interaction", landscape=True)
    assert "median polish" in fig.get_suptitle()
    assert not any(t.get_text() == "-0.0" for t in fig.axes[0].texts)


@pytest.mark.slow
def test_demo_sized_figures_stay_readable(tmp_path):
    frame = demo()
    for name, fig in {
        "heat": heatmap_table(frame),
        "violins": violins_per_backbone(frame),
        "interaction": interaction_heatmap(fit_additive(frame, method="weighted_ls")),
    }.items():
        width, height = fig.get_size_inches()
        assert width >= 5 and height >= 3.5  # a floor, so a 4 x 6 table is not a thumbnail
        png, _ = save_figure(fig, tmp_path / f"demo.{name}")  # dots in a stem are kept
        assert png.name == f"demo.{name}.png"
    assert "weighted least squares" in fig.get_suptitle()


@pytest.mark.slow
def test_no_pyplot_state(results):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    heatmap_table(results)
    assert plt.get_fignums() == before
