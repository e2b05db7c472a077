"""Results store: the contract (:mod:`bocb.store.base`), the SQLite implementation (the default:
one file shared by runners) and the in-memory one (tests, notebooks, dry runs; one process)."""

from bocb.store.base import FINAL, STATUSES, Store
from bocb.store.memory import MemoryStore
from bocb.store.sqlite import SCHEMA_VERSION, SQLiteStore, StoreError, StoreVersionError

DEFAULT_STORE = "bocb-results/store.sqlite"  # relative to the working directory; `make demo` uses it


def open_existing(path: str, readonly: bool = True) -> SQLiteStore:
    """The store at ``path`` for reading; a missing file is an error (ValueError), not a new store.

    Read-only by default (no journal switch, no schema written, works in a read-only folder);
    ``readonly=False`` for work that adds to an existing store (``bocb diagnose``).
    """
    from pathlib import Path

    if not Path(path).exists():
        raise ValueError(f"no store at {path}: run a study first (bocb run STUDY.toml --store {path})")
    return SQLiteStore(path, readonly=readonly)


__all__ = ["DEFAULT_STORE", "FINAL", "SCHEMA_VERSION", "STATUSES", "MemoryStore", "SQLiteStore", "Store",
           "StoreError", "StoreVersionError", "open_existing"]
