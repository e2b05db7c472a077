"""Where a result came from: code version, library versions, host and device."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

from bocb.lazy import lazy_module

torch = lazy_module("torch")  # imported when a device or version is described (bocb.lazy)

# The libraries whose versions can change a result.
LIBRARIES = (
    "torch", "torchvision", "timm", "pytorch-optimizer", "sophia-opt", "schedulefree", "numpy",
    "safetensors",
)


@cache  # once per process: a study resolves versions for every trial (72 % of `bocb plan` at 30,000)
def distribution_version(dist: str) -> str:
    """The installed version of the distribution ``dist`` (pip's name), or ``unknown``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


@cache
def code_version() -> str:
    """``git describe`` of the checkout bocb runs from (``-dirty`` when modified), else the
    installed package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return "bocb " + metadata.version("bocb")
        except metadata.PackageNotFoundError:
            return "unknown"


@cache
def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "missing"
    return out


def device_info(device: torch.device) -> dict[str, str]:
    info = {"host": socket.gethostname(), "device": str(device), "platform": platform.platform()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    else:
        info["name"] = platform.processor() or platform.machine()
        info["threads"] = str(torch.get_num_threads())
    return info
