"""Ray executor: trials as Ray tasks with fractional GPUs; records come back to the driver.

The driver (``bocb run --executor ray``) stays the store's only writer: it claims trials, submits
them as tasks and stores the records the tasks return, so the store can be a plain SQLite file on
the driver's machine even when the workers are a cluster. Worker processes are reused by Ray,
and :mod:`bocb.executors.worker` keeps each loaded dataset in them across trials.

Without ``address`` a private local Ray instance is started (``address="local"``, no dashboard)
and shut down by :meth:`RayExecutor.shutdown`; with ``address`` the executor connects to an
existing cluster and leaves it running (what that cluster exposes is its owner's choice).

Loopback only. Ray 2.60 turns ``_node_ip_address="127.0.0.1"`` into the machine's external
address (``services.resolve_ip_for_localhost``), and then its GCS, raylet, workers and the
driver's own gRPC server listen on every interface. The one switch that keeps a Linux node on
loopback is Ray's ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (single-node mode: the node address is
127.0.0.1, and every component binds it), so the private instance is started with it, set for
this process and inherited by every Ray process. Then the executor checks rather than trusts:
the listening sockets of every process below this one are read from ``/proc``
(:mod:`bocb.executors.sockets`), and any that is not loopback stops the instance with an error
(fail closed). Workers Ray starts later inherit the node address; the test suite lists their
sockets too.

Processes of the private instance die with the driver. Ray's own fate sharing (parent-death
signal on the GCS and raylet; workers exit with their raylet) leaves its dashboard and
runtime-env agents running after a SIGKILL of the driver (measured with Ray 2.60), so the
executor also starts a reaper sidecar (:func:`bocb.executors.orphans.start_reaper`) that kills
whatever of the instance's process tree survives the driver.

A trial on several processes (a study's ``processes_per_trial``, ``bocb run --processes-per-trial``:
the ``processes`` callable) runs as one Ray Train ``TorchTrainer`` (:mod:`bocb.executors.ray_train`):
``n`` workers, each on a whole GPU when the run has GPUs (NCCL), else on one CPU (gloo), each
running the same :func:`bocb.executors.worker.execute` a task runs, on the device Ray Train
assigned. Ray Train 2.60 (its V2, the default) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each worker and joins the process group before the trial
starts; :func:`bocb.distributed.join_from_env` reads the one and keeps the other, as under
torchrun. The rules are :mod:`bocb.distributed`'s: the recipe's global batch is split across the
workers (``batch_size / n`` each, which must divide evenly), gradients are averaged, and the
learning rate stays the recipe's (the batch did not change); rank 0 alone writes checkpoints and
weights. Rank 0's record comes back to the driver as the train function's return value (Ray
Train's ``Result.return_value``) through the task below, so the driver stays the store's only
writer. A rank whose trial fails raises after its record, so Ray Train stops every rank at once
(no retries: ``FailureConfig(max_failures=0)``), and the trial comes back as one ``failed`` record
naming each failed rank's error in one line (``2-process trial failed under Ray Train: rank 0:
ValueError: ...``).

- ``TorchTrainer.fit`` blocks until the trial ends, so it runs in a Ray task of its own that holds
  no resources (``num_cpus=0``; the workers hold the CPUs and GPUs) and whose process exits after
  it (``max_calls=1``): ``submit`` returns at once and ``poll`` sees it end like any task. (Called
  in the task's main thread, ``fit`` installs Ray Train's SIGINT handler, which aborts the run.)
- Capacity: the trial takes ``n`` slots on a CPU-only cluster and ``n`` whole GPUs, i.e.
  ``n * slots`` slots, on GPUs (two workers never share one GPU). Until they are free it waits and
  nothing else starts (``free_slots`` is 0), as under the local executor; one that can never fit
  (``n`` above the run's GPUs, its ``--slots`` on CPUs, or the cluster's CPUs) comes back
  ``failed`` at once with what to change.
- Stopping: at ``time_limit_s`` (and at :meth:`RayExecutor.shutdown` on a cluster that stays) the
  task is interrupted (``ray.cancel`` without force: Ray calls ``_thread.interrupt_main``, which
  runs the task's SIGINT handler, Ray Train's): Ray Train aborts the run, its workers stop, and
  the slots count as free once the task has ended (about a second); a task still running
  :data:`STOP_GRACE_S` later is killed. Ray 2.60 keeps a placement group until both its creator
  (the run's controller, an actor the task owns) and the driver's job are dead, and Ray Train's
  own cleanup actor asks Ray's state API, which needs the dashboard the private instance does not
  start; an abort while the workers are still starting (measured) or a kill thus left the CPUs
  and GPUs reserved until the end of the run. So ``poll`` removes, every :data:`SWEEP_EVERY_S`
  once a TorchTrainer ran, this job's placement groups whose creating actor is dead
  (:func:`_remove_orphaned_placement_groups`). The private instance's shutdown kills everything
  at once.
- Ray Train keeps its run state under the trial's artifacts folder
  (``<artifacts>/<trial_id>/ray_train``, ``RunConfig.storage_path``; never ``~/ray_results``) and
  leaves the workers' working directory alone (``RAY_CHDIR_TO_TRIAL_DIR=0``: relative paths in the
  run's configuration mean what they mean to the driver).
- Loopback: Ray Train's own process-group setup starts torch's TCP store on rank 0 bound to every
  interface (measured: ``:: MASTER_PORT``), and gloo and NCCL choose an interface from the host
  name. On the private instance the group is joined by :class:`~bocb.executors.ray_train.LoopbackTorchConfig`
  instead: the store's socket bound to 127.0.0.1 by rank 0, gloo and NCCL on ``lo``
  (``tests/test_ray_train.py`` lists every socket of the instance while a trial runs). On a
  cluster (``--address``) Ray Train's setup is used as it is.
- Limits: Ray Train starts a controller and a few helper actors per trial (about 20 s before
  training on two busy cores; nothing next to a multi-GPU trial's hours); no progress events (as
  for tasks); each worker reserves one CPU (Ray Train's default) whatever its data loading uses;
  every rank resumes from the checkpoint rank 0 wrote, so on a cluster the artifacts folder must
  be shared (as for any trial that may resume on another node); Ray Train V1
  (``RAY_TRAIN_V2_ENABLED=0``) is refused with a failed record saying so.

On a cluster (see README): every node needs bocb installed in the same environment (or a Ray
``runtime_env``), the dataset reachable at the same path or in each node's cache, and
``artifacts_dir`` on a shared filesystem so a trial resumed on another node finds its checkpoint.
SLURM: start ``ray start --head`` in the job's first task and ``ray start --address=HEAD:6379`` on
the others (Ray's ``symmetric-run`` or the documented sbatch template), then ``bocb run ...
--executor ray --address HEAD:6379`` from the head. Kubernetes: a KubeRay RayCluster, and the same
command with its head service address.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bocb.executors import orphans, sockets
from bocb.executors.worker import WorkerConfig
from bocb.fencing import raise_fence

# How long a TorchTrainer interrupted at its time limit (or by shutdown on a cluster) may take to
# stop its workers and release their resources before its task is killed (see the module doc).
STOP_GRACE_S = 30.0
SWEEP_EVERY_S = 2.0  # how often poll looks for placement groups a stopped TorchTrainer left behind

# Ray's single-node switch (read by ray._private.ray_constants at import): 0 = node address 127.0.0.1.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayExposedError(RuntimeError):
    """The private Ray instance listens on a non-loopback address; it was stopped."""


def _start_private_ray(num_cpus: int | None) -> Any:
    """Start a local Ray instance listening on loopback only, or raise :class:`RayExposedError`."""
    os.environ[_LOOPBACK_ENV] = "0"
    import ray
    from ray._private import ray_constants

    # When ray was imported before the variable was set, its constant already said "cluster".
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    exposed = [s for s in sockets.listening(sockets.descendants(os.getpid()) | {os.getpid()})
               if not s.loopback]
    node_ip = ray.util.get_node_ip_address()
    if exposed or not sockets.is_loopback(node_ip):
        ray.shutdown()
        what = "; ".join(map(str, exposed)) or f"node address {node_ip}"
        raise RayExposedError(f"the private Ray instance listened beyond loopback ({what}); stopped it. "
                              f"Start a Ray cluster yourself and pass --address to choose what it exposes")
    return ray


def _execute(spec: dict[str, Any], config: WorkerConfig, claim: str) -> dict[str, Any]:
    from bocb.executors.local import LAUNCHER_ENV
    from bocb.executors.worker import execute

    # A one-process trial: a driver started inside a torchrun/SLURM allocation passes that
    # allocation's variables to Ray's workers, and the trial would wait to join its process group.
    for name in LAUNCHER_ENV:
        os.environ.pop(name, None)

    return execute(spec, config, claim=claim)


def _fit(trial_id: str, spec: dict[str, Any], worker: dict[str, Any], claim: str, processes: int, use_gpu: bool,
         loopback: bool) -> dict[str, Any]:
    """A multi-process trial: Ray Train's ``TorchTrainer.fit`` (:mod:`bocb.executors.ray_train`)."""
    from bocb.executors.ray_train import fit

    return fit(trial_id, spec, worker, claim, processes, use_gpu, loopback)


