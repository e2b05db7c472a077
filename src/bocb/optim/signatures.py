"""The constructor arguments and defaults of the registered optimizers, shipped so that resolving
a study imports no optimizer library.

Resolving an optimizer (:func:`bocb.optim.resolve_optimizer`) writes every constructor argument
with its default into the spec, so it needs each class's signature. Importing the classes means
importing torch, timm and pytorch-optimizer: 3-5 s for ``bocb plan`` or ``status``, which build
nothing. ``scripts/signatures_table.py`` writes ``signatures.json`` beside this file: for each
registered optimizer, its library's version, its arguments in order and their defaults (JSON;
``Infinity``/``NaN`` as Python's json module writes them; a required argument has no default).

The table is used only for the class it was read from (its ``module:Class`` target) at the
library version it was read from; otherwise
(or for an optimizer it does not list: a plug-in's, or a default JSON cannot hold) the class is
imported and inspected, as before. ``tests/test_light_commands.py`` checks the table against the
classes, so a stale table fails the suite.
"""

from __future__ import annotations

import inspect
import json
from functools import cache
from importlib import resources
from typing import Any

TABLE_NAME = "signatures.json"
_SKIP = {"self", "params"}  # arguments that select the parameters, not the algorithm
EMPTY = inspect.Parameter.empty  # a required argument's "default"


def from_class(cls: type) -> dict[str, Any]:
    """Argument name -> default (:data:`EMPTY` when required), in the constructor's order."""
    params = inspect.signature(cls.__init__).parameters
    return {k: EMPTY if type(p.default).__name__ == "_RequiredParameter" else p.default  # torch's `required`
            for k, p in params.items() if k not in _SKIP and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


@cache
def _table() -> dict[str, Any]:
    try:
        text = resources.files("bocb.optim").joinpath(TABLE_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return json.loads(text)


def from_table(name: str, target: str, library_version: str) -> dict[str, Any] | None:
    """The shipped signature of optimizer ``name`` when it was read from the same class (``target``,
    ``module:Class``: a user may register another class under a zoo name) at the same
    ``library_version``, else None."""
    entry = _table().get(name)
    if entry is None or entry["target"] != target or entry["library_version"] != library_version:
        return None
    defaults = entry["defaults"]
    return {k: defaults.get(k, EMPTY) for k in entry["args"]}


def table_entry(cls: type, target: str, library_version: str) -> dict[str, Any] | None:
    """What the table holds for ``cls`` (None when a default is not a JSON value)."""
    signature = from_class(cls)
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in signature.items() if v is not EMPTY}
    try:
        if json.loads(json.dumps(defaults)) != defaults:
            return None
    except (TypeError, ValueError):
        return None
    return {"target": target, "library_version": library_version, "args": list(signature), "defaults": defaults}
