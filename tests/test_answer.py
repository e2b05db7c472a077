"""The report's answer section, its budget banner and its comparison with the paper."""

from __future__ import annotations


import pandas as pd
import pytest

from bocb import paper
from bocb.compute import EFFECTIVE_FLOPS
from bocb.report.answer import answer_section, versus_section, yours_vs_paper
from bocb.report.budget import budget_of
from bocb.report.context import ReportAnalysis


def _frame(rows):
    return pd.DataFrame(rows, columns=["backbone", "optimizer", "category", "seed", "top1"])


def _cells(section):
    return section.blocks[1].cells


def test_one_seed_names_the_best_and_the_runner_up_and_the_flagged():
    # SGD-M best; LARS collapses (flagged by any rule); DeiT-S: every optimizer within 1 point.
    rows = [("R-50", "SGD-M", "a", 0, 78.0), ("R-50", "AdamW", "b", 0, 76.5), ("R-50", "LAMB", "b", 0, 77.0),
            ("R-50", "LARS", "c", 0, 20.0),
            ("DeiT-S", "SGD-M", "a", 0, 70.0), ("DeiT-S", "AdamW", "b", 0, 70.8), ("DeiT-S", "LAMB", "b", 0, 70.5),
            ("DeiT-S", "LARS", "c", 0, 70.2)]
    analysis = ReportAnalysis.of(_frame(rows))
    cells = _cells(answer_section(analysis, "fixed", None, None))
    assert cells.loc["R-50", "use"] == "SGD-M (78.00); next LAMB (-1.00)"
    # One seed at fixed settings is weak evidence: flags are named as such, not as things to avoid.
    assert cells.loc["R-50", "flagged"] == "LARS"
    assert cells.loc["R-50", "verdict"] == "possibly coupled: 1 of 4 optimizers fail (weak evidence: may be noise)"
    assert cells.loc["DeiT-S", "flagged"] == "–"
    assert cells.loc["DeiT-S", "verdict"] == "no optimizer fails: the worst is 0.8 points below the best"
    headline = answer_section(analysis, "fixed", None, None).blocks[0].text
    assert headline.startswith("1 of 2 backbones have optimizers that the failure rule flags (R-50).")
    assert "weak (fixed settings, 1 seed per pair: a failure may be a learning rate" in headline
    assert "not a finding" in headline
    # The same numbers, grid-tuned on three seeds, are a finding: 'avoid' and 'coupled'.
    seeded = _frame([(b, o, c, s, v + d) for b, o, c, _, v in rows for s, d in ((0, -0.1), (1, 0.0), (2, 0.1))])
    strong = _cells(answer_section(ReportAnalysis.of(seeded), "grid", None, None))
    assert strong.loc["R-50", "avoid"] == "LARS" and strong.loc["R-50", "verdict"] == "coupled: 1 of 4 optimizers fail"


def test_a_whole_category_failing_is_named():
    rows = [("CNX-T", o, c, 0, v) for o, c, v in
            [("SGD-M", "a", 30.0), ("SGDP", "a", 31.0), ("AdamW", "b", 84.0), ("LAMB", "b", 84.1),
             ("Adan", "b", 83.9), ("RMSProp", "d", 82.0)]]
    cells = _cells(answer_section(ReportAnalysis.of(_frame(rows)), "grid", None, None))
    assert cells.loc["CNX-T", "verdict"] == "coupled: every category (a) optimizer tried fails; 2 of 6 fail"


def test_with_seeds_use_lists_what_is_not_separable_from_the_best():
    # AdamW mean 80 (sd 1, n 3), LAMB mean 79 (sd 1): difference 1 < 1.96 * sqrt(2/3) = 1.60 -> tied.
    # SGD-M mean 75 (sd 1): 5 > 1.60 -> separated.
    rows = [("R-50", o, "b", s, m + d) for o, m in (("AdamW", 80.0), ("LAMB", 79.0), ("SGD-M", 75.0))
            for s, d in ((0, -1.0), (1, 0.0), (2, 1.0))]
    section = answer_section(ReportAnalysis.of(_frame(rows)), "grid", None, None)
    assert _cells(section).loc["R-50", "use"] == "AdamW (80.00); not separable: LAMB"
    assert "strong (grid-tuned, 3 seeds per pair)" in section.blocks[0].text


