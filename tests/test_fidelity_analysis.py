"""Protocol fidelity of the analysis: one failure rule for every command, the paper's ranking,
robustness in real units, and a project that cites nothing outside itself.

Paper numbers are measured on the shipped Table 1 and Tables A4/A5; the paper's own orderings are
``bocb.paper.RANKING`` (Table 4) and ``FIG5_ROBUST`` / ``FIG5_LEAST`` (its reading of Fig. 5).
"""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bocb import analysis as A
from bocb import paper
from bocb.analysis import robustness as R
from bocb.cli import build_parser
from cli_inproc import bocb

ROOT = Path(__file__).resolve().parents[1]


# --- 8. one default failure rule -------------------------------------------------------------------

def test_one_default_rule_stated_by_name_and_gamma():
    assert A.DEFAULT_RULE is A.RULES["fitted"] and A.DEFAULT_RULE.floor == 2.0
    assert A.rule() == A.DEFAULT_RULE and A.DEFAULT_RULE.label == "fitted (gamma 2)"
    assert "fitted (gamma 2)" in A.DEFAULT_RULE.describe()


@pytest.mark.parametrize("command", [["analyze", "x.csv"], ["report", "--paper"], ["recommend", "--backbone", "R-50"]])
def test_every_command_defaults_to_the_shared_rule(command):
    args = build_parser().parse_args(command)
    assert A.rule(args.rule, args.gamma) == A.DEFAULT_RULE


