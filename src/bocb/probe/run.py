"""``bocb probe``: which optimizer for one backbone, from a short adaptive search that keeps to a
time budget.

What it does, in order:

1. **Measure** (only for a new probe with a budget): one epoch of the backbone with the first
   optimizer, in this process, on a few batches of the data: seconds per training image, per test
   image, and to start a trial (:class:`bocb.probe.sizing.Throughput`).
2. **Size**: epochs and images per class that fit the budget (:func:`bocb.probe.sizing.size_probe`),
   or the ``epochs`` asked for (all images).
3. **Write the study** ``study.toml`` in the probe's folder: an ordinary adaptive study (one seed,
   the tuner's default knobs, :data:`PROBE_TUNING`), so what the probe ran can be read, rerun with ``bocb run``, or
   edited (``sizing.json`` beside it keeps how it was sized). Budget values the data cannot
   honour are fitted to it (:mod:`bocb.fit`).
4. **Run** it through the same runner and workers as ``bocb run`` into ``probe.sqlite`` beside it,
   with a deadline: at ``budget - ANSWER_S`` from the probe's start the running trials are handed
   back (their checkpoints keep their epochs) and the answer is written from what finished.
5. **Answer** (:mod:`bocb.probe.answer`): the optimizer to use with its lr and weight decay, the
   ones that fail, the verdict against the paper's nearest design family, and the learning curves;
   returned as a :class:`ProbeAnswer`, written as ``answer.json`` and ``probe.html``.

**Resuming:** the same command again (same backbone, data and optimizers) continues the study in
the folder (the schedule it was sized for is kept; a new budget only sets the new deadline). A
different request writes a new study into the same store; earlier results stay.

**Optimizers** by default: :data:`DEFAULT_OPTIMIZERS`, one or two per category of the paper, led by
its most general ones (its ranking puts LAMB, AdamW and Adan on top): AdamW and LAMB (category b),
Adan (c), and SGD-M (a), the classical CNNs' optimizer, whose failure on modern backbones is the
coupling the paper is about. Category (d) (AdaGrad, AdaDelta, RMSProp) is left out: the paper ranks
its members at the bottom; name them with ``optimizers`` to include them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bocb.probe.answer import PAPER_EPOCHS, OptimizerResult, Verdict
from bocb.probe.sizing import MAX_EPOCHS, Sizing, Throughput
from bocb.tuning.policy import TuningConfig

DEFAULT_OPTIMIZERS = ("AdamW", "LAMB", "Adan", "SGD-M")
DEFAULT_BUDGET_S = 1800.0
# The probe's tuner: the study default. A smaller max_full would save little and cost the answer
# its meaning: an optimum is only known interior once its four axis neighbours have run at full
# budget (five full-budget results), so with max_full = 4 every search ends "stopped at its cap".
PROBE_TUNING = TuningConfig()
# Kept free at the end of a budget: stopping the workers, reading the store, drawing the curves.
ANSWER_S = 8.0
MEASURE_STEPS = 4  # training steps of the throughput measurement (the first includes warm-up)
MEASURE_TEST_PER_CLASS = 20
SIZING_FILE = "sizing.json"  # beside study.toml: how the probe was sized, read when it continues


@dataclass(frozen=True)
class Measured:
    """Progress event: the throughput measurement finished."""

    throughput: Throughput
    seconds: float


@dataclass(frozen=True)
class Sized:
    """Progress event: what the probe will run (``resumed``: an earlier probe's study continues)."""

    sizing: Sizing
    study: Path
    resumed: bool


@dataclass(frozen=True)
class ProbeAnswer:
    """The probe's answer. ``use``: the optimizer to use (None when nothing finished);
    ``optimizers``: every probed optimizer, best first (flagged ones last); ``fails``: the flagged
    ones; ``complete``: every optimizer's search finished within the budget; ``caveat``: what the
    numbers are (budget, noise); ``folder`` holds ``study.toml``, ``probe.sqlite``,
    ``answer.json`` and ``probe.html``."""

    backbone: str
    family: str
    data: str
    use: OptimizerResult | None
    optimizers: tuple[OptimizerResult, ...]
    fails: tuple[str, ...]
    verdict: Verdict
    caveat: str
    complete: bool
    epochs: int
    train_per_class: int | None
    test_per_class: int | None
    test_images: int
    budget_s: float | None
    wall_s: float
    sizing: str
    throughput: Throughput | None
    folder: Path
    study: Path
    store: Path
    html: Path | None = None

    def to_json(self) -> str:
        """Strict JSON (NaN and infinities as null; paths as text)."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            return value

        return json.dumps(clean(dataclasses.asdict(self)), allow_nan=False)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


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
    cache_dir: str | Path | None = None,
    data_dirs: Sequence[str | Path] = (),
    download: bool = False,
    plugins: Sequence[str] = (),
    progress: Callable[[Any], None] | None = None,
    started: float | None = None,
) -> ProbeAnswer:
    """Probe ``backbone`` on ``data`` (see the module doc); as ``bocb probe``. ``budget_s`` and
    ``epochs`` exclude each other (neither: a budget of :data:`DEFAULT_BUDGET_S`); ``started``: the
    ``time.time()`` the budget counts from (default: now; the CLI passes its own start)."""
    t0 = started if started is not None else time.time()
    if budget_s is not None and epochs is not None:
        raise ValueError("--budget and --epochs exclude each other: give one")
    if budget_s is None and epochs is None:
        budget_s = DEFAULT_BUDGET_S
    if budget_s is not None and not (math.isfinite(budget_s) and budget_s > ANSWER_S):
        raise ValueError(f"--budget must be more than {ANSWER_S:g} s, got {budget_s:g} s")
    if epochs is not None and not (isinstance(epochs, int) and 1 <= epochs <= MAX_EPOCHS):
        raise ValueError(f"--epochs must be an integer in 1..{MAX_EPOCHS}, got {epochs!r}")
    from bocb.study_run import make_options

    # Checks the numbers and loads the plug-ins (the store is set below, once the folder is known).
    options = make_options("unused", "local", slots, device, None, None, False, None, False, False, 300.0,
                           cache_dir, data_dirs, download, plugins)
    from bocb.data import load_dataset, parse_data_arg
    from bocb.optim import get_optimizer_info
    from bocb.zoo import get_backbone_info

    info = get_backbone_info(backbone)
    names = [get_optimizer_info(o).short for o in (optimizers or DEFAULT_OPTIMIZERS)]
    if len(set(names)) != len(names):
        raise ValueError(f"--optimizers names one twice: {', '.join(names)}")
    folder = Path(out) if out is not None else Path("bocb-results") / f"probe-{slug(info.short)}"
    data_spec = parse_data_arg(data)
    if label_column:
        data_spec = dataclasses.replace(data_spec, label_column=label_column)
    dataset = load_dataset(data_spec, cache_dir=None if cache_dir is None else Path(cache_dir),
                           data_dirs=[Path(d) for d in data_dirs], download=download)
    folder.mkdir(parents=True, exist_ok=True)
    study_path = folder / "study.toml"
    store_path = folder / "probe.sqlite"
    plan = _resume(study_path, backbone, data, label_column, names, epochs)
    speed = None
    from bocb.executors.local import start_fork_server

    if plan is not None or epochs is not None:
        # Nothing to measure: the workers' imports overlap the study's preparation. Before a
        # measurement they would share the cores with it and slow it down (a third, measured).
        start_fork_server()
    if plan is None:
        if epochs is None:
            begin = time.time()
            speed = measure(backbone, names[0], data_spec, dataset, device)
            if progress:
                progress(Measured(speed, time.time() - begin))
        plan = _size(info, names, dataset, speed, epochs, budget_s - (time.time() - t0) - ANSWER_S
                     if budget_s is not None else None, slots)
        _write_study(study_path, backbone, data, label_column, names, plan, speed, budget_s, plugins)
        resumed = False
    else:
        resumed = True
    if progress:
        progress(Sized(plan, study_path, resumed))
    options = dataclasses.replace(options, store=str(store_path),
                                  deadline=t0 + budget_s - ANSWER_S if budget_s is not None else None,
                                  snapshots=False)
    prepared = _run(study_path, options, progress)
    per_class = prepared.study.overrides.get("test_per_class")
    test_images = per_class * prepared.num_classes if per_class else prepared.test_images
    answer = read_answer(study_path, store_path, folder, plan, speed, budget_s, data, time.time() - t0, test_images)
    from bocb.report.probe import write_page

    html = write_page(answer, folder)
    answer = dataclasses.replace(answer, html=html, wall_s=time.time() - t0)
    (folder / "answer.json").write_text(answer.to_json() + "\n")
    return answer


def measure(backbone: str, optimizer: str, data_spec: Any, dataset: Any, device: str) -> Throughput:
    """One epoch of ``MEASURE_STEPS`` batches in this process (the probe's recipe, the data's
    batch size fitted as the study's will be); a backbone that cannot train is a one-line error."""
    from bocb.fit import fit_recipe
    from bocb.spec import TrialSpec, resolve_trial
    from bocb.trial import RunOptions, run_trial

    probe_spec = resolve_trial(backbone, optimizer, data=data_spec, num_classes=dataset.num_classes, epochs=1)
    changes, _ = fit_recipe(probe_spec.recipe, dataset.train.labels, dataset.test.labels)
    batch = changes.get("batch_size", probe_spec.recipe.batch_size)
    counts = dataset.train.class_counts(dataset.num_classes)
    classes = int((counts > 0).sum())
    fewest = int(counts[counts > 0].min())
    per_class = min(fewest, max(1, math.ceil(MEASURE_STEPS * batch / classes)))
    batch = min(batch, per_class * classes // 2 * 2) or 2
    test_counts = dataset.test.class_counts(dataset.num_classes)
    test_per_class = min(int(test_counts[test_counts > 0].min()), MEASURE_TEST_PER_CLASS)
    recipe = probe_spec.recipe.with_changes(train_per_class=per_class, test_per_class=test_per_class,
                                            batch_size=batch)
    spec = TrialSpec(probe_spec.backbone, probe_spec.optimizer, recipe, probe_spec.data, probe_spec.seed)
    record = run_trial(spec, dataset, RunOptions(device=device, work_dir=None))
    seconds = record.get("seconds") or {}
    steps = per_class * classes // batch
    if record.get("status") not in ("done", "diverged") or not seconds.get("train") or not steps:
        raise ValueError(f"{backbone} could not train one epoch to measure its speed: "
                         f"{record.get('error') or record.get('status')}")
    test_images = test_per_class * classes
    overhead = max(0.0, seconds.get("wall", 0.0) - seconds["train"] - seconds.get("eval", 0.0))
    from bocb.probe.sizing import LAUNCH_S

    return Throughput(train_s=seconds["train"] / (steps * batch), eval_s=seconds.get("eval", 0.0) / test_images,
                      launch_s=overhead + LAUNCH_S)


def _size(info: Any, names: list[str], dataset: Any, speed: Throughput | None, epochs: int | None,
          seconds: float | None, slots: int) -> Sizing:
    from bocb.probe.sizing import probe_cost, size_probe
    from bocb.tuning.space import pair_space

    spaces = [pair_space(info.name, n) for n in names]
    train, test = dataset.train.class_counts(dataset.num_classes), dataset.test.class_counts(dataset.num_classes)
    present, present_test = train[train > 0], test[test > 0]
    if epochs is not None:
        cost, launches = (probe_cost(spaces, PROBE_TUNING, epochs, len(dataset.train), len(dataset.test), speed, slots)
                          if speed else (math.nan, 0))
        return Sizing(epochs, None, None, cost, launches, f"{epochs} epochs as asked, on every image")
    return size_probe(spaces, PROBE_TUNING, seconds, speed, classes=len(present), fewest_train=int(present.min()),
                      total_train=len(dataset.train), fewest_test=int(present_test.min()),
                      total_test=len(dataset.test), slots=slots)


def _resume(study_path: Path, backbone: str, data: str, label_column: str | None, names: list[str],
            epochs: int | None) -> Sizing | None:
    """The sizing of the probe study already in the folder when it answers the same request."""
    if not study_path.exists():
        return None
    import tomllib

    try:
        raw = tomllib.loads(study_path.read_text())
        head = raw["study"]
        meta = json.loads(study_path.with_name(SIZING_FILE).read_text())
    except (OSError, ValueError, KeyError):  # TOMLDecodeError and JSONDecodeError are ValueErrors
        return None
    same = (raw.get("backbones", [{}])[0].get("name") == backbone and head.get("data") == data
            and head.get("label_column") == label_column
            and [o.get("name") for o in raw.get("optimizers", [])] == names
            and (epochs is None or head.get("epochs") == epochs))
    if not same:
        return None
    expected = meta.get("expected_s")
    return Sizing(head["epochs"], head.get("train_per_class"), head.get("test_per_class"),
                  math.nan if expected is None else float(expected), int(meta.get("launches") or 0),
                  str(meta.get("why", "sized by an earlier probe")))


def _write_study(path: Path, backbone: str, data: str, label_column: str | None, names: list[str], plan: Sizing,
                 speed: Throughput | None, budget_s: float | None, plugins: Sequence[str]) -> None:
    q = json.dumps  # a JSON string is a valid TOML basic string
    lines = [
        f"# Written by `bocb probe` on {datetime.datetime.now().isoformat(timespec='seconds')}.",
        f"# Sizing: {plan.why}." + (f" Budget {budget_s:g} s." if budget_s is not None else ""),
    ]
    if speed is not None:
        lines.append(f"# Measured: {speed.train_s * 1e3:.3f} ms per training image, {speed.eval_s * 1e3:.3f} ms per "
                     f"test image, {speed.launch_s:.1f} s to start a trial.")
    lines += [
        "# The same `bocb probe` command continues it; `bocb run` finishes it without a deadline.",
        "", "[study]", f"name = {q('probe-' + slug(backbone))}", f"data = {q(data)}", 'tier = "full"',
        'tuning = "adaptive"', "seeds = [0]", f"epochs = {plan.epochs}",
    ]
    if plan.train_per_class is not None:
        lines.append(f"train_per_class = {plan.train_per_class}")
    if plan.test_per_class is not None:
        lines.append(f"test_per_class = {plan.test_per_class}")
    if label_column:
        lines.append(f"label_column = {q(label_column)}")
    if plugins:
        lines.append(f"plugins = [{', '.join(q(p) for p in plugins)}]")
    lines += ["", "[[backbones]]", f"name = {q(backbone)}"]
    for n in names:
        lines += ["", "[[optimizers]]", f"name = {q(n)}"]
    lines += ["", "[tuning]", f"max_trials = {PROBE_TUNING.max_trials}", f"max_full = {PROBE_TUNING.max_full}", ""]
    path.write_text("\n".join(lines))
    sizing = {"expected_s": plan.expected_s if math.isfinite(plan.expected_s) else None,
              "launches": plan.launches, "why": plan.why,
              "throughput": dataclasses.asdict(speed) if speed is not None else None}
    path.with_name(SIZING_FILE).write_text(json.dumps(sizing, indent=1) + "\n")


def _run(study_path: Path, options: Any, progress: Callable[[Any], None] | None) -> Any:
    """Run the probe's study to its end or its deadline; returns it as prepared (budget fitted)."""
    from bocb.store import SQLiteStore
    from bocb.study_run import run_registered
    from bocb.study_setup import prepare, register
    from bocb.tuning.adapter import Tuner

    prepared = prepare(study_path, options.cache_dir, list(options.data_dirs), options.download)
    if prepared.notes and progress:
        from bocb import run_events as ev

        progress(ev.Fitted(prepared.notes))
    opened = SQLiteStore(options.store)
    try:
        new = register(opened, prepared)
        tuner = Tuner(opened, prepared.study, prepared.num_classes)
    except BaseException:
        opened.close()
        raise
    run_registered(options, opened, prepared.study, new, tuner, progress)
    return prepared


def read_answer(study_path: Path, store_path: Path, folder: Path, plan: Sizing, speed: Throughput | None,
                budget_s: float | None, data: str, wall_s: float, test_images: int) -> ProbeAnswer:
    """The answer from the probe's store (see :mod:`bocb.probe.answer`); ``test_images``: the test
    images behind each score (for the noise it carries)."""
    from bocb.probe.answer import flag_compared, noise_points, paper_view, pick, verdict
    from bocb.store import open_existing
    from bocb.study import load_study
    from bocb.tuning.adapter import describe, states
    from bocb.zoo import get_backbone_info

    study = load_study(study_path)
    info = get_backbone_info(study.backbones[0]["name"])
    with open_existing(str(store_path)) as store:
        pair_states = {s.optimizer: s for s in states(store, study)}
        rows = store.trials(study.study_id)
        epochs_of = {r["trial_id"]: store.epochs(r["trial_id"]) for r in rows}
    names = [o["name"] for o in study.optimizers]
    paper, family = paper_view(info.name, names)
    chosen: dict[str, tuple[dict | None, list[dict]]] = {}
    for name in names:
        state = pair_states[name]
        best = (state.best_lr, state.best_wd) if state.decision.done and state.best_lr is not None else None
        mine = [r for r in rows if r["optimizer"] == name]
        chosen[name] = pick(mine, epochs_of, plan.epochs, best)
    scores = {}
    for name, (row, curve) in chosen.items():
        score = curve[-1]["score"] if curve else None
        scores[name] = (score, bool(curve) and curve[-1]["epoch"] == plan.epochs)
    full_scores = [s for s, full in scores.values() if full and s is not None and math.isfinite(s)]
    noise = noise_points(max(full_scores), test_images) if full_scores else None
    flagged = flag_compared({n: (s, full and pair_states[n].decision.done) for n, (s, full) in scores.items()}, noise)
    results = []
    for name in names:
        state, (row, curve) = pair_states[name], chosen[name]
        score, full = scores[name]
        every_failed = bool([r for r in rows if r["optimizer"] == name]) and all(
            r["status"] in ("diverged", "failed") for r in rows if r["optimizer"] == name)
        if state.decision.done:
            word = {"diverged": "diverged", "budget": "capped before its optimum was confirmed"}.get(
                state.decision.state, f"tuned, {state.decision.state}")
        else:
            word = "incomplete: " + describe(state)
        results.append(OptimizerResult(
            optimizer=name, lr=row["lr"] if row else None, weight_decay=(row["weight_decay"] or 0.0) if row else None,
            score=score if score is None or math.isfinite(score) else None, epoch=curve[-1]["epoch"] if curve else None,
            full_budget=full, state=word, trials=state.trials, trial_epochs=state.epochs,
            flagged=name in flagged or every_failed,
            curve=tuple((e["epoch"], e["score"], e["train_loss"]) for e in curve),
            paper_gap=paper[name][0] if name in paper else None, paper_risk=paper[name][1] if name in paper else None,
        ))
    order = sorted(results, key=lambda r: (r.flagged, not r.full_budget, -(r.score if r.score is not None else -1e9)))
    use = next((r for r in order if not r.flagged and r.score is not None), None)
    complete = all(pair_states[n].decision.done for n in names)
    caveat = (f"A sketch, not the paper's measurement: {plan.epochs} epochs (the paper: {PAPER_EPOCHS}), "
              f"{'all' if plan.train_per_class is None else plan.train_per_class} training images per class, one seed"
              + (f"; test accuracy carries about ±{noise:.1f} points of noise ({test_images} test images), so "
                 f"optimizers closer than {2 * noise:.1f} points are not told apart" if noise else "")
              + ("" if complete else "; the budget ran out before every search finished: the same command continues it"))
    return ProbeAnswer(
        backbone=info.short, family=info.group, data=data, use=use, optimizers=tuple(order),
        fails=tuple(r.optimizer for r in order if r.flagged), verdict=verdict(info.short, results, family, noise),
        caveat=caveat, complete=complete, epochs=plan.epochs, train_per_class=plan.train_per_class,
        test_per_class=plan.test_per_class, test_images=test_images, budget_s=budget_s, wall_s=wall_s,
        sizing=plan.why, throughput=speed, folder=folder, study=study_path, store=store_path,
    )