def test_the_paper_column_and_the_per_pair_comparison():
    # Two of the paper's own cells: on R-50 it ranks SGD-M 78.76 above AdamW 75.56 (Table 1).
    rows = [("R-50", "SGD-M", "a", 0, 40.0), ("R-50", "AdamW", "b", 0, 45.0), ("R-50", "Mine", "b", 0, 44.0)]
    analysis = ReportAnalysis.of(_frame(rows))
    cells = _cells(answer_section(analysis, "fixed", None, paper.top1()))
    assert cells.loc["R-50", "paper, same optimizers"] == "best SGD-M; fails: none"
    table = yours_vs_paper(analysis, paper.top1())
    got = table.cells.reset_index().set_index("optimizer")
    assert list(got.index) == ["SGD-M", "AdamW"]  # 'Mine' is not in the paper
    assert got.loc["SGD-M", "paper"] == "78.76" and got.loc["AdamW", "paper"] == "75.56"
    assert (got.loc["SGD-M", "rank here"], got.loc["SGD-M", "rank in paper"]) == ("2", "1")
    assert "the best agrees on 0 of 1 backbones" in table.caption
    assert versus_section(ReportAnalysis.of(_frame([("Mine", "SGD-M", "a", 0, 1.0)])), paper.top1()) is None


def _spec(scale="paper", tier="full", kind="cifar100", epochs=200, per_class=None, name="resnet50",
          optimizer="sgd_m"):
    return {"backbone": {"name": name, "policy": "cifar", "scale": scale},
            "recipe": {"name": "pytorch", "tier": tier, "epochs": epochs, "train_per_class": per_class},
            "data": {"kind": kind}, "optimizer": {"name": optimizer}}


def test_budget_levels():
    assert budget_of([_spec()]).level == "full"
    assert budget_of([_spec()]).banner() == ""
    reduced = budget_of([_spec(tier="fast", epochs=10)])
    assert reduced.level == "reduced" and reduced.reasons == ("10 epochs where the recipe publishes 200",)
    toy = budget_of([_spec(scale="tiny", tier="smoke", kind="sample", epochs=3, per_class=150)])
    assert toy.toy
    assert toy.banner().startswith("Toy budget: tiny (scaled-down) models; the smoke tier; the bundled CIFAR-10 "
                                   "sample (5,000 training and 1,000 test images); 3 epochs where the recipe publishes 200; "
                                   "150 training images per class.")
    # A partial record (a synthetic or foreign store) is not a toy for what it does not say.
    assert budget_of([{"recipe": {"tier": "full"}}]).level == "full"


def test_real_run_line_is_the_counted_flops_at_the_paper_budget():
    from bocb.compute import forward_flops
    from bocb.optim import get_optimizer_info
    from bocb.zoo import resolve_backbone

    line = budget_of([_spec(scale="tiny", epochs=3)], EFFECTIVE_FLOPS).real_run
    # By hand: R-50 at its published size, 200 epochs x (3 x 50,000 + 10,000) images.
    flops = forward_flops(resolve_backbone("resnet50", num_classes=100, policy="cifar")) * 200 * 160_000
    info = get_optimizer_info("sgd_m")
    one, grid = flops / EFFECTIVE_FLOPS / 3600, flops * len(info.lr_grid()) * len(info.wd_grid()) * 3 / EFFECTIVE_FLOPS / 3600
    assert f"about {one:.1f} GPU-hours for one setting and seed each, {grid:,.0f} with" in line
    assert 0.3 < one < 3  # R-50 at 32 px: ~1.3 GFLOPs x 3 x 50,000 images x 200 epochs ~ 4e16 FLOPs