def test_analyze_and_report_flag_the_same_cells_with_no_options(tmp_path):
    src, out = tmp_path / "paper.csv", tmp_path / "flags.csv"
    paper.top1().to_csv(src, index=False)
    proc = bocb("analyze", src, "--flags-out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)
    assert counts["rule"] == "fitted" and counts["gamma"] == 2.0
    written = pd.read_csv(out)
    assert set(written["failure_rule"]) == {"fitted (gamma 2)"}  # the written result names its rule
    analyzed = set(map(tuple, written.loc[written["flagged"], ["optimizer", "backbone"]].values))
    # What `bocb report --paper` flags with its defaults: the rule its parser resolves to.
    args = build_parser().parse_args(["report", "--paper"])
    reported = A.flag(paper.top1(), A.rule(args.rule, args.gamma))
    assert analyzed == set(map(tuple, reported.loc[reported["flagged"], ["optimizer", "backbone"]].values))
    assert len(analyzed) == 48  # 48 of the paper's 50 grey cells, nothing else


# --- 9. the paper's ranking -----------------------------------------------------------------------

def test_paper_ranking_is_the_default_with_yes_no_bocb_and_median_robustness():
    ranked = A.rank_optimizers(paper.top1(), hparams=paper.best_hparams())
    assert ranked.attrs["variant"] == "paper" and ranked.attrs["rule"] == "fitted (gamma 2)"
    assert ranked.attrs["excluded"] == ["cost"] and "no measured" in ranked.attrs["reasons"]["cost"]
    r = ranked.set_index("optimizer")
    assert set(r["bocb"]) == {0.0, 1.0}
    assert r.loc["AdamP", "flagged"] == 1 and r.loc["AdamP", "bocb"] == 0.0  # one flagged cell: has BOCB
    assert r.loc["AdaGrad", "bocb"] == 0.0 and r.loc["LAMB", "bocb"] == 1.0
    # Robustness from the median distance: RMSProp's median is 0 (its usual setting on most backbones).
    assert r.loc["RMSProp", "median_distance"] == 0.0 and r.loc["RMSProp", "robustness"] == 1.0
    # Measured against the paper's Table 4 (the 'continuous' scoring agrees more; see the report).
    agree = A.ranking_agreement(list(ranked["optimizer"]), paper.RANKING)
    assert agree["spearman"] == pytest.approx(0.874, abs=1e-3)
    assert agree["kendall"] == pytest.approx(0.726, abs=1e-3)
    assert list(ranked["optimizer"][:3]) == ["AdamW", "LAMB", "Adan"]
    assert ranked["optimizer"].iloc[-1] == "AdaGrad"


def test_continuous_variant_keeps_the_share_flagged():
    ranked = A.rank_optimizers(paper.top1(), hparams=paper.best_hparams(), variant="continuous")
    r = ranked.set_index("optimizer")
    assert r.loc["AdaGrad", "bocb"] == pytest.approx(1 - 16 / 20) and r.loc["AdamP", "bocb"] == pytest.approx(0.95)
    agree = A.ranking_agreement(list(ranked["optimizer"]), paper.RANKING)
    assert agree["spearman"] == pytest.approx(0.946, abs=1e-3)
    with pytest.raises(ValueError, match="unknown ranking variant 'best': valid: paper, continuous"):
        A.rank_optimizers(paper.top1(), variant="best")


def test_cost_from_measured_seconds_and_memory():
    # Two backbones of different size; o2 takes twice o1's time on both, o1 twice o2's memory on b1.
    trials = pd.DataFrame({
        "optimizer": ["o1", "o2", "o1", "o2", "o2"],
        "backbone": ["b1", "b1", "b2", "b2", "b2"],
        "seconds": [10.0, 20.0, 100.0, 200.0, 5.0],
        "peak_memory_mb": [400.0, 200.0, 1000.0, 1000.0, 1000.0],
        "status": ["done", "done", "done", "done", "diverged"],  # diverged stops early: not a cost
    })
    table = A.cost_table(trials)
    assert table.loc["o2", "relative_time"] == pytest.approx(2.0) and table.loc["o1", "relative_time"] == 1.0
    assert table.loc["o1", "relative_memory"] == pytest.approx(math.sqrt(2.0))  # geometric mean of 2 and 1
    results = pd.DataFrame({"optimizer": ["o1", "o2", "o1", "o2"], "backbone": ["b1", "b1", "b2", "b2"],
                            "top1": [70.0, 70.0, 60.0, 60.0]})
    ranked = A.rank_optimizers(results, cost=table).set_index("optimizer")
    assert ranked.attrs["excluded"] == ["robustness"] and "cost" in ranked.attrs["weights"]
    # cost score = mean of min/rel over time and memory.
    assert ranked.loc["o1", "cost"] == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert ranked.loc["o2", "cost"] == pytest.approx((0.5 + 1) / 2)


def test_store_results_carry_seconds_and_peak_memory(tmp_path):
    from bocb.analysis.from_store import results_frame
    from bocb.store import SQLiteStore

    def spec(i: int) -> dict:
        return {"backbone": {"short": "R-50"}, "recipe": {"name": "pytorch", "tier": "smoke"}, "seed": i,
                "optimizer": {"short": "SGD-M", "category": "a", "args": {"lr": 0.1, "weight_decay": 1e-4}}}

    with SQLiteStore(tmp_path / "s.sqlite") as store:
        store.add_study("s", "s", "s.toml", {})
        store.add_trials("s", [("t0", spec(0)), ("t1", spec(1))])
        for memory in (512.0, None):
            tid, _ = store.claim("r", 60, "s")
            record = {"status": "done", "final_top1": 50.0, "best_top1": 50.0, "best_epoch": 1, "error": None,
                      "epochs": [], "seconds": {"train": 3.5, "eval": 0.5, "wall": 4.5}}
            if memory is not None:
                record["peak_memory_mb"] = memory
            store.finish(tid, "r", record)
        frame = results_frame(store, "s").set_index("seed")
    assert frame["seconds"].tolist() == [3.5, 3.5]
    assert frame.loc[0, "peak_memory_mb"] == 512.0 and math.isnan(frame.loc[1, "peak_memory_mb"])


def test_report_command_takes_the_ranking_variant():
    assert build_parser().parse_args(["report", "--paper"]).ranking == "paper"
    assert build_parser().parse_args(["report", "--paper", "--ranking", "continuous"]).ranking == "continuous"
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["report", "--paper", "--ranking", "best"])
    assert exit_.value.code == 2


# --- 10. robustness in decades --------------------------------------------------------------------

def test_distances_are_decades_without_any_grid():
    # lr 1e-4 lies far below SGD-M's 5-point grid (0.02 .. 0.5): measured, not clipped to the grid's end.
    # (The grid encoding clipped it to index 0, two steps from 0.1: distance 2.)
    rows = [("SGD-M", "b0", 0.1, 1e-4), ("SGD-M", "b1", 0.1, 1e-4), ("SGD-M", "b2", 1e-4, 1e-4),
            ("SGD-M", "b3", 0.1, 1e-3)]
    d = R.hparam_distances(pd.DataFrame(rows, columns=["optimizer", "backbone", "lr", "weight_decay"]))
    d = d.set_index("backbone")
    assert d.loc["b2", "distance"] == pytest.approx(3.0) and d.loc["b0", "distance"] == 0.0
    assert d.loc["b3", "distance"] == pytest.approx(1.0)  # wd 1e-3 vs 1e-4: one decade
    assert d.loc["b2", "lr_distance"] == pytest.approx(3.0) and d.loc["b3", "wd_distance"] == pytest.approx(1.0)
    # An optimizer no registry knows, at settings no grid holds (a tuner's output).
    tuned = pd.DataFrame([("MyOpt", "b0", 3.3e-4, 0.013), ("MyOpt", "b1", 3.3e-4, 0.013), ("MyOpt", "b2", 1e-3, 0.0)],
                         columns=["optimizer", "backbone", "lr", "weight_decay"])
    t = R.hparam_distances(tuned).set_index("backbone")
    assert t.loc["b2", "distance"] == pytest.approx(math.log10(1e-3 / 3.3e-4) + 1.0)


