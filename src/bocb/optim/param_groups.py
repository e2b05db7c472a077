"""Parameter-group policies: which parameters get weight decay.

The authors' released configs differ per optimizer: the CIFAR-100 ResNet-50 configs for AdamW,
LAMB and Adan exclude norms and biases from decay (``paramwise_options``), and the AdamW recipes of
DeiT-S/Swin-T/ConvNeXt-T/MogaNet-S also exclude cls token, position embeddings and layer scales;
the configs for SGD, Adam, AdamP, AdaBelief and AdaFactor decay every parameter (Westlake-AI/openmixup
``configs/classification/cifar100/optimizers/basic/r50_CE_none_bs100_*_ep200.py`` and
``configs/classification/cifar100/advanced/*_adamw_*.py``). Two rules cover them:

- ``no_decay_1d``: no decay for 1-D parameters (every norm weight and bias, every bias, layer-scale
  and GRN vectors) and for the names the model lists in ``no_weight_decay()`` (timm's convention:
  cls token, position embeddings, relative-position tables); decay for the rest.
- ``decay_all``: every parameter decayed.

A study asks for one of these, or for ``paper`` (the default): each optimizer's own rule as the
released configs use it (``OptimizerInfo.paper_wd_policy``; :func:`resolve_policy`). The run
record holds the resolved rule, never the word ``paper``, plus where it came from.

Some optimizers also treat the exempt parameters differently beyond decay (LARS leaves norms and
biases out of its trust ratio): ``exempt_options`` are param-group options for that group, and
under ``decay_all`` they split it off as a second, decayed group.

The grouping itself is timm's ``param_groups_weight_decay``; this module only chooses its inputs
and describes the result for the run record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bocb.lazy import lazy_module
from bocb.zoo.backbones import classifier_name

if TYPE_CHECKING:
    from torch import nn

timm_groups = lazy_module("timm.optim._param_groups")  # imported when groups are first built (bocb.lazy)

POLICIES: dict[str, str] = {
    "no_decay_1d": "no decay for 1-D params (norms, biases, layer scales) and model.no_weight_decay()",
    "decay_all": "every parameter decayed",
}
PAPER_POLICY = "paper"
# What a study, `bocb train` or a transfer study may ask for: a rule, or each optimizer's own.
POLICY_CHOICES: dict[str, str] = {
    PAPER_POLICY: "each optimizer's rule in the authors' released configs (OptimizerInfo.paper_wd_policy)",
    **POLICIES,
}
DEFAULT_POLICY = PAPER_POLICY


def check_policy(policy: str, choices: Mapping[str, str] = POLICIES) -> str:
    if policy not in choices:
        raise ValueError(f"unknown weight-decay policy {policy!r}: valid: {', '.join(choices)}")
    return policy


def resolve_policy(requested: str, paper_policy: str) -> tuple[str, str]:
    """The rule to apply and where it came from: ``(paper_policy, "paper")`` for ``paper``,
    else ``(requested, "explicit")``."""
    check_policy(requested, POLICY_CHOICES)
    if requested == PAPER_POLICY:
        return check_policy(paper_policy), PAPER_POLICY
    return requested, "explicit"


def _model_no_weight_decay(model: nn.Module) -> set[str]:
    # timm's documented model protocol; models without it simply list nothing.
    hook = getattr(model, "no_weight_decay", None)
    return set(hook()) if callable(hook) else set()


def _head_names(model: nn.Module) -> set[str]:
    """Parameter names of the classifier (:func:`bocb.zoo.classifier_name`), for Muon's AdamW
    fallback: Muon's authors keep the head and embeddings on AdamW. A model naming its head itself
    (``head_parameter_names()``, e.g. the detection transfer's RetinaNet) is taken at its word."""
    hook = getattr(model, "head_parameter_names", None)
    if callable(hook):
        return set(hook())
    try:
        last = classifier_name(model)
    except ValueError:
        return set()
    return {f"{last}.{p}" if last else p for p, _ in model.get_submodule(last).named_parameters()}


def build_param_groups(
    model: nn.Module,
    weight_decay: float,
    policy: str,
    *,
    head_fallback: bool = False,
    exempt_options: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Parameter groups for ``model`` under ``policy`` (a rule, not ``paper``) and a JSON-ready
    description of them.

    ``head_fallback`` marks the classifier's parameters ``use_fallback=True`` (timm's Muon sends
    such groups to AdamW). ``exempt_options`` are set on the group of 1-D and ``no_weight_decay()``
    parameters, which under ``decay_all`` keeps the full weight decay. Frozen parameters are left
    out, as every optimizer would ignore them.
    """
    check_policy(policy)
    exempt_options = dict(exempt_options or {})
    exclude_1d = policy == "no_decay_1d" or bool(exempt_options)
    no_wd = _model_no_weight_decay(model) if exclude_1d else set()
    fallback = _head_names(model) if head_fallback else set()
    # timm groups by its rule only when decay is non-zero; with options to place, a non-zero
    # stand-in finds the exempt group, and the real decay is set afterwards.
    probe = 1.0 if exempt_options else weight_decay
    groups = timm_groups.param_groups_weight_decay(
        model,
        weight_decay=probe,
        weight_decay_exclude_1d=exclude_1d,
        no_weight_decay_list=no_wd,
        fallback_list=fallback,
    )
    groups = [g for g in groups if g["params"]]
    if exempt_options:
        for g in groups:
            exempt = g["weight_decay"] == 0.0
            g["weight_decay"] = 0.0 if exempt and policy == "no_decay_1d" else weight_decay
            if exempt:
                g.update(exempt_options)
    names = {id(p): n for n, p in model.named_parameters()}
    described = []
    for g in groups:
        entry: dict[str, Any] = {
            "weight_decay": g.get("weight_decay", weight_decay),
            "tensors": len(g["params"]),
            "numel": sum(p.numel() for p in g["params"]),
        }
        if g.get("use_fallback"):
            entry["use_fallback"] = True
        options = {k: g[k] for k in exempt_options if k in g}
        if options:
            entry["options"] = options
        # Name the exceptions (they are few); the decayed group is "everything else".
        if entry["weight_decay"] != weight_decay or entry.get("use_fallback") or options:
            entry["names"] = sorted(names[id(p)] for p in g["params"])
        described.append(entry)
    record = {"policy": policy, "rule": POLICIES[policy], "groups": described}
    return groups, record
