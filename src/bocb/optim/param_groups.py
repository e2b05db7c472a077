"""Parameter-group policies: which parameters get weight decay.

The paper's AdamW/LAMB/Adan configurations exclude norms, biases, layer-scale, cls-token and
position embeddings from decay, while its SGD configurations decay everything.
Mixing the two inside one grid would confound optimizer with policy, so bocb makes the policy an
explicit, recorded choice applied to every optimizer of a study:

- ``no_decay_1d`` (default): no decay for 1-D parameters (every norm weight and bias, every bias,
  layer-scale and GRN vectors) and for the names the model lists in ``no_weight_decay()`` (timm's
  convention: cls token, position embeddings, relative-position tables); decay for the rest.
- ``decay_all``: one group, every parameter decayed.

The grouping itself is timm's ``param_groups_weight_decay``; this module only chooses its inputs
and describes the result for the run record.
"""

from __future__ import annotations

from typing import Any

from timm.optim._param_groups import param_groups_weight_decay
from torch import nn

from bocb.zoo.backbones import classifier_name

POLICIES: dict[str, str] = {
    "no_decay_1d": "no decay for 1-D params (norms, biases, layer scales) and model.no_weight_decay()",
    "decay_all": "every parameter decayed",
}
DEFAULT_POLICY = "no_decay_1d"


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown weight-decay policy {policy!r}: valid: {', '.join(POLICIES)}")
    return policy


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
    model: nn.Module, weight_decay: float, policy: str, *, head_fallback: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Parameter groups for ``model`` under ``policy`` and a JSON-ready description of them.

    ``head_fallback`` marks the classifier's parameters ``use_fallback=True`` (timm's Muon sends
    such groups to AdamW). Frozen parameters are left out, as every optimizer would ignore them.
    """
    check_policy(policy)
    exclude_1d = policy == "no_decay_1d"
    no_wd = _model_no_weight_decay(model) if exclude_1d else set()
    fallback = _head_names(model) if head_fallback else set()
    groups = param_groups_weight_decay(
        model,
        weight_decay=weight_decay,
        weight_decay_exclude_1d=exclude_1d,
        no_weight_decay_list=no_wd,
        fallback_list=fallback,
    )
    groups = [g for g in groups if g["params"]]
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
        # Name the exceptions (they are few); the decayed group is "everything else".
        if entry["weight_decay"] != weight_decay or entry.get("use_fallback"):
            entry["names"] = sorted(names[id(p)] for p in g["params"])
        described.append(entry)
    record = {"policy": policy, "rule": POLICIES[policy], "groups": described}
    return groups, record
