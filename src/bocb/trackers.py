"""Experiment trackers: each trial as a run in TensorBoard, Weights & Biases or MLflow
(``--log NAME`` on ``bocb train``, ``run``, ``transfer`` and ``probe``; repeatable).

What a run holds: the trial's resolved spec as its config (with ``trial_id`` and ``study``; flat
``a.b.c`` keys where the tracker wants flat ones), every number of each epoch's row at step =
epoch (``test_top1``, ``train_loss``, ``lr``, ``seconds_train``, ...; a task's own fields too),
and at the end the record's final numbers (``final_top1``, ``best_top1``, ``best_epoch``,
``final_score``, ``peak_memory_mb``, ``total_seconds_wall``, ...) and its status (``done``,
``diverged``, ``failed``; ``interrupted`` when handed back unfinished, ``paused`` at a tuning
rung; ``incomplete`` when the tracker itself failed during the run). One run per trial attempt, named ``<backbone> x <optimizer> lr=.. wd=.. seed=.. [<trial
id>]`` and grouped by study (W&B group, MLflow experiment, TensorBoard sub-folder; ``bocb
train`` uses the group ``train``).

Where files go (``root``: ``--log-dir``, default the folder of the store, ``bocb-results/``):
TensorBoard ``root/tensorboard/<study>/<run>``; W&B ``root/wandb/`` unless ``$WANDB_DIR`` is set
(W&B's own variables apply: ``WANDB_MODE=offline`` needs no account or network, ``WANDB_PROJECT``,
default project ``bocb``); MLflow ``$MLFLOW_TRACKING_URI`` when set, else the file store
``root/mlruns``. MLflow 3.17 keeps its file store only on request (``MLFLOW_ALLOW_FILE_STORE``),
which bocb sets for that default folder alone; its SQL stores need the full ``mlflow`` package,
whose pins (pyarrow) conflict with bocb's, so the extra installs ``mlflow-skinny``.

**Where logging happens, and why.** In the process that runs the command: for ``bocb train`` the
trial's own process (the loop's progress callback); for ``run``, ``transfer`` and ``probe`` the
runner, fed by the epoch events the worker slots already send back (:mod:`bocb.runner`'s
observer) and by the record each trial returns. Not in the workers, because:

- one process writes each tracker's files, so slots never race to create the same MLflow
  experiment or start one W&B service each;
- the tracker libraries (1-2 s of imports each) load once, only when ``--log`` asks for them,
  and never in the fork server that every slot is forked from;
- a tracker that hangs, raises or crashes cannot take a slot down, which would record the trial
  ``failed``;
- the record is complete where events are not: the diverging epoch's row has no event, events
  travel apart from results (the last epoch's may arrive after it), Ray tasks stream none, and a
  resumed trial's earlier rows come from its checkpoint (:func:`bocb.engine.train` sends them as
  one ``resumed`` event). Rows are logged once each, in epoch order (W&B drops steps that go
  back), live as events come and the rest from the record when the trial ends.

A resumed attempt (a promoted tuning rung, a run after a crash) starts a new run that holds the
whole history again; in TensorBoard it replaces the earlier attempt's events in the same folder.

**Failures.** A missing library is a one-line ``ValueError`` before anything trains
(:func:`check`; the CLI exits 2). Once running, a tracker never fails a trial: an exception from it
stops that tracker for that trial and becomes a note (``Session.notes``, printed after the run);
a tracker that cannot even start a run (no W&B login, a bad tracking URI) is not tried again for
the rest of the command.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bocb.registry import Registry

TRAIN_GROUP = "train"  # the group of `bocb train` runs, which belong to no study
# Statuses after which a run counts as a result (the others: cut short or lost).
RESULT_STATUSES = ("done", "diverged")


@dataclass(frozen=True)
class RunInfo:
    """What names a tracker run: ``name`` (readable, with the trial id), ``group`` (the study),
    ``slug`` (``name`` as a folder name) and ``config`` (nested: the spec, ``trial_id``, ``study``)."""

    name: str
    group: str
    trial_id: str
    slug: str
    config: dict[str, Any]


class Tracker(Protocol):
    """One run in one tracker. Every method may raise; :class:`TrialLog` contains it."""

    def start(self, run: RunInfo) -> None: ...
    def log_epoch(self, metrics: dict[str, float], step: int) -> None: ...
    def finish(self, final: dict[str, float], status: str, error: str | None) -> None: ...


@dataclass(frozen=True)
class TrackerInfo:
    """A registered tracker: the modules it needs (imported by :func:`check`), the pip extra that
    installs them, and its :class:`Tracker` class (built with the log root)."""

    name: str
    modules: tuple[str, ...]
    extra: str
    make: Callable[[Path], Tracker]
    where: Callable[[Path, str], str]  # (root, group) -> where this command's runs go, for the user


TRACKERS: Registry[TrackerInfo] = Registry("tracker")


# -- the trackers -------------------------------------------------------------------------------


class TensorBoard:
    """``torch.utils.tensorboard.SummaryWriter`` into ``root/tensorboard/<group>/<run>``."""

    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def folder(root: Path, group: str, slug: str = "") -> Path:
        return root / "tensorboard" / _slug(group) / slug

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.last_step = 0
        # purge_step=1: an earlier attempt's events in this folder are hidden; this run logs the
        # whole history again (restored rows included).
        self.writer = SummaryWriter(str(self.folder(self.root, run.group, run.slug)), purge_step=1)
        self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=1, sort_keys=True) + "\n```", 0)
        self.writer.flush()

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # live, and a full disk shows up now rather than at close
        self.last_step = step

    def finish(self, final: dict[str, float], status: str, error: str | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        # The HParams tab: the flat config against the final numbers, in this run's own folder
        # (SummaryWriter.add_hparams would write a sub-run folder per call).
        params = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                  for k, v in flatten(self.run.config).items() if v is not None}
        for summary in hparams(params, final):
            self.writer.file_writer.add_summary(summary)
        for key, value in final.items():
            self.writer.add_scalar(key, value, self.last_step)
        self.writer.add_text("status", status, self.last_step)
        if error:
            self.writer.add_text("error", error, self.last_step)
        self.writer.close()


class WandB:
    """``wandb.init`` per trial (several at once in one process: ``reinit="create_new"``)."""

    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def directory(root: Path) -> Path:
        return Path(os.environ["WANDB_DIR"]) if os.environ.get("WANDB_DIR") else root

    def start(self, run: RunInfo) -> None:
        import wandb

        directory = self.directory(self.root)
        directory.mkdir(parents=True, exist_ok=True)
        # No console capture (bocb's stdout may be a JSON document, its stderr a live view) and no
        # system metrics: under `bocb run` this process is the runner, not the trial's.
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "bocb", group=run.group, name=run.name,
                              config=run.config, dir=str(directory), job_type="trial", reinit="create_new",
                              settings=settings)  # mode: WANDB_MODE, read by wandb itself

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, final: dict[str, float], status: str, error: str | None) -> None:
        self.run.summary.update({**final, "status": status, **({"error": error} if error else {})})
        self.run.finish(exit_code=0 if status in RESULT_STATUSES else 1)


class MLflow:
    """``MlflowClient`` runs (not the fluent API: its one active run per thread would mix
    concurrent trials) in the experiment named after the study."""

    BATCH = 100  # MLflow's most params (and tags) per log_batch call

    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def uri(root: Path) -> str:
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # see the module doc
        return (root / "mlruns").resolve().as_uri()

    def start(self, run: RunInfo) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri(self.root))
        experiment = self.client.get_experiment_by_name(run.group)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(run.group)
        self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags={
            "bocb.trial_id": run.trial_id, "bocb.study": run.group}).info.run_id
        self.last_step = 0
        params = [Param(k, v if isinstance(v, str) else json.dumps(v)) for k, v in flatten(run.config).items()]
        for i in range(0, len(params), self.BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + self.BATCH])

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        self.client.log_batch(self.run_id, metrics=self._metrics(metrics, step))
        self.last_step = step

    def finish(self, final: dict[str, float], status: str, error: str | None) -> None:
        from mlflow.entities import RunTag

        tags = {"bocb.status": status, **({"bocb.error": error[:5000]} if error else {})}
        self.client.log_batch(self.run_id, metrics=self._metrics(final, self.last_step),
                              tags=[RunTag(k, v) for k, v in tags.items()])
        mlflow_status = ("FINISHED" if status in RESULT_STATUSES else "FAILED" if status == "failed" else "KILLED")
        self.client.set_terminated(self.run_id, mlflow_status)

    @staticmethod
    def _metrics(values: dict[str, float], step: int) -> list:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(k, v, now, step) for k, v in values.items()]


TRACKERS.add(TrackerInfo(
    "tensorboard", ("tensorboard", "torch.utils.tensorboard"), "tensorboard", TensorBoard,
    lambda root, group: f"tensorboard: {TensorBoard.folder(root, group)} (tensorboard --logdir {root / 'tensorboard'})"))
TRACKERS.add(TrackerInfo(
    "wandb", ("wandb",), "wandb", WandB,
    lambda root, group: f"wandb: {WandB.directory(root) / 'wandb'} (group {group}; offline runs: wandb sync DIR)"))
TRACKERS.add(TrackerInfo(
    "mlflow", ("mlflow",), "mlflow", MLflow,
    lambda root, group: f"mlflow: {MLflow.uri(root)} (experiment {group})"))


# -- checking what was asked for --------------------------------------------------------------


def check(names: Iterable[str]) -> tuple[str, ...]:
    """The trackers asked for, by canonical name and without repeats, after importing what each
    needs: an unknown name is an :class:`~bocb.registry.UnknownNameError`, a missing package a
    one-line ``ValueError`` naming it and its extra (both before anything trains)."""
    out: list[str] = []
    for name in names:
        info = TRACKERS.get(name)
        for module in info.modules:
            try:
                importlib.import_module(module)
            except ImportError as err:
                package = info.modules[0]
                raise ValueError(f"--log {info.name} needs the {package} package ({type(err).__name__}: "
                                 f"{err}): pip install 'bocb[{info.extra}]'") from None
        if info.name not in out:
            out.append(info.name)
    return tuple(out)


# -- one command's runs -------------------------------------------------------------------------


class TrialLog:
    """One trial's runs in every tracker asked for. Rows are logged once each, in epoch order; an
    exception from a tracker ends that tracker's part (a note says so), never the caller's."""

    def __init__(self, run: RunInfo, trackers: dict[str, Tracker], note: Callable[[str], None]):
        self.run = run
        self.trackers = trackers
        self.note = note
        self.logged = 0  # the last epoch logged

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001 - a tracker's fault is never the trial's
                del self.trackers[name]
                reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                self.note(f"trial {self.run.trial_id}: {name} failed to {what} ({reason}); its {name} run is "
                          f"incomplete, the trial is not affected")
                if what != "finish":
                    # Close it as such, so that the run says so and its files and threads are let go
                    # (a long study would otherwise keep one open writer per failed trial).
                    try:
                        tracker.finish({}, "incomplete", f"{name} failed to {what}: {reason}")
                    except Exception:  # noqa: BLE001 - already noted; the same fault again, most likely
                        pass

    def rows(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in sorted(rows, key=lambda r: r.get("epoch", 0)):
            epoch = row.get("epoch")
            if not isinstance(epoch, int) or epoch <= self.logged:
                continue
            metrics = numbers(row, skip=("epoch",))
            self._each(f"log epoch {epoch}", lambda t: t.log_epoch(metrics, epoch))
            self.logged = epoch

    def finish(self, record: dict[str, Any], status: str) -> None:
        self.rows(record.get("epochs") or [])
        final = numbers(record, skip=("epochs", "trial_id"))
        final.update({f"total_seconds_{k}": v for k, v in numbers(record.get("seconds") or {}).items()})
        error = record.get("error")
        self._each("finish", lambda t: t.finish(final, status, error if isinstance(error, str) else None))
        self.trackers.clear()


class Session:
    """The runs of one command: ``started``/``event``/``finished`` per trial (the runner's
    observer, :class:`bocb.runner.Observer`; ``bocb train`` calls them itself), ``close`` at the
    end (runs still open end ``interrupted``). Never raises from those; ``notes`` collects the
    failures, one line each, and :meth:`where` says where the runs went."""

    def __init__(self, names: Sequence[str], root: Path, group: str):
        self.infos = [TRACKERS.get(n) for n in names]
        self.root = Path(root)
        self.group = group
        self.notes: list[str] = []
        self.open: dict[str, TrialLog] = {}
        self.given_up: set[str] = set()  # trackers that could not start a run: not tried again

    def where(self) -> list[str]:
        """One line per tracker: where this command's runs are."""
        return [info.where(self.root, self.group) for info in self.infos]

    def started(self, trial_id: str, spec: dict[str, Any]) -> None:
        if trial_id in self.open:  # an attempt never closed (a missed end): close it, do not leak it
            self.finished(trial_id, {}, "lost")
        run = run_info(trial_id, spec, self.group)
        trackers: dict[str, Tracker] = {}
        for info in self.infos:
            if info.name in self.given_up:
                continue
            try:
                tracker = info.make(self.root)
                tracker.start(run)
                trackers[info.name] = tracker
            except Exception as exc:  # noqa: BLE001 - see the module doc: not tried again
                self.given_up.add(info.name)
                self.notes.append(f"{info.name} could not start a run for trial {trial_id} ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:300]}); nothing more is logged to it in this command")
        self.open[trial_id] = TrialLog(run, trackers, self.notes.append)

    def event(self, trial_id: str, event: dict[str, Any]) -> None:
        """A progress event of the loop: ``epoch`` (one row) or ``resumed`` (the restored rows)."""
        log = self.open.get(trial_id)
        if log is None:
            return
        if event.get("event") == "epoch":
            log.rows([event["row"]])
        elif event.get("event") == "resumed":
            log.rows(event["rows"])

    def finished(self, trial_id: str, record: dict[str, Any], status: str | None = None) -> None:
        """The trial's attempt ended: ``status`` as stored (default: the record's)."""
        log = self.open.pop(trial_id, None)
        if log is not None:
            status = status or record.get("status") or "failed"
            # Handed back unfinished (the runner's "pending"): this attempt was cut short.
            log.finish(record, "interrupted" if status == "pending" else status)

    def close(self) -> None:
        for trial_id in list(self.open):
            self.finished(trial_id, {}, "interrupted")


# -- names and values ---------------------------------------------------------------------------


def run_info(trial_id: str, spec: dict[str, Any], group: str) -> RunInfo:
    """The run of ``spec``: ``R-18 x SGD-M lr=0.1 wd=0.0005 seed=0 [1a2b3c4d]`` (a fine-tuning
    trial adds ``from <pre-trained label>``)."""
    backbone = (spec.get("backbone") or {}).get("short", "?")
    optimizer = spec.get("optimizer") or {}
    args = optimizer.get("args") or {}
    name = (f"{backbone} x {optimizer.get('short', '?')} lr={args.get('lr', 0):g} "
            f"wd={args.get('weight_decay', 0):g} seed={spec.get('seed', 0)}")
    pretrained = spec.get("pretrained")
    if pretrained:
        name += f" from {pretrained.get('label', '?')}"
    name += f" [{trial_id[:8]}]"
    config = {"trial_id": trial_id, "study": group, **spec}
    return RunInfo(name, group, trial_id, _slug(name), config)


def numbers(values: dict[str, Any], skip: Sequence[str] = ()) -> dict[str, float]:
    """The finite numbers among ``values`` (no bools, no nested values), as floats."""
    return {k: float(v) for k, v in values.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "run"
