"""Transfer study files: pre-trained models x fine-tuning optimizers x settings x seeds (issue 7).

The paper's second finding is about the pre-train x fine-tune table: a
backbone pre-trained with one optimizer, fine-tuned with another. A transfer study file declares
that grid::

    [study]
    name = "transfer-demo"
    task = "classification"       # or "detection", "pose"
    data = "sample"               # classification: the downstream data (as `bocb train --data`)
    classes = [5, 6, 7, 8, 9]     # optional: keep these classes (relabelled in this order)
    finetune = "full"             # classification: full | linear (linear probe)
    tier = "smoke"                # full | fast | smoke (classification recipes; detection below)
    tuning = "fixed"              # grid | fixed (the paper's Tables A4/A5 are pre-training values)
    seeds = [0]
    # optional, as in study files: epochs, batch_size, train_per_class, test_per_class,
    # wd_policy, time_limit_s, memory_limit_gb

    [detection]                   # task = "detection" only: COCO-format data and the recipe
    train_annotations = "coco/train.json"
    train_images = "coco/train"
    val_annotations = "coco/val.json"
    val_images = "coco/val"
    image_size = 64               # images are resized to this square
    recipe = "retinanet-1x"       # or "smoke" (default: smoke for the smoke tier, else 1x)

    [pose]                        # task = "pose" only: COCO keypoint files (top-down crops of
    train_annotations = ...       # each person box at the recipe's input size) and the recipe,
    train_images = ...            # "simplebaseline" (256x192, 210 epochs) or "smoke"
    val_annotations = ...
    val_images = ...
    recipe = "simplebaseline"

    [[pretrained]]                # trials of another study in the same store
    study = "transfer-pretrain.toml"
    backbones = ["R-50"]          # optional filters (default: every backbone / optimizer)
    optimizers = ["SGD-M", "LAMB"]

    [[pretrained]]                # or a weights file
    checkpoint = "final.safetensors"  # a bocb trial's final weights name their own network;
    backbone = "R-50"             # other safetensors state dicts need backbone (+ scale,
    scale = "tiny"                # policy, num_classes of its head)
    optimizer = "unknown"         # its pre-training optimizer, for the tables
    label = "R-50 / torchvision"  # its column name (default: "BACKBONE / OPTIMIZER")

    [[optimizers]]                # the fine-tuning optimizers, as in study files
    name = "SGD-M"

Choices, stated: from a pre-training study, each (backbone, optimizer) pair contributes **one**
model: the setting with the best mean final top-1 over its seeds, and of that setting the lowest
seed (the paper fine-tunes one pre-trained model per pair). Only ``done`` trials with kept final
weights qualify; a pair whose trials all diverged has nothing to transfer and is listed as skipped.
Paths are relative to the study file. Fine-tuning recipes: the pre-trained backbone's own recipe
at the study's tier (classification), or the detection recipe. Fine-tuning lr/wd default to the
recipe's values for the optimizer, as in pre-training studies.

Models pre-trained on ImageNet (a study such as ``studies/paper-in1k.toml``, trained with an
ImageNet recipe of :mod:`bocb.recipes_in1k` on streamed data) are named the same way. Their
recipe crops full-size images as they stream, so fine-tuning on data held in memory (CIFAR)
uses the backbone's own recipe from the paper's assignment at the study's tier instead (the
network, its policy and input size stay the pre-trained ones); fine-tuning on streamed data keeps
the ImageNet recipe. Detection and pose fine-tune with their own recipes whatever the source.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bocb import checkpoint
from bocb.data import DatasetSpec
from bocb.optim import DEFAULT_POLICY as DEFAULT_WD_POLICY
from bocb.optim import POLICY_CHOICES as WD_POLICIES
from bocb.optim import get_optimizer_info
from bocb.recipes import TIERS
from bocb.registry import UnknownNameError
from bocb.spec import FINETUNE_MODES, Pretrained, TrialSpec, resolve_trial
from bocb.store import SQLiteStore, Store
from bocb.study import (
    Skipped,
    StudyError,
    check_table,
    choice,
    load_study,
    optimizer_settings,
    parse_data,
    parse_limits,
    parse_name,
    parse_optimizers,
    parse_overrides,
    parse_seeds,
    read_file,
)
from bocb.zoo import BackboneSpec, get_backbone_info, resolve_backbone

TASKS = {
    "classification": "a new classifier on the downstream classes (full fine-tuning or linear probe)",
    "detection": "RetinaNet + FPN on the backbone's stages, COCO-format data, COCO box AP",
    "pose": "SimpleBaseline heatmaps on the backbone's last feature map, COCO keypoints, keypoint AP (OKS)",
}
TUNING = {"grid": "every (lr, wd) of the optimizer's grids (or the explicit lists)",
          "fixed": "one setting per pair: explicit, else the recipe's, else the optimizer's centre"}

_STUDY_KEYS = {
    "name": str, "description": str, "task": str, "data": str, "classes": list, "finetune": str,
    "tier": str, "seeds": (list, int), "tuning": str, "wd_policy": str, "epochs": int, "batch_size": int,
    "train_per_class": int, "test_per_class": int, "time_limit_s": (int, float),
    "memory_limit_gb": (int, float),
}
_DETECTION_KEYS = {"train_annotations": str, "train_images": str, "val_annotations": str, "val_images": str,
                   "image_size": int, "recipe": str}
_FROM_STUDY_KEYS = {"study": str, "backbones": list, "optimizers": list}
_FROM_FILE_KEYS = {"checkpoint": str, "backbone": str, "scale": str, "policy": str, "num_classes": int,
                   "optimizer": str, "label": str}
_POSE_KEYS = {"train_annotations": str, "train_images": str, "val_annotations": str, "val_images": str,
              "recipe": str}
_TOP_KEYS = {"study": dict, "detection": dict, "pose": dict, "pretrained": list, "optimizers": list}


@dataclass(frozen=True)
class Source:
    """One pre-trained model: its weights, its network and its place in the tables."""

    pretrained: Pretrained
    backbone: BackboneSpec  # as pre-trained (its head size is the pre-training one)
    recipe: str | None  # the pre-training trial's recipe name, when known


@dataclass(frozen=True)
class TransferStudy:
    name: str
    path: str
    task: str
    settings: dict[str, Any]
    optimizers: tuple[dict[str, Any], ...]
    pretrained: tuple[dict[str, Any], ...]
    seeds: tuple[int, ...]
    tier: str
    tuning: str
    wd_policy: str
    finetune: str
    data: DatasetSpec | None
    detection: dict[str, Any] = field(default_factory=dict)  # the [detection] or [pose] table of its task
    overrides: dict[str, int] = field(default_factory=dict)
    time_limit_s: float | None = None
    memory_limit_gb: float | None = None
    description: str = ""

    @property
    def study_id(self) -> str:
        text = json.dumps({"transfer": self.settings}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def resolve(self, relative: str) -> Path:
        """A path from the file, relative to the file's folder."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else Path(self.path).resolve().parent / path