class RayExecutor:
    """Up to ``slots`` trials in flight per GPU (or in total on CPU-only clusters); a trial on
    ``n > 1`` processes (``processes(spec)``) runs as one Ray Train ``TorchTrainer`` (module doc)."""

    def __init__(self, config: WorkerConfig, slots: int = 1, address: str | None = None,
                 gpus: int | None = None, time_limit_s: float | None = None, num_cpus: int | None = None,
                 processes: Callable[[dict[str, Any]], int] | None = None):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        import ray

        self._owns = False
        self._reaper = None
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                # The reaper first: it must know the tree from its first process on.
                self._reaper = orphans.start_reaper()
                try:
                    ray = _start_private_ray(num_cpus)
                except BaseException:
                    orphans.stop_reaper(self._reaper)
                    raise
                self._owns = True
        self._ray = ray
        self._loopback = self._owns  # Ray Train's process groups on 127.0.0.1 too (bocb.executors.ray_train)
        resources = ray.cluster_resources()
        cluster_gpus = int(resources.get("GPU", 0))
        gpu_count = min(gpus, cluster_gpus) if gpus is not None else cluster_gpus
        self._slots, self._gpus, self._cpus = slots, gpu_count, int(resources.get("CPU", 0))
        self._capacity = slots * gpu_count if gpu_count else slots
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if gpu_count:
            options["num_gpus"] = 1.0 / slots
        self._task = ray.remote(**options)(_execute)
        # TorchTrainer.fit blocks until the trial ends: it runs in a task of its own that holds
        # nothing (Ray Train's workers hold the CPUs and GPUs), so the driver never waits on it.
        # Its process exits after it (max_calls=1), and with it whatever Ray Train left behind.
        self._fit = ray.remote(num_cpus=0, max_retries=0, max_calls=1)(_fit)
        self._processes = processes or (lambda spec: 1)
        self.config = config
        self.time_limit_s = time_limit_s
        # ref -> (trial_id, spec, started, claim, slots taken); a TorchTrainer's task takes more than one
        self._inflight: dict[Any, tuple[str, dict, float, str, int]] = {}
        # TorchTrainers asked to stop (their trials already reported): ref -> (force-kill time, slots taken)
        self._stopping: dict[Any, tuple[float, int]] = {}
        self._groups: set[Any] = set()  # the refs of TorchTrainer tasks
        self._next_sweep: float | None = None  # when to look for orphaned placement groups (None: never)
        self._waiting: list[tuple[str, dict[str, Any], str, int]] = []  # multi-process trials, in order
        self._refused: list[tuple[str, dict[str, Any]]] = []  # records to hand back at the next poll

    @property
    def free_slots(self) -> int:
        # A multi-process trial waiting for its slots takes the next free ones: nothing else may.
        return 0 if self._waiting else self._capacity - self._taken()

    def _taken(self) -> int:
        return sum(entry[4] for entry in self._inflight.values()) + sum(n for _, n in self._stopping.values())

    @property
    def running(self) -> list[str]:
        return ([entry[0] for entry in self._inflight.values()] + [w[0] for w in self._waiting]
                + [r[0] for r in self._refused])

    def submit(self, trial_id: str, spec: dict[str, Any], claim: str) -> None:
        """Run ``spec`` under the runner's ``claim`` token (fenced in before the task starts).

        A trial on ``n > 1`` processes takes ``n`` slots on a CPU-only cluster and ``n`` whole GPUs
        (``n * slots`` slots) on GPUs; until they are free it waits and no other trial starts
        (:attr:`free_slots` is 0). One that can never fit comes back ``failed`` at the next poll,
        saying what to change."""
        n = max(1, int(self._processes(spec)))
        if n > 1:
            error = self._never_fits(n)
            if error:
                self._refused.append((trial_id, _failed(trial_id, spec, error, claim)))
                return
            raise_fence(Path(self.config.artifacts_dir) / trial_id, claim)
            self._waiting.append((trial_id, spec, claim, n))
            self._start_waiting()
            return
        raise_fence(Path(self.config.artifacts_dir) / trial_id, claim)
        ref = self._task.remote(spec, self.config, claim)
        self._inflight[ref] = (trial_id, spec, time.time(), claim, 1)

    def _never_fits(self, n: int) -> str | None:
        """Why a trial on ``n`` processes can never run here, or None."""
        if self._gpus:
            if n > self._gpus:
                return (f"the trial runs on {n} processes (one GPU each) but this run has {self._gpus} GPUs "
                        f"(--gpus, or the Ray cluster's): give the run {n}, or ask for fewer "
                        f"(processes_per_trial, --processes-per-trial)")
            return None
        if n > self._slots:
            return (f"the trial runs on {n} processes but this run has {self._slots} slots (--slots): give the run "
                    f"{n}, or ask for fewer (processes_per_trial, --processes-per-trial)")
        if n > self._cpus:
            return (f"the trial runs on {n} processes (one CPU each) but the Ray cluster has {self._cpus} CPUs: "
                    f"ask for fewer (processes_per_trial, --processes-per-trial) or use a larger cluster")
        return None

    def _start_waiting(self) -> None:
        while self._waiting:
            trial_id, spec, claim, n = self._waiting[0]
            need = n * self._slots if self._gpus else n  # a whole GPU per worker
            if self._capacity - self._taken() < need:
                return
            self._waiting.pop(0)
            use_gpu = bool(self._gpus) and self.config.device != "cpu"  # one GPU per worker
            ref = self._fit.remote(trial_id, spec, dataclasses.asdict(self.config), claim, n, use_gpu, self._loopback)
            self._inflight[ref] = (trial_id, spec, time.time(), claim, need)
            self._groups.add(ref)
            self._next_sweep = self._next_sweep or time.time()

    def poll(self, timeout: float = 1.0) -> list[tuple[str, dict[str, Any]]]:
        ray = self._ray
        finished, self._refused = self._refused, []
        if self._inflight or self._stopping:
            # A stopping TorchTrainer is waited on too: a trial waiting for its slots starts when it ends.
            refs = [*self._inflight, *self._stopping]
            ready, _ = ray.wait(refs, num_returns=1, timeout=0 if finished else timeout)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in (r for r in ready if r in self._inflight):
                trial_id, spec, _, claim, _ = self._inflight.pop(ref)
                self._groups.discard(ref)
                try:
                    finished.append((trial_id, ray.get(ref)))
                except Exception as exc:  # noqa: BLE001 - a dead worker is a failed trial, not a dead study
                    finished.append((trial_id, _failed(trial_id, spec, f"Ray task failed: {type(exc).__name__}: {exc}",
                                                       claim)))
        if self.time_limit_s:
            now = time.time()
            for ref, (trial_id, spec, started, claim, _) in list(self._inflight.items()):
                if now - started > self.time_limit_s:
                    self._stop(ref)
                    error = f"exceeded the time limit of {self.time_limit_s:g} s"
                    finished.append((trial_id, _failed(trial_id, spec, error, claim)))
        self._reap_stopping()
        if self._next_sweep is not None and time.time() >= self._next_sweep:
            _remove_orphaned_placement_groups(ray)
            self._next_sweep = time.time() + SWEEP_EVERY_S
        self._start_waiting()
        return finished

    def _stop(self, ref: Any) -> None:
        """Stop an in-flight task: a trial's at once; a TorchTrainer's task is interrupted, and
        killed should it still run after :data:`STOP_GRACE_S` (see the module doc)."""
        _, _, _, _, taken = self._inflight.pop(ref)
        if ref in self._groups:
            self._groups.discard(ref)
            self._ray.cancel(ref, force=False)
            self._stopping[ref] = (time.time() + STOP_GRACE_S, taken)
        else:
            self._ray.cancel(ref, force=True)

    def _reap_stopping(self) -> None:
        """Forget the stopped TorchTrainers that ended (their slots are free); kill the late ones."""
        if not self._stopping:
            return
        ready, _ = self._ray.wait(list(self._stopping), num_returns=len(self._stopping), timeout=0)
        for ref in ready:
            del self._stopping[ref]
        now = time.time()
        for ref, (kill_at, _) in list(self._stopping.items()):
            if now > kill_at:
                self._ray.cancel(ref, force=True)
                del self._stopping[ref]

    def events(self) -> list[tuple[str, dict]]:
        return []  # per-epoch progress is not streamed back from Ray tasks; records are complete

    def shutdown(self) -> None:
        self._waiting.clear()
        self._refused.clear()
        if self._owns:  # the whole instance stops below
            for ref in [*self._inflight, *self._stopping]:
                self._ray.cancel(ref, force=True)
        else:  # a cluster that stays: TorchTrainers stop as at a time limit (their resources released)
            for ref in list(self._inflight):
                self._stop(ref)
            deadline = time.time() + STOP_GRACE_S
            while self._stopping and time.time() < deadline:
                self._ray.wait(list(self._stopping), num_returns=len(self._stopping), timeout=0.5)
                self._reap_stopping()
            for ref in self._stopping:
                self._ray.cancel(ref, force=True)
            if self._next_sweep is not None:
                time.sleep(1.0)  # Ray marks the killed controllers dead
                _remove_orphaned_placement_groups(self._ray)
        self._inflight.clear()
        self._stopping.clear()
        self._groups.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False
        if self._reaper is not None:
            orphans.stop_reaper(self._reaper)
            self._reaper = None


