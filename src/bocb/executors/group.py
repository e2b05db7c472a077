"""One trial on several processes of this machine, started the way ``torchrun`` starts them.

The local executor hands a trial that asks for ``N`` processes (a study's ``processes_per_trial``)
to one slot, the group's leader, with ``N`` devices (one GPU each, or the CPU N times with gloo).
The leader spawns the ranks with torchrun's contract: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each rank's environment, and the rendezvous store hosted by
the launcher (``TORCHELASTIC_USE_AGENT_STORE``, as torchrun's agent does), no restarts (a trial
that fails is a result; the next run resumes it from its checkpoint). Each rank runs the same
:func:`bocb.executors.worker.execute` a single-process slot runs, and the trial joins the process
group itself (:func:`bocb.distributed.join_from_env`), so ``torchrun -m bocb train``, these groups
and Ray Train's workers all meet the trainer the same way.

Why not torchrun's own agent (``torch.distributed.launcher.elastic_launch``), which was tried
first: its rendezvous stores listen on every network interface (measured: two TCP servers on
``:::PORT`` in the leader for a two-process group on one machine), and nothing of a local trial
may be reachable from the network. Here the store listens on 127.0.0.1 only (a socket bound
there, handed to ``TCPStore`` as ``master_listen_fd``), and gloo and NCCL are told to use the
loopback interface (``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME=lo`` on Linux, unless already
set): NCCL's traffic inside one machine goes over NVLink/PCIe/shared memory anyway, the socket
is its bootstrap. ``tests/test_group.py`` lists the sockets a group listens on. For trials over
several machines, use ``torchrun`` (or Ray Train under ``--executor ray``) yourself.

- Rank 0's record is the trial's (the engine has only rank 0 write checkpoints, weights and
  progress); its progress events go to the runner's queue like any slot's.
- A rank whose trial fails makes the whole group fail at once: it writes its error to the trial's
  ``group/`` folder and exits non-zero, so the leader stops the other ranks (instead of leaving
  them waiting in a collective until the process group's timeout), and returns one ``failed``
  record naming each failed rank's error and how the group ended (a rank killed by a signal).
- Each rank's output (library warnings, tracebacks) goes to ``group/rank<N>.log`` in the trial's
  artifacts folder, not to the runner's terminal.
- No rank outlives its leader: each arms the parent-death signal and the watchdog first thing
  (:mod:`bocb.executors.orphans`); the leader itself dies with the runner like any slot.
- The ranks are spawned (fresh interpreters): a leader that earlier ran a trial on a GPU has CUDA
  initialised, which a forked child must not inherit. The imports cost each rank a few seconds,
  once per trial (measured on 2 idle cores: a tiny trial took 5.7 s of wall time on two ranks
  against 1.6 s in one process, the same 0.2 s of it training); a multi-GPU trial runs for hours.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_group"]

GROUP_DIR = "group"  # in the trial's artifacts folder: each failed rank's error


def _rank_main(local_rank: int, port: int, spec: dict[str, Any], config: dict[str, Any], claim: str,
               devices: list[str], threads: int, cores: int, leader_pid: int, events: Any, results: Any,
               trial_id: str) -> None:
    """One rank: the trial's :func:`~bocb.executors.worker.execute` on ``devices[local_rank]``;
    rank 0 sends the record through ``results``. Exits non-zero when this rank's trial failed (see the
    module doc). ``threads``: torch threads (0: torch's default, on GPUs); ``cores``: the slot's
    share of the cores, which sizes the streamed data's loader workers."""
    from bocb.executors.orphans import die_with_parent

    die_with_parent(leader_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops the group, as it stops slots
    folder = Path(config["artifacts_dir"]) / trial_id / GROUP_DIR
    # The rank's own output (library warnings, a traceback) to a file: the runner's terminal shows
    # its live view, not N copies of every warning.
    log = os.open(folder / f"rank{local_rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    world = len(devices)
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      TORCHELASTIC_USE_AGENT_STORE="True")
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    import torch

    from bocb.executors.local import SLOT_CORES_ENV, _Forward
    from bocb.executors.worker import WorkerConfig, execute

    if threads > 0:
        torch.set_num_threads(threads)
    os.environ[SLOT_CORES_ENV] = str(cores)
    progress = _Forward(events, trial_id) if local_rank == 0 and events is not None else None
    record = execute(spec, WorkerConfig(**config), devices[local_rank], progress, claim=claim)
    if record.get("status") == "failed":
        path = folder / f"rank{local_rank}.error.json"
        partial = path.with_suffix(".partial")  # renamed when whole: the leader never reads half a file
        partial.write_text(json.dumps({"error": record.get("error"), "traceback": record.get("traceback")}))
        os.replace(partial, path)
        raise SystemExit(1)
    if local_rank == 0:
        results.send(record)


def _loopback_store() -> tuple[Any, int]:
    """The group's rendezvous store, served by this process on 127.0.0.1 only, and its port. The
    store owns the listening socket from here on (it closes it when it is collected)."""
    from torch.distributed import TCPStore

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    store = TCPStore("127.0.0.1", port, is_master=True, master_listen_fd=listener.detach(), wait_for_workers=False)
    return store, port


def run_group(trial_id: str, spec: dict[str, Any], config: dict[str, Any], claim: str, devices: list[str],
              threads: int, events: Any = None, cores: int = 1) -> dict[str, Any]:
    """Run the trial ``trial_id`` (``spec``) on ``len(devices)`` processes of this machine (see the
    module doc) and return rank 0's record, or one ``failed`` record that names the ranks that failed."""
    import torch.multiprocessing as tmp

    folder = Path(config["artifacts_dir"]) / trial_id / GROUP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("rank*.error.json"), *folder.glob("rank*.log")]:  # a previous attempt's
        old.unlink()
    store, port = _loopback_store()
    # A pipe, not a queue: a queue's semaphores, left behind when the runner stops the group, made
    # the resource tracker warn about "leaked semaphore objects" on the user's terminal.
    results, to_leader = tmp.get_context("spawn").Pipe(duplex=False)
    record = None
    failure = None
    try:
        context = tmp.start_processes(
            _rank_main, args=(port, spec, config, claim, list(devices), threads, cores, os.getpid(),
                              events, to_leader, trial_id),
            nprocs=len(devices), join=False, start_method="spawn")
        while True:
            # Read while waiting: a record larger than the pipe's buffer holds rank 0 until it is read.
            if record is None and results.poll(0.5):
                record = results.recv()
            try:
                if context.join(timeout=0.1):
                    break
            except Exception as exc:  # noqa: BLE001 - a rank failed; start_processes stopped the others
                failure = exc
                break
    finally:
        del store  # stops serving: the group is over
    if failure is None and record is None:  # sent by rank 0 right before every rank exited cleanly
        record = results.recv() if results.poll(5) else None
        if record is None:
            failure = RuntimeError("rank 0 exited without a record")
    if failure is not None:
        # Every rank's own error, and how the group ended (a rank killed by a signal leaves no
        # error file, and the others' "connection closed" errors would blame the wrong rank).
        errors = [f"{path.name.split('.')[0]}: {json.loads(path.read_text())['error']}"
                  for path in sorted(folder.glob("rank*.error.json"))]
        if not errors or (getattr(failure, "exit_code", None) or 0) < 0:
            errors.append(_ended(failure))
        errors.append(f"each rank's output: {folder}/rank<N>.log")
        return {"trial_id": trial_id, "spec": spec, "status": "failed", "epochs": [], "claim": claim,
                "error": " ".join(f"{len(devices)}-process trial failed: {'; '.join(errors)}".split())}
    record["claim"] = claim
    return record


def _ended(failure: BaseException) -> str:
    """How the group ended, in a few words: the first rank that exited badly and how."""
    code = getattr(failure, "exit_code", None)
    rank = getattr(failure, "error_index", None)
    if code is not None and code < 0:
        return f"rank {rank} killed by signal {-code}" + (" (SIGKILL: often the out-of-memory killer)" if code == -9 else "")
    if code is not None:
        return f"rank {rank} exited with code {code}"
    return " ".join(str(failure).split())[:300]
