"""What the training-time augmentation costs per batch, by recipe and stage, against a training step.

    python benchmarks/augment.py --device cuda [--batch-size 128] [--batches 30] [--model DeiT-S]

The GPU check found DeiT-S trials under the ``deit`` recipe (RandAugment, random erasing,
mixup/cutmix) far slower than under ``pytorch`` (crop + flip), which the throughput step measures.
This prints, for each recipe's augmentation, the milliseconds per batch of
:meth:`bocb.data.augment.BatchAugment.train` with its stages added one at a time (crop + flip,
+ RandAugment, + random erasing, + mixup/cutmix), and the milliseconds of one bf16 (CUDA) or fp32
(CPU) forward + backward + optimizer step of ``--model`` at the same batch, so each stage reads as a
share of a step. Images are random uint8 at 32x32: the stages' cost does not depend on content.
One JSON line per row with ``--json-out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from bocb.data.augment import BatchAugment
from bocb.recipes import RECIPES
from bocb.zoo import init_backbone, resolve_backbone


def _timed(fn, batches: int, device: torch.device) -> float:
    """Milliseconds per call of ``fn`` over ``batches`` calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(batches):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / batches * 1000


def stages(recipe: str) -> list[tuple[str, object]]:
    """The recipe's augmentation with its stages switched on one at a time (cumulative)."""
    full = RECIPES[recipe].augment
    base = dataclasses.replace(full, randaugment=None, random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)
    out = [("crop+flip", base)]
    if full.randaugment is not None:
        out.append(("+randaugment", base := dataclasses.replace(base, randaugment=full.randaugment)))
    if full.random_erasing > 0:
        out.append(("+random erasing", base := dataclasses.replace(base, random_erasing=full.random_erasing)))
    if full.mixing:
        out.append(("+mixup/cutmix", dataclasses.replace(base, mixup_alpha=full.mixup_alpha,
                                                          cutmix_alpha=full.cutmix_alpha)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--recipes", nargs="+", default=["pytorch", "deit"], choices=sorted(RECIPES))
    p.add_argument("--model", default="DeiT-S", help="zoo backbone for the training-step reference")
    p.add_argument("--scale", default="paper", help="zoo scale (tiny for a quick CPU run)")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    rows = []
    for recipe in args.recipes:
        for stage, config in stages(recipe):
            aug = BatchAugment(config, num_classes=10, device=device)
            ms = _timed(lambda: aug.train(images, labels, gen), args.batches, device)
            rows.append({"recipe": recipe, "stage": stage, "ms_per_batch": round(ms, 2)})

    spec = resolve_backbone(args.model, num_classes=10, policy="cifar", scale=args.scale)
    model = init_backbone(spec, 0).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 3, spec.input_size, spec.input_size, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rows.append({"recipe": "-", "stage": f"{args.model} training step", "ms_per_batch": round(_timed(step, args.batches, device), 2)})
    print(f"{args.device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"batch {args.batch_size}, {args.batches} batches")
    for r in rows:
        print(f"{r['recipe']:>8}  {r['stage']:<28} {r['ms_per_batch']:9.2f} ms/batch")
    if args.json_out:
        args.json_out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
