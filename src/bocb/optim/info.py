"""Optimizer metadata: the frozen record every registry entry is, and the tuning grids.

An :class:`OptimizerInfo` says where an optimizer comes from (an importable class in a maintained
library), which of the paper's four categories it belongs to, the knobs bocb fixes for it, the
centre of its learning-rate and weight-decay grids, and what its step needs from the training loop
(a Hessian-vector product, a Gauss-Newton curvature refresh, train/eval mode switches). The trainer
reads these flags; it never inspects optimizer objects.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from bocb.registry import Registry

Category = Literal["a", "b", "c", "d", "extra"]
CATEGORIES: dict[str, str] = {
    "a": "fixed learning rate with momentum",
    "b": "adaptive learning rate with momentum (2nd-moment estimate)",
    "c": "estimated learning rate with momentum (other statistics)",
    "d": "adaptive learning rate without momentum",
    "extra": "beyond the paper",
}

# How the optimizer's step must be driven, beyond backward() + step():
#   none: plain;  hvp: backward(create_graph=True) so the optimizer can take Hessian-vector
#   products (SophiaH);  gnb: every `curvature_interval` steps, a Gauss-Newton-Bartlett estimate
#   (backward of the loss on labels sampled from the model's own softmax, then
#   optimizer.update_hessian()), and step(bs=batch_size) (SophiaG, as in its official code).
Curvature = Literal["none", "hvp", "gnb"]
WdRule = Literal["no_decay_1d", "decay_all"]

# The paper's tuning values (Tables A4/A5) lie on a 1-2-5 series (..., 1e-4, 2e-4, 5e-4, 1e-3, ...);
# bocb's grids are consecutive points of that series. Centres off the series (LARS 1.2, AdaDelta 1.5)
# are snapped to the nearest point in log space.
SERIES = (1.0, 2.0, 5.0)
GRID_POINTS = 5
# A weight-decay centre of 0 cannot sit on a log grid. For optimizers the paper ran without decay
# (Adam, LION, ...; it writes 0 or 1e-8) the grid is 0 then decades up to 1e-3, the range the paper's
# own choices for those optimizers span.
ZERO_WD_GRID = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)


def series_value(index: int) -> float:
    """The index-th point of the 1-2-5 series; index 0 is 1.0, 3 is 10.0, -1 is 0.5."""
    decade, k = divmod(index, len(SERIES))
    return float(f"{SERIES[k] * 10.0**decade:.6g}")


def series_index(value: float) -> int:
    """Index of the 1-2-5 series point nearest to ``value`` in log space."""
    if value <= 0:
        raise ValueError(f"a log grid needs a positive value, got {value}")
    guess = round(math.log10(value) * len(SERIES))
    candidates = range(guess - 3, guess + 4)
    return min(candidates, key=lambda i: abs(math.log(series_value(i) / value)))


def log_grid(centre: float, points: int = GRID_POINTS) -> tuple[float, ...]:
    """``points`` consecutive 1-2-5 values centred on ``centre`` (snapped); ZERO_WD_GRID for 0."""
    if centre == 0:
        return ZERO_WD_GRID[:points]
    mid = series_index(centre)
    half = points // 2
    return tuple(series_value(i) for i in range(mid - half, mid - half + points))


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer of the zoo.

    ``target`` is ``"module:Class"``; ``fixed`` holds the constructor arguments bocb sets on
    purpose (momentum, betas, ...), everything else is the class's own default and is written out
    in full by :func:`bocb.optim.build.resolve_optimizer`. ``lr`` and ``weight_decay`` are the
    centres of the tuning grids (the mode of the paper's chosen values for paper optimizers).

    ``paper_wd_policy`` is the weight-decay rule the ``paper`` policy resolves to (the rule of the
    optimizer's released config, or of its closest released analogue; :mod:`bocb.optim.claims`
    says which). ``exempt_options`` are param-group options for the parameters that rule exempts
    from decay (norms, biases, ...), applied whatever the study's policy. ``clip_grad_norm`` is a
    global gradient-norm clip the optimizer's own released config applies (Adan's
    ``max_grad_norm``) where the library class has no such argument; the Stepper applies it.
    """

    name: str
    short: str
    category: Category
    target: str
    lr: float
    weight_decay: float
    fixed: Mapping[str, Any] = field(default_factory=dict)
    wd_style: Literal["l2", "decoupled", "trust-ratio"] = "l2"
    curvature: Curvature = "none"
    curvature_interval: int = 10
    paper_wd_policy: WdRule = "no_decay_1d"
    exempt_options: Mapping[str, Any] = field(default_factory=dict)
    clip_grad_norm: float | None = None
    needs_train_eval: bool = False  # schedule-free: optimizer.train()/eval() around each phase
    matrix_fallback: bool = False  # Muon: non-matrix params and the classifier go to AdamW
    paper: bool = True
    summary: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"{self.name}: category {self.category!r} not in {list(CATEGORIES)}")
        if ":" not in self.target:
            raise ValueError(f"{self.name}: target {self.target!r} must be 'module:Class'")
        if self.paper_wd_policy not in ("no_decay_1d", "decay_all"):
            raise ValueError(f"{self.name}: paper_wd_policy {self.paper_wd_policy!r} not in no_decay_1d, decay_all")
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))
        object.__setattr__(self, "exempt_options", MappingProxyType(dict(self.exempt_options)))

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @property
    def library(self) -> str:
        """The distribution the class comes from (its top-level package)."""
        return self.module.split(".")[0]

    @property
    def source(self) -> str:
        """``library.Class`` as shown to users, e.g. ``timm.optim.Lamb``."""
        module, cls = self.target.split(":")
        parts = module.split(".")
        shown = ".".join(parts[:2]) if parts[0] in ("torch", "timm") else parts[0]
        return f"{shown}.{cls}"

    def load_class(self) -> type:
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)

    def lr_grid(self, points: int = GRID_POINTS) -> tuple[float, ...]:
        return log_grid(self.lr, points)

    def wd_grid(self, points: int = GRID_POINTS) -> tuple[float, ...]:
        return log_grid(self.weight_decay, points)


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")


