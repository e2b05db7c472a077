"""Training throughput: a plain PyTorch loop vs bocb's trial, same model, same data, one run.

(a) plain: what a user would write — a torch Dataset of PIL images, torchvision CPU transforms
    (random crop 32 pad 4, flip, to-tensor, normalise), a DataLoader with worker processes, fp32,
    SGD with momentum.
(b) bocb: :func:`bocb.trial.run_trial` with the ``pytorch`` recipe (the same augmentations, done
    on the device), SGD-M, precision bf16 autocast on CUDA and fp32 on CPU (part of the spec) and
    optionally ``--compile``.

Both train the same zoo model at the same batch size; both exclude warm-up (the plain loop's first
``--warmup`` steps, the trial's first epoch). With ``--repeats 2`` (default) the two run in the
order bocb, plain, plain, bocb, so drift on a shared machine hits both alike; the means are
compared. Prints images/s of each and their ratio; ``--no-plain`` times the trial alone (the GPU
check compares a compiled trial with the eager plain loop it timed just before). ``--json-out``
appends the result line to a file; ``--scale tiny`` and ``--test-per-class`` shrink the run for the
CPU dry run.

    python benchmarks/throughput.py --model resnet18 deit_small --data sample
    python benchmarks/throughput.py --model deit_small --data /path/to/cifar10-parquet --compile
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset as TorchDataset
from torchvision import transforms

from bocb.data import load_dataset, parse_data_arg
from bocb.data.augment import AugmentConfig
from bocb.spec import resolve_trial
from bocb.trial import RunOptions, resolve_device, run_trial
from bocb.zoo import build_backbone, resolve_backbone


class PilImages(TorchDataset):
    """uint8 (N,3,H,W) -> PIL images through torchvision transforms, as a typical user loop."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: transforms.Compose):
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def plain_loop(model_name: str, dataset, batch_size: int, steps: int, warmup: int,
               device: torch.device, workers: int, scale: str = "paper") -> float:
    cfg = AugmentConfig()
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(cfg.mean, cfg.std),
    ])
    loader = DataLoader(
        PilImages(dataset.train.images, dataset.train.labels, tf), batch_size=batch_size,
        shuffle=True, num_workers=workers, pin_memory=device.type == "cuda", drop_last=True,
        persistent_workers=workers > 0,
    )
    torch.manual_seed(0)
    model = build_backbone(resolve_backbone(model_name, num_classes=dataset.num_classes, policy="cifar", scale=scale)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    done, t0 = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def default_precision(device: str) -> str:
    """bf16 autocast on CUDA (the fast path this benchmark measures), fp32 on a CPU."""
    return "bf16" if resolve_device(device).type == "cuda" else "fp32"


def bocb_trial(model_name: str, dataset, data_spec, batch_size: int, epochs: int, device: str,
               compile: bool, scale: str = "paper", test_per_class: int = 10,
               precision: str | None = None) -> tuple[float, dict]:
    spec = resolve_trial(
        model_name, "sgd_m", data=data_spec, num_classes=dataset.num_classes, recipe="pytorch",
        epochs=epochs, batch_size=batch_size, policy="cifar", scale=scale,
        precision=precision or default_precision(device),
    )
    spec = dataclasses.replace(spec, recipe=spec.recipe.with_changes(
        test_per_class=test_per_class, augment=AugmentConfig()))
    record = run_trial(spec, dataset, RunOptions(device=device, compile=compile))
    # The first epoch carries warm-up (and compilation, if any). A diverged trial still timed its
    # epochs (tiny dry-run models on a handful of images can trip the accuracy-collapse rule).
    timed = [r for r in record["epochs"][1:] if r["images"]]
    if record["status"] not in ("done", "diverged") or not timed:
        raise RuntimeError(f"trial {record['status']} with {len(timed)} timed epoch(s): {record.get('error')}")
    images = sum(r["images"] for r in timed)
    return images / sum(r["seconds_train"] for r in timed), record


def measure(model: str, dataset, data_spec, args: argparse.Namespace, device: torch.device) -> dict:
    """One model: the trial and (unless ``--no-plain``) the plain loop, alternating; the result row."""
    steps_per_epoch = len(dataset.train) // args.batch_size
    steps = args.steps or steps_per_epoch * (args.epochs - 1)
    trial_runs: list[float] = []
    plain_runs: list[float] = []

    def run_bocb() -> dict:
        ips, rec = bocb_trial(model, dataset, data_spec, args.batch_size, args.epochs,
                              str(device), args.compile, args.scale, args.test_per_class)
        trial_runs.append(ips)
        return rec

    def run_plain() -> None:
        plain_runs.append(plain_loop(model, dataset, args.batch_size, steps, args.warmup,
                                     device, args.workers, args.scale))

    for r in range(args.repeats):
        if args.no_plain:
            record = run_bocb()
        elif r % 2 == 0:
            record = run_bocb()
            run_plain()
        else:
            run_plain()
            record = run_bocb()
    trial_ips = sum(trial_runs) / len(trial_runs)
    plain_ips = sum(plain_runs) / len(plain_runs) if plain_runs else None
    ratio = trial_ips / plain_ips if plain_ips else None
    return {
        "model": model, "device": record["device"].get("name"), "batch_size": args.batch_size,
        "train_images": len(dataset.train), "plain_images_per_s": round(plain_ips, 1) if plain_ips else None,
        "bocb_images_per_s": round(trial_ips, 1), "ratio": round(ratio, 3) if ratio else None,
        "bocb_precision": record["precision"], "bocb_device": record["device"].get("device"),
        "compile": args.compile, "compile_seconds": record["seconds"].get("compile"),
        "workers": args.workers, "torch": torch.__version__, "plain_runs": [round(v, 1) for v in plain_runs],
        "bocb_runs": [round(v, 1) for v in trial_runs],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["resnet18"], help="zoo backbone(s), built with the cifar policy")
    p.add_argument("--data", default="sample")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="plain loop: timed steps (default: as many as the trial's timed epochs)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="trial epochs; all but the first are timed")
    p.add_argument("--per-class", type=int, default=None, help="train images per class (subset for slow devices)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=2, help="runs of each, alternating order")
    p.add_argument("--no-plain", action="store_true", help="time the trial only")
    p.add_argument("--scale", default="paper", choices=("paper", "tiny"), help="model scale (tiny: CPU dry runs)")
    p.add_argument("--test-per-class", type=int, default=10, help="trial's test images per class")
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-dataset cache (default: none)")
    p.add_argument("--json-out", type=Path, default=None, help="append each model's result JSON line to this file")
    args = p.parse_args()

    device = resolve_device(args.device)
    data_spec = parse_data_arg(args.data)
    dataset = load_dataset(data_spec, cache_dir=args.cache_dir)
    if args.per_class:
        dataset = dataclasses.replace(dataset, train=dataset.train.subset(args.per_class, seed=0))
    for model in args.model:
        result = measure(model, dataset, data_spec, args, device)
        plain, ratio = result["plain_images_per_s"], result["ratio"]
        print(f"{model} on {result['device']} (batch {args.batch_size}, {len(dataset.train)} images): "
              f"{f'plain loop {plain:.1f} img/s, ' if plain else ''}bocb trial {result['bocb_images_per_s']:.1f} img/s "
              f"({result['bocb_precision']}{', compiled' if args.compile else ''}){f', ratio {ratio:.2f}x' if ratio else ''}",
              flush=True)
        print(json.dumps(result), flush=True)
        if args.json_out:  # per model, so a later model's timeout keeps the earlier ones' results
            with args.json_out.open("a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
