"""`recommend`: the inverse question, answered from the paper's table."""

import pandas as pd
import pytest

from bocb import paper
from bocb.analysis.recommend import evidence_backbones, recommend


def test_a_vit_is_steered_away_from_sgd():
    ranked, evidence = recommend(paper.top1(), "DeiT-S")
    assert "DeiT-S" in evidence
    assert "failure rule 'fitted (gamma 2)'" in evidence  # every answer names the shared default rule
    order = list(ranked["optimizer"])
    assert order.index("AdamW") < order.index("SGD-M")
    assert ranked.set_index("optimizer").loc["SGD-M", "failure_risk"] == 1.0  # greyed in Table 1


def test_an_unseen_backbone_borrows_its_family():
    chosen, why = evidence_backbones("resnet18", paper.backbone_order())
    assert "R-50" in chosen and "same group" in why and "DeiT-S" not in chosen


def test_design_words_select_a_family():
    chosen, _ = evidence_backbones("hierarchical attention", paper.backbone_order())
    assert set(chosen) == {"Swin-T", "TNX-T", "AF-12", "CAF-12"}
    ranked, _ = recommend(paper.top1(), "hierarchical attention")
    assert ranked["backbones"].eq(4).all() and ranked["failure_risk"].between(0, 1).all()


def test_unknown_query_names_the_valid_choices():
    with pytest.raises(ValueError, match="families: .*classical CNN"):
        recommend(paper.top1(), "quantum")


def test_both_kinds_of_evidence_count_a_stored_backbone_with_the_papers_own(tmp_path):
    from test_report_analysis import grid_store

    from bocb import api

    study_file, store = grid_store(tmp_path)
    found = api.recommend("R-50", evidence="both", store=store, study=study_file)
    assert "results for R-50 itself (the paper's and yours): R-50, R-50 (yours)" in found.evidence
    assert {o.optimizer for o in found.optimizers} >= {"SGD-M", "AdamW", "LAMB"}
    assert all(o.backbones == 2 for o in found.optimizers if o.optimizer in ("SGD-M", "AdamW", "LAMB"))
    mine = api.recommend("R-50", evidence="store", store=store, study=study_file)
    assert mine.evidence.startswith("results for R-50 itself: R-50 (1 backbone)")
    assert [o.optimizer for o in mine.optimizers][0] == "LAMB"  # the grid store's best on R-50 (60 + 2*2 + 3)


def test_recommend_json_and_the_avoid_list(tmp_path):
    import json

    from cli_inproc import bocb

    proc = bocb("recommend", "--backbone", "DeiT-S", "--top", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)  # stdout is the JSON alone; the table and notes go to stderr
    assert answer["query"] == "DeiT-S" and len(answer["optimizers"]) == 20
    # SGD-M fails on DeiT-S in the paper's Table 1: named to avoid although --top 3 cuts it off.
    assert "avoid:" in proc.stderr and "SGD-M (flagged by the failure rule in 1 of 1 evidence column," in proc.stderr


