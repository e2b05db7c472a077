"""Resolve an optimizer choice into a complete, serialisable spec, and build it for a model.

:func:`resolve_optimizer` turns ``("LAMB", lr=..., weight_decay=..., **knobs)`` into an
:class:`OptimizerSpec` that names the class, its library version, **every** constructor argument
(bocb's fixed knobs, the user's overrides and the class defaults, written out) and the
parameter-group policy. A spec depends on no model, so it can be hashed into a trial's identity
before anything is built; :func:`build_optimizer` then applies it to a model.

The weight-decay policy is resolved here: ``paper`` (the default) becomes the optimizer's own rule
(``OptimizerInfo.paper_wd_policy``); the spec records the rule and ``wd_policy_from = "paper"``,
an explicit rule is recorded with ``wd_policy_from = "explicit"``.

Unknown knobs are an error naming the valid ones. This is deliberate: timm's ``create_optimizer``
drops arguments an optimizer does not take, and pytorch-optimizer classes swallow them through
``**kwargs``; in a benchmark either makes a run differ silently from its record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bocb.optim import signatures
from bocb.plain import plain_dict
from bocb.optim.info import OptimizerInfo, get_optimizer_info
from bocb.optim.param_groups import DEFAULT_POLICY, build_param_groups, resolve_policy
from bocb.provenance import distribution_version

if TYPE_CHECKING:
    import torch
    from torch import nn

# Distribution names of the libraries the zoo draws on, for version records.
_DISTRIBUTIONS = {
    "torch": "torch",
    "timm": "timm",
    "pytorch_optimizer": "pytorch-optimizer",
    "sophia_opt": "sophia-opt",
    "schedulefree": "schedulefree",
}


def library_version(library: str) -> str:
    return distribution_version(_DISTRIBUTIONS.get(library, library))


def _jsonable(value: Any) -> Any:
    """Plain JSON values: tuples become lists, non-finite floats become strings (strict JSON)."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 'inf', '-inf', 'nan'
    if hasattr(value, "item") and type(value).__module__.split(".")[0] == "torch":  # a 0-d tensor default
        return value.item()
    return value


def _signature(info: OptimizerInfo) -> dict[str, Any]:
    """Argument -> default (``signatures.EMPTY`` when required): from the shipped table when it was
    read from the installed library version, else from the class (importing its library)."""
    shipped = signatures.from_table(info.name, info.target, library_version(info.library))
    return shipped if shipped is not None else signatures.from_class(info.load_class())


