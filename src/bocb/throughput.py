"""How long a study's trials take on the machine at hand, from measured training throughput.

``bocb plan`` states GPU-hours on a reference GPU from counted FLOPs; a student on a laptop wants
hours on *this* machine. Effective FLOP/s differs by an order of magnitude between a tiny and a
full-size model, so the estimate is made per backbone spec (name, scale, input policy and size),
from images per second actually measured for that spec, in this order:

1. **the store**: finished trials of the same backbone spec run on this host (the trainer records
   training images per second, data pipeline and optimizer included); the median over them.
2. **a measurement** (``bocb plan --measure``): a few training steps of each spec on this
   machine's device (CUDA when present, else CPU) with random images: two warm-up steps, then
   steps until at least ``seconds`` (and five steps) have passed; the median step decides, so
   a step slowed by another process on a shared machine does not. Without the data pipeline it reads a little fast.

A backbone with neither is left out of the estimate and named. A trial's time is its training
images over the training speed plus its test images over three times it (evaluation is a forward
pass, a third of a training step's work, the rule the FLOP count uses too).
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bocb.sizes import key

EVAL_SPEEDUP = 3.0
WARMUP_STEPS = 2  # untimed steps before a measurement
MIN_STEPS = 5  # timed steps at least, however long they take; their median decides  # a forward pass is a third of a training step's work (bocb.compute's rule)


@dataclass(frozen=True)
class Speed:
    """Training images per second of one backbone spec on this machine, and where it came from."""

    images_per_second: float
    source: str  # "store" (finished trials) or "measured"
    count: int = 1  # trials the median is over (1 for a measurement)
    device: str = ""


@dataclass(frozen=True)
class WallEstimate:
    """Serial trial-hours of the study on this machine (one trial after another, each at the
    measured speed); ``missing``: backbone shorts without a speed; ``speeds``: spec key -> Speed."""

    hours: float
    trials: int
    missing: tuple[str, ...]
    speeds: dict[str, Speed] = field(default_factory=dict)
    what: str = ""  # what the hours are for, in words ("the 24 trials not yet finished")

    def sentence(self) -> str:
        if not self.trials and not self.missing:
            return "this machine: nothing left to run"
        if not self.speeds:
            return ("this machine: no measured speed for these backbones (finish a trial of each here, "
                    "or run `bocb plan STUDY --measure`)")
        sources = sorted({s.source for s in self.speeds.values()})
        devices = sorted({s.device for s in self.speeds.values() if s.device})
        text = (f"this machine ({', '.join(devices) or 'its device'}): about {duration(self.hours * 3600)} for "
                f"{self.what or f'the {self.trials} trials not yet finished'}, one after another, at the speed measured "
                f"({' and '.join('from finished trials here' if s == 'store' else 'by --measure' for s in sources)}); "
                "(training and evaluation only, start-up not included; slots that each keep that speed divide it)")
        if self.missing:
            text += f"; not counted (no speed): {', '.join(self.missing)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"hours": self.hours, "trials": self.trials, "missing": list(self.missing),
                "speeds": {k: {"images_per_second": s.images_per_second, "source": s.source,
                               "count": s.count, "device": s.device} for k, s in self.speeds.items()}}


def spec_key(backbone: dict[str, Any]) -> str:
    """What makes two backbone specs equally fast: name, scale, policy, input size (the size
    table's key, :func:`bocb.sizes.key`)."""
    return key(backbone["name"], backbone["scale"], backbone["policy"], backbone["input_size"])


def from_store(store: Any, host: str | None = None) -> dict[str, Speed]:
    """Median training images/s per backbone spec over the store's finished trials run on ``host``
    (None: this host); where a spec ran on both a GPU and the CPU, the GPU's (what a run here uses).

    Trials are grouped by what the store's summary says (backbone, recipe, tier, device kind) and
    one record per group names the group's spec: reading every spec of a 30,000-trial store cost
    1.5 s of a 6 s ``bocb plan``."""
    host = host or socket.gethostname()
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for t in store.trials(None):
        if t["status"] != "done" or not t.get("images_per_second") or t.get("host") != host:
            continue
        kind, _ = _device(t.get("device"))
        groups.setdefault((t["backbone"], t["recipe"], t["tier"], kind == "cuda"), []).append(t)
    found: dict[tuple[str, bool], tuple[list[float], str]] = {}
    for (_, _, _, gpu), rows in groups.items():
        spec = ((store.record(rows[0]["trial_id"]) or {}).get("spec") or {}).get("backbone")
        if not spec or "input_size" not in spec:
            continue
        values, _ = found.setdefault((spec_key(spec), gpu), ([], _device(rows[0].get("device"))[1]))
        values.extend(float(t["images_per_second"]) for t in rows)
    out: dict[str, Speed] = {}
    for (k, gpu), (values, words) in sorted(found.items(), key=lambda item: item[0][1]):  # GPU groups last: they win
        out[k] = Speed(statistics.median(values), "store", len(values), words)
    return out


def _device(device: Any) -> tuple[str, str]:
    """(kind, words) of a trial's recorded device."""
    try:
        info = json.loads(device) if isinstance(device, str) else dict(device or {})
    except (TypeError, ValueError):
        return "", ""
    kind = info.get("device", "")
    if kind == "cpu" and info.get("threads"):
        return kind, f"cpu, {info['threads']} thread(s) per trial"
    return kind, info.get("name") or kind


def measure(trials: Iterable[Any], seconds: float = 1.0, max_batch: int = 64,
            device: str | None = None) -> dict[str, Speed]:
    """Training images/s of each distinct backbone spec among ``trials`` (TrialSpecs) on ``device``
    (None: CUDA when present, else CPU): SGD steps on random images after two warm-up steps, at the
    trial's batch size (at most ``max_batch`` on a CPU, to stay quick) and, on CUDA, its precision
    (bf16 autocast when the recipe says bf16); on a CPU with one torch thread, as each slot of a run
    over all cores trains."""
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    words = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu, 1 thread per trial"
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        # One thread, as a slot of `bocb run --slots <cores>` trains: on a shared machine a second
        # thread waits for a busy core at every step (measured 3-20x swings with two).
        torch.set_num_threads(1)
    try:
        return _measure(trials, dev, words, seconds, max_batch)
    finally:
        torch.set_num_threads(threads)


def _measure(trials: Iterable[Any], dev: Any, words: str, seconds: float, max_batch: int) -> dict[str, Speed]:
    import torch

    from bocb.zoo import build_backbone

    out: dict[str, Speed] = {}
    for trial in trials:
        spec = trial.backbone
        k = spec_key(spec.to_dict())
        if k in out:
            continue
        batch = trial.recipe.batch_size if dev.type == "cuda" else min(trial.recipe.batch_size, max_batch)
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16,
                                  enabled=dev.type == "cuda" and trial.recipe.precision == "bf16")
        torch.manual_seed(0)
        model = build_backbone(spec).to(dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x = torch.randn(batch, 3, spec.input_size, spec.input_size, device=dev)
        y = torch.randint(0, spec.num_classes, (batch,), device=dev)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()

        for _ in range(WARMUP_STEPS):  # allocator, kernel selection, lazy init: slow first steps
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < MIN_STEPS:
            t0 = time.perf_counter()
            step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
        # The median step: a step slowed by another process on a shared machine does not count.
        out[k] = Speed(batch / statistics.median(times), "measured", 1, words)
    return out


def estimate_work(work: Iterable[tuple[Any, float]], speeds: dict[str, Speed], what: str = "") -> WallEstimate:
    """Serial hours of FLOPs of work per backbone spec (``(BackboneSpec, flops)`` pairs, as
    :func:`bocb.compute.trial_flops` counts them: 3 forward passes per training image, one per test
    image): at a measured training speed, one image's training costs 3 forward passes, so
    seconds = flops / (3 x forward FLOPs x images per second). For adaptive tuning, whose trial
    count is not known in advance."""
    from bocb.compute import forward_flops

    seconds, used, missing, items = 0.0, {}, [], 0
    for backbone, flops in work:
        speed = speeds.get(spec_key(backbone.to_dict()))
        if speed is None:
            if backbone.short not in missing:
                missing.append(backbone.short)
            continue
        seconds += flops / (3 * forward_flops(backbone) * speed.images_per_second)
        used[spec_key(backbone.to_dict())] = speed
        items += 1
    return WallEstimate(seconds / 3600, items, tuple(missing), used, what)


def estimate(trials: Sequence[Any], train_images: int, test_images: int, num_classes: int,
             speeds: dict[str, Speed]) -> WallEstimate:
    """Serial hours of ``trials`` (TrialSpecs) at ``speeds`` (spec key -> Speed)."""
    seconds, counted, used, missing = 0.0, 0, {}, []
    for spec in trials:
        key = spec_key(spec.backbone.to_dict())
        speed = speeds.get(key)
        if speed is None:
            if spec.backbone.short not in missing:
                missing.append(spec.backbone.short)
            continue
        recipe = spec.recipe
        n_train = min(train_images, recipe.train_per_class * num_classes) if recipe.train_per_class else train_images
        n_test = min(test_images, recipe.test_per_class * num_classes) if recipe.test_per_class else test_images
        seconds += recipe.epochs * (n_train + n_test / EVAL_SPEEDUP) / speed.images_per_second
        counted += 1
        used[key] = speed
    return WallEstimate(seconds / 3600, counted, tuple(missing), used)


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: seconds, minutes or hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} hours"
