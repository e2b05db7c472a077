"""Results store: the contract (:mod:`bocb.store.base`) and the SQLite implementation."""

from bocb.store.base import FINAL, STATUSES, Store
from bocb.store.sqlite import SCHEMA_VERSION, SQLiteStore, StoreError, StoreVersionError

DEFAULT_STORE = "bocb-results/store.sqlite"  # relative to the working directory; `make demo` uses it


__all__ = ["DEFAULT_STORE", "FINAL", "SCHEMA_VERSION", "STATUSES", "SQLiteStore", "Store",
           "StoreError", "StoreVersionError"]
