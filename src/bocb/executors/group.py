"""One trial on several processes of this machine, started the way ``torchrun`` starts them.

The local executor hands a trial that asks for ``N`` processes (a study's ``processes_per_trial``)
to one slot, the group's leader, with ``N`` devices (one GPU each, or the CPU N times with gloo).
The leader starts the ranks with torchrun's own engine, ``torch.distributed.launcher.elastic_launch``
(the library ``torchrun`` is a command line over): a c10d rendezvous on 127.0.0.1, ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set for each rank, no restarts
(a trial that fails is a result; the next run resumes it from its checkpoint). Each rank runs
the same :func:`bocb.executors.worker.execute` a single-process slot runs; the trial joins the
process group itself (:func:`bocb.distributed.join_from_env`), so ``torchrun -m bocb train``, these
groups and Ray Train's workers all meet the trainer the same way.

- Rank 0's record is the trial's (the engine has only rank 0 write checkpoints, weights and
  progress); its progress events go to the runner's queue like any slot's.
- A rank whose trial fails makes the whole group fail at once: it writes its error to the trial's
  ``group/`` folder and exits non-zero, so the launcher stops the other ranks (instead of leaving
  them waiting in a collective until the process group's timeout), and the leader returns one
  ``failed`` record naming each failed rank's error.
- No rank outlives its leader: each arms the parent-death signal and the watchdog first thing
  (:mod:`bocb.executors.orphans`); the leader itself dies with the runner like any slot.
- The ranks are spawned (fresh interpreters): a leader that earlier ran a trial on a GPU has CUDA
  initialised, which a forked child must not inherit. The imports cost each rank a few seconds,
  once per trial; a multi-GPU trial runs for hours.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

__all__ = ["run_group"]

GROUP_DIR = "group"  # in the trial's artifacts folder: each failed rank's error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(spec: dict[str, Any], config: dict[str, Any], claim: str, devices: list[str], threads: int,
               leader_pid: int, events: Any, trial_id: str) -> dict[str, Any] | None:
    """One rank: the trial's :func:`~bocb.executors.worker.execute` on ``devices[LOCAL_RANK]``;
    rank 0 returns the record. Raises when this rank's trial failed (see the module doc)."""
    from bocb.executors.orphans import die_with_parent

    die_with_parent(leader_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops the group, as it stops slots
    import torch

    from bocb.executors.local import SLOT_CORES_ENV, _Forward
    from bocb.executors.worker import WorkerConfig, execute

    if threads > 0:
        torch.set_num_threads(threads)
    os.environ[SLOT_CORES_ENV] = str(max(threads, 1))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    progress = _Forward(events, trial_id) if rank == 0 and events is not None else None
    record = execute(spec, WorkerConfig(**config), devices[local_rank], progress, claim=claim)
    if record.get("status") == "failed":
        folder = Path(config["artifacts_dir"]) / trial_id / GROUP_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rank{rank}.error.json").write_text(json.dumps({"error": record.get("error"),
                                                                   "traceback": record.get("traceback")}))
        raise RuntimeError(f"rank {rank}: {record.get('error')}")
    return record if rank == 0 else None


def run_group(trial_id: str, spec: dict[str, Any], config: dict[str, Any], claim: str, devices: list[str],
              threads: int, events: Any = None) -> dict[str, Any]:
    """Run the trial ``trial_id`` (``spec``) on ``len(devices)`` processes of this machine (see the module doc) and
    return rank 0's record, or one ``failed`` record that names the ranks that failed."""
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    folder = Path(config["artifacts_dir"]) / trial_id / GROUP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("rank*.error.json"):  # a previous attempt's
        old.unlink()
    launch = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=len(devices), run_id=f"bocb-{trial_id}",
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0,
        start_method="spawn", monitor_interval=0.5,
        # Each rank's output to files (the runner's terminal shows a live view, not four tracebacks).
        logs_specs=DefaultLogsSpecs(log_dir=str(folder / "logs"), redirects=Std.ALL),
    )
    # The launcher logs every failure at ERROR with the ranks' tracebacks; the record says it in one line.
    quiet = logging.getLogger("torch.distributed.elastic")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(launch, _rank_main)(spec, config, claim, list(devices), threads, os.getpid(),
                                                     events, trial_id)
    except ChildFailedError as exc:
        errors = []
        for path in sorted(folder.glob("rank*.error.json")):
            errors.append(f"{path.name.split('.')[0]}: {json.loads(path.read_text())['error']}")
        if not errors:  # a rank died without a record (killed, out of memory)
            errors = [f"rank {rank}: exit code {failure.exitcode}" for rank, failure in sorted(exc.failures.items())]
        return {"trial_id": trial_id, "spec": spec, "status": "failed", "epochs": [], "claim": claim,
                "error": f"{len(devices)}-process trial failed: " + "; ".join(errors)}
    finally:
        quiet.setLevel(level)
    record = results[0]
    record["claim"] = claim
    return record
