"""The fidelity table: for every recipe setting, backbone override and optimizer knob, the value the
paper (or its released configs) used, bocb's value, and where the paper's value comes from.

One source of truth: the paper's values are the :class:`bocb.fidelity.Claim` records declared next
to the code they concern (:mod:`bocb.recipe_claims`, :mod:`bocb.optim.claims`); bocb's values are
read from the live objects here, never written down twice. ``bocb paper protocol`` prints the
table and the README's "Fidelity to the paper" section is its Markdown rendering (a test keeps them
equal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bocb.fidelity import Claim

MISSING = object()


@dataclass(frozen=True)
class Row:
    kind: str
    subject: str
    key: str
    paper: str
    bocb: str
    same: bool
    source: str
    note: str


def claims() -> list[Claim]:
    """Every declared claim: recipes, backbone overrides, optimizers."""
    from bocb.optim.claims import OPTIMIZER_CLAIMS
    from bocb.recipe_claims import BACKBONE_CLAIMS, RECIPE_CLAIMS

    return [*RECIPE_CLAIMS, *BACKBONE_CLAIMS, *OPTIMIZER_CLAIMS]


def bocb_value(claim: Claim) -> Any:
    """bocb's value for the claim's setting, read from the code (``claim.bocb`` when bocb has no
    such setting). Raises ``KeyError`` naming the claim when the setting does not exist."""
    if claim.bocb is not None:
        return claim.bocb
    if claim.kind == "optimizer":
        from bocb.optim.claims import bocb_value as optimizer_value

        return optimizer_value(claim)
    from bocb.recipes import RECIPES, recipe_for
    from bocb.zoo import get_backbone_info

    if claim.kind == "recipe":
        if claim.subject not in RECIPES:
            raise KeyError(f"claim {claim}: no recipe {claim.subject!r}")
        recipe = RECIPES[claim.subject]
    else:
        recipe = recipe_for(get_backbone_info(claim.subject))
    owner: Any = recipe
    key = claim.key
    if key.startswith("augment."):
        owner, key = recipe.augment, key.removeprefix("augment.")
    value = getattr(owner, key, MISSING)
    if value is MISSING:
        raise KeyError(f"claim {claim.kind}/{claim.subject}/{claim.key}: bocb has no such setting")
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(show(v) for v in value) + ")"
    return str(value)


def table() -> list[Row]:
    """The fidelity table, in declaration order (recipes, backbone overrides, optimizers)."""
    rows = []
    for c in claims():
        value = bocb_value(c)
        rows.append(Row(c.kind, c.subject, c.key, show(c.paper), show(value),
                        c.bocb is None and _same(c.paper, value), c.source, c.note))
    return rows


def differences() -> list[Row]:
    return [r for r in table() if not r.same]


def markdown() -> str:
    """The table as Markdown (the README's section body)."""
    lines = ["| what | setting | paper | bocb | source | note |", "|---|---|---|---|---|---|"]
    for r in table():
        mark = "" if r.same else " **≠**"
        lines.append(f"| {r.kind} {r.subject} | `{r.key}` | {r.paper} | {r.bocb}{mark} | {r.source} | {r.note} |")
    return "\n".join(lines) + "\n"
