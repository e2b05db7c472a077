"""``dataclasses.asdict`` without its cost, for the frozen specs a study expands by the thousand.

``asdict`` deep-copies every leaf and tests each value for being a dataclass; serialising a trial
spec called it about seven times, and at the paper grid's 30,000 trials that was two thirds of
``bocb plan`` (benchmarks/scale.py). The specs hold plain values (numbers, strings, None, and
lists, tuples and dicts of them) and nested frozen dataclasses; :func:`plain_dict` copies the
containers (a caller may change the dict it gets) and leaves immutable leaves shared. The result
equals ``asdict``'s (``tests/test_light_commands.py`` checks every recipe, optimizer and backbone).
"""

from __future__ import annotations

import dataclasses
from typing import Any


def plain_dict(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of dataclass instance ``obj`` as a dict, nested dataclasses and containers copied;
    fields in ``skip`` are left out (a caller that serialises them its own way)."""
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name not in skip}


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_dict(value)
    return value  # an immutable leaf of another type (a MappingProxy is not expected in specs)
