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

On a cluster (see README): every node needs bocb installed in the same environment (or a Ray
``runtime_env``), the dataset reachable at the same path or in each node's cache, and
``artifacts_dir`` on a shared filesystem so a trial resumed on another node finds its checkpoint.
SLURM: start ``ray start --head`` in the job's first task and ``ray start --address=HEAD:6379`` on
the others (Ray's ``symmetric-run`` or the documented sbatch template), then ``bocb run ...
--executor ray --address HEAD:6379`` from the head. Kubernetes: a KubeRay RayCluster, and the same
command with its head service address.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bocb.executors import orphans, sockets
from bocb.executors.worker import WorkerConfig
from bocb.fencing import raise_fence

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
    from bocb.executors.worker import execute

    return execute(spec, config, claim=claim)


class RayExecutor:
    """Up to ``slots`` trials in flight per GPU (or in total on CPU-only clusters)."""

    def __init__(self, config: WorkerConfig, slots: int = 1, address: str | None = None,
                 gpus: int | None = None, time_limit_s: float | None = None, num_cpus: int | None = None):
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
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        gpu_count = min(gpus, cluster_gpus) if gpus is not None else cluster_gpus
        self._capacity = slots * gpu_count if gpu_count else slots
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if gpu_count:
            options["num_gpus"] = 1.0 / slots
        self._task = ray.remote(**options)(_execute)
        self.config = config
        self.time_limit_s = time_limit_s
        self._inflight: dict[Any, tuple[str, dict, float, str]] = {}

    @property
    def free_slots(self) -> int:
        return self._capacity - len(self._inflight)

    @property
    def running(self) -> list[str]:
        return [tid for tid, _, _, _ in self._inflight.values()]

    def submit(self, trial_id: str, spec: dict[str, Any], claim: str) -> None:
        """Run ``spec`` under the runner's ``claim`` token (fenced in before the task starts)."""
        raise_fence(Path(self.config.artifacts_dir) / trial_id, claim)
        ref = self._task.remote(spec, self.config, claim)
        self._inflight[ref] = (trial_id, spec, time.time(), claim)

    def poll(self, timeout: float = 1.0) -> list[tuple[str, dict[str, Any]]]:
        ray = self._ray
        finished: list[tuple[str, dict[str, Any]]] = []
        if not self._inflight:
            return finished
        ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=timeout)
        for ref in ready:
            trial_id, spec, _, claim = self._inflight.pop(ref)
            try:
                finished.append((trial_id, ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a dead worker is a failed trial, not a dead study
                finished.append((trial_id, _failed(trial_id, spec, f"Ray task failed: {type(exc).__name__}: {exc}",
                                                   claim)))
        if self.time_limit_s:
            now = time.time()
            for ref, (trial_id, spec, started, claim) in list(self._inflight.items()):
                if now - started > self.time_limit_s:
                    ray.cancel(ref, force=True)
                    del self._inflight[ref]
                    error = f"exceeded the time limit of {self.time_limit_s:g} s"
                    finished.append((trial_id, _failed(trial_id, spec, error, claim)))
        return finished

    def events(self) -> list[tuple[str, dict]]:
        return []  # per-epoch progress is not streamed back from Ray tasks; records are complete

    def shutdown(self) -> None:
        for ref in list(self._inflight):
            self._ray.cancel(ref, force=True)
        self._inflight.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False
        if self._reaper is not None:
            orphans.stop_reaper(self._reaper)
            self._reaper = None


def _failed(trial_id: str, spec: dict, error: str, claim: str) -> dict[str, Any]:
    return {"trial_id": trial_id, "spec": spec, "status": "failed", "error": error, "epochs": [], "claim": claim}
