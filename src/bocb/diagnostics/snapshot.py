"""Snapshots: one model's weights -> its per-layer metrics, with what produced them.

Every final snapshot's layers also carry ``moved``: the relative Frobenius distance of the weight
from the network the trial started from (:func:`bocb.networks.starting_model`: the random init for
pre-training, the pre-trained weights for fine-tuning, where the classifier is new).

A snapshot is either a trial's final weights (``source="final"``, ``snapshot_id`` = the trial's
id, read from ``final.safetensors``) or a backbone's random initialisation (``source="init"``,
``snapshot_id`` = ``init:<hash of backbone spec and seed>``), built exactly as a trial with that
seed builds it (:func:`bocb.zoo.init_backbone`). A snapshot is a plain dict the store takes
(:meth:`bocb.store.Store.put_snapshot`); a computation that fails becomes a snapshot with an
``error`` and no layers, never an exception, so diagnostics cannot fail a trial.

Threads: metrics always run with **one BLAS thread** (threadpoolctl) and one torch thread in the
calling process. Parallelism comes from processes (trial slots, or :mod:`bocb.diagnose`'s pool):
two BLAS threads fighting over two cores made a ResNet-18 snapshot ~27x slower.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from threadpoolctl import threadpool_limits
from torch import nn

from bocb import checkpoint
from bocb.diagnostics.metrics import DEFAULT_CONV, DEFAULT_K, ENTROPY_BINS, MIN_TAIL, layer_metrics
from bocb.zoo import BackboneSpec, build_backbone, init_backbone


def settings(conv: str = DEFAULT_CONV) -> dict[str, Any]:
    """What a snapshot's numbers depend on besides the weights (stored with every snapshot)."""
    return {"k": DEFAULT_K, "entropy_bins": ENTROPY_BINS, "min_tail": MIN_TAIL, "conv": conv,
            "ks": "one-sided (WeightWatcher, Clauset plfit)", "eigenvalues": "eigvalsh of the smaller Gram, svd fallback",
            "numpy": np.__version__}


def init_snapshot_id(backbone: BackboneSpec, seed: int) -> str:
    key = json.dumps({"backbone": backbone.to_dict(), "seed": int(seed)}, sort_keys=True)
    return "init:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def read_spec(path: Path) -> dict[str, Any] | None:
    """The trial spec stored in a ``final.safetensors`` file's metadata (None for other files)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta["spec"]) if "spec" in meta else None


def load_model(path: Path, backbone: BackboneSpec) -> nn.Module:
    """``backbone`` built on the CPU with the weights in ``path`` (strict: every key must match)."""
    model = build_backbone(backbone)
    try:
        checkpoint.load_weights(model, path, network=f"{backbone.short} (scale {backbone.scale}, "
                                                     f"{backbone.num_classes} classes)")
    except ValueError as exc:
        raise ValueError(f"{exc}; check --backbone, --scale and --num-classes") from None
    return model


def moved(model: nn.Module, reference: nn.Module, layer: str) -> float:
    """``||W - W0||_F / ||W0||_F`` of one layer's weight against the reference network's."""
    w = model.get_submodule(layer).weight.detach().double()
    w0 = reference.get_submodule(layer).weight.detach().double()
    if w.shape != w0.shape:
        return float("nan")
    norm = float(torch.linalg.vector_norm(w0))
    return float(torch.linalg.vector_norm(w - w0)) / norm if norm > 0 else float("nan")


def measure(model: nn.Module, reference: nn.Module | None = None,
            conv: str = DEFAULT_CONV) -> tuple[list[dict[str, Any]], float]:
    """Per-layer rows and the seconds they took, single-threaded (see the module doc).

    With ``reference`` (the network training started from) every row also gets ``moved``, the
    relative Frobenius distance of the layer's weight from its starting value.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            t0 = time.perf_counter()
            rows = layer_metrics(model, conv=conv).to_dict("records")
            for row in rows:
                row["moved"] = moved(model, reference, row["layer"]) if reference is not None else None
            seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return rows, round(seconds, 3)


def _snapshot(snapshot_id: str, source: str, backbone: BackboneSpec, build, reference=None,
              conv: str = DEFAULT_CONV, **fields: Any) -> dict[str, Any]:
    snap: dict[str, Any] = {"snapshot_id": snapshot_id, "source": source, "backbone": backbone.short,
                            "settings": settings(conv), "layers": [], "error": None, "seconds": None, **fields}
    try:
        snap["layers"], snap["seconds"] = measure(build(), reference() if reference else None, conv)
    except Exception as exc:  # noqa: BLE001 - a snapshot that cannot be measured is recorded as such
        snap["error"] = f"{type(exc).__name__}: {exc}"
    return snap


def final_snapshot(trial_id: str, path: str | Path, spec: dict[str, Any] | None = None,
                   conv: str = DEFAULT_CONV) -> dict[str, Any]:
    """The snapshot of a trial's final weights at ``path`` (its spec read from the file if None)."""
    path = Path(path)
    spec = spec or read_spec(path)
    if spec is None:
        raise ValueError(f"{path} has no trial spec in its metadata: give the backbone to `bocb diagnose`")
    from bocb.networks import starting_model
    from bocb.spec import TrialSpec

    backbone = BackboneSpec.from_dict(spec["backbone"])
    return _snapshot(trial_id, "final", backbone, lambda: load_model(path, backbone),
                     reference=lambda: starting_model(TrialSpec.from_dict(spec))[0], conv=conv,
                     trial_id=trial_id, seed=spec["seed"], path=str(path))


def init_snapshot(backbone: BackboneSpec, seed: int, conv: str = DEFAULT_CONV) -> dict[str, Any]:
    """The snapshot of ``backbone``'s random initialisation under ``seed``."""
    return _snapshot(init_snapshot_id(backbone, seed), "init", backbone,
                     lambda: init_backbone(backbone, seed), conv=conv, trial_id=None, seed=int(seed), path=None)
