"""SQLite store: one file, WAL journal, claims in ``BEGIN IMMEDIATE`` transactions.

WAL lets readers (``bocb status``, the analysis) read while a runner writes; ``BEGIN IMMEDIATE``
takes the write lock before reading, so two runners claiming at once serialise and can never pick
the same trial. Timestamps are Unix seconds from the runners' clocks (one machine, or NTP-synced
hosts: a lease is minutes long, so skew of seconds does not matter).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from bocb.records import TrialResult
from bocb.store.compact import EPOCH_READ, pack_json, pack_score, pack_seconds, unpack_json
from bocb.store.base import (
    EPOCH_COLUMNS, FINAL, LAYER_COLUMNS, STATUSES, SUMMARY_COLUMNS, TUNING_COLUMNS, Store, layer_rows,
    result_to_store, summary_fields,
)

SCHEMA_VERSION = 5
# The tuning_rungs table (adaptive tuning) is a new table only, created on open, so it needs no
# version step: a file without it gains it, and older bocb versions never read it.
# v2 added the weight-diagnostics tables (snapshots, layer_metrics, study_snapshots) and the trials'
# `pretrained` column (a fine-tuning trial's pre-trained model).
# v3 added typed scores (bocb.records): the trials' `metric`, `final_score`, `best_score`,
# `peak_memory_mb` and the hold-out columns `selection`, `final_val`, `best_val`, the epochs'
# `score` (the analysis reads these columns instead of every trial's record). Until v2, `final_top1`/`best_top1` and the epochs'
# `test_top1` held the task's headline metric (box AP for detection); from v3 they hold top-1 only
# (NULL for other metrics) and the score columns hold the metric. Both steps are additive, so an
# older file is upgraded in place when a writing command opens it (see _upgrade).
# v4 keeps records slim (_slim: without the copies of the spec and epoch rows other tables hold);
# nothing in an older file changes, so v3 files are read as they are and the step only renumbers
# them. The number exists so that an older bocb refuses a v4 file instead of reading slim records
# as if they were whole (no spec, epochs without scores).
# v5 packs what a store holds millions of (bocb.store.compact): epoch rows move from `epochs`
# (keyed by the 16-character trial id) to `epoch_rows`, keyed by a small integer per trial
# (`trial_keys`), with seconds in milliseconds and the score NULL where it is the top-1; new specs
# and records are compressed. A 30,000-trial store at 200 epochs went from 856 to 575 MB
# (benchmarks/scale.py; epoch rows 95 -> 70 bytes each). The step moves every epoch row (_pack_epochs) and
# drops the old table; older specs and records stay as they are. v3 and v4 files are still read as
# they are (the `epochs_read` view reads either table), so reading commands need no upgraded copy.
_V3_COLUMNS = (
    "ALTER TABLE trials ADD COLUMN metric TEXT",
    "ALTER TABLE trials ADD COLUMN final_score REAL",
    "ALTER TABLE trials ADD COLUMN best_score REAL",
    "ALTER TABLE trials ADD COLUMN peak_memory_mb REAL",
    "ALTER TABLE trials ADD COLUMN selection TEXT",
    "ALTER TABLE trials ADD COLUMN final_val REAL",
    "ALTER TABLE trials ADD COLUMN best_val REAL",
    "ALTER TABLE epochs ADD COLUMN score REAL",
)
_UPGRADES = {1: ("ALTER TABLE trials ADD COLUMN pretrained TEXT", *_V3_COLUMNS), 2: _V3_COLUMNS, 3: (), 4: ()}
_READABLE_AS_IS = (3, 4)  # versions a reading command opens without an upgraded copy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY, name TEXT NOT NULL, path TEXT, settings TEXT NOT NULL, created REAL
);
-- spec and record: JSON, compressed into a BLOB from v5 on (bocb.store.compact), TEXT before.
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL,
    backbone TEXT, optimizer TEXT, category TEXT, lr REAL, weight_decay REAL, seed INTEGER,
    recipe TEXT, tier TEXT, pretrained TEXT,
    runner TEXT, lease_expires REAL, attempts INTEGER NOT NULL DEFAULT 0,
    final_top1 REAL, best_top1 REAL, best_epoch INTEGER, diverged_epoch INTEGER,
    error TEXT, skip_reason TEXT,
    seconds_train REAL, seconds_eval REAL, seconds_wall REAL, images_per_second REAL,
    host TEXT, device TEXT, code_version TEXT, libraries TEXT, record TEXT,
    created REAL, started REAL, finished REAL,
    metric TEXT, final_score REAL, best_score REAL, peak_memory_mb REAL,
    selection TEXT, final_val REAL, best_val REAL
);
CREATE INDEX IF NOT EXISTS trials_status ON trials (status);
CREATE TABLE IF NOT EXISTS study_trials (
    study_id TEXT NOT NULL, trial_id TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (study_id, trial_id)
);
-- claims walk a study in position order (SQLiteStore.claim)
CREATE INDEX IF NOT EXISTS study_trials_position ON study_trials (study_id, position);
-- A small integer per trial with epoch rows, given at its first finish: 2 bytes a row where the
-- text trial id took 17, and keys grow as trials finish, so new rows go at the end of the b-tree.
-- An INTEGER PRIMARY KEY, so VACUUM keeps the numbers.
CREATE TABLE IF NOT EXISTS trial_keys (key INTEGER PRIMARY KEY, trial_id TEXT NOT NULL UNIQUE);
-- WITHOUT ROWID: the rows live in their key's b-tree, so the key is not stored twice (row and key
-- index). Cells are packed (bocb.store.compact): seconds_train and seconds_eval have no type
-- affinity (an INTEGER is milliseconds, a REAL seconds), score is NULL where it equals test_top1.
-- Read them through the epochs_read view, which unpacks them.
CREATE TABLE IF NOT EXISTS epoch_rows (
    key INTEGER NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, test_top1 REAL, test_top5 REAL,
    test_loss REAL, lr REAL, seconds_train, seconds_eval, score REAL,
    PRIMARY KEY (key, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    trial_id TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (trial_id, kind)
);
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_id TEXT PRIMARY KEY, trial_id TEXT, source TEXT NOT NULL, backbone TEXT NOT NULL,
    seed INTEGER, path TEXT, settings TEXT NOT NULL, seconds REAL, error TEXT, created REAL
);
CREATE TABLE IF NOT EXISTS layer_metrics (
    snapshot_id TEXT NOT NULL, layer_index INTEGER NOT NULL, layer TEXT NOT NULL, kind TEXT,
    rows INTEGER, cols INTEGER, n_eig INTEGER, alpha REAL, alpha_status TEXT, n_tail INTEGER,
    xmin REAL, entropy REAL, l2 REAL, pca_energy REAL, log_norm REAL, log_spectral_norm REAL,
    stable_rank REAL, alpha_weighted REAL, moved REAL,
    PRIMARY KEY (snapshot_id, layer_index)
);
CREATE TABLE IF NOT EXISTS study_snapshots (
    study_id TEXT NOT NULL, snapshot_id TEXT NOT NULL, PRIMARY KEY (study_id, snapshot_id)
);
CREATE TABLE IF NOT EXISTS tuning_rungs (
    study_id TEXT NOT NULL, pair TEXT NOT NULL, trial_id TEXT NOT NULL, rung INTEGER NOT NULL,
    epochs INTEGER NOT NULL, created REAL, PRIMARY KEY (study_id, trial_id, rung)
);
"""

