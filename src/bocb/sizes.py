"""Counted sizes of the zoo's own backbones, shipped so that sizing a study needs no model.

``bocb plan``, ``bocb zoo backbones`` and the report's cost lines need the forward FLOPs and the
parameter count of every backbone a study names. Counting them builds each model (PyTorch's
``FlopCounterMode`` on the meta device: about half a second per model, 9 s for the paper's 20,
plus 2-3 s to import torch and timm), so the counts of every registered backbone, at each of its
scales and input policies, are counted once by ``scripts/sizes_table.py`` and shipped in
``sizes.json`` beside this file (read without importing torch or the zoo). :mod:`bocb.compute` reads this table first and counts only what
it lacks (a plug-in's or an external model, a changed builder).

Why two class counts per entry are enough: only the classifier head depends on the number of
classes, and a linear head's FLOPs (2 x features x classes) and parameters (features x classes +
classes) are linear in it. So the counts at 10 and 100 classes give every other count exactly by
linear extrapolation; the generator checks this against a third count (37 classes) for every
entry and refuses to write a table where it does not hold, and ``tests/test_light_commands.py``
recounts entries against the live models.

The key is everything in a backbone spec that changes its shape: registry name, scale, input
policy and input size (drop rates do not). An entry is used only while the name is still built by
the builder it was counted from (``module:qualname``: a user may register another model under a
zoo name) and the installed timm and torchvision are the versions it was counted with (a library
release may change an architecture); otherwise the model is counted.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

TABLE_NAME = "sizes.json"
CLASS_COUNTS = (10, 100)  # the two counted head sizes every other count is extrapolated from


def key(name: str, scale: str, policy: str, input_size: int) -> str:
    return f"{name}|{scale}|{policy}|{input_size}"


@cache
def table() -> dict[str, Any]:
    """The shipped table: ``{"generated_with": {...}, "entries": {key: {"flops": [f10, f100],
    "params": [p10, p100], "state": [s10, s100]}}}`` (an empty table when the file is missing, e.g. in a source tree
    where the generator has not run)."""
    try:
        text = resources.files("bocb").joinpath(TABLE_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"generated_with": {}, "entries": {}}
    return json.loads(text)


def extrapolate(values: list[float], num_classes: int) -> float:
    """The count at ``num_classes`` from the counts at :data:`CLASS_COUNTS` (exact for a linear head)."""
    low, high = values
    n_low, n_high = CLASS_COUNTS
    return low + (high - low) * (num_classes - n_low) / (n_high - n_low)


def lookup(spec: dict[str, Any], what: str) -> float | None:
    """``what`` ("flops": forward FLOPs of one image; "params": parameters; "state": parameters
    and buffers, what a checkpoint holds) of the
    backbone spec ``spec`` (a :class:`~bocb.zoo.BackboneSpec` as a dict), or None when the table
    does not hold its architecture."""
    entry = table()["entries"].get(key(spec["name"], spec["scale"], spec["policy"], spec["input_size"]))
    if entry is None or entry.get("builder") != builder_of(spec["name"]) or not _same_libraries():
        return None
    return extrapolate(entry[what], int(spec["num_classes"]))


def builder_of(name: str) -> str | None:
    """``module:qualname`` of the function that builds registered backbone ``name`` (None: not registered)."""
    from bocb.registry import UnknownNameError
    from bocb.zoo import BACKBONES

    if not BACKBONES.registered(name):
        return None
    try:
        builder = BACKBONES.get(name).builder
    except UnknownNameError:
        return None
    return f"{builder.__module__}:{builder.__qualname__}"


LIBRARIES = ("timm", "torchvision")  # whose releases could change a zoo architecture


@cache
def _same_libraries() -> bool:
    from bocb.provenance import distribution_version

    counted = table()["generated_with"]
    return all(counted.get(lib) == distribution_version(lib) for lib in LIBRARIES)
