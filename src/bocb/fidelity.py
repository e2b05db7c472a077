"""Fidelity to the paper's protocol: what the paper (or its released configs) used, per setting.

Each layer that implements part of the protocol (recipes, backbone overrides, optimizers) declares
:class:`Claim` records: the value the paper used for one setting and where that value comes from.
bocb's own value is never written in a claim; it is read from the live objects when the fidelity
table is built, so the table cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["recipe", "backbone", "optimizer"]


@dataclass(frozen=True)
class Claim:
    """What the paper or its released configs use for one setting.

    ``kind``/``subject`` name the object (a recipe name, a backbone's short name, an optimizer's
    short name); ``key`` is the setting (a Recipe field, a backbone override key, an optimizer
    constructor argument, or ``wd_policy``); ``paper`` the value used there; ``source`` where that
    value is read (a released config file, a table of the paper, or "paper's tables: no config
    released"); ``note`` why bocb differs, when it does. ``bocb`` is set only for a behaviour bocb
    has no setting for (e.g. a crop it does differently): bocb's behaviour in words; every other
    claim's bocb value is read from the code.
    """

    kind: Kind
    subject: str
    key: str
    paper: Any
    source: str
    note: str = ""
    bocb: str | None = None
