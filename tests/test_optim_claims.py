"""The optimizer fidelity claims: each names a real setting, and bocb matches every claim it does
not annotate."""

import dataclasses

import pytest

from bocb.optim import list_optimizers, resolve_optimizer
from bocb.optim.claims import OPTIMIZER_CLAIMS, SPECIAL_KEYS, bocb_value


def test_every_claim_names_a_real_setting_and_un_noted_claims_match_bocb():
    for claim in OPTIMIZER_CLAIMS:
        spec = resolve_optimizer(claim.subject)
        assert claim.key in spec.args or claim.key in SPECIAL_KEYS, (claim.subject, claim.key)
        assert claim.source.startswith(("released: Westlake-AI/openmixup ", "paper Table", "not in the released configs: "))
        if not claim.note:
            assert bocb_value(claim) == claim.paper, (claim.subject, claim.key)


def test_every_paper_optimizer_states_its_grid_and_weight_decay_rule():
    keys = {(c.subject, c.key) for c in OPTIMIZER_CLAIMS}
    for info in list_optimizers(paper=True):
        assert {(info.short, k) for k in ("lr", "weight_decay", "wd_policy")} <= keys, info.short


def test_a_claim_on_a_setting_bocb_lacks_is_an_error_naming_the_valid_ones():
    bad = dataclasses.replace(OPTIMIZER_CLAIMS[0], subject="AdamW", key="momentum")
    with pytest.raises(KeyError, match="no setting 'momentum': valid: amsgrad, betas"):
        bocb_value(bad)
