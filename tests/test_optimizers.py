"""Contract tests over every registered optimizer, the resolved record, and the grids."""

import json
import statistics
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bocb import paper
from bocb.optim import (
    OptimizerSpec,
    Stepper,
    build_optimizer,
    get_optimizer_info,
    list_optimizers,
    resolve_optimizer,
)
from bocb.optim.info import series_index, series_value
from bocb.zoo import build_backbone

ALL = [o.name for o in list_optimizers()]
PAPER = [o.name for o in list_optimizers(paper=True)]


def test_the_twenty_paper_optimizers_match_table_1():
    assert len(PAPER) == 20
    table = paper.top1().drop_duplicates("optimizer").set_index("optimizer")["category"]
    ours = {get_optimizer_info(n).short: get_optimizer_info(n).category for n in PAPER}
    assert ours == table.to_dict()


def test_extras_are_registered():
    extras = {o.short for o in list_optimizers(category="extra")}
    assert {"Muon", "SF-AdamW", "Prodigy", "SOAP", "SophiaH", "SophiaG"} <= extras


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A fixed small classification task: 8x8 images whose class sets a spatial pattern."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(10, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    x = patterns[y] + 0.8 * torch.randn(256, 3, 8, 8, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GELU(), nn.Flatten(),
        nn.Linear(8 * 6 * 6, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 10),
    )
    return model, x, y


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ALL)
def test_lowers_the_loss(name, autocast):
    model, x, y = _problem()
    spec = resolve_optimizer(name)
    optimizer, _ = build_optimizer(spec, model)
    stepper = Stepper(optimizer, spec)

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(x)

    def loss_fn(logits):
        return F.cross_entropy(logits.float(), y)

    stepper.eval()
    with torch.no_grad():
        before = loss_fn(model(x)).item()
    stepper.train()
    for _ in range(40):
        loss, _ = stepper.step(forward, loss_fn)
        assert torch.isfinite(loss)
    stepper.eval()
    with torch.no_grad():
        after = loss_fn(model(x)).item()
    assert after < 0.99 * before, (before, after)


@pytest.mark.parametrize("name", ALL)
def test_record_round_trips_through_json(name):
    model, _, _ = _problem()
    spec = resolve_optimizer(name)
    text = spec.to_json()
    again = OptimizerSpec.from_json(text)
    assert again == spec and again.to_json() == text
    _, record = build_optimizer(spec, model)
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    # The rebuilt optimizer gets the very same hyper-parameters.
    opt_a, _ = build_optimizer(spec, _problem()[0])
    opt_b, _ = build_optimizer(again, _problem()[0])
    strip = [{k: v for k, v in g.items() if k != "params"} for g in opt_a.param_groups]
    assert strip == [{k: v for k, v in g.items() if k != "params"} for g in opt_b.param_groups]


def test_record_names_class_version_and_every_argument():
    spec = resolve_optimizer("LAMB", lr=1e-3)
    assert spec.target == "timm.optim:Lamb" and spec.library == "timm"
    assert spec.library_version not in ("", "unknown")
    # timm's Lamb clips the global gradient norm by default; the record must show it.
    assert spec.args["max_grad_norm"] == 1.0
    assert spec.args["lr"] == 1e-3 and spec.args["weight_decay"] == 0.05
    assert spec.args["betas"] == [0.9, 0.999]
    sophia = resolve_optimizer("Sophia")  # the paper's row: the released, never-refreshed SophiaG
    assert sophia.library == "sophia_opt" and sophia.curvature == "none"
    assert resolve_optimizer("sophia_g").target == sophia.target
    assert resolve_optimizer("sophia_g").curvature == "gnb"
    prodigy = resolve_optimizer("prodigy")
    assert prodigy.args["growth_rate"] == "inf"  # strict JSON has no Infinity
    assert prodigy.constructor_args()["growth_rate"] == float("inf")


def test_unknown_knob_is_refused_with_valid_ones():
    # pytorch-optimizer classes take **kwargs and would ignore a typo silently.
    with pytest.raises(ValueError, match="takes no argument momentm.*valid:.*momentum"):
        resolve_optimizer("SGD-M", momentm=0.5)
    with pytest.raises(ValueError, match="valid:.*final_lr"):
        resolve_optimizer("AdaBound", final_learning_rate=0.1)


def test_policy_no_decay_1d_excludes_norms_biases_and_embeddings():
    model = build_backbone("deit_small", num_classes=10, policy="cifar", scale="tiny")
    _, record = build_optimizer(resolve_optimizer("AdamW"), model)
    groups = record["param_groups"]["groups"]
    no_decay = next(g for g in groups if g["weight_decay"] == 0.0)
    assert {"cls_token", "pos_embed", "norm.weight", "head.bias"} <= set(no_decay["names"])
    assert all(not n.endswith(".weight") or "norm" in n for n in no_decay["names"] if n != "pos_embed")
    decay = next(g for g in groups if g["weight_decay"] == 0.05)
    assert decay["numel"] + no_decay["numel"] == sum(p.numel() for p in model.parameters())


def test_policy_decay_all_is_one_group():
    model = build_backbone("resnet50", num_classes=10, scale="tiny")
    opt, record = build_optimizer(resolve_optimizer("SGD-M", wd_policy="decay_all"), model)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-4
    assert record["param_groups"]["policy"] == "decay_all"
    with pytest.raises(ValueError, match="valid: paper, no_decay_1d, decay_all"):
        resolve_optimizer("SGD-M", wd_policy="decay_none")


def test_muon_sends_the_classifier_to_its_adamw_fallback():
    model = build_backbone("convnext_tiny", num_classes=10, scale="tiny")
    _, record = build_optimizer(resolve_optimizer("Muon"), model)
    fallback = [n for g in record["param_groups"]["groups"] if g.get("use_fallback") for n in g["names"]]
    assert "head.fc.weight" in fallback


def test_series_grid():
    assert [series_value(i) for i in range(-2, 3)] == [0.2, 0.5, 1.0, 2.0, 5.0]
    assert series_index(0.03) == series_index(0.02)  # log-nearest: 3 is nearer 2 than 5
    info = get_optimizer_info("AdamW")
    assert info.lr_grid() == (1e-4, 2e-4, 5e-4, 1e-3, 2e-3)
    assert info.wd_grid() == (0.01, 0.02, 0.05, 0.1, 0.2)
    assert get_optimizer_info("Adam").wd_grid()[0] == 0.0


def _snap(v: float) -> float:
    return 0.0 if v <= 1e-8 else series_value(series_index(v))


def _modes(values: list[float]) -> set[float]:
    snapped = [_snap(v) for v in values]
    counts = Counter(snapped)
    top = max(counts.values())
    return {v for v, c in counts.items() if c == top}


@pytest.mark.parametrize("name", PAPER)
def test_grid_centres_are_the_papers_modal_choices(name):
    info = get_optimizer_info(name)
    rows = paper.best_hparams().query("optimizer == @info.short")
    assert len(rows) == 16
    lr_modes, wd_modes = _modes(list(rows["lr"])), _modes(list(rows["weight_decay"]))
    assert info.lr in lr_modes, (info.lr, lr_modes)
    assert info.weight_decay in wd_modes, (info.weight_decay, wd_modes)
    if len(lr_modes) > 1:  # ties go to the mode nearest the median (log scale)
        med = statistics.median(_snap(v) for v in rows["lr"])
        assert info.lr == min(lr_modes, key=lambda v: abs(torch.tensor(v / med).log()))
