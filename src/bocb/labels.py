"""How a trial is named for people: ``backbone x optimizer (lr 1e-3, wd 0.05)``; and durations.

One spelling for every view that lists trials while they run (``bocb run``'s live view,
``bocb status --watch``): a 16-hex trial id tells a user nothing, the settings that make the
trial do. The fields are those of a store's summary row (:func:`bocb.store.base.summary_fields`),
so a row read back from the store and a spec handed to a worker are named the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def short_number(value: float | None) -> str:
    """``1e-3``, ``5e-4``, ``0.05``, ``0.1``, ``0``: learning rates and weight decays as people
    write them. Python's ``g`` format writes 1e-3 as ``0.001`` and 1e-4 as ``0.0001``, which are
    hard to tell apart at a glance."""
    if value is None or value == 0:
        return "0"
    if 1e-2 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def trial_label(fields: Mapping[str, Any], show_seed: bool = False) -> str:
    """``backbone x optimizer (lr 1e-3, wd 0.05)``, with ``, seed 2`` when ``show_seed`` (a study
    of more than one seed). A fine-tuning trial is named by its pre-trained model, as the results
    table names it."""
    model = fields.get("pretrained") or fields.get("backbone") or "?"
    settings = [f"lr {short_number(fields.get('lr'))}", f"wd {short_number(fields.get('weight_decay'))}"]
    if show_seed and fields.get("seed") is not None:
        settings.append(f"seed {fields['seed']}")
    return f"{model} x {fields.get('optimizer') or '?'} ({', '.join(settings)})"


# What a view shows for a value not measured (yet): never a made-up number.
DASH = "—"


def clock(seconds: float | None) -> str:
    """A duration as ``h:mm:ss``; :data:`DASH` when there is none."""
    if seconds is None:
        return DASH
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
