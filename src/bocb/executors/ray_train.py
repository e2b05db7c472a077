"""One multi-process trial as a Ray Train ``TorchTrainer`` (the Ray executor's side of it).

:mod:`bocb.executors.ray_executor` submits a trial that runs on ``n > 1`` processes as a Ray task
that calls :func:`fit` (why a task, and the rules: that module's doc). Here:

- :func:`fit` builds the ``TorchTrainer`` (``n`` workers, one GPU each or one CPU each with gloo,
  no retries, Ray Train's run state under the trial's artifacts folder) and turns its outcome
  into the trial's record: rank 0's, or one ``failed`` record naming each failed rank's error.
- :func:`train_loop` is each worker's: the same :func:`bocb.executors.worker.execute` a Ray task
  or a local slot runs, on the device Ray Train assigned. The trial finds its rank in the
  variables Ray Train sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``) and keeps the process group Ray Train already joined
  (:func:`bocb.distributed.join_from_env`). Rank 0 returns the record (Ray Train hands it back as
  ``Result.return_value``); a rank whose trial failed raises, and Ray Train stops the others.
- :class:`LoopbackTorchConfig` joins the process group on loopback only, for the private Ray
  instance: Ray Train's own setup starts torch's TCP store on rank 0 bound to every interface
  (measured with Ray 2.60 and torch 2.14: ``:: <MASTER_PORT>``), and gloo and NCCL pick their
  interface from the host name. Here rank 0 binds the store's socket to 127.0.0.1 itself and
  hands it to ``TCPStore`` (``master_listen_fd``), and gloo and NCCL are told to use ``lo``.

This module imports Ray Train and torch: only the task and Ray Train's workers import it.
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import ray
from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend

STORAGE_DIR = "ray_train"  # in the trial's artifacts folder: Ray Train's run state (RunConfig.storage_path)


class RankFailed(RuntimeError):
    """This rank's trial came back ``failed``; the message is ``rank N: <the record's error>``."""


def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """One Ray Train worker: the trial on this worker's device; rank 0 returns the record."""
    import ray.train
    import ray.train.torch

    from bocb.executors.worker import WorkerConfig, execute

    rank = ray.train.get_context().get_world_rank()
    device = str(ray.train.torch.get_device()) if config["use_gpu"] else "cpu"
    record = execute(config["spec"], WorkerConfig(**config["worker"]), device, None, claim=config["claim"])
    if record.get("status") == "failed":
        # Raised, not returned: Ray Train then stops every rank at once (the others would wait in
        # a collective for this one until the process group's timeout).
        raise RankFailed(f"rank {rank}: {' '.join(str(record.get('error')).split())}")
    return record if rank == 0 else None


def fit(trial_id: str, spec: dict[str, Any], worker: dict[str, Any], claim: str, processes: int, use_gpu: bool,
        loopback: bool) -> dict[str, Any]:
    """Run the trial on ``processes`` Ray Train workers and return its record (see the module doc).
    Never raises for the trial's own failure."""
    # Ray Train would make each worker's working directory a folder of Ray's session: relative
    # paths in the run's configuration (a cache folder) must mean what they mean to the driver.
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.constants import is_v2_enabled

    if not is_v2_enabled():
        return _failed(trial_id, spec, claim, "multi-process trials under --executor ray need Ray Train V2: "
                                              "unset RAY_TRAIN_V2_ENABLED (or set it to 1)")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec, "worker": worker, "claim": claim, "use_gpu": use_gpu},
        scaling_config=ScalingConfig(num_workers=processes, use_gpu=use_gpu),
        torch_config=LoopbackTorchConfig() if loopback else None,
        run_config=RunConfig(name=STORAGE_DIR, storage_path=str(Path(worker["artifacts_dir"]) / trial_id),
                             # A failed trial is a result (the next run resumes it from its checkpoint).
                             failure_config=FailureConfig(max_failures=0, controller_failure_limit=0)),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        return _failed(trial_id, spec, claim, f"{processes}-process trial failed under Ray Train: {one_line(exc)}")
    record = result.return_value
    if not isinstance(record, dict):
        return _failed(trial_id, spec, claim, f"{processes}-process trial: rank 0 returned no record")
    record["claim"] = claim
    return record


