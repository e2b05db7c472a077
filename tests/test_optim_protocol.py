"""The optimizers as the paper's released configs run them: weight-decay rule, knobs, LARS, Sophia.

Expected values come from the authors' released configs (Westlake-AI/openmixup, cited in
``bocb.optim.claims``) and from hand computations of each update rule.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bocb.cli import build_parser
from bocb.optim import Stepper, build_optimizer, get_optimizer_info, list_optimizers, resolve_optimizer
from bocb.study import expand, load_study
from bocb.transfer.study import load_transfer
from bocb.zoo import build_backbone

# The released CIFAR-100 ResNet-50 configs: paramwise_options excluding norms and biases, or none.
RELEASED_RULES = {
    "SGD-M": "decay_all", "Adam": "decay_all", "AdamP": "decay_all", "AdaBelief": "decay_all",
    "AdaFactor": "decay_all", "AdamW": "no_decay_1d", "LAMB": "no_decay_1d", "Adan": "no_decay_1d",
}


def _problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 12, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4))
    return model, x, y


def _step(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 1,
          scales: tuple[float, ...] = (1.0,), recipe_clip: float | None = None, **kw) -> Stepper:
    spec = resolve_optimizer(name, **kw)
    optimizer, _ = build_optimizer(spec, model)
    stepper = Stepper(optimizer, spec)
    for i in range(steps):
        scale = scales[i % len(scales)]
        stepper.step(lambda: model(x), lambda logits: scale * F.cross_entropy(logits, y),
                     params=list(model.parameters()), clip_grad_norm=recipe_clip)
    return stepper


# ---------------------------------------------------------------- weight-decay policy `paper`

@pytest.mark.parametrize("short, rule", sorted(RELEASED_RULES.items()))
def test_paper_policy_is_the_released_configs_rule(short, rule):
    spec = resolve_optimizer(short)
    assert (spec.wd_policy, spec.wd_policy_from) == (rule, "paper")
    assert "paper" not in spec.to_json().replace('"wd_policy_from":"paper"', "")


def test_every_paper_optimizer_resolves_paper_to_a_rule():
    for info in list_optimizers():
        assert resolve_optimizer(info.name).wd_policy in ("no_decay_1d", "decay_all")


def test_sgd_m_under_paper_decays_batchnorm_and_biases_like_its_config():
    model = build_backbone("resnet50", num_classes=10, scale="tiny")
    optimizer, record = build_optimizer(resolve_optimizer("SGD-M"), model)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4]
    assert record["param_groups"]["policy"] == "decay_all"
    adamw, _ = build_optimizer(resolve_optimizer("AdamW"), model)
    assert sorted(g["weight_decay"] for g in adamw.param_groups) == [0.0, 0.05]


def test_an_explicit_rule_overrides_paper_and_a_bad_name_lists_the_choices():
    spec = resolve_optimizer("SGD-M", wd_policy="no_decay_1d")
    assert (spec.wd_policy, spec.wd_policy_from) == ("no_decay_1d", "explicit")
    with pytest.raises(ValueError, match="valid: paper, no_decay_1d, decay_all"):
        resolve_optimizer("SGD-M", wd_policy="papers")


def test_paper_is_the_default_for_study_files_train_and_transfer(tmp_path):
    (tmp_path / "s.toml").write_text(
        'backbones=["R-50"]\noptimizers=["SGD-M","AdamW"]\n[study]\nname="s"\ntier="smoke"\ntuning="fixed"\n'
    )
    study = load_study(tmp_path / "s.toml")
    assert study.wd_policy == "paper"
    trials, _ = expand(study, num_classes=10)
    assert {t.optimizer.short: t.optimizer.wd_policy for t in trials} == {"SGD-M": "decay_all", "AdamW": "no_decay_1d"}
    assert build_parser().parse_args(["train", "--backbone", "R-50"]).wd_policy == "paper"
    (tmp_path / "t.toml").write_text(
        '[study]\nname="t"\n[[pretrained]]\ncheckpoint="w.safetensors"\nbackbone="R-50"\n'
        '[[optimizers]]\nname="SGD-M"\n'
    )
    assert load_transfer(tmp_path / "t.toml").wd_policy == "paper"


# ---------------------------------------------------------------- knobs of the released configs

def test_adabelief_eps_and_adafactor_without_first_moment_as_released():
    assert resolve_optimizer("AdaBelief").args["eps"] == 1e-8  # timm's default is 1e-16
    model, x, y = _problem()
    stepper = _step("AdaFactor", model, x, y)
    assert resolve_optimizer("AdaFactor").args["betas"] is None
    assert all("exp_avg" not in s for s in stepper.optimizer.state.values())


def test_adan_clips_the_global_gradient_norm_at_5_and_the_tighter_clip_wins():
    scales = (1000.0, 1.0, 1000.0)  # gradient norms far above and below 5

    def reference(clip: float | None) -> list[torch.Tensor]:
        model, x, y = _problem()
        spec = resolve_optimizer("Adan")
        optimizer, _ = build_optimizer(spec, model)
        for scale in scales:
            (scale * F.cross_entropy(model(x), y)).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return [p.detach().clone() for p in model.parameters()]

    model, x, y = _problem()
    _step("Adan", model, x, y, steps=3, scales=scales)
    ours = list(model.parameters())
    clipped, unclipped = reference(5.0), reference(None)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-7) for a, b in zip(ours, clipped))
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(ours, unclipped))
    model, x, y = _problem()
    _step("Adan", model, x, y, steps=3, scales=scales, recipe_clip=1.0)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-7) for a, b in zip(model.parameters(), reference(1.0)))


# ---------------------------------------------------------------- LARS

def test_lars_at_weight_decay_0_applies_the_trust_ratio_except_to_norms_and_biases():
    lr, eta = 1.0, 1e-3
    model, x, y = _problem()
    ref = copy.deepcopy(model)
    F.cross_entropy(ref(x), y).backward()
    _step("LARS", model, x, y, lr=lr, weight_decay=0.0)
    sgd = copy.deepcopy(ref)
    for p in sgd.parameters():
        p.grad = None
    _step("SGD-M", sgd, x, y, lr=lr, weight_decay=0.0)
    for (name, p0), p1, p_sgd in zip(ref.named_parameters(), model.parameters(), sgd.parameters()):
        g = p0.grad
        if p0.ndim == 1:  # biases, LayerNorm: plain SGD step, as SGD-M
            expected = p0 - lr * g
            assert torch.equal(p1, p_sgd), name
        else:  # You et al.: local lr = eta * |w| / |g| (weight decay 0)
            expected = p0 - lr * eta * p0.norm() / (g.norm() + 1e-8) * g
            assert not torch.allclose(p1, p_sgd), name
        assert torch.allclose(p1, expected, rtol=1e-5, atol=1e-7), name


def test_lars_keeps_norms_and_biases_out_of_adaptation_under_decay_all():
    model = build_backbone("resnet50", num_classes=10, scale="tiny")
    optimizer, record = build_optimizer(resolve_optimizer("LARS", wd_policy="decay_all"), model)
    groups = {g["always_adapt"]: g for g in optimizer.param_groups}
    assert groups[False]["weight_decay"] == groups[True]["weight_decay"] == 1e-6
    assert all(p.ndim == 1 for p in groups[False]["params"])
    assert all(p.ndim > 1 for p in groups[True]["params"])
    assert any(g.get("options") == {"always_adapt": False} for g in record["param_groups"]["groups"])


# ---------------------------------------------------------------- Sophia: released and real

def test_paper_sophia_is_the_released_behaviour_sign_of_momentum_with_decoupled_decay():
    lr, wd, (b1, _) = 1e-2, 0.1, get_optimizer_info("Sophia").fixed["betas"]
    model, x, y = _problem()
    ref = copy.deepcopy(model)
    stepper = _step("Sophia", model, x, y, steps=2, lr=lr, weight_decay=wd, wd_policy="decay_all")
    momenta = [torch.zeros_like(p) for p in ref.parameters()]
    for _ in range(2):  # by hand: p <- p (1 - lr wd) - lr sign(m), m <- b1 m + (1 - b1) g
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        with torch.no_grad():
            for p, m in zip(ref.parameters(), momenta):
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                p.mul_(1 - lr * wd).sub_(lr * m.sign())
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert all(not s["hessian"].any() for s in stepper.optimizer.state.values())


def test_sophia_g_refreshes_its_hessian_estimate():
    model, x, y = _problem()
    stepper = _step("sophia_g", model, x, y)
    assert resolve_optimizer("sophia_g").curvature == "gnb"
    assert all(s["hessian"].abs().sum() > 0 for s in stepper.optimizer.state.values())
