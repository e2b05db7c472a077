"""``bocb probe``: which optimizer for one backbone, from a short adaptive search that keeps to a
time budget.

What it does, in order:

1. **Measure** (only for a new probe with a budget): two short epochs of the backbone with the
   first optimizer, in this process, on a few batches of the data (the second epoch timed): seconds per training image, per test
   image, and to start a trial (:class:`bocb.probe.sizing.Throughput`).
2. **Size**: epochs and images per class that fit the budget (:func:`bocb.probe.sizing.size_probe`),
   or the ``epochs`` asked for (all images).
3. **Write the study** ``study-<key>.toml`` in the probe's folder (``<key>``: :func:`request_key`):
   an ordinary adaptive study (one seed, the tuner's default knobs, :data:`PROBE_TUNING`), so what
   the probe ran can be read, or finished with ``bocb run`` (``study-<key>.json`` beside it keeps
   how it was sized). Budget values the data cannot
   honour are fitted to it (:mod:`bocb.fit`).
4. **Run** it through the same runner and workers as ``bocb run`` into ``probe.sqlite`` beside it,
   with a deadline: at ``budget - ANSWER_S`` from the probe's start the running trials are handed
   back (their checkpoints keep their epochs) and the answer is written from what finished.
5. **Answer** (:mod:`bocb.probe.answer`): the optimizer to use with its lr and weight decay, the
   ones that fail, the verdict against the paper's nearest design family, and the learning curves;
   returned as a :class:`ProbeAnswer`, written as ``answer.json`` and ``probe.html``.

**Resuming:** the same command again (same backbone, data, label column, optimizers and
``--epochs``) finds its study file and continues it (the schedule it was sized for is kept; a new
budget only sets the new deadline). A different request writes its own study file into the same
folder and store; nothing earlier is overwritten.

**Optimizers** by default: :data:`DEFAULT_OPTIMIZERS`, one or two per category of the paper, led by
its most general ones (its ranking puts LAMB, AdamW and Adan on top): AdamW and LAMB (category b),
Adan (c), and SGD-M (a), the classical CNNs' optimizer, whose failure on modern backbones is the
coupling the paper is about. Category (d) (AdaGrad, AdaDelta, RMSProp) is left out: the paper ranks
its members at the bottom; name them with ``optimizers`` to include them.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bocb.probe.answer import ProbeAnswer, read_answer
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
MEASURE_STEPS = 3  # training steps in each of the measurement's two epochs (the second is timed)
MEASURE_TEST_PER_CLASS = 20


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
    image_column: str | None = None,
    cache_dir: str | Path | None = None,
    data_dirs: Sequence[str | Path] = (),
    download: bool = False,
    plugins: Sequence[str] = (),
    progress: Callable[[Any], None] | None = None,
    started: float | None = None,
    log: Sequence[str] = (),
    log_dir: str | Path | None = None,
) -> ProbeAnswer:
    """Probe ``backbone`` on ``data`` (see the module doc); as ``bocb probe``. ``budget_s`` and
    ``epochs`` exclude each other (neither: a budget of :data:`DEFAULT_BUDGET_S`); ``started``: the
    ``time.time()`` the budget counts from (default: now; the CLI passes its own start); ``log``:
    experiment trackers for the probe's trials (not the throughput measurement), files under
    ``log_dir`` (default: the probe's folder, beside ``probe.sqlite``)."""
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
                           cache_dir, data_dirs, download, plugins, log, log_dir)
    from bocb.data import load_dataset, parse_data_arg
    from bocb.optim import get_optimizer_info
    from bocb.zoo import get_backbone_info

    info = get_backbone_info(backbone)
    names = [get_optimizer_info(o).short for o in (optimizers or DEFAULT_OPTIMIZERS)]
    if len(set(names)) != len(names):
        raise ValueError(f"--optimizers names one twice: {', '.join(names)}")
    folder = Path(out) if out is not None else Path("bocb-results") / f"probe-{slug(info.short)}"
    data_spec = parse_data_arg(data)
    # Written into the study as an absolute KIND:PATH: the study then means the same data from any
    # working directory (a relative ./pets would not), and so does its request key.
    data = f"{data_spec.kind}:{data_spec.root}" if data_spec.root else data_spec.kind
    if label_column or image_column:
        data_spec = dataclasses.replace(data_spec, label_column=label_column, image_column=image_column)
    dataset = load_dataset(data_spec, cache_dir=None if cache_dir is None else Path(cache_dir),
                           data_dirs=[Path(d) for d in data_dirs], download=download)
    folder.mkdir(parents=True, exist_ok=True)
    columns = {k: v for k, v in (("label_column", label_column), ("image_column", image_column)) if v}
    study_path = folder / f"study-{request_key(backbone, data, columns, names, epochs)}.toml"
    store_path = folder / "probe.sqlite"
    plan = _resume(study_path)
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
        _write_study(study_path, backbone, data, columns, names, plan, speed, budget_s, plugins)
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
    """Two epochs of :data:`MEASURE_STEPS` batches in this process (the probe's recipe, the batch
    size fitted to the data as the study's will be); the second epoch's seconds give the per-image
    costs (the first carries the warm-up: lazy initialisation, on a GPU cuDNN's autotuning), the
    rest of the wall time the cost of starting a trial. A backbone that cannot train is a
    one-line error."""
    from bocb.fit import fit_recipe
    from bocb.probe.sizing import LAUNCH_S
    from bocb.spec import TrialSpec, resolve_trial
    from bocb.trial import RunOptions, run_trial

    probe_spec = resolve_trial(backbone, optimizer, data=data_spec, num_classes=dataset.num_classes, epochs=2)
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
    rows = record.get("epochs") or []
    steps = per_class * classes // batch
    if record.get("status") not in ("done", "diverged") or len(rows) < 2 or not steps:
        raise ValueError(f"{backbone} could not train two short epochs to measure its speed: "
                         f"{record.get('error') or record.get('status')}")
    warm = rows[-1]
    timed = sum((r.get("seconds_train") or 0.0) + (r.get("seconds_eval") or 0.0) for r in rows)
    overhead = max(0.0, (record.get("seconds") or {}).get("wall", 0.0) - timed)
    return Throughput(train_s=warm["seconds_train"] / (steps * batch),
                      eval_s=(warm.get("seconds_eval") or 0.0) / (test_per_class * classes),
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


def request_key(backbone: str, data: str, columns: dict[str, str], names: list[str], epochs: int | None) -> str:
    """What names a probe's study file: the backbone, the data (resolved), the label and image
    columns named, the set of optimizers and ``--epochs`` (None: sized by a budget). The same request
    finds its study again (and continues it); another one never overwrites it."""
    text = json.dumps([backbone, data, columns or None, sorted(names), epochs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _resume(study_path: Path) -> Sizing | None:
    """The sizing of this request's probe study when the folder already holds it."""
    if not study_path.exists():
        return None
    import tomllib

    try:
        head = tomllib.loads(study_path.read_text())["study"]
        meta = json.loads(study_path.with_suffix(".json").read_text())
        epochs = int(head["epochs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # TOML/JSON decode errors are ValueErrors
        raise ValueError(f"{study_path} (or its .json) is damaged ({type(exc).__name__}: {exc}): remove both to "
                         f"start this probe afresh") from None
    expected = meta.get("expected_s")
    return Sizing(epochs, head.get("train_per_class"), head.get("test_per_class"),
                  math.nan if expected is None else float(expected), int(meta.get("launches") or 0),
                  str(meta.get("why", "sized by an earlier probe")))


def _write_study(path: Path, backbone: str, data: str, columns: dict[str, str], names: list[str], plan: Sizing,
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
    lines += [f"{key} = {q(value)}" for key, value in columns.items()]
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
    path.with_suffix(".json").write_text(json.dumps(sizing, indent=1) + "\n")


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
