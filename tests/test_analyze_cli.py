"""`bocb analyze` contract: input rows + a boolean `flagged` column, on any table of the format."""

import csv
import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from bocb.paper import top1
from cli_inproc import bocb


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return bocb("analyze", *args)


def test_paper_table_with_the_fitted_rule(tmp_path):
    src = tmp_path / "paper.csv"
    top1().to_csv(src, index=False)
    out = tmp_path / "flags.csv"
    proc = _analyze(str(src), "--rule", "fitted", "--gamma", "2", "--flags-out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 400
    assert set(rows[0]) == {"optimizer", "category", "backbone", "top1", "mark", "flagged", "failure_rule"}
    hits = sum(r["flagged"] == "True" and r["mark"] in ("fail", "severe") for r in rows)
    others = sum(r["flagged"] == "True" and r["mark"] not in ("fail", "severe") for r in rows)
    assert hits >= 48 and others <= 2
    default = json.loads(_analyze(str(src), "--json").stdout)  # the shared default: fitted, gamma 2
    assert default["gamma"] == 2.0 and default["rule"] == "fitted" and default["flagged"] == 48


def test_any_table_with_seeds_and_extra_columns(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for b in ("netA", "netB", "netC"):
        for o in ("opt1", "opt2", "opt3", "opt4", "opt5"):
            base = 10.0 if (b, o) == ("netB", "opt3") else 70.0  # one collapsed pair
            for seed in range(3):
                rows.append({"backbone": b, "optimizer": o, "seed": seed, "top1": base + rng.normal(0, 0.3),
                             "note": "x"})
    src = tmp_path / "mine.csv"
    pd.DataFrame(rows).to_csv(src, index=False)
    out = tmp_path / "flags.csv"
    proc = _analyze(str(src), "--rule", "fitted", "--flags-out", str(out))
    assert proc.returncode == 0, proc.stderr
    flags = pd.read_csv(out)
    assert len(flags) == len(rows)
    assert list(flags.columns) == ["backbone", "optimizer", "seed", "top1", "note", "flagged", "failure_rule"]
    flagged = flags.loc[flags["flagged"], ["backbone", "optimizer"]].drop_duplicates()
    assert flagged.values.tolist() == [["netB", "opt3"]]


def test_missing_column_is_one_line(tmp_path):
    src = tmp_path / "bad.csv"
    pd.DataFrame({"optimizer": ["a"], "accuracy": [1.0]}).to_csv(src, index=False)
    proc = _analyze(str(src))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "backbone" in lines[0] and "top1" in lines[0]
