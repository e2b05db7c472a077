"""The one training loop. A task (classification, detection, ...) prepares a :class:`Run` — its
model, batches, loss and evaluation — and :func:`train` does everything else, the same way for
every task: device and precision, the optimizer and its parameter groups, the lr schedule, resume
from a checkpoint, the epochs (steps, divergence checks, evaluation, rows, timing), checkpoints and
the final weights.

Contract, read top to bottom in :func:`train`:

- Every epoch reseeds all RNGs from ``(seed, epoch)`` (:func:`bocb.seeding.epoch_seed`) on the
  task's generator device, so a run resumed from its checkpoint replays exactly what an
  uninterrupted one does.
- A step's loss is checked for divergence every step on a CPU and every 25 steps on CUDA (a host
  sync per step would stall the GPU queue): non-finite, or above the task's ``loss_limit``.
- Evaluation after every epoch, and also when training stopped on a bad loss: a diverged run is
  scored on the weights it ended with; weights that are not finite cannot be evaluated and get the
  task's ``unscorable`` row (chance for classification, AP 0 for detection).
- A task may also call a finished epoch a collapse (``collapsed``: classification's "accuracy back
  to chance"): the run ends ``diverged`` there.
- ``interrupted`` when ``stop_after_epochs`` (epochs of this run) or ``stop_at_epoch`` (epochs of
  the schedule: an adaptive-tuning rung) ends a run early on purpose (a checkpoint is written; the
  next run resumes, and its numbers equal an uninterrupted run's).
- Precision: ``fp32`` (TF32 off), ``tf32`` (TF32 on where the GPU has it), ``bf16`` (autocast).

Each row is the task's evaluation fields plus ``epoch``, ``train_loss``, ``lr``, the seconds and the
images trained on; the task's ``score`` field is the headline number (top-1 %, box AP %, ...).

Progress events (``progress``, dicts keyed by ``event``): ``step`` after each step; ``epoch`` with
each finished epoch's row (the row of an epoch that diverged is in the record only); ``resumed``
once, with the rows restored from a checkpoint, before the first new step.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bocb import checkpoint
from bocb.distributed import DistContext, local_share, mean_over_processes
from bocb.fencing import Fence
from bocb.optim import OptimizerSpec, Stepper, build_optimizer
from bocb.provenance import code_version, device_info, library_versions
from bocb.seeding import epoch_seed, seed_all, synchronize

# Called with {"event": "step", "epoch", "step", "steps", "epochs", "batch"} after every training
# step and {"event": "epoch", "epoch", "row", "epochs"} after every evaluated epoch ("epoch" counts
# from 0 there, the row's "epoch" from 1).
Progress = Callable[[dict[str, Any]], None]
Forward = Callable[[], Any]
CHECKPOINT = "checkpoint.safetensors"
FINAL_WEIGHTS = "final.safetensors"
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass
class Run:
    """What a task hands the loop for one run (built after the loop seeded the RNGs).

    ``model`` is on the device and is what the optimizer trains, checkpoints save and the final
    weights keep. ``batch(forward_model, index, generator)`` returns ``(forward, loss_fn)`` for
    :meth:`bocb.optim.Stepper.step`; ``index`` are the positions from ``order``. ``evaluate(
    forward_model, autocast)`` returns the row's evaluation fields including ``score``.
    ``after_step(loss, output)`` / ``epoch_fields(steps)`` let a task keep its own per-epoch
    training statistics (detection's loss parts).
    """

    model: nn.Module
    examples: int  # training examples per epoch before drop_last
    batch_size: int
    epochs: int
    lr_factor: Callable[[int, int, bool], float]  # (step, steps_per_epoch, schedule_free)
    order: Callable[[torch.Generator], torch.Tensor]
    batch: Callable[[nn.Module, torch.Tensor, torch.Generator], tuple[Forward, Callable[[Any], torch.Tensor]]]
    evaluate: Callable[[nn.Module, torch.autocast], dict[str, Any]]
    unscorable: dict[str, Any]
    loss_limit: float
    grad_clip: float | None = None
    generator_device: torch.device | str = "cpu"
    train_mode: Callable[[], None] | None = None
    collapsed: Callable[[list[dict[str, Any]]], bool] | None = None
    after_step: Callable[[torch.Tensor, Any], None] | None = None
    epoch_fields: Callable[[int], dict[str, Any]] | None = None
    channels_last: bool = True
    info: dict[str, Any] = field(default_factory=dict)  # record fields the task adds (dataset, ...)


@dataclass(frozen=True)
class LoopOptions:
    """How the loop runs; none of this changes a run's numbers except ``stop_after_epochs``."""

    compile: bool = False
    work_dir: Path | None = None  # checkpoints and final weights; None keeps nothing
    checkpoint_every: int = 1
    resume: bool = True
    stop_after_epochs: int | None = None
    stop_at_epoch: int | None = None  # pause once the schedule reached this epoch (an adaptive-tuning rung)
    fence: Fence | None = None  # the runner's claim: every checkpoint/weights write refused once it is stale
    weights_metadata: dict[str, str] = field(default_factory=dict)
    dist: DistContext | None = None  # one trial over several processes (bocb.distributed); None: this one


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` is CUDA when there is one, else the CPU; asking for CUDA without one is an error."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available: valid: auto, cpu")
    return torch.device(name)


def run(record: dict[str, Any], prepare: Callable[[torch.device, str], Run], optimizer_spec: OptimizerSpec, *,
        seed: int, run_id: str, device: str | torch.device, precision: str, options: LoopOptions,
        progress: Progress | None = None, select_on: str = "score") -> dict[str, Any]:
    """:func:`train` as a result: any exception becomes a ``failed`` record with its message and
    traceback (a crashing run is a result, not a crashed study); then :func:`summarise` and the
    wall time. ``precision="auto"``: bf16 on CUDA, fp32 on a CPU."""
    started = time.time()
    try:
        dev = resolve_device(device)
        if precision == "auto":
            precision = "bf16" if dev.type == "cuda" else "fp32"
        train(prepare, optimizer_spec, seed=seed, run_id=run_id, device=dev, precision=precision,
              options=options, progress=progress, record=record)
    except Exception as exc:  # noqa: BLE001 - a crashing run is a result, not a crashed study
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
    summarise(record, select_on)
    record.setdefault("seconds", {})["wall"] = round(time.time() - started, 3)
    return record


def new_record(**fields: Any) -> dict[str, Any]:
    """A run's record before it trains: ``failed`` until the loop says otherwise, with the code and
    library versions every result carries; ``fields`` (task, metric, ids, spec) come first."""
    return {**fields, "status": "failed", "error": None, "diverged_epoch": None, "epochs": [],
            "code_version": code_version(), "libraries": library_versions()}


def set_precision(device: torch.device, precision: str) -> str:
    """Switch TF32 on or off for this process (every run sets it: a worker runs many) and say what
    the device really does with ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: valid: {', '.join(PRECISIONS)}")
    allow = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    if device.type != "cuda":
        return {"fp32": "fp32", "tf32": "fp32 (no TF32 on a CPU)", "bf16": "bf16 autocast"}[precision]
    has_tf32 = torch.cuda.get_device_capability(device)[0] >= 8  # Ampere and later
    base = "tf32" if allow and has_tf32 else "fp32"
    return f"bf16 autocast, {base} elsewhere" if precision == "bf16" else base


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run in MiB: on CUDA the allocator's peak since the run started; on a
    CPU the process's peak resident set (an upper bound: it includes the interpreter, the data and
    any earlier run of the same worker process)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def train(
    prepare: Callable[[torch.device, str], Run],
    optimizer_spec: OptimizerSpec,
    *,
    seed: int,
    run_id: str,
    device: torch.device,
    precision: str,
    options: LoopOptions,
    progress: Progress | None,
    record: dict[str, Any],
) -> None:
    """Train what ``prepare(device, precision)`` builds (see the module doc); fills ``record`` in place
    (``status``, ``epochs``, ``seconds``, ...). Exceptions propagate: the caller records them."""
    # --- setup -------------------------------------------------------------------------------
    cuda = device.type == "cuda"
    record.update(device=device_info(device), precision=precision,
                  precision_effective=set_precision(device, precision), compile=options.compile)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seed_all(seed, device)
    run = prepare(device, precision)  # after seeding, so the model's init depends on the seed alone
    record.update(run.info)
    model = run.model
    if cuda and run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    record["params"] = sum(p.numel() for p in model.parameters())
    dist = options.dist
    main = dist is None or dist.main  # the process that writes checkpoints and weights, and reports
    forward_model = torch.compile(model) if options.compile else model
    eval_model = forward_model  # under DDP the unwrapped model: see evaluate()
    if dist is not None:
        # Gradients are averaged over the processes during backward; the optimizer steps `model`.
        ids = [device.index] if device.type == "cuda" else None
        forward_model = nn.parallel.DistributedDataParallel(forward_model, device_ids=ids)
        record["processes"] = dist.world_size
        record["batch_per_process"] = len(local_share(range(run.batch_size), dist))
        if not main:
            progress = None  # one process reports
    steps_per_epoch = run.examples // run.batch_size  # drop_last: mixup needs full, even batches
    if steps_per_epoch < 1:
        raise ValueError(f"{run.examples} training examples is fewer than one batch of {run.batch_size}")

    # --- optimizer and schedule -------------------------------------------------------------
    optimizer, optimizer_record = build_optimizer(optimizer_spec, model)
    record["optimizer"] = optimizer_record
    stepper = Stepper(optimizer, optimizer_spec)
    for group in optimizer.param_groups:
        group["bocb_base_lr"] = group["lr"]  # the schedule multiplies this; survives checkpoints
    schedule_free = optimizer_spec.needs_train_eval

    def set_lr(step: int) -> float:
        factor = run.lr_factor(step, steps_per_epoch, schedule_free)
        for group in optimizer.param_groups:
            group["lr"] = group["bocb_base_lr"] * factor
        return factor * optimizer_spec.lr

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    params = [p for p in model.parameters() if p.requires_grad]

    def evaluate() -> dict[str, Any]:
        stepper.eval()
        if dist is not None:
            # Rank 0's buffers (BatchNorm statistics) everywhere, as DDP's forward would do, but in
            # one collective every rank makes: DDP's forward makes it too, and a rank with no
            # evaluation batches (its share of a split test set can be empty) would skip it and
            # leave the others waiting. Then every rank evaluates the same unwrapped model.
            _broadcast_buffers(model)
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            return dict(run.unscorable)  # weights that are not finite cannot be evaluated
        return run.evaluate(eval_model, autocast)

    # --- resume ----------------------------------------------------------------------------------
    work = options.work_dir
    ckpt_path = work / CHECKPOINT if work else None
    start_epoch = 0
    seconds = {"train": 0.0, "eval": 0.0, "compile": 0.0}
    if options.fence is not None:
        options.fence.check()  # a claim already superseded never starts (StaleClaimError: failed)
    state = _readable_checkpoint(ckpt_path, run_id, device, record, set_aside=main) if options.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        stepper.load_state_dict(state["stepper"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch = int(state["epoch"])
        record["epochs"] = list(state["rows"])
        seconds = dict(state["seconds"])
        record["resumed_from_epoch"] = start_epoch
        if progress:  # the restored rows, so that a consumer of the events sees every epoch in order
            progress({"event": "resumed", "epoch": start_epoch, "rows": list(record["epochs"])})

    # --- epochs ----------------------------------------------------------------------------------
    check_every = 25 if cuda else 1
    record["status"] = "running"
    epochs_this_run = 0
    lr_now = 0.0
    for epoch in range(start_epoch, run.epochs):
        if options.stop_at_epoch is not None and epoch >= options.stop_at_epoch:
            record["status"] = "interrupted"  # at its rung (also when resumed at or past it)
            break
        generator = seed_all(epoch_seed(seed, epoch), run.generator_device)
        if run.train_mode:
            run.train_mode()
        else:
            model.train()
        stepper.train()
        order = run.order(generator)
        loss_sum = torch.zeros((), device=device)
        synchronize(device)
        t0 = time.perf_counter()
        diverged = False
        for i in range(steps_per_epoch):
            step_t0 = time.perf_counter()
            index = local_share(order[i * run.batch_size:(i + 1) * run.batch_size], dist)
            forward, loss_fn = run.batch(forward_model, index, generator)
            lr_now = set_lr(epoch * steps_per_epoch + i)
            loss, output = stepper.step(forward, loss_fn, params=params, clip_grad_norm=run.grad_clip)
            loss_sum += loss
            if run.after_step:
                run.after_step(loss, output)
            if options.compile and epoch == start_epoch and i == 0:
                synchronize(device)
                seconds["compile"] += time.perf_counter() - step_t0  # the first call compiles
            if (i + 1) % check_every == 0 or i + 1 == steps_per_epoch:
                # Over several processes, one collective at each check (not each step): every
                # process judges the same averaged values and so stops at the same step.
                total, latest = (mean_over_processes(torch.stack([loss_sum, loss.detach()]), dist)
                                 if dist is not None else (loss_sum, loss))
                if not math.isfinite(total.item()) or latest.item() > run.loss_limit:
                    diverged = True
                    break
            if progress:  # the schedule's length and the batch let a live view show epoch k/N and img/s
                progress({"event": "step", "epoch": epoch, "step": i + 1, "steps": steps_per_epoch,
                          "epochs": run.epochs, "batch": run.batch_size})
        synchronize(device)
        train_seconds = time.perf_counter() - t0
        loss_sum = mean_over_processes(loss_sum, dist)  # the row's train loss: the processes' mean
        if options.compile and epoch == start_epoch:
            train_seconds -= seconds["compile"]
        seconds["train"] += train_seconds
        steps_done = i + 1
        t1 = time.perf_counter()
        scores = evaluate()
        eval_seconds = time.perf_counter() - t1
        seconds["eval"] += eval_seconds
        mean_loss = loss_sum.item() / steps_done
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": mean_loss if math.isfinite(mean_loss) else None}
        if run.epoch_fields:
            row.update(run.epoch_fields(steps_done))
        row.update(scores)
        row.update(lr=lr_now, seconds_train=round(train_seconds, 3), seconds_eval=round(eval_seconds, 3),
                   images=steps_done * run.batch_size)
        record["epochs"].append(row)
        if diverged:
            record["status"] = "diverged"
            record["diverged_epoch"] = epoch + 1
            break
        if progress:
            progress({"event": "epoch", "epoch": epoch, "row": row, "epochs": run.epochs})
        if run.collapsed and run.collapsed(record["epochs"]):
            record["status"] = "diverged"
            record["diverged_epoch"] = epoch + 1
            break
        epochs_this_run += 1
        last = epoch + 1 == run.epochs
        stopping = options.stop_after_epochs is not None and epochs_this_run >= options.stop_after_epochs
        pausing = stopping or (options.stop_at_epoch is not None and epoch + 1 == options.stop_at_epoch)
        if main and ckpt_path and (last or pausing or (epoch + 1) % options.checkpoint_every == 0):
            checkpoint.save(ckpt_path, {
                "trial_id": run_id, "epoch": epoch + 1, "model": model.state_dict(),
                "stepper": stepper.state_dict(), "rng": checkpoint.rng_state(),
                "rows": record["epochs"], "seconds": seconds,
            }, fence=options.fence)
        if stopping and not last:
            record["status"] = "interrupted"
            break
    else:
        record["status"] = "done"

    # --- result ------------------------------------------------------------------------------
    record["peak_memory_mb"] = peak_memory_mb(device)
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    record["seconds"] = seconds
    images = sum(r["images"] for r in record["epochs"])
    record["train_images_per_second"] = round(images / seconds["train"], 1) if seconds["train"] else None
    if work and record["status"] in ("done", "diverged") and main:
        # The spec travels in the file's metadata, so `bocb diagnose --checkpoint` needs nothing else.
        checkpoint.save_weights(work / FINAL_WEIGHTS, model, metadata={"trial_id": run_id, **options.weights_metadata},
                                fence=options.fence)
        record["artifacts"] = {"final_weights": str(work / FINAL_WEIGHTS), "checkpoint": str(ckpt_path)}


def _broadcast_buffers(model: nn.Module) -> None:
    """Every buffer of ``model`` (BatchNorm's statistics and counters) from rank 0 to all processes."""
    import torch.distributed

    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, src=0)


def name_scores(record: dict[str, Any], final: dict[str, str], best: str) -> None:
    """Copy the last scored row's fields to the record under a task's own names (``final``:
    record key -> row field) and ``best_score`` to ``best`` (e.g. detection's ``best_map``)."""
    rows = [r for r in record["epochs"] if r.get("score") is not None]
    for key, name in final.items():
        record[key] = rows[-1][name] if rows else None
    record[best] = record["best_score"]


def _readable_checkpoint(path: Path | None, run_id: str, device: torch.device,
                         record: dict[str, Any], set_aside: bool = True) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None to start from scratch.

    A checkpoint that cannot be read (truncated by a full disk, damaged, not a bocb checkpoint, or
    another trial's) would fail the trial on every run; it is renamed to
    ``checkpoint.safetensors.bad-<unix time>`` (kept for inspection, never deleted), the run
    starts again from epoch 0, and ``record["checkpoint_set_aside"]`` names the file and why.
    Of a multi-process trial only rank 0 renames it (``set_aside``); every rank starts over.
    """
    if path is None or not path.exists():
        return None
    try:
        state = checkpoint.load(path, device=device)
        if not isinstance(state, dict) or not {"trial_id", "model", "stepper", "rng", "epoch", "rows",
                                                "seconds"} <= set(state):
            raise ValueError("not a complete trial checkpoint")
        if state["trial_id"] != run_id:
            raise ValueError(f"it belongs to trial {state['trial_id']}")
        return state
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is set aside the same way
        if not set_aside:  # another process of this trial (rank 0) sets it aside; this one starts over too
            return None
        aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
        os.replace(path, aside)
        record["checkpoint_set_aside"] = f"{aside}: {type(exc).__name__}: {' '.join(str(exc).split())}"
        return None


def summarise(record: dict[str, Any], select_on: str = "score") -> None:
    """``final_score`` from the last evaluated row (a diverged run's: its ended weights) and
    ``best_score``/``best_epoch`` at the epoch that is best on ``select_on`` (``score``, or a
    validation score when the task held images out)."""
    rows = [r for r in record["epochs"] if r.get("score") is not None and r.get(select_on) is not None]
    last = rows[-1] if rows else None
    best = max(rows, key=lambda r: r[select_on]) if rows else None
    record["final_score"] = last["score"] if last else None
    record["best_score"] = best["score"] if best else None
    record["best_epoch"] = best["epoch"] if best else None