def is_transfer_file(path: str | Path) -> bool:
    """True for a transfer study file (it has [[pretrained]] entries); False for anything else."""
    try:
        return "pretrained" in tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def load_transfer(path: str | Path) -> TransferStudy:
    """Parse and validate a transfer study file; nothing is built, read from a store or run."""
    path = Path(path)
    where = str(path)
    raw = read_file(path)
    check_table(where, raw, _TOP_KEYS, ("study", "pretrained", "optimizers"))
    s = raw["study"]
    head = f"{where} [study]"
    check_table(head, s, _STUDY_KEYS, ("name",))
    name = parse_name(head, s)
    time_limit_s, memory_limit_gb = parse_limits(head, s)
    task = choice(head, s, "task", "classification", TASKS)
    tuning = choice(head, s, "tuning", "fixed", TUNING)

    data = None
    detection: dict[str, Any] = {}
    for table in ("detection", "pose"):
        if table in raw and table != task:
            raise StudyError(f"{where} [{table}]: only for task = '{table}'")
    if task == "classification":
        data = parse_data(head, s)
    else:
        for key in ("data", "classes", "finetune"):
            if key in s:
                raise StudyError(f"{head}.{key}: not used by task '{task}' (its data is [{task}])")
        if task not in raw:
            raise StudyError(f"{where}: task '{task}' needs a [{task}] table with the COCO files")
        detection = dict(raw[task])
        check_table(f"{where} [{task}]", detection, _DETECTION_KEYS if task == "detection" else _POSE_KEYS,
                    ("train_annotations", "train_images", "val_annotations", "val_images"))

    pretrained = [_pretrained_entry(f"{where} pretrained[{i}]", entry) for i, entry in enumerate(raw["pretrained"], 1)]
    if not pretrained:
        raise StudyError(f"{where} pretrained: empty list: a transfer study needs at least one pre-trained model")
    return TransferStudy(
        name=name, path=str(path), task=task, settings=raw,
        optimizers=parse_optimizers(where, raw["optimizers"], tuning), pretrained=tuple(pretrained),
        seeds=parse_seeds(head, s), tier=choice(head, s, "tier", "full", TIERS), tuning=tuning,
        wd_policy=choice(head, s, "wd_policy", DEFAULT_WD_POLICY, WD_POLICIES),
        finetune=choice(head, s, "finetune", "full", FINETUNE_MODES), data=data, detection=detection,
        overrides=parse_overrides(head, s), time_limit_s=time_limit_s,
        memory_limit_gb=memory_limit_gb, description=s.get("description", ""),
    )


