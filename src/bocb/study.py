"""Study files: one TOML file declares a grid; :func:`expand` turns it into trial specs.

A study names a dataset, backbones, optimizers, a tuning mode, seeds and a budget tier::

    [study]
    name = "demo"
    data = "sample"              # as `bocb train --data`
    tier = "smoke"               # full | fast | smoke
    seeds = [0]                  # or a count: seeds = 3 means [0, 1, 2]
    tuning = "fixed"             # grid | paper | fixed | adaptive
    wd_policy = "paper"          # each optimizer's released rule; or no_decay_1d / decay_all for all
    precision = "tf32"           # optional: fp32 | tf32 | bf16 (default: the tier's; part of trial ids)
    selection = "test"           # optional: test (the paper's way) | holdout (see below)
    holdout_per_class = 50       # optional, with selection = "holdout" (default 50)
    weight_conv = "slices"       # optional: conv matricisation of the weight diagnostics
                                 # (slices: WeightWatcher's, the default; reshape)
    keep_weights = "all"         # optional: which final weights stay on disk after a run: all
                                 # (default), best (the runs of each pair's best setting: what
                                 # transfer and the report use), none. Dropped only once measured.
    label_column = "labels"      # optional, Parquet data: the label column (default: label, fine_label,
                                 # a declared ClassLabel, labels; bocb train --label-column)
    image_column = "picture"     # optional, Parquet data: the image column (default: one declared an
                                 # Image, else img, image; bocb train --image-column)
    plugins = ["my_pkg.models"]  # optional: modules that register backbones/optimizers, imported
                                 # before the names below are checked, and by every worker
    data_sizes = {classes = 1000, train = 1281167, test = 50000}
                                 # optional: what `bocb plan` assumes when the data is not on this
                                 # machine (or is streamed); never used to train
    processes_per_trial = 8      # optional (default 1): each trial runs on this many processes
                                 # (one GPU each; gloo processes on a CPU) with the recipe's global
                                 # batch split between them (bocb.distributed). A way to run, not
                                 # part of a trial's identity; a backbone may set its own.
    # optional budget overrides for every trial: epochs, batch_size, train_per_class,
    # test_per_class; run limits: time_limit_s, memory_limit_gb; and classes = [0, 1, 2, 3, 4]
    # to keep only those classes of the data (relabelled in that order)

    [[backbones]]                # or: backbones = ["R-50", "DeiT-S"]
    name = "R-50"                # also timm:NAME or package.module:builder (bocb.zoo.external)
    policy = "cifar"             # optional: cifar | upsample (default: the backbone's)
    scale = "tiny"               # optional: paper | tiny (default: the tier's)
    recipe = "pytorch"           # optional (default: the paper's assignment)
    drop_path = 0.1              # optional
    group = "modern CNN"         # optional: the design family the adaptive tuner starts from (default:
                                 # the backbone's; corrects one inferred for a timm:/builder model)
    processes_per_trial = 4      # optional: this backbone's trials on this many processes

    [[optimizers]]               # or: optimizers = ["SGD-M", "AdamW"]
    name = "SGD-M"
    lr = [0.05, 0.1]             # optional explicit values (grid mode: the grid; fixed: one value)
    weight_decay = [1e-4]
    args = { nesterov = true }   # optional optimizer arguments
    center = { lr = 1e-3, weight_decay = 0.05 }   # optional, adaptive tuning: where to start

    [tuning]                     # optional, adaptive tuning only (defaults shown)
    rungs = 3                    # fidelities; rung r of R stops at epoch round(epochs / eta^(R-1-r))
    eta = 3                      # successive halving keeps the best 1/eta at each rung
    step = 0.5                   # coarse stencil step, decades
    fine_step = 0.2              # fine stencil step near the best, decades
    max_trials = 50              # candidates per pair at most
    max_full = 10                # full-budget results per pair at most (the final climb)
    lr_limits = [1e-6, 10.0]     # hard limits of the search
    wd_limits = [1e-6, 1.0]      # (weight decay 0 is always a level of its own)

Tuning modes: ``grid`` runs every (lr, wd) of the optimizer's 5-point grids (or the explicit
lists); ``paper`` uses the paper's chosen lr/wd for the pair (Tables A4/A5) and records pairs the
paper has no value for as skipped, with the reason; ``fixed`` runs one setting per pair (explicit
values, else the recipe's for its base optimizer, else the optimizer's grid centre);
``adaptive`` has no fixed trial list: :mod:`bocb.tuning` proposes each pair's trials from what the
store holds (a log-lattice pattern search with successive halving over epochs; see its docs), and
``bocb run`` asks it for more whenever it runs out of work.

Selection (``selection``): ``test`` chooses each pair's setting, each trial's best epoch and a
transfer study's pre-trained models on test accuracy, as the paper did; ``holdout`` holds out
``holdout_per_class`` training images per class (the same images for every trial), chooses all
three on their accuracy and reports the test accuracy of what it chose. Reports say which.

Every mistake is found before any trial runs and reported in one line naming the file, the
place and the valid choices (:class:`StudyError`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bocb import paper
from bocb.data import DatasetSpec, parse_data_arg
from bocb.optim import DEFAULT_POLICY as DEFAULT_WD_POLICY
from bocb.optim import POLICY_CHOICES as WD_POLICIES
from bocb.optim import get_optimizer_info, resolve_optimizer
from bocb.diagnostics.metrics import CONV_MODES
from bocb.recipes import PRECISIONS, RECIPES, TIERS
from bocb.registry import UnknownNameError
from bocb.spec import TrialSpec, resolve_trial
from bocb.zoo import POLICIES, SCALES, get_backbone_info, list_backbones

SELECTION = {
    "test": "settings, best epoch and transfer sources chosen on the test set (the paper's way)",
    "holdout": "chosen on training images held out per class; test accuracy reported for the choice",
}
DEFAULT_HOLDOUT_PER_CLASS = 50

TUNING = {
    "grid": "every (lr, wd) of the optimizer's grids (or the explicit lists)",
    "paper": "the paper's chosen lr/wd per pair; pairs without one are skipped",
    "fixed": "one setting per pair: explicit, else the recipe's, else the optimizer's centre",
    "adaptive": "per-pair search on a log lattice with successive halving (bocb.tuning)",
}

_STUDY_KEYS = {
    "name": str, "description": str, "data": str, "tier": str, "seeds": (list, int), "tuning": str,
    "wd_policy": str, "epochs": int, "batch_size": int, "train_per_class": int,
    "test_per_class": int, "time_limit_s": (int, float), "memory_limit_gb": (int, float),
    "classes": list, "precision": str, "selection": str, "holdout_per_class": int, "weight_conv": str,
    "plugins": list, "label_column": str, "image_column": str, "keep_weights": str, "data_sizes": dict,
    "processes_per_trial": int,
}
# What `bocb plan` assumes when the study's data is not on this machine (ImageNet's folder on a
# cluster, say): classes, training and test images. Never used to train.
DATA_SIZE_KEYS = ("classes", "train", "test")
KEEP_WEIGHTS = {
    "all": "every finished trial's final weights stay (about 45-110 MB per paper-scale model)",
    "best": "only the runs of each pair's best setting keep theirs (transfer and the report use those)",
    "none": "no final weights stay once their weight diagnostics are in the store",
}
# ``group``: the design family the tuner starts from (a model named by source, whose family bocb
# infers, may be corrected here); one of the paper backbones' groups.
_BACKBONE_KEYS = {"name": str, "policy": str, "scale": str, "recipe": str, "drop_path": (int, float), "group": str,
                  "processes_per_trial": int}
_OPTIMIZER_KEYS = {"name": str, "lr": (list, int, float), "weight_decay": (list, int, float), "args": dict,
                   "center": dict}
_TOP_KEYS = {"study": dict, "backbones": list, "optimizers": list, "tuning": dict}
_TUNING_KEYS = {"rungs": int, "eta": int, "step": (int, float), "fine_step": (int, float), "max_trials": int,
                "max_full": int, "lr_limits": list, "wd_limits": list}
_CENTER_KEYS = {"lr": (int, float), "weight_decay": (int, float)}


class StudyError(ValueError):
    """A study file that cannot run; the message is one line: file, place, problem, choices."""


@dataclass(frozen=True)
class Skipped:
    """A combination the study declares but that cannot run, kept as data with its reason."""

    backbone: str
    optimizer: str
    reason: str


@dataclass(frozen=True)
class Study:
    name: str
    path: str
    data: DatasetSpec
    tier: str
    seeds: tuple[int, ...]
    tuning: str
    wd_policy: str
    settings: dict[str, Any]  # the parsed file, for the store's record
    backbones: tuple[dict[str, Any], ...]
    optimizers: tuple[dict[str, Any], ...]
    time_limit_s: float | None = None
    memory_limit_gb: float | None = None
    description: str = ""
    overrides: dict[str, int] = field(default_factory=dict)
    precision: str | None = None  # None: the tier's
    holdout_per_class: int | None = None  # set exactly when selection is "holdout"
    weight_conv: str = "slices"
    tuner: Any = None  # bocb.tuning.TuningConfig under adaptive tuning
    keep_weights: str = "all"  # see KEEP_WEIGHTS
    data_sizes: tuple[int, int, int] | None = None  # (classes, train, test) for planning without the data
    plugins: tuple[str, ...] = ()  # modules imported before names are resolved (bocb.plugins)
    processes_per_trial: int = 1  # each trial's processes, unless its backbone entry says otherwise

    def processes_for(self, spec: dict[str, Any]) -> int:
        """How many processes the trial ``spec`` runs on: its backbone entry's
        ``processes_per_trial``, else the study's. The entry is the one whose name, and recipe,
        policy and scale where it sets them, are the trial's (a study may list one backbone twice
        with two recipes)."""
        backbone, recipe = spec["backbone"], spec["recipe"]["name"]
        for b in self.backbones:
            if ("processes_per_trial" in b and get_backbone_info(b["name"]).name == backbone["name"]
                    and b.get("recipe", recipe) == recipe and b.get("policy", backbone["policy"]) == backbone["policy"]
                    and b.get("scale", backbone["scale"]) == backbone["scale"]):
                return b["processes_per_trial"]
        return self.processes_per_trial

    @property
    def selection(self) -> str:
        return "holdout" if self.holdout_per_class else "test"

    @property
    def study_id(self) -> str:
        """Content hash of the parsed settings: editing the file makes a new study version."""
        text = json.dumps(self.settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _type_name(t: Any) -> str:
    types = t if isinstance(t, tuple) else (t,)
    return " or ".join({list: "array", dict: "table", str: "string", int: "integer", float: "number"}[x] for x in types)


def check_table(where: str, table: dict[str, Any], schema: dict[str, Any], required: tuple[str, ...] = ()) -> None:
    """Unknown keys, wrong types and missing required keys of one TOML table, as StudyErrors."""
    for key in table:
        if key not in schema:
            raise StudyError(f"{where}: unknown key {key!r}: valid: {', '.join(schema)}")
        value, expected = table[key], schema[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise StudyError(f"{where}.{key}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}")
    for key in required:
        if key not in table:
            raise StudyError(f"{where}: missing required key {key!r}")


def _plugins(head: str, s: dict[str, Any]) -> tuple[str, ...]:
    """The study's ``plugins``, imported now: the backbones and optimizers below may be theirs."""
    from bocb.plugins import load_plugins

    names = s.get("plugins", [])
    if not all(isinstance(n, str) and n for n in names):
        raise StudyError(f"{head}.plugins: must be a list of module names, got {names!r}")
    try:
        load_plugins(names)
    except ValueError as err:
        raise StudyError(f"{head}.plugins: {err}") from None
    return tuple(names)


