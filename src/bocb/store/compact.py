"""How the SQLite store packs values it holds millions of, each packing exact (the value read back
is the one the REAL columns of schema v4 gave back: the value given, as a float), so nothing
stored is lost.

At 30,000 trials x 200 epochs the epoch rows and the trial records were 80 % of the file
(benchmarks/scale.py). Three packings, each undone by :data:`EPOCH_READ` (SQL) or
:func:`unpack_json`:

- Per-epoch seconds: the trainer rounds them to milliseconds, so they are kept as whole
  milliseconds (an INTEGER, 2-3 bytes) instead of an 8-byte double whenever that gives back the
  same float; any other value (not a whole millisecond) is kept as the REAL itself. The column
  has no type affinity, so the two stay apart: an INTEGER is milliseconds, a REAL is seconds.
- The epoch's score: for classification it is the row's top-1, so it is kept as NULL when it
  equals ``test_top1`` (NULL read back as ``test_top1``). A missing score beside a present top-1
  (rare: an epoch that could not be scored) is kept as an empty BLOB, read back as NULL.
- Specs and records: the JSON text compressed with zlib and kept as a BLOB (a half and a quarter
  of the text's size); those written before are TEXT and read as they are. Smaller trial rows
  also fit more to a page: a 3 KB row took a 4 KB page of its own.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

# Below 2**53 every whole number of milliseconds is exact in a double; above it the REAL is kept.
_EXACT = 2**53
NO_SCORE = b""  # the score cell of an epoch without a score whose top-1 is present


def pack_seconds(value: float | None) -> int | float | None:
    """Whole milliseconds when ``ms / 1000`` gives back ``value`` exactly, else the float itself."""
    if value is None or not math.isfinite(value):
        return None if value is None else float(value)
    ms = round(value * 1000)
    if abs(ms) < _EXACT and ms / 1000 == value:
        return ms
    return float(value)


def pack_score(score: float | None, top1: float | None) -> float | bytes | None:
    """NULL when the score is the row's top-1 (both missing included), :data:`NO_SCORE` when only
    the score is missing, else the score."""
    if score is None:
        return None if top1 is None else NO_SCORE
    return None if top1 is not None and score == top1 else score


def _seconds_sql(column: str) -> str:
    return f"CASE WHEN typeof({column}) = 'integer' THEN {column} / 1000.0 ELSE {column} END"


# The epoch columns as the store reads them back, from a table `e` with packed cells. Division by
# 1000.0 in SQLite is the IEEE division Python's ms / 1000 is, so the check in pack_seconds holds.
EPOCH_READ = {
    "seconds_train": _seconds_sql("e.seconds_train"),
    "seconds_eval": _seconds_sql("e.seconds_eval"),
    "score": "CASE WHEN e.score IS NULL THEN e.test_top1 WHEN typeof(e.score) = 'blob' THEN NULL ELSE e.score END",
}


def pack_json(text: str) -> bytes:
    """A JSON text (a spec, a record) as the store keeps it: compressed."""
    return zlib.compress(text.encode("utf-8"))


def unpack_json(stored: str | bytes) -> Any:
    """A stored JSON document: compressed (a BLOB) or, written before compression, the text."""
    if isinstance(stored, bytes):
        stored = zlib.decompress(stored).decode("utf-8")
    return json.loads(stored)


__all__ = ["EPOCH_READ", "NO_SCORE", "pack_json", "pack_score", "pack_seconds", "unpack_json"]
