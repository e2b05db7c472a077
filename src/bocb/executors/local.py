"""Local executor: slots of long-lived worker processes, one trial per slot at a time.

Each slot is a separate process, so a trial that crashes the interpreter, runs out of memory or
hangs takes down only its own slot: the parent records the trial ``failed`` with the cause and
starts a fresh worker. Workers live across trials so the dataset load is paid once per slot, not
per trial, and on Linux they are forked from a ``forkserver`` that imported torch, timm and the
trainer once (:data:`PRELOAD`): importing those costs 5-10 s of CPU, which every slot used to pay
at start (twelve slots starting at once on a 16-core GPU machine spent about a minute in it). The
fork server is a fresh interpreter that has only imported modules (no CUDA, no threads started),
so its children start clean, as under ``spawn``, which other systems use. Python keeps one fork
server per process; it lives until that process exits (should it die, every slot's trial is
recorded failed and the next worker starts a new one). Its children inherit its environment as it
was when it started: bocb's settings travel in :class:`~bocb.executors.worker.WorkerConfig`, but
variables torch reads (``CUDA_VISIBLE_DEVICES``, ``PYTORCH_CUDA_ALLOC_CONF``) are those of the
moment the server started: under ``bocb run`` / :func:`bocb.api.run_study`, the start of the run,
before the study is read.

Several slots may share one GPU (a small CIFAR trial leaves most of an H100 idle); slots are
spread round-robin over ``devices``. On CPU the cores are split evenly between slots.
Limits: ``time_limit_s`` per trial (the worker is killed when it is exceeded) and
``memory_limit_gb`` on the resident memory of the worker and the processes it started (loader
workers, a multi-process trial's ranks; proportional set sizes read from /proc; killed above it).

No worker outlives the runner: each arms the parent-death signal and a watchdog first thing
(:mod:`bocb.executors.orphans`), and a forked one lets go of the fork server's "alive" pipe, so
that the server exits the moment the runner dies and the kernel then kills its workers. Every trial is submitted with the runner's claim token, fenced into the
trial's directory before the worker sees it (:mod:`bocb.fencing`).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bocb.executors.orphans import die_with_parent
from bocb.fencing import raise_fence

if TYPE_CHECKING:
    from bocb.executors.worker import WorkerConfig

# What the fork server imports once for all workers: the trainer, and torch, torchvision and timm,
# which the trainer's modules name lazily (bocb.lazy) and bocb.executors.preload imports outright.
# Nothing here may touch CUDA at import (tests/test_executors.py checks). The guard comes first: it
# arms the server's parent-death signal before the seconds of imports.
SLOT_CORES_ENV = "BOCB_SLOT_CORES"  # set in each worker: its slot's share of the cores (bocb.trial)
# What a launcher (torchrun, bocb.executors.group) sets for each process of a multi-process trial.
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_USE_AGENT_STORE")

PRELOAD = ["bocb.executors.server_guard", "bocb.executors.local", "bocb.executors.worker", "bocb.trial",
           "bocb.diagnostics.snapshot", "bocb.executors.preload"]


def worker_context() -> Any:
    """The multiprocessing context workers start in: ``forkserver`` with :data:`PRELOAD` on Linux,
    else ``spawn`` (forking a process that loaded system frameworks is unsafe on macOS)."""
    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


_GUARD_ENV = "BOCB_FORK_SERVER_PARENT"  # read (and removed) by bocb.executors.server_guard


def start_fork_server() -> None:
    """Start the workers' fork server now (Linux; elsewhere nothing), without waiting for it.

    ``bocb run`` calls this first thing, so that the server's imports (torch, timm, the trainer:
    5-10 s of CPU) run while the runner parses the study and loads the data, instead of after
    (measured on 2 idle cores: the first trial claimed 8.9 s after start instead of 14.6 s). Should
    the command then stop (bad input, Ctrl-C, SIGKILL), the server dies with it
    (:mod:`bocb.executors.server_guard`). Later workers use this server; starting it twice is
    harmless."""
    if not sys.platform.startswith("linux"):
        return
    import threading

    worker_context()  # sets the preload list
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        # The parent-death signal follows the thread that started the server, which may end while
        # other runs of this process still use it: unguarded, the server ends with the process.
        forkserver.ensure_running()
        return
    # The server keeps the environment of the moment it starts; the variable tells its guard whose
    # death to follow (the guard removes it from the server, so workers never see it), and is
    # removed here again so that nothing else this process starts sees it.
    previous = os.environ.get(_GUARD_ENV)
    os.environ[_GUARD_ENV] = str(os.getpid())
    try:
        forkserver.ensure_running()
    finally:
        if previous is None:
            os.environ.pop(_GUARD_ENV, None)
        else:
            os.environ[_GUARD_ENV] = previous


def _release_fork_server() -> None:
    """Close this worker's copy of the runner's end of the fork server's "alive" pipe.

    The fork server exits when that pipe reaches EOF, i.e. when every copy is closed, and each
    forked child gets a copy (so that it could start processes through the server itself, which
    workers never do). Held by the workers, it kept the server alive after the runner's death, and
    with it the workers, whose parent-death signal is tied to the server: only the watchdog
    remained (measured: a worker outlived a SIGKILLed runner by its watchdog period). The
    attribute is a private one of CPython's ``multiprocessing.forkserver`` (checked on 3.11); where
    it is absent nothing is closed and the watchdog stays the fallback."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None