@pytest.mark.slow
def test_a_toy_study_report_leads_with_the_banner_and_its_plan_uses_the_measured_speed(tmp_path):
    """A real (tiny) study through `bocb run` and `bocb report`: the page's first block is the banner,
    its first section the answer, and the comparison with the paper is there."""
    from cli_inproc import bocb

    study = tmp_path / "toy.toml"
    study.write_text('backbones = ["R-18"]\noptimizers = ["SGD-M", "AdamW"]\n[study]\nname = "toy"\n'
                     'tuning = "fixed"\ndata = "sample"\ntier = "smoke"\nepochs = 1\ntrain_per_class = 10\ntest_per_class = 10\n')
    store = tmp_path / "store.sqlite"
    assert bocb("run", study, "--store", store, cache=tmp_path / "cache").returncode == 0
    done = bocb("report", study, "--store", store, "--out", tmp_path / "rep")
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.index('class="banner"') < html.index("<nav>") < html.index('id="the-answer"') < html.index('id="the-data"')
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "> **Toy budget: tiny (scaled-down) models; the smoke tier;" in md
    assert "## 1. The answer" in md
    assert "| R-18 |" in md  # the answer's row (R-18 is not in the paper: no per-pair comparison)
    assert "not in the paper" in md

    # The same store measured this machine: a second seed of the study is planned from the trials' speed.
    import json
    import sqlite3

    more = tmp_path / "more.toml"
    more.write_text(study.read_text().replace('name = "toy"', 'name = "toy2"\nseeds = [1]'))
    plan = bocb("plan", more, "--store", store, "--json")
    assert plan.returncode == 0, plan.stderr
    wall = json.loads(plan.stdout)["this_machine"]
    with sqlite3.connect(store) as db:
        speeds = [r[0] for r in db.execute("SELECT images_per_second FROM trials WHERE status = 'done'")]
    (speed,) = wall["speeds"].values()
    assert speed["source"] == "store" and speed["count"] == 2
    assert speed["images_per_second"] == pytest.approx(sum(speeds) / 2)  # the median of two
    # 2 trials x 1 epoch x (10 train + 10 test / 3 images per class x 10 classes) at that speed.
    assert wall["hours"] * 3600 == pytest.approx(2 * (100 + 100 / 3) / speed["images_per_second"])


def test_edge_cases_say_what_is_true():
    # Nothing trained on R-50 (10 classes: chance 10 %); DeiT-S tried with one optimizer only.
    rows = [("R-50", o, "b", 0, v) for o, v in (("SGD-M", 10.0), ("AdamW", 11.2), ("LAMB", 9.8), ("LARS", 10.4))]
    rows.append(("DeiT-S", "AdamW", "b", 0, 60.0))
    section = answer_section(ReportAnalysis.of(_frame(rows)), "fixed", None, None, chance={"R-50": 10.0})
    cells = _cells(section)
    assert cells.loc["R-50", "verdict"] == "nothing trained: the best (11.2) is near chance (10.0)"
    assert cells.loc["DeiT-S", "verdict"] == "one optimizer tried: coupling cannot be judged"


def test_ties_for_first_agree_with_the_paper_and_mixed_seeds_are_stated():
    # R-50 in the paper: SGD-M 78.76 first; here SGD-M and AdamW tie for first.
    rows = [("R-50", "SGD-M", "a", 0, 70.0), ("R-50", "AdamW", "b", 0, 70.0), ("R-50", "AdamW", "b", 1, 70.0)]
    analysis = ReportAnalysis.of(_frame(rows))
    assert "the best agrees on 1 of 1 backbones" in yours_vs_paper(analysis, paper.top1()).caption
    assert "1-2 seeds per pair" in answer_section(analysis, "grid", None, None).blocks[0].text


def test_the_real_run_line_of_an_imagenet_study_sizes_imagenet():
    """R-50 under RSB A3 cut to 10 epochs: the line sizes ImageNet-1K at the recipe's crops, not
    CIFAR-100. By hand from ResNet-50's published 4.1 GMACs at 224 px (8.2 GFLOPs; 0.51 of it at
    160): 100 epochs x (3 x 1,281,167 x 4.2e9 + 50,000 x 8.2e9) / 31e12 / 3600 s = about 15 hours."""
    import re

    spec = {"backbone": {"name": "resnet50", "policy": "upsample", "scale": "tiny"},
            "recipe": {"name": "in1k-rsb-a3", "tier": "full", "epochs": 10}, "data": {"kind": "folder"},
            "optimizer": {"name": "lamb"}}
    line = budget_of([spec], effective_flops=31e12).real_run
    assert "ImageNet-1K" in line and "CIFAR-100" not in line
    hours = float(re.search(r"about ([\d.,]+) GPU-hours", line).group(1).replace(",", ""))
    by_hand = 100 * (3 * 1_281_167 * 8.2e9 * (160 / 224) ** 2 + 50_000 * 8.2e9) / 31e12 / 3600
    assert hours == pytest.approx(by_hand, rel=0.1)