def test_zero_weight_decay_is_its_own_level():
    assert R.level_distance(0.0, 1e-8, zero_below=1e-8) == 0.0  # 1e-8 is the paper's "no decay"
    assert R.level_distance(0.0, 0.05, zero_below=1e-8) == 1.0
    assert R.level_distance(0.0, 0.05, zero_below=1e-8, zero_distance=2.5) == 2.5
    assert R.level_distance(1e-4, 1e-3) == pytest.approx(1.0)
    assert R.usual_value([0.0, 1e-8, 0.05], zero_below=1e-8) == 0.0
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        R.level_distance(0.0, 0.1)


def test_mode_ties_go_to_the_most_central_value_then_the_smaller():
    # 1e-3 and 1e-2 are both chosen twice; 2e-3 sits nearer 1e-3 (total 2.30 vs 2.70 decades).
    assert R.usual_value([1e-3, 1e-3, 1e-2, 1e-2, 2e-3]) == 1e-3
    assert R.usual_value([1e-3, 1e-2]) == 1e-3  # equally central: the smaller
    assert R.usual_value([0.1, 0.1000000000001, 0.2]) == 0.1  # float noise is one value


def test_paper_tables_robustness_in_decades():
    d = R.hparam_distances(paper.best_hparams())
    assert len(d) == 320
    by_opt = A.distance_summary(d)
    # Hand-checkable from Tables A4/A5: AdaDelta's usual lr is 2.0 and its median pair sits at
    # 1.5 (log10(2 / 1.5) = 0.125 decades); AdamW and RMSProp keep their usual setting on most backbones.
    assert by_opt.loc["AdaDelta", "median"] == pytest.approx(math.log10(2 / 1.5))
    assert by_opt.loc["AdamW", "median"] == by_opt.loc["RMSProp", "median"] == 0.0
    assert by_opt.index[-1] == "AdaBound"
    # LARS lr 0.06 on CNX-T and Moga-S, far below its 5-point grid (0.2 .. 5): 1.3 decades from its
    # usual 1.2 (the grid encoding clipped both to the grid's end).
    lars = d[(d["optimizer"] == "LARS") & (d["lr"] == 0.06)]
    assert lars["lr_distance"].tolist() == pytest.approx([math.log10(1.2 / 0.06)] * 2)
    by_backbone = A.distance_summary(d, by="backbone")
    assert by_backbone.index[-1] == "AlexNet"


def test_paper_tables_against_the_fig5_reading():
    """The measure's agreement with the paper's reading, as measured (not tuned to it).

    Both named robust optimizers AdamW and RMSProp come first; LAMB is 5th. Of the least robust,
    AdaBound is last and LARS 18th, but SGDP sits mid-table (13th) and AdaDelta is 3rd: in real
    units their chosen settings are close together (AdaDelta's lr 1.0-2.4 but for one 0.1).
    """
    by_opt = A.distance_summary(R.hparam_distances(paper.best_hparams()))
    agree = R.reading_agreement(by_opt, paper.FIG5_ROBUST, paper.FIG5_LEAST)
    assert agree["robust_positions"] == [1, 5, 2] and agree["least_positions"] == [13, 20, 18]
    assert agree["spearman"] == pytest.approx(0.664, abs=1e-3)
    assert agree["kendall"] == pytest.approx(0.595, abs=1e-3)


# --- 14. nothing refers outside the repository ----------------------------------------------------

OUTSIDE = ("method" + ".md", "style" + ".md", "/work/" + "shared", "../" + "reference", "../" + "docs/")


def test_no_reference_to_files_outside_the_repository():
    roots = [ROOT / p for p in ("src", "tests", "studies", "benchmarks", "scripts")]
    files = [f for r in roots if r.exists() for f in r.rglob("*") if f.is_file()]
    files += [f for f in (ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile") if f.exists()]
    hits = []
    for f in files:
        if f.suffix in (".pyc", ".parquet", ".png", ".jpg", ".safetensors", ".sqlite"):
            continue
        text = f.read_text(encoding="utf-8", errors="ignore")
        hits += [f"{f.relative_to(ROOT)}: {needle}" for needle in OUTSIDE if needle in text]
    assert not hits, hits