# A running trial's step events reach the runner at most this often (an epoch's first and last
# step and every evaluated epoch always do): a live view redraws about once a second, and a small
# model on a GPU takes hundreds of steps a second, each of which would otherwise be pickled
# through the queue.
STEP_EVENT_EVERY_S = 0.5


class _Forward:
    """A trial's progress callback in the worker: puts its events on the runner's queue as
    ``(trial_id, event)``, each stamped with this host's clock (``"t"``, seconds), step events
    thinned to one per :data:`STEP_EVENT_EVERY_S`.

    The queue already carried epoch events to the runner; step events take the same way, so a
    running trial's epoch, step and throughput are known while it runs (the store gets its epoch
    rows only when it finishes, and a runner reading them back would add a write per epoch to
    every trial of every study). Timed here, where the steps happen: the runner reads the queue
    about once a second, so arrival times would measure its polling, not the trial."""

    def __init__(self, events: Any, trial_id: str):
        self.events, self.trial_id, self.sent = events, trial_id, 0.0

    def __call__(self, event: dict) -> None:
        now = time.time()
        if event["event"] == "step" and 1 < event["step"] < event["steps"] and now - self.sent < STEP_EVENT_EVERY_S:
            return
        self.sent = now
        self.events.put((self.trial_id, {**event, "t": now}))


def _worker_main(conn: Connection, events: Any, config: dict[str, Any], device: str, threads: int,
                 cores: int, runner_pid: int, watchdog_s: float = 1.0) -> None:
    # First, before torch is imported (seconds under spawn): from here on this worker dies with the
    # runner. This module and the arguments are kept light (the config travels as a dict) so that
    # a spawned slot's start-up reaches this line at once.
    die_with_parent(runner_pid, watchdog_s)
    # Ctrl-C in a terminal reaches the whole process group: the runner handles it and stops its
    # workers itself (shutdown), so a worker's own KeyboardInterrupt would only print a traceback
    # from the middle of a step. Forked from the guarded fork server a worker inherits this
    # already; under spawn (macOS) it does not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _release_fork_server()  # a no-op in a spawned worker
    # Started daemonic (so that multiprocessing ends the slots of a runner that exits without
    # shutdown), a worker may still start children of its own: streamed data's DataLoader workers
    # and a multi-process trial's ranks, which multiprocessing refuses a daemonic process. Those
    # children die with this worker as it dies with the runner (parent-death signal, watchdog).
    mp.current_process().daemon = False
    import torch

    from bocb.executors.worker import WorkerConfig, execute

    config = WorkerConfig(**config)

    if threads > 0:
        torch.set_num_threads(threads)
    # This slot's share of the cores, for the streamed data's loader workers (bocb.trial): every
    # slot defaulting to the whole machine's would start slots x cores processes.
    os.environ[SLOT_CORES_ENV] = str(cores)
    # A slot's trial is one process unless the slot leads a group (bocb.executors.group, which sets
    # these for its ranks): a runner started where a launcher's variables are set (inside a SLURM
    # or torchrun allocation) must not have every slot join that launcher's process group.
    for name in LAUNCHER_ENV:
        os.environ.pop(name, None)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        trial_id, spec, claim, devices = task
        if len(devices) > 1:  # this slot leads a multi-process trial (bocb.executors.group)
            from bocb.executors.group import run_group

            record = run_group(trial_id, spec, dataclasses.asdict(config), claim, devices, threads, events, cores)
        else:
            record = execute(spec, config, device, _Forward(events, trial_id), claim=claim)
        conn.send((trial_id, record))


@dataclass
class _Slot:
    index: int
    device: str
    process: Any = None
    conn: Connection | None = None
    trial_id: str | None = None
    spec: dict | None = None
    claim: str | None = None
    started: float = 0.0
    # A slot lent to another slot's multi-process trial: it holds that trial's id (so it is not
    # free) but its own worker idles; the leader's slot runs the group.
    lent_to: int | None = None