def one_line(exc: BaseException) -> str:
    """Ray Train's error in one line: each failed rank's own error (``rank N: ...``), else the
    last line of what it said."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        return "; ".join(_rank_line(rank, error) for rank, error in sorted(failures.items()))
    cause = getattr(exc, "controller_failure", None) or exc
    return f"{type(cause).__name__}: {_last_line(str(cause))}"


def _rank_line(rank: int, error: BaseException) -> str:
    text = str(error)
    mine = [ln.strip() for ln in text.splitlines() if f"{RankFailed.__name__}: rank {rank}:" in ln]
    if mine:  # the traceback's last line: "...RankFailed: rank N: <error>"
        return mine[-1].partition(f"{RankFailed.__name__}: ")[2]
    if isinstance(error, RankFailed):
        return text
    return f"rank {rank}: {_last_line(text)}"  # died otherwise (killed, out of memory, a Ray error)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


def _failed(trial_id: str, spec: dict, claim: str, error: str) -> dict[str, Any]:
    return {"trial_id": trial_id, "spec": spec, "status": "failed", "error": error, "epochs": [], "claim": claim}


# --- the process group on loopback (the private instance) --------------------------------------

_STORE_SOCKET: list[socket.socket] = []  # rank 0's listening socket, between the two setup calls


def _open_store_socket() -> int:
    """Rank 0: bind the TCP store's socket to 127.0.0.1 (a free port) and listen; returns the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    _STORE_SOCKET[:] = [sock]
    return sock.getsockname()[1]


def _join_on_loopback(world_rank: int, world_size: int, port: int, backend: str, timeout_s: int) -> None:
    """Join the process group through a TCP store on 127.0.0.1:``port`` (rank 0 serves it on the
    socket :func:`_open_store_socket` bound), gloo and NCCL on the loopback interface."""
    import ray.train
    import torch.distributed as dist

    rank = world_rank
    context = ray.train.get_context()
    os.environ.update({
        # What torchrun sets (bocb.distributed.from_env reads them), as Ray Train's own setup does.
        "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(context.get_local_rank()),
        "LOCAL_WORLD_SIZE": str(context.get_local_world_size()), "NODE_RANK": str(context.get_node_rank()),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    })
    if sys.platform.startswith("linux"):  # the loopback interface's name there ("lo0" on macOS)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    if backend == "nccl":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # as Ray Train's setup does
    timeout = timedelta(seconds=timeout_s)
    if rank == 0:
        fd = _STORE_SOCKET.pop().detach()  # the store owns it from here
        store = dist.TCPStore("127.0.0.1", port, world_size, True, timeout, master_listen_fd=fd)
    else:
        store = dist.TCPStore("127.0.0.1", port, world_size, False, timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


class _LoopbackTorchBackend(_TorchBackend):
    """Ray Train's torch backend, with the process group joined on loopback (see the module doc);
    its shutdown (destroying the group) is Ray Train's."""

    def on_start(self, worker_group: Any, backend_config: TorchConfig) -> None:
        backend = backend_config.backend
        if backend is None:
            backend = "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        port = worker_group.execute_single(0, _open_store_socket)
        world = len(worker_group)
        ray.get([worker_group.execute_single_async(rank, _join_on_loopback, world_rank=rank, world_size=world, port=port,
                                                   backend=backend, timeout_s=backend_config.timeout_s)
                 for rank in range(world)])


class LoopbackTorchConfig(TorchConfig):
    """``TorchConfig`` whose process group listens on 127.0.0.1 only (the private Ray instance)."""

    @property
    def backend_cls(self) -> type:
        return _LoopbackTorchBackend
