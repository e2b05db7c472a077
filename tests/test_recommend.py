"""`recommend`: the inverse question, answered from the paper's table."""

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