def _remove_orphaned_placement_groups(ray: Any) -> int:
    """Remove this job's placement groups whose creating actor died (see the module doc: Ray keeps
    them, and their resources, until the job ends); returns how many. Only Ray Train's controllers
    create placement groups here, so such a group is a stopped TorchTrainer's. Reads the GCS table
    through Ray's private accessor (the public listing needs the dashboard); should that change,
    nothing is removed."""
    try:
        from ray._private.state import state
        from ray.core.generated import gcs_pb2
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        job = ray.get_runtime_context().get_job_id()
        removed = 0
        for raw in state._connect_and_get_accessor().get_placement_group_table():
            group = gcs_pb2.PlacementGroupTableData.FromString(raw)
            if (group.creator_actor_dead and not group.is_detached and group.creator_job_id.hex() == job
                    and not ray.ActorID(group.creator_actor_id).is_nil()
                    and group.state != gcs_pb2.PlacementGroupTableData.REMOVED):
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(group.placement_group_id)))
                removed += 1
        return removed
    except Exception:  # noqa: BLE001 - a cleanup that cannot run leaves what Ray left, nothing worse
        return 0


def _failed(trial_id: str, spec: dict, error: str, claim: str) -> dict[str, Any]:
    return {"trial_id": trial_id, "spec": spec, "status": "failed", "error": error, "epochs": [], "claim": claim}
