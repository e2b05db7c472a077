"""``bocb train``: one trial with a progress bar and a summary (``--json``: the record, last line)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.markup import escape
from rich.table import Table

from bocb.commands.common import add_data_args, add_log_args, data_dirs, default_cache_dir, parse_kv


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one (backbone, optimizer, settings, seed) trial")
    p.add_argument("--backbone", required=True, help="zoo name or paper short name (bocb zoo backbones), timm:NAME (any timm model), "
                                                        "or package.module:builder (builder(num_classes=...) -> nn.Module)")
    p.add_argument("--optimizer", help="zoo name (default: the recipe's base optimizer)")
    p.add_argument("--lr", type=float, help="learning rate (default: recipe's for its base optimizer, else the optimizer's grid centre)")
    p.add_argument("--wd", type=float, help="weight decay (default: as for --lr)")
    p.add_argument("--opt-arg", action="append", metavar="KEY=VALUE", help="optimizer argument, repeatable (JSON values)")
    p.add_argument("--wd-policy", default="paper",
                   help="paper (default: each optimizer's rule in the released configs), no_decay_1d or decay_all")
    p.add_argument("--recipe", help="pytorch, deit, convnext, rsb-a2 (default: the paper's for the backbone); "
                                    "a tier name (fast, smoke) means the paper's recipe at that tier")
    p.add_argument("--tier", default="full", help="budget tier: full, fast, smoke (default: full)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--policy", help="input policy: cifar or upsample (default: the backbone's)")
    p.add_argument("--scale", help="paper or tiny (default: the tier's)")
    p.add_argument("--drop-path", type=float, help="override the recipe's drop-path rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and data order (default 0)")
    add_data_args(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                   help="numeric precision, part of the trial's identity (default: the tier's: tf32 for "
                        "full and fast, as the paper's A100 runs; fp32 for smoke)")
    p.add_argument("--holdout-per-class", type=int, metavar="N",
                   help="hold out N training images per class to choose the best epoch (default: "
                        "choose on the test set, the paper's way)")
    p.add_argument("--train-per-class", type=int, metavar="N",
                   help="train on N images per class (default: the tier's; full: all)")
    p.add_argument("--test-per-class", type=int, metavar="N",
                   help="test on N images per class (default: the tier's; full: all)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--data-workers", type=int, metavar="N",
                   help="streamed data (--data stream:PATH): DataLoader worker processes that decode and crop "
                        "(default: one per CPU core but one, at most 8; 0 decodes in the training process)")
    p.add_argument("--work-dir", type=Path, help="checkpoints + final weights here; resumes if a checkpoint exists")
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints (default 1)")
    p.add_argument("--json", action="store_true", help="print the result record as the last stdout line")
    add_log_args(p, "bocb-results/, runs grouped as 'train'")


def run(args: argparse.Namespace) -> int:
    from bocb.data import open_data, parse_data_arg
    from bocb.spec import resolve_trial
    from bocb.trial import RunOptions, run_trial

    from bocb.recipes import TIERS

    from bocb.engine import resolve_device
    from bocb.recipes import RECIPES

    recipe, tier = args.recipe, args.tier
    if recipe in TIERS:  # `--recipe smoke`: the backbone's own recipe at the smoke tier
        recipe, tier = None, recipe
    elif recipe is not None and recipe not in RECIPES:
        import difflib

        valid = [*RECIPES, *TIERS]
        close = difflib.get_close_matches(recipe, valid, n=3)
        raise ValueError(f"unknown recipe {recipe!r}" + (f" (did you mean {' or '.join(close)}?)" if close else "")
                         + f": valid: {', '.join(valid)} (a tier name is the backbone's own recipe at that tier)")
    resolve_device(args.device)  # `--device cuda` without CUDA: one line now, not a failed trial later
    _check_numbers(args)
    trackers = _trackers(args)  # a missing tracker library fails here, before the data loads
    err = Console(stderr=True)
    data_spec = parse_data_arg(args.data)
    if args.label_column or args.image_column:
        import dataclasses

        data_spec = dataclasses.replace(data_spec, label_column=args.label_column, image_column=args.image_column)
    with err.status(f"loading {args.data} ..."):
        dataset = open_data(
            data_spec, cache_dir=args.cache_dir or default_cache_dir(), data_dirs=data_dirs(),
            download=args.download,
        )
    spec = resolve_trial(
        args.backbone, args.optimizer, data=data_spec, num_classes=dataset.num_classes,
        lr=args.lr, weight_decay=args.wd, recipe=recipe, tier=tier, seed=args.seed,
        policy=args.policy, scale=args.scale, epochs=args.epochs, batch_size=args.batch_size,
        drop_path_rate=args.drop_path, wd_policy=args.wd_policy, optimizer_args=parse_kv(args.opt_arg),
        precision=args.precision, holdout_per_class=args.holdout_per_class,
        train_per_class=args.train_per_class, test_per_class=args.test_per_class,
    )
    if spec.recipe.imagenet is not None:  # the CLI's one line, exit 2, before any data is read
        if not data_spec.stream:
            from bocb.recipes_in1k import not_trainable

            raise ValueError(not_trainable([spec.recipe.name]))
        from bocb.trial import imagenet_transforms

        imagenet_transforms(spec.recipe)  # refuses what the streaming loader cannot do yet
    spec = _fit(spec, dataset, args, err)
    from bocb.distributed import join_from_env

    context, device = join_from_env(args.device)  # under torchrun: this process's rank and GPU
    options = RunOptions(
        device=device, compile=args.compile, work_dir=args.work_dir,
        checkpoint_every=args.checkpoint_every, dist=context, data_workers=args.data_workers,
    )
    if context is not None and not context.main:
        # Under torchrun every process runs this command; rank 0 alone reports and writes.
        record = run_trial(spec, dataset, options)
        return 0 if record["status"] in ("done", "diverged") else 1
    title = (f"{spec.backbone.short} ({spec.backbone.scale}, {spec.backbone.policy}) x "
             f"{spec.optimizer.short} lr={spec.optimizer.lr:g} wd={spec.optimizer.weight_decay:g}")
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=err,
    )
    with bar:
        task = bar.add_task(title, total=None, info="")

        def progress(event: dict) -> None:
            if event["event"] == "step":
                total = spec.recipe.epochs * event["steps"]
                bar.update(task, total=total, completed=event["epoch"] * event["steps"] + event["step"])
            elif event["event"] == "epoch":
                row = event["row"]
                bar.update(task, info=f"epoch {row['epoch']}: top-1 {row['test_top1']:.2f}%  loss {row['train_loss']:.3f}")
            if trackers is not None:
                trackers.event(spec.trial_id, event)

        if trackers is not None:
            trackers.started(spec.trial_id, spec.to_dict())
        try:
            record = run_trial(spec, dataset, options, progress)
            if trackers is not None:
                trackers.finished(spec.trial_id, record)
        finally:
            if trackers is not None:
                trackers.close()  # after Ctrl-C: the run ends `interrupted`
    if trackers is not None:
        for line in [*trackers.notes, *trackers.where()]:
            err.print(escape(line), highlight=False)
    _summary(err if args.json else Console(), record)
    if args.json:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
    return 0 if record["status"] in ("done", "diverged") else 1


def _trackers(args: argparse.Namespace):
    """The experiment trackers of --log (:mod:`bocb.trackers`; None without it), their libraries
    imported now. In this process: the trial runs here."""
    if not args.log:
        return None
    from bocb.store import DEFAULT_STORE
    from bocb.trackers import TRAIN_GROUP, Session, check

    return Session(check(args.log), args.log_dir or Path(DEFAULT_STORE).parent, TRAIN_GROUP)


def _fit(spec, dataset, args: argparse.Namespace, err: Console):
    """The spec with the tier's per-class counts and batch size fitted to small data
    (:func:`bocb.fit.fit_recipe`), each change printed; flags the user gave are only checked."""
    from bocb.fit import fit_recipe
    from bocb.spec import TrialSpec

    if not hasattr(dataset.train, "labels"):  # shards: labels are known only by reading them
        err.print("[yellow]streamed shards[/]: the tier's per-class counts are not fitted; they train on whole splits")
        return spec
    explicit = {name for name in ("train_per_class", "test_per_class", "batch_size") if getattr(args, name) is not None}
    changes, notes = fit_recipe(spec.recipe, dataset.train.labels, dataset.test.labels, explicit)
    for note in notes:
        err.print(f"[yellow]fitted to the data[/]: {note}")
    if not changes:
        return spec
    return TrialSpec(spec.backbone, spec.optimizer, spec.recipe.with_changes(**changes), spec.data, spec.seed)


def _check_numbers(args: argparse.Namespace) -> None:
    """Out-of-range numbers fail before the data is loaded (resolve_trial checks them again)."""
    import math

    for option, value in (("--lr", args.lr), ("--wd", args.wd), ("--drop-path", args.drop_path)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{option} must be a finite number >= 0, got {value}")
    for option, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                          ("--checkpoint-every", args.checkpoint_every), ("--train-per-class", args.train_per_class),
                          ("--test-per-class", args.test_per_class)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.data_workers is not None and args.data_workers < 0:
        raise ValueError(f"--data-workers must be >= 0, got {args.data_workers}")
    if args.optimizer:  # names, types and ranges of --opt-arg, without loading anything
        from bocb.optim import resolve_optimizer

        resolve_optimizer(args.optimizer, lr=args.lr, weight_decay=args.wd, wd_policy=args.wd_policy,
                          **parse_kv(args.opt_arg))


def _summary(console: Console, record: dict) -> None:
    spec = record["spec"]
    table = Table(title=f"trial {record['trial_id']}: {record['status']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("backbone", f"{spec['backbone']['short']} ({spec['backbone']['scale']}, {spec['backbone']['policy']}, {spec['backbone']['input_size']}px)")
    table.add_row("optimizer", f"{spec['optimizer']['short']} lr={spec['optimizer']['args']['lr']:g} wd={spec['optimizer']['args'].get('weight_decay', 0):g}")
    table.add_row("recipe", f"{spec['recipe']['name']} ({spec['recipe']['tier']}), {spec['recipe']['epochs']} epochs, batch {spec['recipe']['batch_size']}")
    if "dataset" in record:
        d = record["dataset"]
        table.add_row("data", f"{d['name']}: {d['train_images']} train / {d['test_images']} test")
    for key in ("metric", "final_score", "best_score", "best_epoch", "diverged_epoch", "train_images_per_second"):
        if record.get(key) is not None:
            table.add_row(key, str(record[key]))
    table.add_row("seconds", ", ".join(f"{k} {v}" for k, v in record.get("seconds", {}).items()))
    if record.get("checkpoint_set_aside"):
        table.add_row("checkpoint set aside", escape(record["checkpoint_set_aside"]))
    if record.get("error"):
        table.add_row("error", escape(record["error"]))
    console.print(table)
