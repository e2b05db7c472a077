"""Optimizer zoo: registry, resolution into recorded specs, and the stepping protocol."""

from bocb.optim import catalog as _catalog  # noqa: F401  (registers the zoo)
from bocb.optim.build import OptimizerSpec, build_optimizer, library_version, resolve_optimizer
from bocb.optim.info import (
    CATEGORIES,
    OPTIMIZERS,
    OptimizerInfo,
    get_optimizer_info,
    list_optimizers,
    log_grid,
    optimizer,
    register_optimizer,
)
from bocb.optim.param_groups import DEFAULT_POLICY, POLICIES, POLICY_CHOICES, build_param_groups
from bocb.plugins import load_entry_points as _load_entry_points

_load_entry_points("bocb.optimizers")  # installed packages' optimizers (bocb.plugins)


def __getattr__(name: str):
    # The stepping protocol imports torch: only a process that trains pays for it (bocb.lazy).
    if name == "Stepper":
        from bocb.optim.stepping import Stepper

        return Stepper
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CATEGORIES",
    "DEFAULT_POLICY",
    "OPTIMIZERS",
    "POLICIES",
    "POLICY_CHOICES",
    "OptimizerInfo",
    "OptimizerSpec",
    "Stepper",
    "build_optimizer",
    "build_param_groups",
    "get_optimizer_info",
    "library_version",
    "list_optimizers",
    "log_grid",
    "optimizer",
    "register_optimizer",
    "resolve_optimizer",
]