def _rss_gb(pid: int) -> float:
    """The resident memory of ``pid`` and every process below it (a streamed trial's loader workers,
    a group's ranks and theirs), in GB: each process's proportional set size (``Pss`` of
    ``/proc/PID/smaps_rollup``), so pages a forked loader worker shares with its parent count
    once; ``VmRSS`` where the kernel has no rollup."""
    from bocb.executors.sockets import descendants

    total_kb = 0
    for p in {pid} | descendants(pid):
        total_kb += _proc_kb(f"/proc/{p}/smaps_rollup", "Pss:") or _proc_kb(f"/proc/{p}/status", "VmRSS:")
    return total_kb / 1024**2


def _proc_kb(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class LocalExecutor:
    """``submit`` trials into free slots; ``poll`` returns finished ``(trial_id, record)`` pairs."""

    def __init__(self, config: WorkerConfig, slots: int = 1, devices: list[str] | None = None,
                 time_limit_s: float | None = None, memory_limit_gb: float | None = None,
                 watchdog_s: float = 1.0, processes: Callable[[dict[str, Any]], int] | None = None):
        """``watchdog_s``: how often a worker checks that the runner lives, the fallback to the
        kernel's parent-death signal (:mod:`bocb.executors.orphans`). ``processes(spec)``: how
        many processes a trial runs on (default 1); see :meth:`submit`."""
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.config = config
        self.time_limit_s = time_limit_s
        self.memory_limit_gb = memory_limit_gb
        self.watchdog_s = watchdog_s
        start_fork_server()  # a no-op when bocb run started it early
        self._ctx = worker_context()
        self._events = self._ctx.Queue()
        devices = devices or [config.device]
        cpu_only = all(d == "cpu" or (d == "auto" and not _cuda_available()) for d in devices)
        self._cores = max(1, (os.cpu_count() or 1) // slots)  # each slot's share of the machine
        self._threads = self._cores if cpu_only else 0
        self._slots = [_Slot(i, devices[i % len(devices)]) for i in range(slots)]
        self._cpu_only = cpu_only
        self._processes = processes or (lambda spec: 1)
        self._waiting: list[tuple[str, dict[str, Any], str, int]] = []  # multi-process trials, in order
        self._refused: list[tuple[str, dict[str, Any]]] = []  # records to hand back at the next poll
        for slot in self._slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        parent, child = self._ctx.Pipe()
        slot.process = self._ctx.Process(
            target=_worker_main,
            args=(child, self._events, dataclasses.asdict(self.config), slot.device, self._threads, self._cores,
                  os.getpid(), self.watchdog_s),
            daemon=True, name=f"bocb-slot-{slot.index}",
        )
        slot.process.start()
        child.close()
        slot.conn = parent
        slot.trial_id = slot.spec = None

    @property
    def free_slots(self) -> int:
        # A multi-process trial waiting for its slots takes the next free ones: nothing else may.
        return 0 if self._waiting else sum(1 for s in self._slots if s.trial_id is None)

    @property
    def running(self) -> list[str]:
        return ([s.trial_id for s in self._slots if s.trial_id is not None and s.lent_to is None]
                + [w[0] for w in self._waiting] + [r[0] for r in self._refused])

    def submit(self, trial_id: str, spec: dict[str, Any], claim: str) -> None:
        """Run ``spec`` under the runner's ``claim`` token (fenced in before the worker starts).

        A trial that runs on ``n > 1`` processes (``processes(spec)``) takes ``n`` slots: on GPUs
        one free slot on each of ``n`` different GPUs (other slots of those GPUs may still run
        small trials beside it), on a CPU any ``n`` slots (gloo processes, each with its slot's
        cores). Until that many are free it waits, and no other trial starts (:attr:`free_slots`
        is 0), so it cannot be starved by single-slot trials. One that can never fit (more
        processes than this run has GPUs or slots) comes back ``failed`` at the next poll, saying
        what to change."""
        n = max(1, int(self._processes(spec)))
        if n > 1:
            capacity = self._group_capacity()
            if n > capacity:
                what = "slots (--slots)" if self._cpu_only else "GPUs (--gpus)"
                error = (f"the trial runs on {n} processes but this run has {capacity} {what}: give the run "
                         f"{n}, or ask for fewer (processes_per_trial, --processes-per-trial)")
                self._refused.append((trial_id, {"trial_id": trial_id, "spec": spec, "status": "failed",
                                                 "error": error, "epochs": [], "claim": claim}))
                return
            raise_fence(Path(self.config.artifacts_dir) / trial_id, claim)
            self._waiting.append((trial_id, spec, claim, n))
            self._start_waiting()
            return
        slot = next((s for s in self._slots if s.trial_id is None), None)
        if slot is None:
            raise RuntimeError("no free slot")
        raise_fence(Path(self.config.artifacts_dir) / trial_id, claim)
        slot.conn.send((trial_id, spec, claim, [slot.device]))
        slot.trial_id, slot.spec, slot.claim, slot.started = trial_id, spec, claim, time.time()

    def _group_capacity(self) -> int:
        return len(self._slots) if self._cpu_only else len({s.device for s in self._slots})

    def _group_slots(self, n: int) -> list[_Slot] | None:
        """``n`` free slots for one multi-process trial (distinct GPUs unless on a CPU), or None."""
        chosen: list[_Slot] = []
        for slot in self._slots:
            if slot.trial_id is None and (self._cpu_only or slot.device not in {c.device for c in chosen}):
                chosen.append(slot)
                if len(chosen) == n:
                    return chosen
        return None

    def _start_waiting(self) -> None:
        while self._waiting:
            trial_id, spec, claim, n = self._waiting[0]
            chosen = self._group_slots(n)
            if chosen is None:
                return
            self._waiting.pop(0)
            leader, *lent = chosen
            leader.conn.send((trial_id, spec, claim, [s.device for s in chosen]))
            leader.trial_id, leader.spec, leader.claim, leader.started = trial_id, spec, claim, time.time()
            for slot in lent:
                slot.trial_id, slot.lent_to = trial_id, leader.index

    def _release_lent(self, leader: _Slot) -> None:
        for slot in self._slots:
            if slot.lent_to == leader.index:
                slot.trial_id = slot.lent_to = None

    def poll(self, timeout: float = 1.0) -> list[tuple[str, dict[str, Any]]]:
        finished, self._refused = self._refused, []
        busy = {s.conn: s for s in self._slots if s.trial_id is not None and s.lent_to is None}
        for conn in wait(list(busy), timeout=0 if finished else timeout) if busy else []:
            slot = busy[conn]
            try:
                trial_id, record = conn.recv()
                finished.append((trial_id, record))
                slot.trial_id = slot.spec = None
                self._release_lent(slot)
            except (EOFError, OSError):
                finished.append(self._lost(slot, _death_cause(slot.process)))
        now = time.time()
        for slot in self._slots:
            if slot.trial_id is None or slot.lent_to is not None:
                if not slot.process.is_alive():
                    # An idle or lent worker that died (the out-of-memory killer, say): a new one,
                    # before anything is sent to it. A lent slot stays lent until its leader ends.
                    lent = slot.trial_id, slot.lent_to
                    slot.process.join(timeout=10)
                    self._start(slot)
                    slot.trial_id, slot.lent_to = lent
                continue
            if self.time_limit_s and now - slot.started > self.time_limit_s:
                finished.append(self._lost(slot, f"exceeded the time limit of {self.time_limit_s:g} s"))
            elif self.memory_limit_gb and _rss_gb(slot.process.pid) > self.memory_limit_gb:
                finished.append(self._lost(slot, f"exceeded the memory limit of {self.memory_limit_gb:g} GB"))
            elif not slot.process.is_alive():
                finished.append(self._lost(slot, _death_cause(slot.process)))
        self._start_waiting()
        return finished

    def _lost(self, slot: _Slot, cause: str) -> tuple[str, dict[str, Any]]:
        """Kill the slot's worker, make a failed record for its trial, start a new worker."""
        trial_id, spec, claim = slot.trial_id, slot.spec, slot.claim
        if slot.process.is_alive():
            slot.process.kill()  # a group's ranks die with their leader (bocb.executors.group)
        slot.process.join(timeout=10)
        self._release_lent(slot)
        self._start(slot)
        record = {"trial_id": trial_id, "spec": spec, "status": "failed",
                  "error": f"worker process lost: {cause}", "epochs": [], "claim": claim}
        return trial_id, record

    def events(self) -> list[tuple[str, dict]]:
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def shutdown(self) -> None:
        """Stop every worker now (running trials are abandoned; their checkpoints remain)."""
        self._waiting.clear()
        for slot in self._slots:
            if slot.process is not None and slot.process.is_alive():
                if slot.trial_id is None or slot.lent_to is not None:  # idle (a lent slot's worker is)
                    try:
                        slot.conn.send(None)
                    except OSError:
                        pass
                slot.process.join(timeout=0 if slot.trial_id and slot.lent_to is None else 5)
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join(timeout=10)


def _death_cause(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return "worker stopped answering"
    if code < 0:
        hint = " (SIGKILL: often the out-of-memory killer)" if code == -9 else ""
        return f"worker killed by signal {-code}{hint}"
    return f"worker exited with code {code}"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
