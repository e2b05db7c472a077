"""Backbone registry: metadata for every model, and the one way to build it.

A backbone is registered with a :class:`BackboneInfo` (the paper's design taxonomy:
group, stage-wise macro design, block design, token mixer, residual/norm scheme;
the default CIFAR input policy, where it comes from) and a builder
``(num_classes, policy, scale, drop_path_rate) -> nn.Module``:

- ``policy`` is ``cifar`` (native 32x32 input, the stem's down-sampling removed) or ``upsample``
  (input resized to the model's native resolution, the ImageNet architecture unchanged);
- ``scale`` is ``paper`` (the size the study used) or ``tiny`` (the same design with few channels
  and blocks, for CPU smoke runs).

A backbone whose info says ``supports_dropout`` also takes ``drop_rate`` (dropout inside its
blocks) as a fifth argument; no other builder is ever called with one.

``recipe_overrides`` are the backbone's departures from its family recipe in the authors' released
config (Recipe field names, or ``augment.<field>``); ``recipe_source`` names that config. They are
applied by :func:`bocb.recipes.recipe_for` and recorded in every trial's spec.

:func:`resolve_backbone` turns a user's choice into a frozen, serialisable :class:`BackboneSpec`
(a trial's model identity); :func:`build_backbone` builds it. Users add their own models with
:func:`register_backbone` or through the ``bocb.backbones`` entry-point group.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from bocb.lazy import lazy_module
from bocb.plain import plain_dict
from bocb.plugins import paper_flag
from bocb.registry import Registry

if TYPE_CHECKING:
    from torch import nn

# Imported when a model is first built or inspected (bocb.lazy): the registry itself is metadata.
torch = lazy_module("torch")

POLICIES = {
    "cifar": "native 32x32 input, stem down-sampling removed",
    "upsample": "input resized (bicubic) to the native resolution, ImageNet architecture unchanged",
}
SCALES = {
    "paper": "the published size the study used",
    "tiny": "same design, few channels and blocks, for CPU smoke runs",
}
CIFAR_SIZE = 32

Builder = Callable[[int, str, str, float], "nn.Module"]


@dataclass(frozen=True)
class BackboneInfo:
    """One backbone of the zoo, described in the paper's design taxonomy."""

    name: str
    short: str
    model: str
    group: str
    stages: str
    block: str
    token_mixer: str
    residual_norm: str
    default_policy: Literal["cifar", "upsample"]
    builder: Builder = field(repr=False, compare=False)
    recipe: str = "pytorch"  # the paper's training recipe for it (bocb.recipes.RECIPES)
    source: str = "timm"  # timm | torchvision | bocb | a user package name
    native_size: int = 224
    published_params_m: float | None = None  # ImageNet-1k model at native_size, as published
    supports_drop_path: bool = True
    supports_dropout: bool = False  # the builder takes drop_rate (see the module doc)
    paper: bool = True
    cifar_stem: str = ""  # what the cifar policy changes, in words
    reference: str = ""
    recipe_overrides: Mapping[str, Any] = field(default_factory=dict)
    recipe_source: str = ""  # the released config the recipe and its overrides come from
    scales: tuple[str, ...] = ("paper", "tiny")  # the sizes it can be built at (external models: one)
    policies: tuple[str, ...] = ("cifar", "upsample")  # the input policies it can be built with

    def __post_init__(self) -> None:
        if self.default_policy not in POLICIES:
            raise ValueError(f"{self.name}: default_policy must be one of {list(POLICIES)}")
        object.__setattr__(self, "recipe_overrides", MappingProxyType(dict(self.recipe_overrides)))

    def input_size(self, policy: str) -> int:
        return CIFAR_SIZE if policy == "cifar" else self.native_size


def _external(name: str) -> BackboneInfo | None:
    """Models named ``timm:NAME`` or ``package.module:builder`` (:mod:`bocb.zoo.external`)."""
    from bocb.zoo.external import resolve_external

    return resolve_external(name)


BACKBONES: Registry[BackboneInfo] = Registry("backbone", on_miss=_external)