def test_store_evidence_from_short_runs_says_it_is_a_sketch(tmp_path):
    from bocb import api
    from bocb.store import SQLiteStore
    from bocb.study import load_study

    study_file = tmp_path / "short.toml"
    study_file.write_text('backbones = ["R-50"]\n[study]\nname = "short"\ntuning = "grid"\n'
                          '[[optimizers]]\nname = "SGD-M"\n[[optimizers]]\nname = "AdamW"\n')
    study = load_study(study_file)
    trials = [(f"t{i}", {"backbone": {"short": "R-50", "num_classes": 10},
                         "optimizer": {"short": o, "category": "a", "args": {"lr": 0.1, "weight_decay": 0.0}},
                         "recipe": {"name": "pytorch", "tier": "smoke", "epochs": 3}, "seed": 0})
              for i, o in enumerate(("SGD-M", "AdamW"))]
    with SQLiteStore(tmp_path / "s.sqlite") as store:
        store.add_study(study.study_id, "short", str(study_file), study.settings)
        store.add_trials(study.study_id, trials)
        for value in (30.0, 20.0):
            tid, _ = store.claim("r", 60, study.study_id)
            store.finish(tid, "r", {"status": "done", "final_top1": value, "best_top1": value, "epochs": [],
                                    "code_version": "test"})
    found = api.recommend("R-50", evidence="store", store=tmp_path / "s.sqlite")
    assert "caution: your trials ran 3 epochs (the paper's: 200)" in found.evidence
    both = api.recommend("R-50", evidence="both", store=tmp_path / "s.sqlite")
    assert "weighted 3/200 of a paper cell" in both.evidence
    # SGD-M 10 points ahead of AdamW in the sketch; the paper's R-50 row (SGD-M 0 gap, AdamW 4.97
    # behind LAMB) decides with weight 1 against 0.015: AdamW's gap is the paper's almost alone.
    paper_only = {o.optimizer: o.expected_gap for o in api.recommend("R-50").optimizers}
    gaps = {o.optimizer: o.expected_gap for o in both.optimizers}
    assert gaps["AdamW"] == pytest.approx((paper_only["AdamW"] + 0.015 * 10.0) / 1.015)
    # An answer that rests on the paper's cells alone (DeiT-S: no trials of it in the store) is not a sketch.
    assert "caution" not in api.recommend("DeiT-S", evidence="both", store=tmp_path / "s.sqlite").evidence
    with pytest.raises(ValueError, match="--study selects store trials"):
        api.recommend("R-50", evidence="paper", study=study_file)
    with pytest.raises(ValueError, match="no finished .* trials yet: run it first"):
        SQLiteStore(tmp_path / "empty.sqlite").close()
        api.recommend("R-50", evidence="store", store=tmp_path / "empty.sqlite")


@pytest.mark.parametrize("words, backbones", [
    ("vision transformer", ["DeiT-S", "Swin-T"]),
    ("a ViT-like model", ["DeiT-S", "Swin-T"]),
    ("MLP mixer", ["MLP-S"]),
    ("depthwise convolutional network", ["CNX-T", "CNXV2-T", "Moga-S", "URLK-T"]),
])
def test_free_design_words_find_the_backbones_they_mean(words, backbones):
    from bocb import paper
    from bocb.analysis.recommend import evidence_backbones

    chosen, why = evidence_backbones(words, list(dict.fromkeys(paper.top1()["backbone"])))
    assert chosen == backbones, why


def test_weights_make_a_short_sketch_count_less_by_hand():
    import pandas as pd

    frame = pd.DataFrame({"optimizer": ["SGD-M", "AdamW"] * 2, "backbone": ["R-50", "R-50", "R-50 (yours)", "R-50 (yours)"],
                          "top1": [80.0, 76.0, 50.0, 60.0]})
    plain, _ = recommend(frame, "R-50")
    weighted, _ = recommend(frame, "R-50", weights={"R-50 (yours)": 0.05})
    # Gaps: SGD-M 0 (paper) and 10 (yours); AdamW 4 and 0. Equal weights: 5 and 2.
    assert plain.set_index("optimizer")["expected_gap"].to_dict() == {"SGD-M": 5.0, "AdamW": 2.0}
    gaps = weighted.set_index("optimizer")["expected_gap"]
    assert gaps["SGD-M"] == pytest.approx(0.05 * 10 / 1.05) and gaps["AdamW"] == pytest.approx(4 / 1.05)
    # SGD-M is flagged in your column only (50 < median 55 - max(0.75 * IQR, 2)): a risk of 0.05 / 1.05.
    risks = weighted.set_index("optimizer")["failure_risk"]
    assert risks["SGD-M"] == pytest.approx(0.05 / 1.05) and risks["AdamW"] == 0.0


def test_words_that_name_no_design_are_refused_in_one_line():
    with pytest.raises(ValueError, match="names no design"):
        recommend(paper.top1(), "a neural network model")


def test_weights_of_one_give_the_unweighted_answer():
    plain, _ = recommend(paper.top1(), "classical CNN")
    ones, _ = recommend(paper.top1(), "classical CNN", weights=dict.fromkeys(paper.top1()["backbone"], 1.0))
    cols = ["optimizer", "expected_gap", "gap_std", "failure_risk", "backbones"]
    pd.testing.assert_frame_equal(plain[cols].reset_index(drop=True), ones[cols].reset_index(drop=True),
                                  check_dtype=False)
