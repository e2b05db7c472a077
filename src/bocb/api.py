"""bocb from Python: run a study or a transfer study, size a study, write a report, recommend optimizers.

The ``bocb`` command line is a thin layer over these functions: it parses arguments, calls one of
them and prints what it returns. Each function takes values (paths, names, numbers), does the work
and returns a typed record (:class:`RunSummary`, :class:`StudyPlan`, :class:`ReportFiles`,
:class:`Recommendation`); none reads argv or environment variables, and none prints.

Contracts shared by every function:

- Bad input (an unknown name, an out-of-range number, a damaged or missing file) raises
  ``ValueError`` (``UnknownNameError``, a ``KeyError``, for registry names) with one line that names
  the value and the valid choices, before anything is written; it is the line the CLI prints after
  ``bocb: error:`` with exit status 2. Messages keep the CLI's option names (``--lease``), so both
  layers say the same thing.
- ``store`` is the path of a SQLite store (:class:`bocb.store.SQLiteStore`); reading functions refuse a
  missing one rather than create it.
- Data: ``cache_dir`` is the decoded-data cache (None: nothing cached; the CLI passes
  ``$BOCB_CACHE_DIR`` or ``~/.cache/bocb``), ``data_dirs`` the folders searched for CIFAR (the CLI
  passes ``$BOCB_DATA_DIR``), ``download`` allows torchvision's download.
- ``progress``: an optional callable that receives the events of :mod:`bocb.run_events` as the work
  goes (what the CLI draws its live view from). It is called on the caller's thread; an exception
  it raises stops the run (workers stopped, running trials handed back) and propagates. None: no
  progress.

A run stopped by ``KeyboardInterrupt`` hands its running trials back (they resume on the next run)
and re-raises. Trials that fail or diverge are results, never exceptions: see
:attr:`RunSummary.unfinished`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bocb import run_events as ev
from bocb.compute import EFFECTIVE_FLOPS  # the plan's time estimate; re-exported
from bocb.store import DEFAULT_STORE
from bocb.study_run import (
    MIN_LEASE_S,
    ExecutorUnavailable,
    Progress,
    RunSummary,
    check_processes,
    emit,
    expand_transfer,
    make_options,
    measure_snapshots,
    run_registered,
)

if TYPE_CHECKING:  # pandas is imported where it is used: the CLI imports this module at start
    import pandas as pd

# The paper's CIFAR-100 schedule: store evidence from shorter runs is named as a sketch.
PAPER_EPOCHS = 200

__all__ = [
    "EFFECTIVE_FLOPS", "MIN_LEASE_S", "ExecutorUnavailable", "Recommendation", "RecommendedOptimizer", "ReportFiles",
    "RunSummary", "StudyPlan", "measure_snapshots", "plan", "probe", "recommend", "report", "run_study", "run_transfer",
]


@dataclass(frozen=True)
class StudyPlan:
    """What a study would run: trial count and compute, per backbone, and what is already done.

    ``flops``: forward+backward work of every trial (:func:`bocb.compute.trial_flops`);
    ``per_backbone``: backbone short name -> each trial's FLOPs; ``finished``: trials already done
    or diverged in the store; ``skipped``: reason -> pairs skipped for it. ``prepared`` is the parsed,
    expanded study (:class:`bocb.study_setup.Prepared`; adaptive studies are planned from it
    by :mod:`bocb.tuning.plan`). Disk: ``weights_bytes``, every trial's final weights
    (:func:`bocb.compute.weights_bytes`); ``store_bytes``, the store's share
    (:func:`bocb.compute.store_bytes`); ``checkpoint_bytes``, the largest model's resume
    checkpoint, held per running trial and deleted when it finishes.
    """

    study: Any
    trials: int
    flops: float
    per_backbone: dict[str, list[float]]
    finished: int
    skipped: dict[str, int]
    prepared: Any
    weights_bytes: float = 0.0
    store_bytes: float = 0.0
    checkpoint_bytes: float = 0.0
    left: tuple[Any, ...] = ()  # the trial specs not yet done or diverged in the store
    processes: dict[str, int] = field(default_factory=dict)  # backbone short name -> processes per trial

    @property
    def gpu_hours(self) -> float:
        """``flops`` at :data:`EFFECTIVE_FLOPS`."""
        return self.flops / EFFECTIVE_FLOPS / 3600


@dataclass(frozen=True)
class ReportFiles:
    """The files a report wrote: ``html`` (self-contained), ``markdown`` and each figure's PNG by plot
    name (an SVG lies beside each)."""

    html: Path
    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class RecommendedOptimizer:
    """One optimizer to try: its expected gap to the best (points, mean and std over the evidence
    backbones), failure risk (share of those backbones where the failure rule flags it), and its
    usual learning rate and weight decay."""

    optimizer: str
    expected_gap: float
    gap_std: float
    failure_risk: float
    backbones: int
    lr: float
    weight_decay: float


@dataclass(frozen=True)
class Recommendation:
    """Optimizers for ``query``, best first (failure risk, then gap), and a sentence naming the
    evidence and the rule used. ``frame``: the same as a DataFrame."""

    query: str
    optimizers: tuple[RecommendedOptimizer, ...]
    evidence: str

    @property
    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([asdict(o) for o in self.optimizers],
                            columns=[f.name for f in fields(RecommendedOptimizer)])


# -- running -----------------------------------------------------------------------------------


def run_study(
    study: str | Path,
    store: str | Path = DEFAULT_STORE,
    *,
    executor: Literal["local", "ray"] = "local",
    slots: int = 1,
    device: str = "auto",
    gpus: int | None = None,
    address: str | None = None,
    compile: bool = False,
    artifacts: str | Path | None = None,
    retry_failed: bool = False,
    reclaim: bool = False,
    lease_s: float = 300.0,
    cache_dir: str | Path | None = None,
    data_dirs: Sequence[str | Path] = (),
    download: bool = False,
    progress: Progress | None = None,
    plugins: Sequence[str] = (),
    log: Sequence[str] = (),
    log_dir: str | Path | None = None,
    processes_per_trial: int | None = None,
) -> RunSummary:
    """Run a study file's trials into ``store`` (created if missing); resumable, as ``bocb run``.

    The study is parsed and its data loaded before the store is opened, so a bad file or missing
    data changes nothing. Trials already finished are not run again; ``retry_failed`` runs failed
    ones again; trials left running by dead runners on this host are taken back (``reclaim``: every
    running trial of the study, only safe when no other runner works on it). ``executor``: ``local``
    (worker processes; ``slots`` trials at once, per GPU when ``device`` is auto/cuda) or ``ray`` (a
    local Ray on 127.0.0.1, or ``address``); ``gpus``: GPUs to spread slots over (None: all visible);
    ``artifacts``: checkpoints and weights (None: ``artifacts/`` beside the store); ``lease_s``: the
    claim lease, >= :data:`MIN_LEASE_S`; ``plugins``: modules to import first, here and in every
    worker (:mod:`bocb.plugins`; a study's own ``plugins`` are added); ``log``: experiment trackers
    (``tensorboard``, ``wandb``, ``mlflow``; :mod:`bocb.trackers`), one run per trial, their files
    under ``log_dir`` (None: the store's folder); ``processes_per_trial``: every trial on that many
    processes (one GPU each; :mod:`bocb.executors.group`), over the study file's
    ``processes_per_trial`` (None: the file's). Missing weight snapshots (random inits, final weights) are
    measured after the trials. Returns the study's state after the run.
    """
    opts = make_options(store, executor, slots, device, gpus, address, compile, artifacts, retry_failed, reclaim,
                       lease_s, cache_dir, data_dirs, download, plugins, log, log_dir,
                       processes_per_trial=processes_per_trial)
    _start_workers_early(opts)  # before the imports below, which take seconds
    from bocb.store import SQLiteStore
    from bocb.study_setup import prepare, register

    prepared = prepare(Path(study), opts.cache_dir, list(opts.data_dirs), opts.download)
    opts.check_study(prepared.study)
    check_processes(opts, prepared.study, prepared.trials)
    if prepared.notes:
        emit(progress, ev.Fitted(prepared.notes))
    opened = SQLiteStore(opts.store)
    try:
        new = register(opened, prepared)
        tuner = None
        if prepared.study.tuning == "adaptive":
            from bocb.tuning.adapter import Tuner

            tuner = Tuner(opened, prepared.study, prepared.num_classes)
    except BaseException:
        opened.close()
        raise
    return run_registered(opts, opened, prepared.study, new, tuner, progress)


def _start_workers_early(options: Any) -> None:
    """The local executor's fork server imports the trainer while this process reads the study
    and the data (:func:`bocb.executors.local.start_fork_server`)."""
    if options.executor == "local":
        from bocb.executors.local import start_fork_server

        start_fork_server()


def run_transfer(
    study: str | Path,
    store: str | Path = DEFAULT_STORE,
    *,
    executor: Literal["local", "ray"] = "local",
    slots: int = 1,
    device: str = "auto",
    gpus: int | None = None,
    address: str | None = None,
    compile: bool = False,
    artifacts: str | Path | None = None,
    retry_failed: bool = False,
    reclaim: bool = False,
    lease_s: float = 300.0,
    cache_dir: str | Path | None = None,
    data_dirs: Sequence[str | Path] = (),
    download: bool = False,
    progress: Progress | None = None,
    plugins: Sequence[str] = (),
    log: Sequence[str] = (),
    log_dir: str | Path | None = None,
) -> RunSummary:
    """Run a transfer study (a study file with ``[[pretrained]]`` entries) into ``store``, as
    ``bocb transfer``: fine-tune the pre-trained models (from a pre-training study in the same store,
    or weights files) with each fine-tuning optimizer. Options and return value as :func:`run_study`.

    Pairs whose pre-trained model is not available are reported (:class:`bocb.run_events.NotTransferred`)
    and left out; fine-tuning trials planned from weights files that changed since are replaced in
    the study (their results stay in the store; :class:`bocb.run_events.Replaced`).
    """
    opts = make_options(store, executor, slots, device, gpus, address, compile, artifacts, retry_failed, reclaim,
                       lease_s, cache_dir, data_dirs, download, plugins, log, log_dir)
    _start_workers_early(opts)  # before the imports below, which take seconds
    from bocb.store import SQLiteStore
    from bocb.transfer.study import keep_stored_ids, load_transfer, sources, superseded

    transfer = load_transfer(Path(study))
    opts.check_study(transfer)
    opened = SQLiteStore(opts.store)
    try:
        found, skipped = sources(transfer, opened)
        stored = opened.specs(transfer.study_id)
        trials = keep_stored_ids(expand_transfer(transfer, found, opts), set(stored))
        for s in skipped:
            emit(progress, ev.NotTransferred(s.backbone, s.optimizer, s.reason))
        settings = {"transfer": transfer.settings,
                    "not_transferred": [{"backbone": s.backbone, "optimizer": s.optimizer, "reason": s.reason}
                                        for s in skipped]}
        opened.add_study(transfer.study_id, transfer.name, transfer.path, settings)
        replaced = superseded(trials, stored)
        if replaced:
            opened.unlink(transfer.study_id, replaced)
            emit(progress, ev.Replaced(len(replaced)))
        new = opened.add_trials(transfer.study_id, [(t.trial_id, t.to_dict()) for t in trials])
    except BaseException:
        opened.close()
        raise
    return run_registered(opts, opened, transfer, new, None, progress)


# -- planning ------------------------------------------------------------------------------------


def plan(study: str | Path, store: str | Path = DEFAULT_STORE, *, cache_dir: str | Path | None = None,
         data_dirs: Sequence[str | Path] = (), download: bool = False) -> StudyPlan:
    """Size a pre-training study without running it, as ``bocb plan``: trials, compute, and what the
    store (when it exists; it is never created) already finished. A standard dataset that is not
    present is sized from its known sizes; a transfer study is refused (its trials depend on the
    pre-trained models in the store)."""
    from bocb.store import open_existing as open_existing_store
    from bocb.study_setup import prepare
    from bocb.compute import CHECKPOINT_FACTOR, store_bytes, trial_flops, weights_bytes
    from bocb.transfer.study import is_transfer_file

    path = Path(study)
    if is_transfer_file(path):
        raise ValueError(f"{path} is a transfer study: its trials depend on the pre-trained models in "
                         f"the store; `bocb plan` sizes pre-training studies (plan those, then `bocb transfer`)")
    prepared = prepare(path, None if cache_dir is None else Path(cache_dir), [Path(d) for d in data_dirs],
                       download, require_data=False)
    done: dict[str, str] = {}
    if prepared.study.tuning != "adaptive" and Path(store).exists():
        with open_existing_store(str(store)) as opened:
            done = {r["trial_id"]: r["status"] for r in opened.trials()}
    flops = 0.0
    per_backbone: dict[str, list[float]] = {}
    for spec in prepared.trials:
        f = trial_flops(spec, prepared.train_images, prepared.test_images, prepared.num_classes)
        flops += f
        per_backbone.setdefault(spec.backbone.short, []).append(f)
    left = tuple(t for t in prepared.trials if done.get(t.trial_id) not in ("done", "diverged"))
    finished = len(prepared.trials) - len(left)
    reasons: dict[str, int] = {}
    for _, _, reason in prepared.skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    sizes = [weights_bytes(spec.backbone) for spec in prepared.trials]
    processes = {spec.backbone.short: prepared.study.processes_for(spec.to_dict()) for spec in prepared.trials}
    return StudyPlan(prepared.study, len(prepared.trials), flops, per_backbone, finished, reasons, prepared,
                     weights_bytes=float(sum(sizes)),
                     store_bytes=float(sum(store_bytes(spec.recipe.epochs) for spec in prepared.trials)),
                     checkpoint_bytes=CHECKPOINT_FACTOR * max(sizes, default=0), left=left, processes=processes)


# -- reading the store ----------------------------------------------------------------------------


def report(
    study: str | Path | None = None,
    store: str | Path = DEFAULT_STORE,
    out: str | Path | None = None,
    *,
    paper: bool = False,
    rule: str | None = None,
    gamma: float | None = None,
    ranking: str | None = None,
    metric: Literal["final", "best"] = "final",
    resamples: int = 1000,
    date: str | None = None,
) -> ReportFiles:
    """Write the coupling report (HTML + Markdown) of a study in ``store``, as ``bocb report``.

    ``study``: the study (or transfer study) file whose trials to report (None: every trial in the
    store); ``paper=True`` reports on the paper's published tables instead (``study``/``store``
    unused). ``out``: the output folder (None: ``bocb-results/report-<name>`` under the working
    directory), created if missing; files of the same names are overwritten. ``rule``/``gamma``: the
    failure rule (:func:`bocb.analysis.rule`; None: the shared default); ``ranking``: ``paper`` or
    ``continuous`` (None: the default variant); ``metric``: ``final`` or ``best`` epoch score;
    ``resamples``: bootstrap resamples when there are seeds; ``date``: shown in the provenance
    (None: today).
    """
    from bocb.analysis.ranking import DEFAULT_VARIANT
    from bocb.report import build_report
    from bocb.report.study import paper_inputs, store_inputs, transfer_inputs
    from bocb.transfer.study import is_transfer_file

    today = date or datetime.date.today().isoformat()
    if paper:
        inputs = paper_inputs(today, rule, gamma)
    elif study is not None and is_transfer_file(Path(study)):
        inputs = transfer_inputs(Path(study), str(store), today, rule, gamma, metric, resamples)
    else:
        inputs = store_inputs(None if study is None else Path(study), str(store), today, rule, gamma, metric,
                              resamples)
    folder = Path(out) if out is not None else Path("bocb-results") / f"report-{inputs.name}"
    paths = build_report(
        inputs.analysis, folder, title=inputs.title, hparams=inputs.hparams, ranking=ranking or DEFAULT_VARIANT,
        cost=inputs.cost, provenance=inputs.provenance, n_resamples=resamples, extra_sections=inputs.extra,
        lead_sections=inputs.lead, banner=inputs.banner,
    )
    figures = {k: v for k, v in paths.items() if k not in ("html", "markdown")}
    return ReportFiles(paths["html"], paths["markdown"], figures)


def recommend(
    backbone: str,
    *,
    evidence: Literal["paper", "store", "both"] = "paper",
    store: str | Path = DEFAULT_STORE,
    rule: str | None = None,
    gamma: float | None = None,
    study: str | Path | None = None,
) -> Recommendation:
    """Optimizers to try first for ``backbone`` (a zoo or paper name, or design words such as
    'hierarchical attention'), as ``bocb recommend``: from the paper's Table 1, the store's finished
    trials, or both (the store's backbones then get a ' (yours)' suffix: the paper's cells and a
    study's trials are different experiments; for a backbone with both, yours counts by its
    schedule, see below). ``study``: only that study file's trials from the store. Store evidence from runs
    shorter than the paper's 200 epochs is named in the evidence sentence and, beside the paper's,
    weighted by its share of those 200 epochs (a backbone's longest run decides). See
    :func:`bocb.analysis.recommend.recommend`."""
    import pandas as pd

    from bocb import paper as paper_data
    from bocb.analysis.recommend import YOURS, evidence_backbones
    from bocb.analysis.recommend import recommend as rank

    choices = ("paper", "store", "both")
    if evidence not in choices:
        raise ValueError(f"unknown evidence {evidence!r}: valid: {', '.join(choices)}")
    if study is not None and evidence == "paper":
        raise ValueError("--study selects store trials: use it with --evidence store or both")
    frames, settings, budgets = [], None, {}
    if evidence in ("paper", "both"):
        frames.append(paper_data.top1()[["optimizer", "backbone", "top1"]])
        settings = paper_data.best_hparams()
    if evidence in ("store", "both"):
        from bocb.analysis.from_store import results_frame
        from bocb.store import open_existing as open_existing_store

        study_id = None
        if study is not None:
            from bocb.study import load_study

            study_id = load_study(Path(study)).study_id
        with open_existing_store(str(store)) as opened:
            mine = results_frame(opened, study_id)
            specs = opened.specs(study_id)
            for t in opened.trials(study_id):
                epochs_run = specs.get(t["trial_id"], {}).get("recipe", {}).get("epochs")
                if t["status"] in ("done", "diverged") and epochs_run:
                    budgets.setdefault(t["backbone"], set()).add(int(epochs_run))
        mine = mine.assign(backbone=mine["backbone"] + (YOURS if evidence == "both" else ""))
        frames.append(mine[["optimizer", "backbone", "top1", "seed", "lr", "weight_decay"]])
    evidence_frame = pd.concat(frames, ignore_index=True)
    # Beside the paper's cells, a store backbone's evidence weighs its schedule against the paper's:
    # a 10-epoch sketch counts 10/200 of a paper cell (and 1 at 200 epochs or more). Store evidence
    # alone is not weighted: it is all sketches alike, named as such below.
    weights = ({f"{b}{YOURS}": min(1.0, max(es) / PAPER_EPOCHS) for b, es in budgets.items()} or None
               if evidence == "both" else None)
    ranked, sentence = rank(evidence_frame, backbone, failure_rule=rule, gamma=gamma, settings=settings,
                            weights=weights)
    # Only the store trials the answer rests on (the backbones the evidence chose) can make it a sketch.
    used, _ = evidence_backbones(backbone, list(dict.fromkeys(evidence_frame["backbone"])))
    epochs = sorted({e for b, es in budgets.items() for e in es if b in used or f"{b}{YOURS}" in used})
    if epochs and min(epochs) < PAPER_EPOCHS:
        sentence += (f"; caution: your trials ran {', '.join(map(str, epochs))} epochs (the paper's: "
                     f"{PAPER_EPOCHS}), so their ranking is a sketch, not the coupling the paper measures"
                     + (f"; weighted {', '.join(f'{e}/{PAPER_EPOCHS}' for e in epochs)} of a paper cell"
                        if evidence == "both" else ""))
    optimizers = tuple(
        RecommendedOptimizer(str(r.optimizer), float(r.expected_gap), float(r.gap_std), float(r.failure_risk),
                             int(r.backbones), float(r.lr), float(r.weight_decay))
        for r in ranked.itertuples())
    return Recommendation(backbone, optimizers, sentence)


# -- your model ------------------------------------------------------------------------------------


def probe(
    backbone: str,
    data: str = "sample",
    *,
    budget_s: float | None = None,
    epochs: int | None = None,
    optimizers: Sequence[str] | None = None,
    out: str | Path | None = None,
    slots: int = 1,
    device: str = "auto",
    label_column: str | None = None,
    image_column: str | None = None,
    cache_dir: str | Path | None = None,
    data_dirs: Sequence[str | Path] = (),
    download: bool = False,
    plugins: Sequence[str] = (),
    progress: Progress | None = None,
    started: float | None = None,
    log: Sequence[str] = (),
    log_dir: str | Path | None = None,
) -> Any:
    """Which optimizer for ``backbone`` (any zoo name, ``timm:NAME`` or ``package.module:builder``) on
    ``data``, from a short adaptive search that keeps to ``budget_s`` seconds (or runs ``epochs``), as
    ``bocb probe``: returns a :class:`bocb.probe.run.ProbeAnswer` (the optimizer to use with its lr
    and weight decay, those that fail, the verdict against the paper's nearest design family, the
    learning curves) and writes ``study-<key>.toml``, ``probe.sqlite``, ``answer.json`` and ``probe.html``
    into ``out`` (None: ``bocb-results/probe-<backbone>``). The same call again continues the probe.
    ``progress`` also receives :class:`bocb.probe.run.Measured` and :class:`bocb.probe.run.Sized`;
    ``started``: the ``time.time()`` the budget counts from (None: now); ``log``/``log_dir``: experiment
    trackers as :func:`run_study` (default folder: ``out``). See :mod:`bocb.probe.run`."""
    from bocb.probe.run import probe as run_probe

    return run_probe(backbone, data, budget_s=budget_s, epochs=epochs, optimizers=optimizers, out=out, slots=slots,
                     device=device, label_column=label_column, image_column=image_column, cache_dir=cache_dir,
                     data_dirs=data_dirs,
                     download=download, plugins=plugins, progress=progress, started=started, log=log, log_dir=log_dir)
