"""Argument helpers shared by commands: data/cache locations and KEY=VALUE options."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

# Environment variables the CLI reads (library code takes these as arguments).
ENV_DATA_DIR = "BOCB_DATA_DIR"
ENV_CACHE_DIR = "BOCB_CACHE_DIR"


def default_cache_dir() -> Path:
    """$BOCB_CACHE_DIR, else $XDG_CACHE_HOME/bocb, else ~/.cache/bocb."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bocb"


def data_dirs() -> list[Path]:
    """Directories named by $BOCB_DATA_DIR (os.pathsep-separated)."""
    raw = os.environ.get(ENV_DATA_DIR, "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def add_data_args(p: argparse.ArgumentParser, data: bool = True) -> None:
    """--data (unless the command takes it from a study file), --cache-dir, --download."""
    if data:
        p.add_argument("--data", default="sample",
                       help="sample (bundled real CIFAR-10 subset), cifar10, cifar100, or a path "
                            "(Parquet dir, datasets save_to_disk folder, image folder, torchvision root, folder of tar "
                            "shards); stream:PATH reads an image folder or Parquet from disk batch by batch instead of "
                            "into memory (ImageNet-size data; tar shards always stream); default: sample")
        p.add_argument("--image-column", metavar="NAME",
                       help="Parquet or save_to_disk data: the image column (default: one declared an Image, "
                            "else img, image)")
        p.add_argument("--label-column", metavar="NAME",
                       help="Parquet or save_to_disk data: the label column (default: label, fine_label, a declared "
                            "ClassLabel, or labels)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"decoded-data cache (default: ${ENV_CACHE_DIR} or ~/.cache/bocb)")
    p.add_argument("--download", action="store_true",
                   help="allow downloading CIFAR through torchvision when not found locally")


def add_store_arg(p: argparse.ArgumentParser, purpose: str = "SQLite store") -> None:
    """--store, with the same default and help on every command that reads or writes the store."""
    from bocb.store import DEFAULT_STORE

    p.add_argument("--store", default=DEFAULT_STORE, help=f"{purpose} (default: {DEFAULT_STORE})")


def add_json_arg(p: argparse.ArgumentParser, what: str) -> None:
    """--json: standard output holds only JSON (``what``); progress and tables go to stderr."""
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout (progress to stderr)")


def add_rule_args(p: argparse.ArgumentParser) -> None:
    """--rule and --gamma, defaulting to the one rule every command shares (DEFAULT_RULE)."""
    from bocb.analysis.failure import DEFAULT_RULE, RULES

    # No argparse choices: an unknown name gets bocb's one-line error listing the valid rules.
    p.add_argument("--rule", default=DEFAULT_RULE.name,
                   help=f"failure rule (default {DEFAULT_RULE.name}): fitted = median - max(0.75 IQR, gamma), "
                        "paper = Eq. 1 literally, max - min(IQR, gamma)")
    p.add_argument("--gamma", type=float, default=None,
                   help="the rule's floor (default: the rule's own, " + ", ".join(
                       f"{n} {r.floor:g}" for n, r in RULES.items()) + ")")


def add_ranking_arg(p: argparse.ArgumentParser) -> None:
    """--ranking paper|continuous (see bocb.analysis.ranking)."""
    from bocb.analysis.ranking import DEFAULT_VARIANT, VARIANTS

    p.add_argument("--ranking", choices=VARIANTS, default=DEFAULT_VARIANT,
                   help=f"optimizer ranking variant (default {DEFAULT_VARIANT}): paper = median distance and "
                        "yes/no BOCB; continuous = mean distance and share of pairs flagged")


def add_log_args(p: argparse.ArgumentParser, default_dir: str) -> None:
    """--log TRACKER (repeatable) and --log-dir: each trial as a run in an experiment tracker
    (:mod:`bocb.trackers`). ``default_dir`` says where the files go without --log-dir."""
    from bocb.trackers import TRACKERS

    names = ", ".join(TRACKERS.names())
    # No argparse choices: an unknown name gets bocb's one-line error listing the valid ones.
    p.add_argument("--log", action="append", default=[], metavar="TRACKER",
                   help=f"log each trial to an experiment tracker, repeatable: {names} (needs pip install "
                        "'bocb[TRACKER]'): the resolved spec as config, every epoch's metrics, the final result")
    p.add_argument("--log-dir", type=Path, metavar="DIR",
                   help=f"tracker files under DIR (default: {default_dir}): DIR/tensorboard/<study>/<run>, "
                        "DIR/wandb unless $WANDB_DIR is set (WANDB_MODE=offline: no account needed), DIR/mlruns "
                        "unless $MLFLOW_TRACKING_URI is set")


def parse_kv(items: list[str] | None) -> dict[str, Any]:
    """``["betas=[0.9,0.95]", "nesterov=true"]`` -> ``{"betas": [0.9, 0.95], "nesterov": True}``.

    Values are JSON where they parse as JSON, else strings.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"option {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def open_existing_store(path: str, readonly: bool = True):
    """:func:`bocb.store.open_existing` (kept under this name for the commands)."""
    from bocb.store import open_existing

    return open_existing(path, readonly)


def output_file(path: Path, option: str) -> Path:
    """Check, before any work, that ``path`` can be written as a file: its folder exists and it is
    not itself a folder. The folder is not created: a mistyped path should not grow directories."""
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{option} {path}: folder {path.parent} does not exist (create it first)")
    return path


def input_file(path: Path, what: str) -> Path:
    """``path`` exists and is a file, else one line naming it."""
    if not path.exists():
        raise ValueError(f"no {what} at {path}")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory, not a file")
    return path


def load_any_study(path: Path):
    """A study file or a transfer study file (it has [[pretrained]] entries), parsed and validated."""
    from bocb.study import load_study
    from bocb.transfer.study import is_transfer_file, load_transfer

    return load_transfer(path) if is_transfer_file(path) else load_study(path)


def plugins_of(args: argparse.Namespace) -> list[str]:
    """The ``--plugin`` modules given before and after the command's name."""
    return [*getattr(args, "plugins_top", []), *getattr(args, "plugins_command", [])]


def ignore_further_interrupts() -> None:
    """Call on the first Ctrl-C of a command that then only tidies up and exits: a second one
    (people press it twice) would break off the last message or the interpreter's exit with a
    traceback. Main thread only (the only one that may set signal handlers)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
