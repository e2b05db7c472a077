"""Every hostile input of issue 12, table-driven, through the real command line (in process).

Each case builds a hostile file, store or argument list in ``tmp_path`` and runs ``bocb``. The
contract checked for every one: exit status 2, exactly one line on stderr that names the problem
(no traceback), and every file that existed before the command byte-for-byte unchanged, with no
new file created (a refused study never creates its store).
"""

from __future__ import annotations

import hashlib
import pickle
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from bocb.cli import main
from bocb.store import SCHEMA_VERSION, SQLiteStore

STUDY = """
[study]
name = "{name}"
data = "sample"
tier = "smoke"
tuning = "fixed"
{study}

[[backbones]]
name = "R-18"

[[optimizers]]
name = "{optimizer}"
{optimizer_keys}
"""


def study(tmp: Path, study: str = "", optimizer: str = "AdamW", optimizer_keys: str = "",
          name: str = "hostile") -> Path:
    path = tmp / "study.toml"
    path.write_text(STUDY.format(name=name, study=study, optimizer=optimizer, optimizer_keys=optimizer_keys))
    return path


def store(tmp: Path) -> Path:
    """A real store with one study of two trials (one done with weights, one pending)."""
    path = tmp / "store.sqlite"
    spec = {"backbone": {"short": "R-18"}, "recipe": {"name": "pytorch", "tier": "smoke"}, "seed": 0,
            "optimizer": {"short": "AdamW", "category": "b", "args": {"lr": 1e-3, "weight_decay": 0.05}}}
    with SQLiteStore(path) as s:
        s.add_study("s", "hostile", "study.toml", {})
        s.add_trials("s", [("t1", spec), ("t2", {**spec, "seed": 1})])
        s.claim("runner", 60, "s")
        s.finish("t1", "runner", {"status": "done", "final_top1": 50.0, "best_top1": 50.0, "epochs": []})
    return path


