"""User modules that register backbones and optimizers: named on the command line or in a study,
or found through entry points.

Three ways in, all ending in the registries (:mod:`bocb.zoo`, :mod:`bocb.optim`):

- ``--plugin MODULE`` (repeatable, on ``bocb`` itself or on a command) and a study's ``plugins =
  ["my_pkg.models"]``: the modules are imported before anything else is resolved, and every worker
  of a run imports them again before its first trial (they travel in
  :class:`bocb.executors.worker.WorkerConfig`), so a trial names a user model the same way in
  every process;
- installed packages: the entry-point groups ``bocb.backbones`` and ``bocb.optimizers`` (each entry
  names a module, or a callable that registers), loaded when the zoo is imported; one that fails is
  a warning, not a broken bocb;
- names by source (``timm:NAME``, ``package.module:builder``), resolved on use
  (:mod:`bocb.zoo.external`).

What a module registers is never the paper's: ``paper=True`` belongs to the paper's 20 backbones
and 20 optimizers only (:func:`paper_flag`).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable
from importlib import metadata

GROUPS = ("bocb.backbones", "bocb.optimizers")
# Modules imported by load_plugins in this process, in order: process pools this process starts
# (bocb diagnose's measuring processes) import them too.
LOADED: list[str] = []


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Import each module (once; a module already imported is not imported again); returns their
    names. ``ValueError`` with one line naming the module when one cannot be imported."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any failure of a user module is one line for the user
            raise ValueError(f"plugin {name!r} cannot be imported: {type(err).__name__}: {err}") from None
        loaded.append(name)
        if name not in LOADED:
            LOADED.append(name)
    return loaded


def load_entry_points(group: str) -> list[str]:
    """Load every entry point of ``group``; returns their names. Each names a module (or a callable
    that registers when called). A plug-in that fails to load is reported with a warning and
    skipped, so one broken package cannot take the zoo down."""
    loaded = []
    for ep in metadata.entry_points(group=group):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
            loaded.append(ep.name)
        except Exception as exc:  # noqa: BLE001 - a plug-in's error must not break bocb
            warnings.warn(f"{group} plug-in {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
    return loaded


def paper_flag(short: str, claimed: bool, kind: str) -> bool:
    """Whether a registration is one of the paper's: only the paper's own names (Table 1) are,
    whatever a registration claims; a user entry that claims it is not."""
    if not claimed:
        return False
    from bocb import paper

    names = paper.backbone_order() if kind == "backbone" else paper.optimizer_order()
    return short in names
