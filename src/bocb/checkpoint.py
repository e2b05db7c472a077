"""Checkpoints as safetensors: model weights, optimizer state, RNG states and progress.

safetensors holds flat tensors and string metadata only, which is the point: loading one can
never execute code (unlike pickle). Nested state (an optimizer's ``state_dict``, RNG states,
the epochs done) is flattened: every tensor leaf is stored under its path, every other leaf goes
into a JSON document in the metadata, and :func:`load` puts the structure back.

Writes are atomic (a temporary file with a name no other writer uses, renamed over the old
one), so a run killed while saving leaves the previous checkpoint intact. With a
:class:`bocb.fencing.Fence` the rename happens only while the writer's claim on the trial is
current: a stale worker's checkpoint or weights are refused (:class:`bocb.fencing.StaleClaimError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from bocb.fencing import Fence, temp_path
from bocb.lazy import lazy_module

# Imported when weights are first read or written (bocb.lazy): hashing a file needs neither.
torch = lazy_module("torch")
st_torch = lazy_module("safetensors.torch")

_TENSOR = "__tensor__"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensor leaves by references into ``tensors``; return the JSON-able skeleton."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        # Shared storage (tied weights) and non-contiguous views cannot be saved as they are.
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        items = [(str(k), k) for k in obj]
        # JSON object keys are strings: remember int keys (optimizer state is keyed by int).
        return {
            "__dict__": [
                [k if isinstance(orig, str) else {"int": orig}, _flatten(obj[orig], f"{prefix}.{k}", tensors)]
                for k, orig in items
            ]
        }
    if isinstance(obj, (list, tuple)):
        kind = "__tuple__" if isinstance(obj, tuple) else "__list__"
        return {kind: [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": str(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix or 'root'}")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if "__dict__" in obj:
            out = {}
            for key, value in obj["__dict__"]:
                out[key["int"] if isinstance(key, dict) else key] = _unflatten(value, tensors)
            return out
        if "__list__" in obj:
            return [_unflatten(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def _publish(tmp: Path, path: Path, fence: Fence | None) -> None:
    if fence is None:
        os.replace(tmp, path)
    else:
        fence.replace(tmp, path)


def save(path: Path, state: dict[str, Any], fence: Fence | None = None) -> None:
    """Write ``state`` (nested dicts/lists of tensors and plain values) to ``path`` atomically
    (and only while ``fence``'s claim is current, when given)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    st_torch.save_file(tensors, str(tmp), metadata={"bocb": json.dumps(skeleton, allow_nan=False)})
    _publish(tmp, path, fence)


def load(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; tensors are placed on ``device``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "bocb" not in meta:
        raise ValueError(f"{path} is not a bocb checkpoint (no 'bocb' metadata)")
    tensors = st_torch.load_file(str(path), device=str(device))
    return _unflatten(json.loads(meta["bocb"]), tensors)


def save_weights(path: Path, model: torch.nn.Module, metadata: dict[str, str] | None = None,
                 fence: Fence | None = None) -> None:
    """Model weights alone, as a plain safetensors state dict (readable by any tool); atomic and
    fenced like :func:`save`."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    st_torch.save_file(state, str(tmp), metadata=metadata)
    _publish(tmp, path, fence)


def tensor_sha256(path: Path) -> str:
    """sha256 of the tensors in a safetensors file: for each tensor, in name order, its name,
    dtype, shape and raw bytes (read by safetensors' own loader, one tensor at a time).

    This is the weights' identity for fine-tuning trials. The file's own digest is not: safetensors
    writes its JSON header (and the metadata in it) in an order that changes between processes, so
    the same weights saved twice get two file digests and a rerun would add a second trial.
    """
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(f.keys()):
            tensor = f.get_tensor(name).contiguous()
            head = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
            digest.update(len(head).to_bytes(8, "little") + head.encode())
            raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
            digest.update(len(raw).to_bytes(8, "little") + raw)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_weights(model: torch.nn.Module, path: Path, *, skip: str | None = None, sha256: str | None = None,
                 network: str = "the network") -> None:
    """Load a safetensors state dict into ``model``: every tensor, or all but those under ``skip.``.

    ``skip`` is a module left as initialised (a fine-tuning trial's new classifier). Everything
    else must match in name and shape, else one line names the counts and an example (``network``
    says what the weights were meant for). ``sha256`` (when given) must be the weights'
    :func:`tensor_sha256` (or, for trials planned before tensor digests, the file's
    :func:`file_sha256`), so a fine-tuning trial never silently starts from other weights than its
    id says.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"weights not found: {path}")
    if sha256 is not None and tensor_sha256(path) != sha256 and file_sha256(path) != sha256:
        raise ValueError(f"weights {path} changed since the study was planned (sha256 differs)")

    def kept(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state if skip is None else {k: v for k, v in state.items() if not k.startswith(skip + ".")}

    state, expected = kept(st_torch.load_file(str(path), device="cpu")), kept(model.state_dict())
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    misshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or misshaped:
        example = (missing or unexpected or misshaped)[0]
        raise ValueError(f"the weights in {path} do not fit {network}: {len(missing)} missing, {len(unexpected)} "
                         f"unexpected, {len(misshaped)} misshaped tensors (e.g. {example!r})")
    model.load_state_dict(state, strict=skip is None)


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