def damaged_store(tmp: Path, how: str) -> Path:
    path = store(tmp)
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2 + 100]
    elif how == "garbage":
        data = bytearray(hashlib.sha512(b"x").digest() * (len(data) // 64))
    elif how == "pages":  # header and schema page intact, every later page overwritten
        page = int.from_bytes(data[16:18], "big")
        data[page:] = b"\xa5" * (len(data) - page)
    elif how == "header":  # the magic bytes damaged
        data[:16] = b"SQLite format 2\x00"
    elif how.startswith("cut-"):  # truncated at a byte count: 50, one page, all but the last page
        page = int.from_bytes(data[16:18], "big")
        data = data[: {"cut-50": 50, "cut-page": page, "cut-last": len(data) - page}[how]]
    elif how == "zeros":
        data = bytearray(len(data))
    elif how == "schema-page":  # sqlite_master's page overwritten after the 100-byte file header
        page = int.from_bytes(data[16:18], "big")
        data[100:page] = b"\x5a" * (page - 100)
    path.write_bytes(bytes(data))
    return path


def newer_store(tmp: Path) -> Path:
    path = store(tmp)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    return path


def other_sqlite(tmp: Path) -> Path:
    path = tmp / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    return path


def weights(tmp: Path, how: str) -> Path:
    path = tmp / "w.safetensors"
    if how == "dir":
        path.mkdir()
        return path
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\x00\x13 not safetensors at all" * 20)
    elif how == "pickle":
        path.write_bytes(pickle.dumps({"conv.weight": [1.0, 2.0]}))
    elif how == "huge-header":
        path.write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    elif how == "truncated":
        save_file({"conv.weight": torch.randn(64, 64)}, str(path))
        path.write_bytes(path.read_bytes()[:200])
    return path


def binary(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.write_bytes(b"\xff\xfe\x00garbage\x9c")
    return path


def results(tmp: Path, text: str, suffix: str = ".csv") -> Path:
    path = tmp / f"results{suffix}"
    path.write_text(text)
    return path


def corrupted_parquet(tmp: Path) -> Path:
    """A Parquet results table whose data pages were overwritten (footer and schema intact)."""
    path = tmp / "results.parquet"
    table = pa.table({"optimizer": ["a"] * 2000, "backbone": [f"b{i}" for i in range(2000)],
                      "top1": [float(i % 100) for i in range(2000)]})
    pq.write_table(table, path, compression="none")
    data = bytearray(path.read_bytes())
    data[8:len(data) // 2] = b"\xff" * (len(data) // 2 - 8)
    path.write_bytes(bytes(data))
    return path


def parquet_dataset(tmp: Path) -> Path:
    """A Hugging Face-layout CIFAR folder whose train file has damaged data pages."""
    folder = tmp / "data"
    folder.mkdir()
    images = [{"bytes": bytes(range(256)) * 8, "path": None} for _ in range(50)]
    for split in ("train", "test"):
        table = pa.table({"img": images, "label": list(range(10)) * 5})
        pq.write_table(table, folder / f"{split}.parquet", compression="none")
    train = folder / "train.parquet"
    data = bytearray(train.read_bytes())
    data[8:len(data) // 2] = b"\x07" * (len(data) // 2 - 8)
    train.write_bytes(bytes(data))
    return folder


Setup = Callable[[Path], list[str]]

# (case, setup returning argv, a fragment the one stderr line must contain)
CASES: list[tuple[str, Setup, str]] = [
    # -- item 4 / 10: values validation refuses before anything runs --------------------------------
    ("lr nan", lambda t: ["run", str(study(t, optimizer_keys="lr = nan"))], "lr: expected finite"),
    ("lr inf", lambda t: ["run", str(study(t, optimizer_keys="lr = inf"))], "lr: expected finite"),
    ("weight_decay nan", lambda t: ["run", str(study(t, optimizer_keys="weight_decay = nan"))],
     "weight_decay: expected finite"),
    ("lr negative", lambda t: ["run", str(study(t, optimizer_keys="lr = -0.1"))], "lr: expected finite"),
    ("time_limit_s -1", lambda t: ["run", str(study(t, "time_limit_s = -1"))], "time_limit_s"),
    ("time_limit_s 0", lambda t: ["run", str(study(t, "time_limit_s = 0"))], "time_limit_s"),
    ("time_limit_s nan", lambda t: ["run", str(study(t, "time_limit_s = nan"))], "time_limit_s"),
    ("memory_limit_gb -2", lambda t: ["run", str(study(t, "memory_limit_gb = -2"))], "memory_limit_gb"),
    ("memory_limit_gb 0", lambda t: ["run", str(study(t, "memory_limit_gb = 0"))], "memory_limit_gb"),
    ("memory_limit_gb inf", lambda t: ["run", str(study(t, "memory_limit_gb = inf"))], "memory_limit_gb"),
    ("memory_limit_gb under Ray", lambda t: ["run", str(study(t, "memory_limit_gb = 4")), "--executor", "ray"],
     "memory_limit_gb is enforced by the local executor only"),
    ("seeds 100000000", lambda t: ["plan", str(study(t, "seeds = 100000000"))], "seeds: a count must be"),
    ("seeds negative", lambda t: ["plan", str(study(t, "seeds = [-1]"))], "seeds"),
    ("study epochs -1", lambda t: ["run", str(study(t, "epochs = -1"))], "epochs: must be"),
    ("optimizer arg wrong type", lambda t: ["run", str(study(t, optimizer="SGD-M", optimizer_keys='args = { momentum = "high" }'))],
     "momentum: expected a finite number"),
    ("optimizer arg out of range", lambda t: ["run", str(study(t, optimizer_keys="args = { betas = [0.9, 1.5] }"))],
     "betas: expected numbers in [0, 1]"),
    ("optimizer arg wrong length", lambda t: ["run", str(study(t, optimizer_keys="args = { betas = [0.9] }"))],
     "betas: expected a list of 2"),
    ("optimizer arg nan", lambda t: ["run", str(study(t, optimizer_keys="args = { eps = nan }"))], "eps"),
    ("optimizer bool arg as number", lambda t: ["run", str(study(t, optimizer="SGD-M", optimizer_keys="args = { nesterov = 1 }"))],
     "nesterov: expected true or false"),
    ("study name with ../", lambda t: ["report", str(study(t, name="../../escaped")), "--store", str(store(t))],
     "not a safe file name"),
    ("study name with /", lambda t: ["run", str(study(t, name="a/b"))], "not a safe file name"),
    ("study name with rich markup", lambda t: ["run", str(study(t, name="[/]"))], "not a safe file name"),
    ("train --epochs -1", lambda t: ["train", "--backbone", "R-18", "--epochs", "-1"], "--epochs must be >= 1"),
    ("train --lr nan", lambda t: ["train", "--backbone", "R-18", "--lr", "nan"], "--lr must be a finite"),
    ("train --opt-arg wrong type", lambda t: ["train", "--backbone", "R-18", "--optimizer", "AdamW", "--opt-arg",
                                              "betas=0.9"], "betas: expected a list of 2"),
    ("lease 0, slots 2", lambda t: ["run", str(study(t)), "--lease", "0", "--slots", "2"], "--lease must be"),
    ("lease nan", lambda t: ["run", str(study(t)), "--lease", "nan"], "--lease must be"),
    ("slots 0", lambda t: ["run", str(study(t)), "--slots", "0"], "--slots must be >= 1"),
    # -- item 9: files that are not what they should be ---------------------------------------------
    ("study file is a directory", lambda t: ["run", str(t)], "is a directory, not a study file"),
    ("study file missing", lambda t: ["run", str(t / "nope.toml")], "no such study file"),
    ("study file binary", lambda t: ["run", str(binary(t, "study.toml"))], "not a text file"),
    ("store truncated", lambda t: ["status", "--store", str(damaged_store(t, "truncated"))], "store"),
    ("store garbage", lambda t: ["status", "--store", str(damaged_store(t, "garbage"))], "not an SQLite file"),
    ("store damaged magic", lambda t: ["export", "--store", str(damaged_store(t, "header"))], "not an SQLite file"),
    ("store damaged pages (status)", lambda t: ["status", "--store", str(damaged_store(t, "pages"))], "malformed"),
    ("store damaged pages (export)", lambda t: ["export", "--store", str(damaged_store(t, "pages"))], "malformed"),
    ("store damaged pages (report)", lambda t: ["report", "--store", str(damaged_store(t, "pages")),
                                                "--out", str(t / "r")], "malformed"),
    ("store truncated (diagnose writes)", lambda t: ["diagnose", str(study(t)), "--store",
                                                     str(damaged_store(t, "truncated"))], "store"),
    ("store garbage (diagnose writes)", lambda t: ["diagnose", str(study(t)), "--store",
                                                   str(damaged_store(t, "garbage"))], "not an SQLite file"),
    ("store cut at 50 bytes", lambda t: ["status", "--store", str(damaged_store(t, "cut-50"))], "truncated to 50 bytes"),
    ("store cut after one page", lambda t: ["export", "--store", str(damaged_store(t, "cut-page"))], "truncated"),
    ("store cut before its last page", lambda t: ["status", "--store", str(damaged_store(t, "cut-last"))], "truncated"),
    ("store all zeros", lambda t: ["status", "--store", str(damaged_store(t, "zeros"))], "not an SQLite file"),
    ("store schema page damaged", lambda t: ["status", "--store", str(damaged_store(t, "schema-page"))], "store"),
    ("store schema page damaged (diagnose writes)", lambda t: ["diagnose", str(study(t)), "--store",
                                                               str(damaged_store(t, "schema-page"))], "store"),
    ("store empty file (reading)", lambda t: ["status", "--store", str(results(t, "", ".sqlite"))], "no bocb tables"),
    ("store of another program", lambda t: ["diagnose", str(study(t)), "--store", str(other_sqlite(t))],
     "SQLite file with other tables"),
    ("store is a directory", lambda t: ["status", "--store", str(t)], "is a directory"),
    ("store is a directory (run)", lambda t: ["run", str(study(t)), "--store", str(t)], "is a directory"),
    ("store newer schema (reading)", lambda t: ["status", "--store", str(newer_store(t))], f"schema v99, this bocb reads v{SCHEMA_VERSION}"),
    ("store newer schema (writing)", lambda t: ["diagnose", str(study(t)), "--store", str(newer_store(t))],
     f"schema v99, this bocb reads v{SCHEMA_VERSION}"),
    ("store missing (reading)", lambda t: ["export", "--store", str(t / "none.sqlite")], "no store at"),
    ("checkpoint empty", lambda t: ["diagnose", "--checkpoint", str(weights(t, "empty"))], "not a readable safetensors"),
    ("checkpoint truncated", lambda t: ["diagnose", "--checkpoint", str(weights(t, "truncated"))],
     "not a readable safetensors"),
    ("checkpoint garbage", lambda t: ["diagnose", "--checkpoint", str(weights(t, "garbage"))], "not a readable safetensors"),
    ("checkpoint pickle", lambda t: ["diagnose", "--checkpoint", str(weights(t, "pickle"))], "not a readable safetensors"),
    ("checkpoint huge header", lambda t: ["diagnose", "--checkpoint", str(weights(t, "huge-header"))],
     "not a readable safetensors"),
    ("checkpoint is a directory", lambda t: ["diagnose", "--checkpoint", str(weights(t, "dir"))], "is a directory"),
    ("checkpoint missing", lambda t: ["diagnose", "--checkpoint", str(t / "none.safetensors")], "no checkpoint at"),
    ("analyze missing file", lambda t: ["analyze", str(t / "none.csv")], "no results file at"),
    ("analyze --flags-out into a missing folder", lambda t: ["analyze", str(results(t, "optimizer,backbone,top1\na,b,1\n")),
                                                            "--flags-out", str(t / "no" / "flags.csv")], "does not exist"),
    ("analyze empty name", lambda t: ["analyze", str(results(t, "optimizer,backbone,top1\na,b,1\n,b,2\n"))],
     "optimizer is empty"),
    ("analyze inf top1", lambda t: ["analyze", str(results(t, "optimizer,backbone,top1\na,b,inf\nc,b,50\n"))],
     "top1 is infinite"),
    ("analyze duplicate rows", lambda t: ["analyze", str(results(t, "optimizer,backbone,top1\na,b,50\na,b,50\n"))],
     "appears twice"),
    ("analyze corrupted Parquet", lambda t: ["analyze", str(corrupted_parquet(t))], "cannot read"),
    ("analyze garbage CSV", lambda t: ["analyze", str(results(t, "\x00\x01\x02"))], "results lack"),
    ("export --out into a missing folder", lambda t: ["export", "--store", str(store(t)), "--out",
                                                      str(t / "no" / "x.csv")], "does not exist"),
    ("export --out is a directory", lambda t: ["export", "--store", str(store(t)), "--out", str(t)], "is a directory"),
    ("data Parquet with damaged pages", lambda t: ["train", "--backbone", "R-18", "--data", str(parquet_dataset(t)),
                                                   "--epochs", "1"], "damaged Parquet data"),
]


def _files(root: Path) -> dict[str, str]:
    """Every file's digest. SQLite's WAL index files (``-wal``, ``-shm``), which SQLite itself
    creates beside a WAL-mode file any reader opens, are left out: they are not the store."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


@pytest.mark.parametrize("case, setup, expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_touches_nothing(case, setup, expected, tmp_path, capsys,
                                                              monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.setenv("BOCB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(work)  # anything written to a default place would show up in the file check
    argv = setup(work)
    before = _files(work)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert _files(work) == before  # existing files unchanged, and no new file