def register_backbone(
    name: str,
    *,
    short: str | None = None,
    model: str | None = None,
    group: str = "user",
    stages: str = "unknown",
    block: str = "unknown",
    token_mixer: str = "unknown",
    residual_norm: str = "unknown",
    default_policy: Literal["cifar", "upsample"] = "cifar",
    source: str = "user",
    aliases: tuple[str, ...] = (),
    **meta: Any,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, policy, scale, drop_path_rate) -> nn.Module``.

    Example::

        @register_backbone("my_net", short="MyNet", group="modern CNN", default_policy="cifar")
        def my_net(num_classes, policy, scale, drop_path_rate):
            return MyNet(num_classes, stem_stride=1 if policy == "cifar" else 4, ...)

    The model then appears in ``bocb zoo backbones`` and in studies like the built-in ones.
    """

    def wrap(builder: Builder) -> Builder:
        meta["paper"] = paper_flag(short or name, meta.get("paper", True), "backbone")
        info = BackboneInfo(
            name=name,
            short=short or name,
            model=model or short or name,
            group=group,
            stages=stages,
            block=block,
            token_mixer=token_mixer,
            residual_norm=residual_norm,
            default_policy=default_policy,
            builder=builder,
            source=source,
            **meta,
        )
        BACKBONES.add(info, aliases=tuple({info.short, *aliases} - {name}))
        return builder

    return wrap


def get_backbone_info(name: str) -> BackboneInfo:
    return BACKBONES.get(name)


def list_backbones(**equals: Any) -> list[BackboneInfo]:
    """Registered backbones in registration order, filtered by ``field=value`` pairs."""
    return BACKBONES.filter(**equals)


def load_entry_points(group: str = "bocb.backbones") -> list[str]:
    """Load the backbone plug-ins of installed packages (:func:`bocb.plugins.load_entry_points`)."""
    from bocb.plugins import load_entry_points as load

    return load(group)


@dataclass(frozen=True)
class BackboneSpec:
    """A resolved backbone choice: everything needed to rebuild the same network."""

    name: str
    short: str
    policy: str
    scale: str
    num_classes: int
    drop_path_rate: float
    input_size: int
    source: str
    source_version: str
    drop_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = plain_dict(self)
        if not self.drop_rate:  # specs without dropout keep the identity they had before it existed
            del out["drop_rate"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        return cls(**data)


def _source_version(source: str) -> str:
    from bocb.provenance import distribution_version

    return distribution_version(source)


def resolve_backbone(
    name: str,
    num_classes: int = 100,
    policy: str | None = None,
    scale: str = "paper",
    drop_path_rate: float = 0.0,
    drop_rate: float = 0.0,
) -> BackboneSpec:
    """Validate a backbone choice; ``policy=None`` takes the backbone's default CIFAR policy."""
    info = get_backbone_info(name)
    policy = policy or info.default_policy
    if policy not in POLICIES:
        raise ValueError(f"unknown input policy {policy!r}: valid: {', '.join(POLICIES)}")
    if policy not in info.policies:
        raise ValueError(f"{info.short} cannot take input policy {policy!r} ({info.cifar_stem}): "
                         f"valid: {', '.join(info.policies)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: valid: {', '.join(SCALES)}")
    if scale not in info.scales:  # an external model has the one size it is named by
        scale = info.scales[0]
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if drop_path_rate and not info.supports_drop_path:
        raise ValueError(f"{info.short} has no stochastic depth: drop_path_rate must be 0, got {drop_path_rate}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    if drop_rate and not info.supports_dropout:
        raise ValueError(f"{info.short} takes no dropout rate: drop_rate must be 0, got {drop_rate}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    return BackboneSpec(
        name=info.name,
        short=info.short,
        policy=policy,
        scale=scale,
        num_classes=num_classes,
        drop_path_rate=float(drop_path_rate),
        input_size=info.input_size(policy),
        source=info.source,
        source_version=_source_version(info.source),
        drop_rate=float(drop_rate),
    )


def build_backbone(spec: BackboneSpec | str, **kwargs: Any) -> nn.Module:
    """Build the network for ``spec`` (or resolve ``spec`` as a name with ``kwargs`` first)."""
    if isinstance(spec, str):
        spec = resolve_backbone(spec, **kwargs)
    elif kwargs:
        raise TypeError("pass either a BackboneSpec or a name with keyword arguments, not both")
    info = get_backbone_info(spec.name)
    if info.supports_dropout:
        return info.builder(spec.num_classes, spec.policy, spec.scale, spec.drop_path_rate, spec.drop_rate)  # type: ignore[call-arg]
    return info.builder(spec.num_classes, spec.policy, spec.scale, spec.drop_path_rate)


def classifier_name(model: nn.Module) -> str:
    """Qualified name of the classifier: the last ``nn.Linear`` in module order.

    Every zoo model ends in a linear classifier; the optimizer's head routing (Muon) and
    fine-tuning's new head both use this one rule.
    """
    last = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier")
    return last


def init_backbone(spec: BackboneSpec, seed: int) -> nn.Module:
    """The randomly initialised network a trial with ``seed`` starts from (on the CPU).

    Seeds torch's global RNG with ``seed`` and builds: the trainer and the weight diagnostics'
    random-init snapshot both call this, so the snapshot is exactly the trials' starting point.
    """
    torch.manual_seed(seed)
    return build_backbone(spec)


def count_params(spec: BackboneSpec) -> int:
    """Parameter count: from the counted table (:mod:`bocb.sizes`) for the zoo's own backbones,
    else counted without allocating memory (built on the meta device where possible)."""
    from bocb import sizes

    counted = sizes.lookup(spec.to_dict(), "params")
    if counted is not None:
        return int(counted)
    try:
        with torch.device("meta"):
            model = build_backbone(spec)
    except Exception:  # noqa: BLE001 - some third-party init code cannot run on meta tensors
        model = build_backbone(spec)
    return sum(p.numel() for p in model.parameters())