_SUMMARY = ", ".join(SUMMARY_COLUMNS)
_LAYER_BATCH = 500  # snapshots per layer_metrics query: well under SQLite's 999 bound parameters
_EPOCHS = ", ".join(EPOCH_COLUMNS)
# Every read of epoch rows goes through this per-connection view, which gives EPOCH_COLUMNS from
# either table: v5's packed epoch_rows, or the epochs table of a v3/v4 file read as it is.
_EPOCHS_VIEW = {
    "epoch_rows": "CREATE TEMP VIEW epochs_read AS SELECT k.trial_id AS trial_id, e.epoch AS epoch, " + ", ".join(
        f"{EPOCH_READ.get(c, 'e.' + c)} AS {c}" for c in EPOCH_COLUMNS[2:])
        + " FROM main.epoch_rows e JOIN main.trial_keys k ON k.key = e.key",
    "epochs": f"CREATE TEMP VIEW epochs_read AS SELECT {_EPOCHS} FROM main.epochs",
}
_TUNING_SELECT = tuple(f"{'r' if c in ('pair', 'trial_id', 'rung', 'epochs') else 't'}.{c}" for c in TUNING_COLUMNS)
_SPEC_FIELDS = ("backbone", "optimizer", "category", "lr", "weight_decay", "seed", "recipe", "tier", "pretrained")


# A stored record's note of what it left to other tables (see _slim).
_MOVED = "_stored_elsewhere"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _slim(result: TrialResult, spec: dict[str, Any] | None) -> dict[str, Any]:
    """The record as the trials table keeps it: without what other tables already hold.

    A record repeated its spec (the trials table's ``spec``) and every epoch row (the ``epochs``
    table): with them a 30,000-trial store at 200 epochs was 2.4 GB, without them 0.9 GB
    (benchmarks/scale.py). Dropped here, and put back by :meth:`SQLiteStore.record`, only where the
    copy is exact: the spec when it equals the stored one; an epoch field when every row has it and
    it equals the table's value; another field with one value in every row (``images``), kept
    once. Other fields (hold-out scores) stay in the rows; rows left with nothing but their epoch
    number are dropped whole. ``_stored_elsewhere`` names what was dropped; records written before
    it are read as they are.
    """
    record = dict(result.record)
    moved: dict[str, Any] = {}
    # Compared as JSON text: Python's == takes 1 == 1.0 == True, which would give back another type.
    if spec is not None and _json(record.get("spec")) == _json(spec):
        del record["spec"]
        moved["spec"] = True
    rows = record.get("epochs")
    if isinstance(rows, list) and rows and len(rows) == len(result.epochs):
        table = {e.epoch: e for e in result.epochs}
        keys = [k for k in EPOCH_COLUMNS if k not in ("trial_id", "epoch") and all(
            # floats and nulls only: the table's REAL column gives back a float, so an int would
            # come back changed in type
            isinstance(r, dict) and k in r and r.get("epoch") in table and (r[k] is None or type(r[k]) is float)
            and r[k] == getattr(table[r["epoch"]], k) for r in rows)]
        if keys:
            rows = [{k: v for k, v in r.items() if k not in keys} for r in rows]
            moved["epochs"] = keys
            # A field with one value in every row (the images an epoch saw) is kept once.
            same = {k: rows[0][k] for k in rows[0] if k != "epoch" and all(
                k in r and _json(r[k]) == _json(rows[0][k]) for r in rows)}
            if same:
                rows = [{k: v for k, v in r.items() if k not in same} for r in rows]
                moved["same"] = same
            # Rows left with their epoch number only, in the table's order, are the table's epochs:
            # not kept at all (a list of 200 numbers was 60 % of a compressed record).
            if all(r.keys() == {"epoch"} and type(r["epoch"]) is int for r in rows) and \
                    [r["epoch"] for r in rows] == sorted(table):
                del record["epochs"]
                moved["numbers"] = True
            else:
                record["epochs"] = rows
    if moved:
        record[_MOVED] = moved
    return record


