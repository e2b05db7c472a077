"""One trial on several processes (GPUs, or CPU processes with gloo): PyTorch DistributedDataParallel.

The processes are started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) or by any launcher that sets the same variables: the local
executor's process groups (:mod:`bocb.executors.group`), Ray Train's TorchTrainer;
:func:`join_from_env` reads them, joins the process group and picks the rank's GPU.
:func:`bocb.engine.train` then runs the same loop in every process, with these rules:

- **The global batch is the recipe's.** Every process draws the same epoch order (the generator is
  seeded from (seed, epoch) alone) and trains on its contiguous share of each global batch
  (``batch_size / world_size`` examples, which must divide evenly); DDP averages the gradients,
  so a step equals one process's step on the whole batch (the learning rate stays the recipe's:
  the batch did not change). Random augmentation is drawn per share, so runs with augmentation
  match a single process in distribution, not draw for draw; without it they match to float
  rounding (``tests/test_distributed.py``: two gloo processes on CPU against one).
- BatchNorm statistics are per process unless the model uses SyncBatchNorm (as the RSB configs
  do on GPUs); a test model without BatchNorm matches exactly.
- The losses are averaged over processes at each divergence check (one collective per check,
  every 25 steps on CUDA, not per step), so every process stops at the same step; the row's
  ``train_loss`` is the processes' mean.
- Evaluation: streamed test sets are split between the processes (each reads its share) and the
  counts summed, so every process has the whole set's numbers; sets held in memory are small and
  every process scores them whole.
- Only rank 0 writes checkpoints, final weights and progress events and returns the record the
  store keeps; every rank resumes from the same checkpoint file (a shared file system).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistContext:
    """This process's place in a multi-process trial."""

    rank: int
    world_size: int
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes and reports."""
        return self.rank == 0


def from_env(environ: dict[str, str] | None = None) -> DistContext | None:
    """The context torchrun's variables describe, or None for a single process."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return DistContext(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")))


def init(context: DistContext, backend: str | None = None) -> None:
    """Join the process group (``nccl`` on CUDA, ``gloo`` on CPU unless ``backend`` says otherwise).
    A group the launcher already joined (Ray Train's TorchTrainer does) is kept as it is."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend, rank=context.rank, world_size=context.world_size)


def process_device(device: str, context: DistContext | None) -> str:
    """The device of this process: under a launcher each process takes the GPU of its local rank
    when ``device`` is ``auto`` or ``cuda`` (``auto`` without CUDA is the CPU); anything more
    specific is kept."""
    if context is None or device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{context.local_rank}"
    return "cpu" if device == "auto" else device


def join_from_env(device: str) -> tuple[DistContext | None, str]:
    """This process's place in a multi-process trial when a launcher started it (torchrun, the
    local executor's process groups, Ray Train), with the process group joined (``nccl`` when the
    process trains on a GPU, else ``gloo``) and its device; ``(None, device)`` for one process."""
    context = from_env()
    if context is None:
        return None, device
    device = process_device(device, context)
    init(context, "nccl" if device.startswith("cuda") else "gloo")
    return context, device


def local_share(index: Any, context: DistContext | None) -> Any:
    """This process's contiguous share of a global batch's indices."""
    if context is None:
        return index
    size = len(index)
    if size % context.world_size:
        raise ValueError(f"a global batch of {size} does not split evenly over {context.world_size} processes")
    per = size // context.world_size
    return index[context.rank * per:(context.rank + 1) * per]


def mean_over_processes(value: Any, context: DistContext | None) -> Any:
    """A tensor averaged over every process (itself for one process)."""
    if context is None:
        return value
    import torch.distributed as dist

    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / context.world_size