@dataclass(frozen=True)
class OptimizerSpec:
    """A fully resolved optimizer: what to build, with which arguments, and how to drive it.

    ``args`` holds every constructor argument as plain JSON values (lists for tuples, strings
    for non-finite floats); :meth:`constructor_args` converts them back for the class.
    ``wd_policy`` is the rule applied (``no_decay_1d`` or ``decay_all``) and ``wd_policy_from``
    says whether it was the ``paper`` default or ``explicit``; ``exempt_options`` are the
    param-group options of the decay-exempt parameters; ``clip_grad_norm`` is the optimizer's own
    gradient clip (:class:`bocb.optim.Stepper` combines it with the recipe's).
    """

    name: str
    short: str
    category: str
    target: str
    library: str
    library_version: str
    args: dict[str, Any]
    wd_policy: str = "no_decay_1d"
    wd_policy_from: str = "explicit"
    exempt_options: dict[str, Any] = field(default_factory=dict)
    clip_grad_norm: float | None = None
    curvature: str = "none"
    curvature_interval: int = 10
    needs_train_eval: bool = False
    matrix_fallback: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lr(self) -> float:
        return float(self.args["lr"])

    @property
    def weight_decay(self) -> float:
        return float(self.args.get("weight_decay", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal specs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimizerSpec:
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> OptimizerSpec:
        return cls.from_dict(json.loads(text))

    def constructor_args(self) -> dict[str, Any]:
        """``args`` with the types the class expects (tuples, non-finite floats restored)."""
        sig = _signature(get_optimizer_info(self.name))
        out = {}
        for key, value in self.args.items():
            default = sig.get(key)
            if isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, str) and value in ("inf", "-inf", "nan") and (
                isinstance(default, float) or default is None
            ):
                value = float(value)
            out[key] = value
        return out


# Ranges of arguments whose meaning is the same in every optimizer that takes them; others are
# checked by type only (against the class default). Bounds are inclusive unless noted.
_RANGES: dict[str, tuple[float, float, str]] = {
    "lr": (0.0, math.inf, "a finite number >= 0"),
    "weight_decay": (0.0, math.inf, "a finite number >= 0"),
    "eps": (0.0, math.inf, "a finite number >= 0"),
    "momentum": (0.0, 1.0, "a number in [0, 1]"),
    "dampening": (0.0, 1.0, "a number in [0, 1]"),
    "betas": (0.0, 1.0, "numbers in [0, 1]"),
}


def _check_knob(short: str, key: str, value: Any, default: Any) -> None:
    """Type (from the class default) and range (:data:`_RANGES`) of one argument, else ValueError.

    Done when the spec is resolved, so a study with ``momentum = "high"`` or ``betas = [0.9]``
    fails before anything runs instead of at trial time.
    """
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def bad(expected: str) -> ValueError:
        return ValueError(f"{short} argument {key}: expected {expected}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif number(default):
        if not number(value) or not math.isfinite(value):
            raise bad("a finite number")
        if isinstance(default, int) and not isinstance(value, int) and not float(value).is_integer():
            raise bad("an integer")
    elif isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(default):
            raise bad(f"a list of {len(default)} values")
        if all(number(d) for d in default) and not all(number(v) and math.isfinite(v) for v in value):
            raise bad(f"a list of {len(default)} finite numbers")
    elif isinstance(default, str) and not isinstance(value, str):
        raise bad("a string")
    if key in _RANGES and value is not None:
        low, high, words = _RANGES[key]
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if not number(v) or not math.isfinite(v) or not low <= v <= high:
                raise bad(words)


def resolve_optimizer(
    name: str,
    lr: float | None = None,
    weight_decay: float | None = None,
    *,
    wd_policy: str = DEFAULT_POLICY,
    **knobs: Any,
) -> OptimizerSpec:
    """Resolve ``name`` (canonical or paper short name) with overrides into an OptimizerSpec.

    ``lr``/``weight_decay`` default to the zoo's grid centres; ``knobs`` override the optimizer's
    own arguments (``betas=(0.9, 0.95)``) and must be arguments of its class. ``wd_policy`` is
    ``paper`` (the optimizer's released rule), ``no_decay_1d`` or ``decay_all``.
    """
    info: OptimizerInfo = get_optimizer_info(name)
    rule, rule_from = resolve_policy(wd_policy, info.paper_wd_policy)
    sig = _signature(info)
    bad = sorted(set(knobs) - set(sig))
    if bad:
        raise ValueError(
            f"{info.short} ({info.source}) takes no argument {', '.join(bad)}: "
            f"valid: {', '.join(sorted(sig))}"
        )
    args: dict[str, Any] = {}
    for key, default in sig.items():
        if default is not signatures.EMPTY:
            args[key] = default
    args.update(info.fixed)
    for key, value in knobs.items():
        _check_knob(info.short, key, value, args.get(key))
    args.update(knobs)
    for key, value in (("lr", lr), ("weight_decay", weight_decay)):
        if value is not None:
            _check_knob(info.short, key, value, 0.0)
    args["lr"] = info.lr if lr is None else float(lr)
    if "weight_decay" in sig:
        args["weight_decay"] = info.weight_decay if weight_decay is None else float(weight_decay)
    elif weight_decay:
        raise ValueError(f"{info.short} ({info.source}) has no weight_decay argument")
    missing = [k for k, p in sig.items() if k not in args]
    if missing:
        raise ValueError(f"{info.short}: required argument(s) {missing} have no value")
    return OptimizerSpec(
        name=info.name,
        short=info.short,
        category=info.category,
        target=info.target,
        library=info.library,
        library_version=library_version(info.library),
        args={k: _jsonable(v) for k, v in sorted(args.items())},
        wd_policy=rule,
        wd_policy_from=rule_from,
        exempt_options={k: _jsonable(v) for k, v in info.exempt_options.items()},
        clip_grad_norm=info.clip_grad_norm,
        curvature=info.curvature,
        curvature_interval=info.curvature_interval,
        needs_train_eval=info.needs_train_eval,
        matrix_fallback=info.matrix_fallback,
    )


def build_optimizer(spec: OptimizerSpec, model: nn.Module) -> tuple[torch.optim.Optimizer, dict]:
    """The optimizer for ``model``'s parameters, and the spec's record with its parameter groups.

    The record (``spec.to_dict()`` plus ``param_groups``) is what a run stores.
    """
    groups, groups_record = build_param_groups(
        model, spec.weight_decay, spec.wd_policy, head_fallback=spec.matrix_fallback,
        exempt_options=spec.exempt_options,
    )
    cls = get_optimizer_info(spec.name).load_class()
    optimizer = cls(groups, **spec.constructor_args())
    record = spec.to_dict()
    record["param_groups"] = groups_record
    return optimizer, record