class StoreError(ValueError):
    """A store file bocb cannot use (damaged, not a store, a directory, unreadable); one line that
    says what to do. The file is never modified or re-initialised when this is raised."""


class StoreVersionError(StoreError):
    pass


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _damaged(path: Path, why: object) -> StoreError:
    return StoreError(
        f"store {path} is damaged or not a bocb store ({why}); bocb left it untouched: restore it from "
        f"a copy, salvage it with `sqlite3 {path} .recover > salvage.sql`, or pass another --store"
    )


class SQLiteStore(Store):
    """The default store. ``SQLiteStore(path)`` creates the file and schema if needed.

    ``readonly=True`` (reading commands: status, export, report, plan) opens an existing file
    with SQLite's ``mode=ro``: the journal mode is not switched, no table is created, the file is
    never upgraded (an older schema is read through an upgraded copy in memory); in a folder this process cannot write, the file is opened ``immutable`` (SQLite
    cannot create its WAL index there). Any file that is not a bocb store of this schema version
    or an older one it can upgrade (a newer schema, damaged, not a store) raises
    :class:`StoreError` and is left as it was.
    """

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if self.path.is_dir():
            raise StoreError(f"store {self.path} is a directory: pass the store's file, e.g. {self.path}/store.sqlite")
        if readonly and not self.path.exists():
            raise StoreError(f"no store at {self.path}: run a study first (bocb run STUDY.toml --store {self.path})")
        if self.path.exists():
            self._check_header()
        self._db: sqlite3.Connection | None = None
        # Per study, the position of the trial the last claim found: claims walk on from there
        # (see claim). Reset whenever this store makes an earlier trial claimable again.
        self._cursor: dict[str, int] = {}
        try:
            self._open()
        except (sqlite3.DatabaseError, StoreError) as exc:
            if self._db is not None:
                self._db.close()
            if isinstance(exc, StoreError):
                raise
            raise _damaged(self.path, exc) from None

    def _check_header(self) -> None:
        """A non-empty file without SQLite's magic bytes is refused before SQLite touches it."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(100)
        except OSError as exc:
            raise StoreError(f"store {self.path} cannot be read: {exc.strerror or exc}") from None
        if head and head[:16] != _SQLITE_MAGIC:
            raise _damaged(self.path, "not an SQLite file")
        if 0 < len(head) < 100:
            raise _damaged(self.path, f"truncated to {len(head)} bytes")
        # The header's page count is valid when its change counter matches "version-valid-for"
        # (SQLite file format, section 1.3); a file shorter than that many pages was truncated.
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(head[28:32], "big")
        size = self.path.stat().st_size
        if head and head[24:28] == head[92:96] and size < pages * page_size:
            raise _damaged(self.path, f"truncated: {size} bytes, its header counts {pages} pages of {page_size}")

    def _open(self) -> None:
        if self.readonly:
            folder_writable = os.access(self.path.resolve().parent, os.W_OK)
            mode = "mode=ro" if folder_writable else "immutable=1"
            uri = f"{self.path.resolve().as_uri()}?{mode}"
            self._db = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout=60000")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables or "trials" not in tables:
                raise _damaged(self.path, "no bocb tables")
            version = self._check_version()
            if version is not None and version != SCHEMA_VERSION and version not in _READABLE_AS_IS:
                self._upgraded_copy(version)
            else:
                self._epochs_view()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode; transactions are explicit. A generous timeout rides out another
        # runner's write lock (claims and result writes take milliseconds).
        self._db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise _damaged(self.path, f"an SQLite file with other tables: {', '.join(sorted(tables)[:5])}")
        if "meta" in tables:
            self._check_version()  # before anything is written: a newer file stays as it is
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        with self._tx():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) in _UPGRADES:
                _upgrade(self._db, int(row[0]))
                self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        self._epochs_view()

    def _epochs_view(self) -> None:
        """The connection's ``epochs_read`` view over the file's epoch table (see _EPOCHS_VIEW)."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        table = next((t for t in _EPOCHS_VIEW if t in tables), None)
        if table is None:
            raise _damaged(self.path, "no epoch table")
        self._db.execute(_EPOCHS_VIEW[table])

    def _upgraded_copy(self, version: int) -> None:
        """Read an older file through an upgraded copy in memory: reading commands never write the
        file (its folder may be read-only, another bocb may be reading it), yet read its numbers
        exactly as the next writing command's in-place upgrade will store them. The copy costs the
        file's size in memory and one pass over its trials, on every read-only open until a
        writing command upgrades the file; it is query-only, as the file would be."""
        memory = sqlite3.connect(":memory:", isolation_level=None)
        self._db.backup(memory)
        self._db.close()
        self._db = memory
        self._db.row_factory = sqlite3.Row
        with self._tx():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)
            _upgrade(self._db, version)
            self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        self._epochs_view()
        self._db.execute("PRAGMA query_only=ON")

    def _check_version(self) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else None
        except ValueError:
            raise _damaged(self.path, f"schema version {row[0]!r}") from None
        if version is None or version == SCHEMA_VERSION or version in _UPGRADES:
            return version
        raise StoreVersionError(
            f"store {self.path} has schema v{version}, this bocb reads v{SCHEMA_VERSION}: open it with "
            f"the bocb version that wrote it (or newer) and `bocb export` it; bocb left it untouched"
        )

    # -- plumbing ---------------------------------------------------------------------------------
    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            if not exc_type:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:
                # SQLite has already rolled back after some errors (SQLITE_FULL, SQLITE_IOERR); a
                # second ROLLBACK would raise and hide the error that matters.
                self.db.execute("ROLLBACK")

    def _tx(self) -> _Tx:
        return self._Tx(self._db)

    # -- studies and trials -----------------------------------------------------------------------
    def add_study(self, study_id: str, name: str, path: str, settings: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO studies VALUES (?, ?, ?, ?, ?)",
                (study_id, name, path, json.dumps(settings, sort_keys=True), time.time()),
            )

    def add_trials(self, study_id: str, trials: list[tuple[str, dict[str, Any]]],
                   skipped: list[tuple[str, dict[str, Any], str]] = ()) -> int:
        now = time.time()
        new = 0
        with self._tx() as db:
            position = db.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM study_trials WHERE study_id=?", (study_id,)
            ).fetchone()[0]
            rows = [(tid, spec, "pending", None) for tid, spec in trials]
            rows += [(tid, spec, "skipped", reason) for tid, spec, reason in skipped]
            for trial_id, spec, status, reason in rows:
                cur = db.execute(
                    "INSERT OR IGNORE INTO trials (trial_id, spec, status, backbone, optimizer, category, "
                    "lr, weight_decay, seed, recipe, tier, pretrained, skip_reason, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (trial_id, _spec_json(spec), status, *_spec_values(spec), reason, now),
                )
                new += cur.rowcount
                linked = db.execute(
                    "INSERT OR IGNORE INTO study_trials VALUES (?, ?, ?)", (study_id, trial_id, position)
                ).rowcount
                position += linked
        return new

    def claim(self, runner: str, lease_s: float, study_id: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """The first claimable trial in study order, from where this store's last claim of the study
        left off. Cost: the walk runs along the study's position index from that trial (``_cursor``),
        so a claim reads a handful of rows whatever the study's size (it sorted every open trial of
        the study before: 165 ms at 30,000 pending). This store resets the cursor when it makes an
        earlier trial claimable (release, reclaim, retry, a tuner's promotion); one that becomes
        claimable through another process (another runner's release, an expired lease) is found
        when nothing lies ahead, by a look through the store's open trials (the status index: few
        rows by then), so none is ever left behind."""
        now = time.time()
        claimable = "(t.status='pending' OR (t.status='running' AND t.lease_expires < ?))"
        with self._tx() as db:
            if study_id is None:
                row = db.execute(f"SELECT t.trial_id, t.spec FROM trials t WHERE {claimable} ORDER BY t.rowid LIMIT 1",
                                 (now,)).fetchone()
            else:
                walk = (f"SELECT t.trial_id, t.spec, s.position FROM study_trials s JOIN trials t USING (trial_id) "
                        f"WHERE s.study_id=? AND s.position >= ? AND {claimable} ORDER BY s.position LIMIT 1")
                row = db.execute(walk, (study_id, self._cursor.get(study_id, 0), now)).fetchone()
                if row is None:  # none ahead: every open trial of the store, through the status index
                    row = db.execute(
                        "SELECT t.trial_id, t.spec, s.position FROM trials t INDEXED BY trials_status JOIN study_trials s "
                        "ON s.study_id=? AND s.trial_id=t.trial_id WHERE t.status IN ('pending', 'running') "
                        f"AND {claimable} ORDER BY s.position LIMIT 1", (study_id, now)).fetchone()
                if row is not None:
                    self._cursor[study_id] = row["position"]
            if row is None:
                return None
            db.execute(
                "UPDATE trials SET status='running', runner=?, lease_expires=?, attempts=attempts+1, "
                "started=? WHERE trial_id=?",
                (runner, now + lease_s, now, row["trial_id"]),
            )
        return row["trial_id"], unpack_json(row["spec"])

    def renew(self, trial_id: str, runner: str, lease_s: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE trials SET lease_expires=? WHERE trial_id=? AND runner=? AND status='running'",
                (time.time() + lease_s, trial_id, runner),
            )
        return cur.rowcount == 1

    def finish(self, trial_id: str, runner: str, record: dict[str, Any] | TrialResult) -> bool:
        result = result_to_store(trial_id, record)
        with self._tx() as db:
            spec = db.execute("SELECT spec FROM trials WHERE trial_id=?", (trial_id,)).fetchone()
            packed = pack_json(json.dumps(_slim(result, unpack_json(spec["spec"]) if spec else None), allow_nan=False))
            cur = db.execute(
                "UPDATE trials SET status=?, metric=?, final_score=?, best_score=?, final_top1=?, best_top1=?, "
                "best_epoch=?, diverged_epoch=?, error=?, seconds_train=?, seconds_eval=?, seconds_wall=?, "
                "images_per_second=?, peak_memory_mb=?, selection=?, final_val=?, best_val=?, host=?, device=?, code_version=?, libraries=?, "
                "record=?, finished=?, lease_expires=NULL WHERE trial_id=? AND runner=? AND status='running'",
                (
                    result.status, result.metric, result.final_score, result.best_score, result.final_top1,
                    result.best_top1, result.best_epoch, result.diverged_epoch, result.error,
                    result.seconds_train, result.seconds_eval, result.seconds_wall, result.images_per_second,
                    result.peak_memory_mb, result.selection, result.final_val, result.best_val,
                    result.device.get("host"), json.dumps(result.device),
                    result.code_version, json.dumps(result.libraries), packed,
                    time.time(), trial_id, runner,
                ),
            )
            if cur.rowcount != 1:
                return False
            db.execute("INSERT OR IGNORE INTO trial_keys (trial_id) VALUES (?)", (trial_id,))
            key = db.execute("SELECT key FROM trial_keys WHERE trial_id=?", (trial_id,)).fetchone()[0]
            db.execute("DELETE FROM epoch_rows WHERE key=?", (key,))
            db.executemany(
                "INSERT INTO epoch_rows (key, epoch, train_loss, test_top1, test_top5, test_loss, lr, "
                "seconds_train, seconds_eval, score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(key, r.epoch, r.train_loss, r.test_top1, r.test_top5, r.test_loss, r.lr,
                  pack_seconds(r.seconds_train), pack_seconds(r.seconds_eval), pack_score(r.score, r.test_top1))
                 for r in result.epochs],
            )
            for kind, path in result.artifacts.items():
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?)", (trial_id, kind, path))
            if result.diagnostics is not None:
                self._put_snapshot(db, result.diagnostics)
        # The pages this result wrote go into the database file now, by the runner that wrote them
        # (PASSIVE: it waits for nobody). Otherwise SQLite's automatic checkpoint falls on whichever
        # commit crosses 1,000 WAL pages, often a claim, which then took 20-30 ms instead of 0.3
        # (benchmarks/scale.py at 30,000 trials of 200 epochs).
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:  # the result is committed: a checkpoint that cannot run now runs later
            pass
        return True

    def release(self, trial_id: str, runner: str) -> None:
        self._cursor.clear()  # an earlier trial may be claimable again
        with self._tx() as db:
            db.execute(
                "UPDATE trials SET status='pending', runner=NULL, lease_expires=NULL "
                "WHERE trial_id=? AND runner=? AND status='running'",
                (trial_id, runner),
            )

    def held(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """The study's ``running`` trials: ``trial_id``, ``runner``, ``lease_expires``."""
        rows = self._scoped("trial_id, status, runner, lease_expires", study_id)
        return [{k: r[k] for k in ("trial_id", "runner", "lease_expires")} for r in rows if r["status"] == "running"]

    def reclaim(self, held: list[tuple[str, str]]) -> int:
        """Hand ``(trial_id, runner)`` trials back as ``pending`` if that runner still holds them."""
        self._cursor.clear()  # an earlier trial may be claimable again
        with self._tx() as db:
            return sum(db.execute(
                "UPDATE trials SET status='pending', runner=NULL, lease_expires=NULL "
                "WHERE trial_id=? AND runner=? AND status='running'", (trial_id, runner)).rowcount
                for trial_id, runner in held)

    def unlink(self, study_id: str, trial_ids: list[str]) -> int:
        """Remove trials from a study (the trials and their results stay in the store)."""
        with self._tx() as db:
            return sum(db.execute("DELETE FROM study_trials WHERE study_id=? AND trial_id=?",
                                  (study_id, trial_id)).rowcount for trial_id in trial_ids)

    # -- adaptive tuning ----------------------------------------------------------------------------
    def add_proposals(self, study_id: str, pair: str, proposals: list[tuple[str, dict[str, Any], int, int]]) -> int:
        """Record a tuner's proposals ``(trial_id, spec, rung, epochs)`` for one pair, idempotently.

        Unknown trials are inserted ``pending`` and linked to the study; a rung row that is new
        for a ``paused`` trial makes it ``pending`` (a promotion: it resumes to ``epochs``).
        A rung row that already exists changes nothing. Returns how many trials became runnable.
        """
        self._cursor.clear()  # an earlier trial may be claimable again
        now = time.time()
        runnable = 0
        with self._tx() as db:
            position = db.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM study_trials WHERE study_id=?", (study_id,)
            ).fetchone()[0]
            for trial_id, spec, rung, epochs in proposals:
                runnable += db.execute(
                    "INSERT OR IGNORE INTO trials (trial_id, spec, status, backbone, optimizer, category, "
                    "lr, weight_decay, seed, recipe, tier, pretrained, skip_reason, created) "
                    "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                    (trial_id, _spec_json(spec), *_spec_values(spec), now),
                ).rowcount
                position += db.execute(
                    "INSERT OR IGNORE INTO study_trials VALUES (?, ?, ?)", (study_id, trial_id, position)
                ).rowcount
                if db.execute("INSERT OR IGNORE INTO tuning_rungs VALUES (?, ?, ?, ?, ?, ?)",
                              (study_id, pair, trial_id, rung, epochs, now)).rowcount:
                    runnable += db.execute(
                        "UPDATE trials SET status='pending', runner=NULL, lease_expires=NULL "
                        "WHERE trial_id=? AND status='paused'", (trial_id,)).rowcount
        return runnable

    def stop_epoch(self, trial_id: str, study_id: str | None = None) -> int | None:
        """The epoch a trial is to stop at: the largest its rung rows ask for (None: no rows), in
        ``study_id``'s rows when given (trial ids are shared across studies; one study's promotion
        must not move another's rung)."""
        if study_id is None:
            row = self._db.execute("SELECT MAX(epochs) FROM tuning_rungs WHERE trial_id=?", (trial_id,)).fetchone()
        else:
            row = self._db.execute("SELECT MAX(epochs) FROM tuning_rungs WHERE trial_id=? AND study_id=?",
                                   (trial_id, study_id)).fetchone()
        return None if row[0] is None else int(row[0])

    def tuning_rows(self, study_id: str, epochs: list[int]) -> tuple[list[dict[str, Any]], dict[tuple[str, int], float | None]]:
        """A study's rung rows joined with their trials' status and settings, and the trials' score
        at each of ``epochs`` (the rung epochs): ``{(trial_id, epoch): score}``."""
        rows = [dict(r) for r in self._db.execute(
            f"SELECT {', '.join(_TUNING_SELECT)} FROM tuning_rungs r JOIN trials t USING (trial_id) WHERE r.study_id=? "
            "ORDER BY r.pair, r.trial_id, r.rung", (study_id,))]
        marks = ", ".join("?" * len(epochs))
        scores = {(r["trial_id"], r["epoch"]): r["score"] for r in self._db.execute(
            f"SELECT trial_id, epoch, score FROM epochs_read WHERE epoch IN ({marks}) AND trial_id IN "
            f"(SELECT trial_id FROM tuning_rungs WHERE study_id=?)", (*epochs, study_id))} if epochs else {}
        return rows, scores

    def trained_epochs(self, study_id: str) -> dict[str, int]:
        """Epoch rows stored per trial of the study (what a trial has trained so far)."""
        rows = self._db.execute(
            "SELECT e.trial_id, COUNT(*) AS n FROM epochs_read e JOIN study_trials s USING (trial_id) "
            "WHERE s.study_id=? GROUP BY e.trial_id", (study_id,))
        return {r["trial_id"]: r["n"] for r in rows}

    def set_artifact(self, trial_id: str, kind: str, path: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?)", (trial_id, kind, path))

    # -- weight diagnostics -----------------------------------------------------------------------
    def put_snapshot(self, snapshot: dict[str, Any], study_id: str | None = None) -> None:
        """Store one model snapshot's per-layer metrics, replacing an earlier computation.

        ``snapshot``: ``snapshot_id``, ``source`` (``final`` | ``init``), ``backbone``, ``layers``
        (rows with the columns of :data:`bocb.diagnostics.COLUMNS`), and optionally ``trial_id``,
        ``seed``, ``path``, ``settings``, ``seconds``, ``error``. ``study_id`` links the snapshot
        to a study (random-init snapshots belong to studies, final ones to their trials).
        """
        with self._tx() as db:
            self._put_snapshot(db, snapshot)
            if study_id is not None:
                db.execute("INSERT OR IGNORE INTO study_snapshots VALUES (?, ?)", (study_id, snapshot["snapshot_id"]))

    @staticmethod
    def _put_snapshot(db: sqlite3.Connection, snap: dict[str, Any]) -> None:
        sid = snap["snapshot_id"]
        db.execute(
            "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, snap.get("trial_id"), snap["source"], snap["backbone"], snap.get("seed"), snap.get("path"),
             json.dumps(snap.get("settings", {}), sort_keys=True), snap.get("seconds"), snap.get("error"),
             time.time()),
        )
        db.execute("DELETE FROM layer_metrics WHERE snapshot_id=?", (sid,))
        marks = ", ".join("?" * (2 + len(LAYER_COLUMNS)))
        db.executemany(f"INSERT INTO layer_metrics (snapshot_id, layer_index, {', '.join(LAYER_COLUMNS)}) "
                       f"VALUES ({marks})", [(sid, *row) for row in layer_rows(snap)])

    def snapshots(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """Snapshots of the study's trials and the study's own (random-init) ones; all if None."""
        if study_id is None:
            rows = self._db.execute("SELECT * FROM snapshots ORDER BY rowid")
        else:
            rows = self._db.execute(
                "SELECT * FROM snapshots WHERE trial_id IN (SELECT trial_id FROM study_trials WHERE study_id=?) "
                "OR snapshot_id IN (SELECT snapshot_id FROM study_snapshots WHERE study_id=?) ORDER BY rowid",
                (study_id, study_id),
            )
        return [{**dict(r), "settings": json.loads(r["settings"])} for r in rows]

    def layer_metrics(self, snapshot_ids: list[str]) -> list[dict[str, Any]]:
        """Per-layer rows of the given snapshots, in snapshot then layer order.

        Read _LAYER_BATCH snapshots a query (a query a snapshot was 30,000 queries for a report
        at 30,000 trials), as plain tuples, each made a fresh dict as it is given out."""
        out: list[dict[str, Any]] = []
        cursor = self._db.cursor()
        cursor.row_factory = None
        for start in range(0, len(snapshot_ids), _LAYER_BATCH):
            batch = snapshot_ids[start:start + _LAYER_BATCH]
            wanted = list(dict.fromkeys(batch))
            rows = cursor.execute(f"SELECT * FROM layer_metrics WHERE snapshot_id IN ({', '.join('?' * len(wanted))}) "
                                  "ORDER BY snapshot_id, layer_index", wanted).fetchall()
            names = [d[0] for d in cursor.description]
            key = names.index("snapshot_id")
            by_snapshot: dict[str, list[tuple[Any, ...]]] = {}
            for row in rows:
                by_snapshot.setdefault(row[key], []).append(row)
            out.extend(dict(zip(names, row)) for sid in batch for row in by_snapshot.get(sid, ()))
        return out

    def retry_failed(self, study_id: str | None = None) -> int:
        self._cursor.clear()  # an earlier trial may be claimable again
        scope, args = ("", ()) if study_id is None else (
            "AND trial_id IN (SELECT trial_id FROM study_trials WHERE study_id=?)", (study_id,))
        with self._tx() as db:
            return db.execute(
                f"UPDATE trials SET status='pending', runner=NULL, lease_expires=NULL WHERE status='failed' {scope}",
                args,
            ).rowcount

    # -- reading ----------------------------------------------------------------------------------
    def _scoped(self, columns: str, study_id: str | None) -> list[sqlite3.Row]:
        if study_id is None:
            return self._db.execute(f"SELECT {columns} FROM trials ORDER BY rowid").fetchall()
        return self._db.execute(
            f"SELECT {columns} FROM trials t JOIN study_trials s USING (trial_id) "
            f"WHERE s.study_id=? ORDER BY s.position", (study_id,),
        ).fetchall()

    def counts(self, study_id: str | None = None) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for row in self._scoped("status", study_id):
            out[row["status"]] += 1
        out["total"] = sum(out[s] for s in STATUSES)
        return out

    def trials(self, study_id: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self._scoped(_SUMMARY, study_id)]

    def specs(self, study_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Every trial's spec by trial id, in one query (cheaper than a record per trial)."""
        return {r["trial_id"]: unpack_json(r["spec"]) for r in self._scoped("trial_id, spec", study_id)}

    def record(self, trial_id: str) -> dict[str, Any] | None:
        """The record as finish was given it (see :func:`_slim` for how it is kept)."""
        row = self._db.execute("SELECT spec, record FROM trials WHERE trial_id=?", (trial_id,)).fetchone()
        if not row or not row["record"]:
            return None
        record = unpack_json(row["record"])
        moved = record.pop(_MOVED, None)
        if moved is None:  # written whole (before slim records, or nothing to move)
            return record
        if moved.get("spec"):
            record["spec"] = unpack_json(row["spec"])
        keys = moved.get("epochs") or []
        if keys:
            table = {r["epoch"]: r for r in self.epochs(trial_id)}
            same = json.dumps(moved.get("same") or {})  # a fresh copy per row: rows stay independent
            rows = [{"epoch": e} for e in table] if moved.get("numbers") else record["epochs"]
            record["epochs"] = [{**{k: table[r["epoch"]][k] for k in keys}, **json.loads(same), **r}
                                for r in rows]
        return record

    def epochs(self, trial_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(f"SELECT {_EPOCHS} FROM epochs_read WHERE trial_id=? ORDER BY epoch", (trial_id,))
        return [dict(r) for r in rows]

    def drop_artifact(self, trial_id: str, kind: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM artifacts WHERE trial_id=? AND kind=?", (trial_id, kind))

    def artifacts(self, trial_id: str) -> dict[str, str]:
        """A trial's files by kind. Paths are stored absolute; a relative one (written by an
        earlier bocb, relative to the directory that run started in) is resolved against the
        store's folder and its parents, the first where the file exists, else returned as stored."""
        rows = self._db.execute("SELECT kind, path FROM artifacts WHERE trial_id=? ORDER BY kind", (trial_id,))
        return {r["kind"]: self._resolve(r["path"]) for r in rows}

    def _resolve(self, path: str) -> str:
        if Path(path).is_absolute():
            return path
        for folder in self.path.resolve().parents:
            if (folder / path).exists():
                return str(folder / path)
        return path

    def studies(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT study_id, name, path, created FROM studies ORDER BY created")
        return [dict(r) for r in rows]

    def close(self) -> None:
        self._db.close()


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Bring an older file to this schema inside the open transaction: the new columns, then, for
    every trial with a result, its v3 fields.

    The record is read by :meth:`TrialResult.from_record` (metric, peak memory, hold-out scores),
    as a fresh write would; the scores themselves are the ones the older file showed, its top-1
    columns and epoch rows, which held the task's headline metric whatever the task, so an
    upgraded study reads exactly the numbers it read before. Trials without a result keep NULLs
    (as in a store written at v3). A record that cannot be read fails the open as a StoreError,
    with the file unchanged (the transaction rolls back). From v3 on there is nothing to rewrite
    but the epoch rows, which every version before v5 moves into the packed table (_pack_epochs)."""
    for statement in _UPGRADES[version]:
        db.execute(statement)
    if version < 3:
        _v3_scores(db)
    _pack_epochs(db)


def _v3_scores(db: sqlite3.Connection) -> None:
    """The v3 fields of every trial with a result (see _upgrade)."""
    rows = db.execute("SELECT trial_id, spec, record, final_top1, best_top1 FROM trials "
                      "WHERE record IS NOT NULL").fetchall()
    for row in rows:
        try:
            result = TrialResult.from_record(unpack_json(row["record"]), unpack_json(row["spec"]))
        except Exception as exc:  # noqa: BLE001 - any unreadable record stops the upgrade the same way
            raise StoreError(f"trial {row['trial_id']} cannot be upgraded to schema v{SCHEMA_VERSION}: "
                             f"{type(exc).__name__}: {exc}; bocb left the store as it was") from None
        top1 = result.metric == "top1"
        db.execute(
            "UPDATE trials SET metric=?, final_score=?, best_score=?, peak_memory_mb=?, selection=?, "
            "final_val=?, best_val=?, final_top1=?, best_top1=? WHERE trial_id=?",
            (result.metric, row["final_top1"], row["best_top1"], result.peak_memory_mb, result.selection,
             result.final_val, result.best_val, row["final_top1"] if top1 else None,
             row["best_top1"] if top1 else None, row["trial_id"]),
        )
        db.execute("UPDATE epochs SET score=test_top1, test_top1=CASE WHEN ? THEN test_top1 END "
                   "WHERE trial_id=?", (top1, row["trial_id"]))


def _pack_epochs(db: sqlite3.Connection) -> None:
    """Move every row of the old ``epochs`` table into ``epoch_rows``, packed as finish packs them
    (the same Python functions, called from SQL), then drop the old table. Keys are given in the
    order the trials were added, so the new table is written from first key to last. A row count
    that does not match stops the upgrade (the transaction rolls back, the file stays as it was).
    The old table's pages become free pages of the file, reused by later writes; ``VACUUM`` gives
    them back to the disk."""
    db.create_function("bocb_pack_seconds", 1, pack_seconds, deterministic=True)
    db.create_function("bocb_pack_score", 2, pack_score, deterministic=True)
    db.execute("INSERT OR IGNORE INTO trial_keys (trial_id) SELECT e.trial_id FROM "
               "(SELECT DISTINCT trial_id FROM epochs) e LEFT JOIN trials t USING (trial_id) ORDER BY t.rowid")
    moved = db.execute(
        "INSERT INTO epoch_rows (key, epoch, train_loss, test_top1, test_top5, test_loss, lr, seconds_train, "
        "seconds_eval, score) SELECT k.key, e.epoch, e.train_loss, e.test_top1, e.test_top5, e.test_loss, e.lr, "
        "bocb_pack_seconds(e.seconds_train), bocb_pack_seconds(e.seconds_eval), bocb_pack_score(e.score, e.test_top1) "
        "FROM epochs e JOIN trial_keys k USING (trial_id) ORDER BY k.key, e.epoch").rowcount
    held = db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    if moved != held:
        raise StoreError(f"the store's {held} epoch rows could not all be moved to schema v{SCHEMA_VERSION} "
                         f"({moved} were); bocb left the store as it was")
    db.execute("DROP TABLE epochs")


def _spec_json(spec: dict[str, Any]) -> bytes:
    return pack_json(json.dumps(spec, sort_keys=True))


def _spec_values(spec: dict[str, Any]) -> tuple[Any, ...]:
    fields = summary_fields(spec)
    return tuple(fields[k] for k in _SPEC_FIELDS)


__all__ = ["FINAL", "SCHEMA_VERSION", "SQLiteStore", "StoreError", "StoreVersionError"]