def _pretrained_entry(place: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise StudyError(f"{place}: expected a table with 'study' or 'checkpoint'")
    if ("study" in entry) == ("checkpoint" in entry):
        raise StudyError(f"{place}: give exactly one of 'study' (a pre-training study) or 'checkpoint' (a file)")
    check_table(place, entry, _FROM_STUDY_KEYS if "study" in entry else _FROM_FILE_KEYS)
    if "backbone" in entry:
        try:
            get_backbone_info(entry["backbone"])
        except UnknownNameError as exc:
            raise StudyError(f"{place}.backbone: {exc}") from None
    return dict(entry)


# -- pre-trained sources ----------------------------------------------------------------------------


def sources(study: TransferStudy, store: Store) -> tuple[list[Source], list[Skipped]]:
    """The pre-trained models the study names, resolved against ``store`` and the file system."""
    out: list[Source] = []
    skipped: list[Skipped] = []
    for i, entry in enumerate(study.pretrained, 1):
        place = f"{study.path} pretrained[{i}]"
        if "study" in entry:
            found, missing = _from_study(study, entry, store, place)
            out += found
            skipped += missing
        else:
            out.append(_from_file(study, entry, place))
    labels = [s.pretrained.label for s in out]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise StudyError(f"{study.path} pretrained: the same model is named twice: {repeated} (give labels)")
    if not out:
        raise StudyError(f"{study.path} pretrained: no pre-trained model found (run the pre-training study first)")
    return out, skipped


def _from_study(study: TransferStudy, entry: dict[str, Any], store: Store, place: str):
    pre = load_study(study.resolve(entry["study"]))
    trials = store.trials(pre.study_id)
    if not trials:
        where = f" {store.path}" if isinstance(store, SQLiteStore) else ""
        raise StudyError(f"{place}.study: {pre.path} ({pre.study_id}) has no trials in the store{where}: "
                         f"run it first (bocb run {entry['study']})")
    wanted_b = {get_backbone_info(b).short for b in entry.get("backbones", [])}
    wanted_o = {get_optimizer_info(o).short for o in entry.get("optimizers", [])}
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in trials:
        if (wanted_b and t["backbone"] not in wanted_b) or (wanted_o and t["optimizer"] not in wanted_o):
            continue
        pairs.setdefault((t["backbone"], t["optimizer"]), []).append(t)
    found, missing = [], []
    for (backbone, optimizer), rows in pairs.items():
        usable = [t for t in rows if t["status"] == "done" and t["final_score"] is not None
                  and store.artifacts(t["trial_id"]).get("final_weights")]
        if not usable:
            states = sorted({t["status"] for t in rows})
            missing.append(Skipped(backbone, optimizer, f"no finished pre-training trial to transfer ({', '.join(states)})"))
            continue
        by_setting: dict[tuple[float, float], list[dict[str, Any]]] = {}
        for t in usable:
            by_setting.setdefault((t["lr"], t["weight_decay"] or 0.0), []).append(t)
        score = {t["trial_id"]: _selection_score(store, t) for t in usable}
        best = max(by_setting.values(), key=lambda ts: sum(score[t["trial_id"]] for t in ts) / len(ts))
        chosen = min(best, key=lambda t: t["seed"])
        path = Path(store.artifacts(chosen["trial_id"])["final_weights"])
        spec = store.record(chosen["trial_id"])["spec"]
        found.append(Source(
            Pretrained(label=f"{backbone} / {optimizer}", optimizer=optimizer, sha256=_weights_digest(path, place),
                       path=str(path), trial_id=chosen["trial_id"]),
            BackboneSpec.from_dict(spec["backbone"]), spec["recipe"]["name"],
        ))
    return found, missing


def _selection_score(store: Store, trial: dict[str, Any]) -> float:
    """What a pre-trained model is chosen on: its held-out accuracy when its study held images out
    (``selection = "holdout"``), else its final test accuracy (the paper's way)."""
    if trial["selection"] == "holdout" and trial["final_val"] is not None:
        return float(trial["final_val"])
    return float(trial["final_score"])


def _from_file(study: TransferStudy, entry: dict[str, Any], place: str) -> Source:
    path = study.resolve(entry["checkpoint"])
    if not path.exists():
        raise StudyError(f"{place}.checkpoint: no such file {path}")
    from bocb.diagnostics.snapshot import read_spec  # imports torch: only for a weights file

    try:
        spec = read_spec(path)
    except Exception as exc:  # noqa: BLE001 - not a safetensors file: say so in one line
        raise StudyError(f"{place}.checkpoint: {path} is not a safetensors weights file ({exc})") from None
    if "backbone" in entry:
        try:
            backbone = resolve_backbone(entry["backbone"], num_classes=entry.get("num_classes", 10),
                                        policy=entry.get("policy"), scale=entry.get("scale", "paper"))
        except ValueError as exc:
            raise StudyError(f"{place}: {exc}") from None
    elif spec is not None:
        backbone = BackboneSpec.from_dict(spec["backbone"])
    else:
        raise StudyError(f"{place}: {path} is not a bocb trial's final weights: name its network with 'backbone'")
    optimizer = entry.get("optimizer") or (spec["optimizer"]["short"] if spec else "unknown")
    return Source(
        Pretrained(label=entry.get("label", f"{backbone.short} / {optimizer}"), optimizer=optimizer,
                   sha256=_weights_digest(path, place), path=str(path),
                   trial_id=TrialSpec.from_dict(spec).trial_id if spec else None),
        backbone, spec["recipe"]["name"] if spec else None,
    )


def _weights_digest(path: Path, place: str) -> str:
    """The weights' :func:`bocb.checkpoint.tensor_sha256`; a missing or unreadable file is a StudyError."""
    try:
        return checkpoint.tensor_sha256(path)
    except Exception as exc:  # noqa: BLE001 - missing, truncated or not safetensors: one line
        raise StudyError(f"{place}: cannot read the pre-trained weights {path}: "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None


def keep_stored_ids(trials: list[Any], stored: set[str]) -> list[Any]:
    """Fine-tuning specs, each replaced by its file-digest twin when that twin is already stored.

    Stores written before tensor digests hold fine-tuning trials whose id hashes the weights
    *file*'s sha256. A rerun of the same transfer study against such a store finds those trials
    here and keeps them (same id, same results), instead of adding a second trial per pair that
    would then run again and make the report refuse the study as a "duplicate run". Only when the
    file itself changed (re-saved weights) does the old id no longer match: those pairs run once
    more under the tensor-digest id, and the old trials stay in the store as they were.
    """
    if not stored:
        return trials
    files: dict[str, str] = {}
    out = []
    for spec in trials:
        path = spec.pretrained.path
        if path not in files:
            try:
                files[path] = checkpoint.file_sha256(Path(path))
            except OSError:
                files[path] = ""
        legacy = replace(spec, pretrained=replace(spec.pretrained, sha256=files[path]))
        out.append(legacy if files[path] and legacy.trial_id in stored else spec)
    return out


def superseded(trials: list[Any], stored: dict[str, dict[str, Any]]) -> list[str]:
    """Ids of stored fine-tuning trials that a new trial replaces: same spec in every respect
    but the weights' digest (their weights file was re-saved or changed since). The caller
    unlinks them from the study, so the study holds one trial per setting and its report does not
    refuse a "duplicate run"; their results stay in the store."""
    def key(spec: dict[str, Any]) -> str:
        pre = {k: v for k, v in spec["pretrained"].items() if k not in ("sha256", "path")}
        return json.dumps({**spec, "pretrained": pre}, sort_keys=True)

    new = {key(t.to_dict()): t.trial_id for t in trials}
    return [tid for tid, spec in stored.items()
            if spec.get("pretrained") and new.get(key(spec), tid) != tid]


# -- expansion --------------------------------------------------------------------------------------


def expand_classification(study: TransferStudy, found: list[Source], num_classes: int) -> list[TrialSpec]:
    """Every fine-tuning trial: pre-trained model x optimizer x setting x seed."""
    from bocb.recipes import RECIPES

    trials = []
    for source in found:
        backbone = replace(source.backbone, num_classes=num_classes)
        recipe_name = source.recipe
        if recipe_name in RECIPES and RECIPES[recipe_name].imagenet is not None and not study.data.stream:
            recipe_name = None  # the backbone's own (see the module doc): ImageNet crops need streamed data
        for o in study.optimizers:
            for lr, wd in optimizer_settings(study.tuning, o):
                for seed in study.seeds:
                    try:
                        spec = resolve_trial(
                            source.backbone.name, o["name"], data=study.data, num_classes=num_classes, lr=lr,
                            weight_decay=wd, recipe=recipe_name, tier=study.tier, seed=seed,
                            policy=backbone.policy, scale=backbone.scale, epochs=study.overrides.get("epochs"),
                            batch_size=study.overrides.get("batch_size"),
                            drop_path_rate=backbone.drop_path_rate, wd_policy=study.wd_policy,
                            optimizer_args=o.get("args"),
                        )
                    except ValueError as exc:
                        raise StudyError(f"{study.path}: {source.pretrained.label} x {o['name']}: {exc}") from None
                    subsets = {k: study.overrides[k] for k in ("train_per_class", "test_per_class")
                               if k in study.overrides}
                    recipe = spec.recipe.with_changes(**subsets) if subsets else spec.recipe
                    trials.append(replace(spec, backbone=backbone, recipe=recipe, pretrained=source.pretrained,
                                          finetune=study.finetune))
    return trials


def expand_coco(study: TransferStudy, found: list[Source]) -> list:
    """Every detection or pose fine-tuning trial: pre-trained model x optimizer x setting x seed.

    The recipe is the task table's ``recipe`` (default: ``smoke`` for the smoke tier, else
    ``retinanet-1x`` / ``simplebaseline``) with the study's ``epochs`` / ``batch_size`` overrides.
    lr/wd default to the optimizer's grid centre (the pre-training recipes' values do not carry
    over to downstream tasks).
    """
    from bocb.optim import resolve_optimizer
    from bocb.transfer.detection import get_detection_recipe
    from bocb.transfer.downstream import CocoSpec, CocoTrialSpec
    from bocb.transfer.pose import get_pose_recipe

    task = study.task
    table = study.detection
    files = {}
    for key in ("train_annotations", "train_images", "val_annotations", "val_images"):
        files[key] = study.resolve(table[key])
        if not files[key].exists():
            raise StudyError(f"{study.path} [{task}].{key}: no such {'file' if 'annotations' in key else 'folder'} "
                             f"{files[key]}")
    data = CocoSpec.at(files["train_annotations"], files["train_images"], files["val_annotations"],
                       files["val_images"], table.get("image_size"))
    get, full = (get_detection_recipe, "retinanet-1x") if task == "detection" else (get_pose_recipe, "simplebaseline")
    try:
        recipe = get(table.get("recipe", "smoke" if study.tier == "smoke" else full))
        changes = {k: study.overrides[k] for k in ("epochs", "batch_size") if k in study.overrides}
        recipe = recipe.with_changes(**changes) if changes else recipe
    except ValueError as exc:
        raise StudyError(f"{study.path} [{task}].recipe: {exc}") from None
    trials = []
    for source in found:
        for o in study.optimizers:
            for lr, wd in optimizer_settings(study.tuning, o):
                try:
                    optimizer = resolve_optimizer(o["name"], lr=lr, weight_decay=wd, wd_policy=study.wd_policy,
                                                  **(o.get("args") or {}))
                except ValueError as exc:
                    raise StudyError(f"{study.path}: {source.pretrained.label} x {o['name']}: {exc}") from None
                for seed in study.seeds:
                    trials.append(CocoTrialSpec(source.backbone, optimizer, recipe, data, seed, source.pretrained, task))
    return trials
