"""Results store: the contract (:mod:`bocb.store.base`), the SQLite implementation (the default:
one file shared by runners) and the in-memory one (tests, notebooks, dry runs; one process)."""

from bocb.store.base import FINAL, STATUSES, Store
from bocb.store.memory import MemoryStore
from bocb.store.sqlite import SCHEMA_VERSION, SQLiteStore, StoreError, StoreVersionError

DEFAULT_STORE = "bocb-results/store.sqlite"  # relative to the working directory; `make demo` uses it


__all__ = ["DEFAULT_STORE", "FINAL", "SCHEMA_VERSION", "STATUSES", "MemoryStore", "SQLiteStore", "Store",
           "StoreError", "StoreVersionError"]