def _choice(where: str, value: str, choices: dict[str, Any] | list[str]) -> str:
    if value not in choices:
        raise StudyError(f"{where}: unknown value {value!r}: valid: {', '.join(choices)}")
    return value


def _known(place: str, lookup: Any, name: str) -> None:
    """Registry lookup whose miss becomes a StudyError naming the place and the close choices."""
    try:
        lookup(name)
    except UnknownNameError as exc:
        raise StudyError(f"{place}.name: {exc}") from None


def _entries(where: str, raw: list[Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    if not raw:
        raise StudyError(f"{where}: empty list: a study needs at least one entry")
    out = []
    for i, item in enumerate(raw, 1):
        place = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise StudyError(f"{place}: expected a name or a table, got {type(item).__name__}")
        check_table(place, item, schema, ("name",))
        out.append(dict(item))
    return out


def _values(where: str, value: Any) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise StudyError(f"{where}: empty list")
    for v in values:
        # TOML has nan and inf literals; NaN also slips past `v < 0`, so finiteness is checked first.
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise StudyError(f"{where}: expected finite non-negative numbers, got {v!r}")
    return [float(v) for v in values]


# Study names become folder and file names (reports, exports): one path component, printable,
# no leading dot, so `../x`, `a/b` or `.hidden` can never escape or hide.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=,@ -]{0,99}")
MAX_SEEDS = 1000  # seeds per setting; a count beyond this is almost surely a list meant as a count


def parse_name(where: str, table: dict[str, Any]) -> str:
    """``name``: 1-100 characters of letters, digits, ``_ . + = , @ -`` and spaces, not starting
    with a dot, a space or a dash (it names the report's folder)."""
    name = table["name"]
    if not _SAFE_NAME.fullmatch(name) or name.endswith((" ", ".")):
        raise StudyError(f"{where}.name: {name!r} is not a safe file name: use 1-100 letters, digits, "
                         f"spaces and _ . + = , @ - (not first: . - or space)")
    return name


def parse_data_sizes(where: str, table: dict[str, Any]) -> tuple[int, int, int] | None:
    """``data_sizes = {classes = C, train = N, test = M}``: whole numbers, at least 2 classes."""
    sizes = table.get("data_sizes")
    if sizes is None:
        return None
    if set(sizes) != set(DATA_SIZE_KEYS):
        raise StudyError(f"{where}.data_sizes: expected exactly the keys {', '.join(DATA_SIZE_KEYS)}, got "
                         f"{', '.join(sorted(sizes)) or 'none'}")
    values = tuple(sizes[k] for k in DATA_SIZE_KEYS)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values) or values[0] < 2:
        raise StudyError(f"{where}.data_sizes: expected whole numbers (classes >= 2, images >= 1), got {sizes}")
    return values  # type: ignore[return-value]


def parse_limits(where: str, table: dict[str, Any]) -> tuple[float | None, float | None]:
    """``time_limit_s`` and ``memory_limit_gb``: absent (no limit) or finite numbers > 0.

    0, negative and non-finite values are refused rather than read as "no limit" or as a limit
    that kills every trial: leave the key out to run without a limit.
    """
    out = []
    for key, floor in (("time_limit_s", 1.0), ("memory_limit_gb", 0.1)):
        value = table.get(key)
        if value is not None and not (math.isfinite(value) and value >= floor):
            raise StudyError(f"{where}.{key}: expected a finite number >= {floor:g}, got {value!r} "
                             f"(leave the key out for no limit)")
        out.append(None if value is None else float(value))
    return out[0], out[1]


def read_file(path: Path) -> dict[str, Any]:
    """The parsed TOML of a study file (either kind); a missing or malformed file is a StudyError."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except IsADirectoryError:
        raise StudyError(f"{path}: is a directory, not a study file (TOML)") from None
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a text file: a study file is UTF-8 TOML") from None
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the study file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: not valid TOML: {exc}") from None


def choice(where: str, table: dict[str, Any], key: str, default: str, choices: dict[str, Any] | list[str]) -> str:
    """``table[key]`` (or ``default``), which must be one of ``choices``."""
    return _choice(f"{where}.{key}", table.get(key, default), choices)


def parse_seeds(where: str, table: dict[str, Any]) -> tuple[int, ...]:
    """``seeds``: a count (``3`` means 0, 1, 2) or a list of integers; default ``[0]``."""
    raw = table.get("seeds", [0])
    # Checked before expanding: `seeds = 100000000` (a seed meant as a list) must not build a
    # hundred-million-element range.
    if isinstance(raw, int) and not 1 <= raw <= MAX_SEEDS:
        raise StudyError(f"{where}.seeds: a count must be 1..{MAX_SEEDS}, got {raw} "
                         f"(for one seed with that value write seeds = [{raw}])")
    seeds = list(range(raw)) if isinstance(raw, int) else raw
    if not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise StudyError(f"{where}.seeds: expected a count >= 1 or a non-empty list of integers")
    if len(seeds) > MAX_SEEDS or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) >= 2**32:
        raise StudyError(f"{where}.seeds: expected at most {MAX_SEEDS} distinct integers in 0..2^32-1, "
                         f"got {len(seeds)} value(s) from {min(seeds)} to {max(seeds)}")
    return tuple(seeds)


def parse_data(where: str, table: dict[str, Any]) -> DatasetSpec:
    """``data`` (as ``bocb train --data``, default ``sample``) with its optional ``classes`` subset."""
    try:
        data = parse_data_arg(table.get("data", "sample"))
        if "classes" in table:
            data = replace(data, classes=tuple(table["classes"]))
        if "label_column" in table:
            data = replace(data, label_column=table["label_column"])
        if "image_column" in table:
            data = replace(data, image_column=table["image_column"])
    except ValueError as exc:
        key = next((k for k in ("label_column", "image_column") if k in str(exc)), None) or (
            "classes" if "classes" in table else "data")
        raise StudyError(f"{where}.{key}: {exc}") from None
    return data


def parse_optimizers(where: str, raw: list[Any], tuning: str) -> tuple[dict[str, Any], ...]:
    """``[[optimizers]]`` entries: known names, non-negative lr/wd lists, one value under ``fixed``."""
    optimizers = _entries(f"{where} optimizers", raw, _OPTIMIZER_KEYS)
    for i, o in enumerate(optimizers, 1):
        place = f"{where} optimizers[{i}]"
        _known(place, get_optimizer_info, o["name"])
        for key in ("lr", "weight_decay"):
            if key in o:
                if tuning == "adaptive":
                    raise StudyError(f"{place}.{key}: tuning 'adaptive' searches lr and weight_decay; "
                                     f"give its start as center = {{ lr = ..., weight_decay = ... }}")
                o[key] = _values(f"{place}.{key}", o[key])
                if tuning == "fixed" and len(o[key]) != 1:
                    raise StudyError(f"{place}.{key}: tuning 'fixed' takes one value, got {len(o[key])}")
        if "center" in o:
            if tuning != "adaptive":
                raise StudyError(f"{place}.center: only tuning 'adaptive' takes a center, not {tuning!r}")
            check_table(f"{place}.center", o["center"], _CENTER_KEYS, ("lr", "weight_decay"))
            for key, v in o["center"].items():
                _values(f"{place}.center.{key}", v)
        if o.get("args"):
            # Resolving checks the arguments' names, types and ranges now, not at trial time.
            try:
                resolve_optimizer(o["name"], **o["args"])
            except (TypeError, ValueError) as exc:
                raise StudyError(f"{place}.args: {exc}") from None
    return tuple(optimizers)


def parse_selection(where: str, table: dict[str, Any]) -> int | None:
    """``selection`` and ``holdout_per_class``: the images per class held out, or None (test)."""
    selection = choice(where, table, "selection", "test", SELECTION)
    if selection == "test":
        if "holdout_per_class" in table:
            raise StudyError(f"{where}.holdout_per_class: only with selection = \"holdout\"")
        return None
    per_class = table.get("holdout_per_class", DEFAULT_HOLDOUT_PER_CLASS)
    if per_class < 1:
        raise StudyError(f"{where}.holdout_per_class: must be >= 1, got {per_class}")
    return per_class


def parse_tuner(where: str, raw: dict[str, Any] | None, tuning: str) -> Any:
    """The ``[tuning]`` table as a :class:`bocb.tuning.TuningConfig` (adaptive tuning only)."""
    from bocb.tuning.policy import TuningConfig

    if raw is not None and tuning != "adaptive":
        raise StudyError(f"{where} [tuning]: only tuning 'adaptive' takes a [tuning] table, not {tuning!r}")
    if tuning != "adaptive":
        return None
    raw = dict(raw or {})
    check_table(f"{where} [tuning]", raw, _TUNING_KEYS)
    for key in ("lr_limits", "wd_limits"):
        if key in raw:
            values = _values(f"{where} [tuning].{key}", raw[key])
            if len(values) != 2 or not 0 < values[0] < values[1]:
                raise StudyError(f"{where} [tuning].{key}: expected [low, high] with 0 < low < high, got {raw[key]}")
            raw[key] = tuple(values)
    try:
        return TuningConfig(**raw)
    except ValueError as exc:
        raise StudyError(f"{where} [tuning]: {exc}") from None


def parse_overrides(where: str, table: dict[str, Any]) -> dict[str, int]:
    """Budget overrides for every trial (epochs, batch_size, train/test_per_class), each >= 1."""
    overrides = {k: table[k] for k in ("epochs", "batch_size", "train_per_class", "test_per_class") if k in table}
    for k, v in overrides.items():
        if not 1 <= v <= 1_000_000:
            raise StudyError(f"{where}.{k}: must be 1..1000000, got {v}")
    return overrides


def optimizer_settings(tuning: str, optimizer: dict[str, Any]) -> list[tuple[float | None, float | None]]:
    """The (lr, wd) pairs of one optimizer entry under ``grid`` or ``fixed`` tuning (None: default)."""
    if tuning == "grid":
        info = get_optimizer_info(optimizer["name"])
        lrs = optimizer.get("lr") or list(info.lr_grid())
        wds = optimizer.get("weight_decay") or list(info.wd_grid())
        return [(lr, wd) for lr in lrs for wd in wds]
    if tuning == "fixed":
        return [(optimizer.get("lr", [None])[0], optimizer.get("weight_decay", [None])[0])]
    raise ValueError(f"optimizer_settings covers grid and fixed tuning, not {tuning!r}")


def load_study(path: str | Path) -> Study:
    """Parse and validate a study file; nothing is built or run."""
    path = Path(path)
    where = str(path)
    raw = read_file(path)
    check_table(where, raw, _TOP_KEYS, ("study", "backbones", "optimizers"))
    s = raw["study"]
    head = f"{where} [study]"
    check_table(head, s, _STUDY_KEYS, ("name",))
    plugins = _plugins(head, s)
    name = parse_name(head, s)
    time_limit_s, memory_limit_gb = parse_limits(head, s)
    tier = choice(head, s, "tier", "full", TIERS)
    tuning = choice(head, s, "tuning", "grid", TUNING)
    wd_policy = choice(head, s, "wd_policy", DEFAULT_WD_POLICY, WD_POLICIES)
    seeds = parse_seeds(head, s)
    data = parse_data(head, s)
    precision = choice(head, s, "precision", "tf32", PRECISIONS) if "precision" in s else None
    holdout = parse_selection(head, s)
    if holdout is not None and tuning == "adaptive":
        # The tuner ranks candidates on the epochs table's test accuracy; until it reads held-out
        # accuracy, the combination would choose settings on the test set while saying otherwise.
        raise StudyError(f"{head}.selection: 'holdout' is not available with tuning 'adaptive' yet: "
                         "valid with adaptive: test")
    weight_conv = choice(head, s, "weight_conv", "slices", CONV_MODES)
    keep_weights = choice(head, s, "keep_weights", "all", KEEP_WEIGHTS)
    data_sizes = parse_data_sizes(head, s)

    backbones = _entries(f"{where} backbones", raw["backbones"], _BACKBONE_KEYS)
    for i, b in enumerate(backbones, 1):
        place = f"{where} backbones[{i}]"
        _known(place, get_backbone_info, b["name"])
        if "policy" in b:
            _choice(f"{place}.policy", b["policy"], POLICIES)
        if "scale" in b:
            _choice(f"{place}.scale", b["scale"], SCALES)
        if "recipe" in b:
            _choice(f"{place}.recipe", b["recipe"], RECIPES)
        if "group" in b:
            _choice(f"{place}.group", b["group"], sorted({i.group for i in list_backbones(paper=True)}))
        _processes(place, b)
    return Study(
        name=name, path=str(path), data=data, tier=tier, seeds=seeds, tuning=tuning,
        wd_policy=wd_policy, settings=raw, backbones=tuple(backbones),
        optimizers=parse_optimizers(where, raw["optimizers"], tuning),
        time_limit_s=time_limit_s, memory_limit_gb=memory_limit_gb,
        description=s.get("description", ""), overrides=parse_overrides(head, s),
        precision=precision, holdout_per_class=holdout, weight_conv=weight_conv,
        tuner=parse_tuner(where, raw.get("tuning"), tuning), plugins=plugins, keep_weights=keep_weights,
        data_sizes=data_sizes, processes_per_trial=_processes(head, s),
    )


def _processes(where: str, table: dict[str, Any]) -> int:
    """``processes_per_trial``: a whole number from 1 to 1024 (default 1)."""
    value = table.get("processes_per_trial", 1)
    if not 1 <= value <= 1024:
        raise StudyError(f"{where}.processes_per_trial: expected a whole number from 1 to 1024, got {value!r}")
    return value


def _settings(study: Study, backbone: dict[str, Any], optimizer: dict[str, Any]) -> list[tuple[float | None, float | None]] | str:
    """The (lr, wd) pairs to run for one pair, or the reason there are none."""
    if study.tuning != "paper":
        return optimizer_settings(study.tuning, optimizer)
    info = get_optimizer_info(optimizer["name"])
    short = get_backbone_info(backbone["name"]).short
    hp = paper.best_hparams().query("optimizer == @info.short and backbone == @short")
    if hp.empty:
        return f"the paper gives no lr/wd for {info.short} on {short}"
    row = hp.iloc[0]
    return [(float(row["lr"]), float(row["weight_decay"]))]


def pair_trial(study: Study, backbone: dict[str, Any], optimizer: dict[str, Any], lr: float | None,
               wd: float | None, seed: int, num_classes: int) -> TrialSpec:
    """The trial spec of one backbone x optimizer entry at one setting and seed."""
    b, o = backbone, optimizer
    try:
        spec = resolve_trial(
            b["name"], o["name"], data=study.data, num_classes=num_classes, lr=lr,
            weight_decay=wd, recipe=b.get("recipe"), tier=study.tier, seed=seed,
            policy=b.get("policy"), scale=b.get("scale"),
            epochs=study.overrides.get("epochs"),
            batch_size=study.overrides.get("batch_size"),
            drop_path_rate=b.get("drop_path"), wd_policy=study.wd_policy,
            optimizer_args=o.get("args"), precision=study.precision,
            holdout_per_class=study.holdout_per_class,
        )
    except ValueError as exc:
        raise StudyError(f"{study.path}: {b['name']} x {o['name']}: {exc}") from None
    subsets = {k: study.overrides[k] for k in ("train_per_class", "test_per_class") if k in study.overrides}
    if subsets:
        spec = TrialSpec(spec.backbone, spec.optimizer, spec.recipe.with_changes(**subsets), spec.data, spec.seed)
    return spec


def expand(study: Study, num_classes: int) -> tuple[list[TrialSpec], list[Skipped]]:
    """Every trial of the study (backbone x optimizer x setting x seed), plus skipped pairs.

    Adaptive tuning has no trial list fixed in advance: it expands to none (every pair's start is
    resolved once here, so a bad entry still fails before anything runs).
    """
    trials: list[TrialSpec] = []
    skipped: list[Skipped] = []
    if study.tuning == "adaptive":
        from bocb.tuning.adapter import pairs

        pairs(study)  # every pair's search space: a bad center or limit fails here
        for b in study.backbones:
            for o in study.optimizers:
                pair_trial(study, b, o, None, None, study.seeds[0], num_classes)
        return trials, skipped
    for b in study.backbones:
        for o in study.optimizers:
            settings = _settings(study, b, o)
            if isinstance(settings, str):
                skipped.append(Skipped(b["name"], o["name"], settings))
                continue
            for lr, wd in settings:
                for seed in study.seeds:
                    trials.append(pair_trial(study, b, o, lr, wd, seed, num_classes))
    if not trials:
        raise StudyError(f"{study.path}: the grid is empty (every pair was skipped)")
    return trials, skipped
