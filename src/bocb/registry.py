"""String-keyed registries of frozen metadata records, one per plug-in kind.

A registry maps a canonical name to a frozen dataclass that describes the plug-in (and holds the
callable that builds it). Lookups also accept aliases (the paper's short names, e.g. ``R-50`` or
``SGD-M``), case-insensitively and ignoring ``-``/``_``/spaces, because users type both. A miss
raises :class:`UnknownNameError`, whose message is one line naming the closest valid choices.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not in a registry. ``str(err)`` is a single line meant for users."""

    def __init__(self, kind: str, name: str, close: list[str], valid: list[str]):
        self.kind, self.name, self.close, self.valid = kind, name, close, valid
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        super().__init__(f"unknown {kind} {name!r}: {hint}valid: {', '.join(valid)}")

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return self.args[0]


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-./()]+", "", name).lower()


class Registry(Generic[T]):
    """Canonical name -> record, with aliases.

    Records must be frozen dataclasses with a ``name`` field; ``aliases`` lists the other strings
    (paper short names, spellings) that find the same record.
    """

    def __init__(self, kind: str, on_miss: Callable[[str], T | None] | None = None):
        """``on_miss(name)``: called for a name not registered; a record it returns is registered
        (under its own ``name``) and found, None leaves the miss an :class:`UnknownNameError`. The
        backbone registry uses it for models named by where they come from (``timm:NAME``)."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lookup: dict[str, str] = {}
        self._on_miss = on_miss

    def add(self, record: T, aliases: tuple[str, ...] = ()) -> T:
        name: str = record.name  # type: ignore[attr-defined]
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        for key in (name, *aliases):
            owner = self._lookup.get(_norm(key))
            if owner is not None and owner != name:
                raise ValueError(f"{self.kind} alias {key!r} of {name!r} already names {owner!r}")
        self._items[name] = record
        for key in (name, *aliases):
            self._lookup[_norm(key)] = name
        return record

    def remove(self, name: str) -> None:
        """Unregister (used by tests and by users replacing a plug-in)."""
        canonical = self.get(name).name  # type: ignore[attr-defined]
        del self._items[canonical]
        self._lookup = {k: v for k, v in self._lookup.items() if v != canonical}

    def get(self, name: str) -> T:
        canonical = self._lookup.get(_norm(name)) or self._resolve(name)
        if canonical is None:
            raise self._unknown(name)
        return self._items[canonical]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if _norm(name) in self._lookup:
            return True
        try:
            return self._resolve(name) is not None
        except (KeyError, ValueError):  # a name of the resolvable form that resolves to nothing
            return False

    def registered(self, name: str) -> bool:
        """Whether ``name`` is registered (or an alias), without asking ``on_miss``."""
        return _norm(name) in self._lookup

    def _resolve(self, name: str) -> str | None:
        """``on_miss``'s record for ``name``, registered (``name`` becoming an alias of it when it
        differs, e.g. a bare timm name); its canonical name, or None."""
        if self._on_miss is None:
            return None
        record = self._on_miss(name)
        if record is None:
            return None
        canonical: str = record.name  # type: ignore[attr-defined]
        if canonical not in self._items:
            self.add(record)
        self._lookup.setdefault(_norm(name), canonical)
        return canonical

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def filter(self, predicate: Callable[[T], bool] | None = None, **equals: Any) -> list[T]:
        """Records matching every ``field=value`` in ``equals`` and ``predicate``, in registration order.

        An unknown field name is an error, not an empty result, so a typo cannot hide records.
        """
        out = list(self._items.values())
        if equals and out:
            known = {f.name for f in fields(out[0])}  # type: ignore[arg-type]
            bad = sorted(set(equals) - known)
            if bad:
                raise ValueError(f"cannot filter {self.kind}s by {bad}: valid fields: {sorted(known)}")
        for key, value in equals.items():
            out = [r for r in out if getattr(r, key) == value]
        if predicate is not None:
            out = [r for r in out if predicate(r)]
        return out

    def _unknown(self, name: str) -> UnknownNameError:
        # Match against every spelling (canonical and aliases) but report the canonical names.
        spellings = {_norm(k): v for k, v in self._lookup.items()}
        close_keys = difflib.get_close_matches(_norm(name), list(spellings), n=6, cutoff=0.5)
        close: list[str] = []
        for key in close_keys:
            canonical = spellings[key]
            if canonical not in close:
                close.append(canonical)
        return UnknownNameError(self.kind, name, close[:3], self.names())
