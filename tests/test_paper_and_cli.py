"""The shipped paper tables and the CLI contract (`bocb zoo ... --format csv`, `bocb paper table`)."""

import csv
import io
import json

import pytest

from bocb import paper
from cli_inproc import bocb


def _bocb(*args: str) -> str:
    proc = bocb(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_table_1_has_400_cells_and_50_failures():
    top1 = paper.top1()
    assert len(top1) == 400
    assert top1["mark"].isin(["fail", "severe"]).sum() == 50
    assert paper.table1().shape == (20, 20)
    assert paper.table1().loc["AdamW", "DeiT-S"] == top1.query(
        "optimizer == 'AdamW' and backbone == 'DeiT-S'"
    )["top1"].item()


def test_hparam_tables_use_table_1_spellings():
    hp = paper.best_hparams()
    table1_backbones = set(paper.backbone_order())
    # The earlier 16-backbone version has R-101 variants Table 1 lacks; the rest must map.
    assert set(hp["backbone"]) - table1_backbones == {"R-101", "R-101 (DeiT)"}
    assert set(hp["optimizer"]) == set(paper.optimizer_order())


@pytest.mark.slow
def test_zoo_backbones_csv_contract():
    rows = list(csv.DictReader(io.StringIO(_bocb("zoo", "backbones", "--format", "csv"))))
    assert {"name", "short", "group", "params_m"} <= set(rows[0])
    assert set(paper.backbone_order()) <= {r["short"] for r in rows}
    r50 = next(r for r in rows if r["short"] == "R-50")
    assert r50["group"] == "classical CNN" and 20 < float(r50["params_m"]) < 26


def test_zoo_optimizers_csv_contract():
    rows = list(csv.DictReader(io.StringIO(_bocb("zoo", "optimizers", "--format", "csv"))))
    assert {"name", "short", "category", "source"} <= set(rows[0])
    assert set(paper.optimizer_order()) <= {r["short"] for r in rows}
    assert {r["category"] for r in rows} == {"a", "b", "c", "d", "extra"}


def test_paper_table_prints_every_backbone_and_optimizer():
    # A reader 300 columns wide gets the whole table (narrower ones: tests/test_cli_convention.py).
    proc = bocb("paper", "table", env={"COLUMNS": "300"})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for name in paper.backbone_order() + paper.optimizer_order():
        assert name in text
    # CSV and JSON are long: one row per cell with its mark, and no summary rows mixed in.
    rows = list(csv.DictReader(io.StringIO(_bocb("paper", "table", "--format", "csv"))))
    assert list(rows[0]) == ["optimizer", "category", "backbone", "top1", "mark"]
    assert len(rows) == 20 * 20
    cell = {(r["optimizer"], r["backbone"]): r for r in rows}
    # The paper's Table 1: AlexNet with SGD-M, 66.76, one of its top-4 optimizers.
    assert cell["SGD-M", "AlexNet"]["top1"] == "66.76" and cell["SGD-M", "AlexNet"]["mark"] == "top4"
    assert json.loads(_bocb("paper", "table", "--json")) == json.loads(paper.top1().to_json(orient="records"))