def register_optimizer(info: OptimizerInfo, aliases: tuple[str, ...] = ()) -> OptimizerInfo:
    """Add an optimizer to the zoo; the short name is always an alias. ``paper`` holds only for the
    paper's own 20 optimizers (:func:`bocb.plugins.paper_flag`), whatever ``info`` says."""
    from dataclasses import replace

    from bocb.plugins import paper_flag

    info = replace(info, paper=paper_flag(info.short, info.paper, "optimizer"))
    return OPTIMIZERS.add(info, aliases=(info.short, *aliases))


def optimizer(name: str, *, lr: float, weight_decay: float, short: str | None = None,
              category: Category = "extra", aliases: tuple[str, ...] = (), **meta: Any):
    """Class decorator registering a ``torch.optim.Optimizer`` subclass defined in a user module.

    Example::

        @bocb.optim.optimizer("my_sgd", short="MySGD", category="a", lr=0.1, weight_decay=5e-4)
        class MySGD(torch.optim.Optimizer):
            ...

    ``lr`` and ``weight_decay`` are the centres of its grids and the adaptive tuner's start when
    no paper value or family choice exists; ``meta``: other :class:`OptimizerInfo` fields
    (``fixed``, ``wd_style``, ...). The class must be importable by its module's name: workers
    import the module again (``--plugin`` / a study's ``plugins``)."""

    def wrap(cls: type) -> type:
        register_optimizer(OptimizerInfo(name=name, short=short or name, category=category,
                                         target=f"{cls.__module__}:{cls.__qualname__}", lr=lr,
                                         weight_decay=weight_decay, **meta), aliases=aliases)
        return cls

    return wrap


def get_optimizer_info(name: str) -> OptimizerInfo:
    return OPTIMIZERS.get(name)


def list_optimizers(category: str | None = None, paper: bool | None = None) -> list[OptimizerInfo]:
    """Registered optimizers in registration order, optionally filtered."""
    equals: dict[str, Any] = {}
    if category is not None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown optimizer category {category!r}: valid: {', '.join(CATEGORIES)}")
        equals["category"] = category
    if paper is not None:
        equals["paper"] = paper
    return OPTIMIZERS.filter(**equals)
