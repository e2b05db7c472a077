"""The GPU check: CUDA paths, throughput, packing and the coupling on real CIFAR-10, in one command.

    make gpu-check DATA=path/to/cifar10-parquet WHEELS=.whl OUT_DIR=gpu-check-out   # a CUDA machine
    make gpu-check DRY_RUN=1                                                       # CPU, tiny sizes (CI)
    python3 scripts/gpu_check.py --data ... --wheels ... --out ... [--dry-run]     # without make

Made for a machine that is lent for minutes: it has its own torch/torchvision/timm and no package
registry, so the whole check is this one command, at most ~8 minutes of wall time (``--budget-s``,
default 470 s). Steps run in order, each in its own process with its own time limit, and one
step's failure or timeout never stops the others; each ends ``passed``, ``failed``, ``timeout``
or ``skipped`` with its reason. Steps:

1. ``install`` (in this process): bocb's dependencies from pyproject.toml against what is already
   installed; a missing one is installed from a wheel in ``--wheels`` (``make gpu-wheels`` fills
   it: the small pure-Python and abi3 wheels; pip ``--no-index --no-deps --target`` into the work
   folder), else reported missing. bocb itself runs from ``src/`` (``PYTHONPATH``), not installed.
   Ray is not carried (its 2.60.0 wheel is 76 MiB, over the 64 MiB a device run can take along):
   where it is not installed the Ray step is skipped and says so.
2. ``env``: ``benchmarks/environment.py``: torch, CUDA, the GPU; decodes the data once into the
   shared cache the later steps read.
3. ``throughput``: ``benchmarks/throughput.py``, a plain PyTorch loop (DataLoader, CPU
   augmentation, fp32) against bocb's trial (on-device augmentation, bf16 autocast, channels_last)
   on CIFAR ResNet-18 and DeiT-S/4, alternating, 2 repeats; targets 1.2x and 2.5x.
4. ``packing``: ``benchmarks/packing.py``, 4 identical ResNet-18 trials at 1/2/4 slots on one GPU:
   aggregate img/s (target >= 38k img/s on an H100-class GPU), runner overhead per trial.
5. ``ministudy``: ``bocb run studies/gpu-check-cifar10.toml`` (its ``data`` set to ``--data``) with
   12 slots, then ``benchmarks/coupling.py``: the table and whether the coupling shows.
6. ``throughput-compile``: the trial with torch.compile, both models, timed against the eager
   plain loop of step 3 (the plain loop is not compiled).
7. ``ray``: ``benchmarks/packing.py --executor ray --slots 2``: two trials as Ray tasks with half a
   GPU each.
8. ``stream``: ``benchmarks/stream.py --decode cpu,cuda``: images/s of the streaming loader on 512
   ImageNet-sized JPEGs (upscaled CIFAR with noise, ~110 kB), decoded by 2 and 8 CPU workers
   against nvJPEG on the GPU (workers only read files). Last: it is the first thing to drop when
   the budget runs out.

The CUDA paths are judged from those steps' records: bf16 + channels_last (the trials of step 3
report bf16 precision on a CUDA device; bocb applies channels_last together with bf16 on CUDA),
compile (step 6), two slots on one GPU (step 4's 2-slot setting had 2 trials running at once on
CUDA), Ray with fractional GPUs (step 7 had 2 trials at once on CUDA with 0.5 GPU each).

Sizing on one H200, from the first real check (2026-11-30; torch 2.11.0+cu130, 16 cores; bf16,
eager, batch 128). Measured: one CIFAR ResNet-18 trial 13.7k img/s (the plain loop 13.9k: both
launch-bound at this batch), DeiT-S/4 4.7k (plain 5.1k) under the ``pytorch`` recipe; under the
``deit`` recipe DeiT-S/4 runs at 2.6k img/s alone, as its RandAugment + erasing + mixup cost
9.5 ms per batch of 128 against a 20.6 ms training step (``benchmarks/augment.py``). The first
check's sizes did not fit: packing at 8 slots and the mini-study (8 epochs x 25k images: 6 R-18
trials done in 115 s of which 57 s training, no DeiT-S epoch within 220 s with 12 trials sharing
the GPU) ran out of time. Resized from those figures:

- throughput, eager: 2,000 images per class (20k), 3 epochs, 2 timed, twice each way: 71 s
  measured.
- packing: 4 trials x 2 epochs x 10k images at 1/2/4 slots: ~70 s (8 trials at 1/2/4 slots took
  51 + 44 + 41 s; runner overhead is 65-80 % of such short trials, start-up mostly).
- mini-study: 12 trials x 8 epochs x 10k images (1,000 per class), 12 slots, given 240 s:
  start-up (~60 s with 12 spawned workers; less now that they fork from a preloaded server), R-18
  ~25 s, DeiT-S 480k images: ~185 s at the 2.6k img/s one trial reached alone, less if six
  packed trials use the GPU better (the first check saw far less with twelve at once). It may
  still run out of time; the check then says so and the store keeps what finished.
- compile: the remaining budget, up to 180 s for both models (compilation dominates).
- total ~11 + 71 + 70 + 150 + 10 + the rest for compile, of the 470 s budget; the steps before the
  mini-study are cut short to leave it its reserve, and what the budget cannot fit is skipped and
  says so.

``--dry-run`` runs the same steps on the CPU at tiny sizes (tiny models, a few images per class of
the bundled sample, 1-2 epochs, packing at slots 1 and 2, ``studies/gpu-check-dry.toml`` in one
slot). Its cost is mostly start-up: each of its 9 Python processes imports torch and bocb, ~11 s
of CPU each on a 2-core machine, of 134 s of CPU in all (measured on a loaded machine: 8 minutes
of wall time). Compile is skipped (minutes of C++ compilation on a small CPU; it needs nothing else a dry run could test),
so is the Ray step (fractional GPUs need CUDA, and the suite already runs the Ray executor on a
local instance), and the CUDA paths are reported ``skipped: needs CUDA`` after their judgement ran
on the CPU's records.

Output, in ``--out`` (four files): ``summary.json`` (every step: status, reason, seconds, its
parsed results; the CUDA paths; the verdict), ``report.md`` (the same for people), ``steps.log``
(every step's command and output), ``ministudy.sqlite`` (the mini-study's store). Exit code 0 when
no step failed or timed out, 1 otherwise, 2 for bad arguments or no CUDA GPU without --dry-run.

This file uses only the standard library, so it runs before bocb's dependencies are installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
TARGETS = {"resnet18": 1.2, "deit_small": 2.5, "packing_images_per_s": 38_000}
MODELS = {"resnet18": "CIFAR ResNet-18", "deit_small": "DeiT-S/4"}
OUTPUTS = ("summary.json", "report.md", "steps.log", "ministudy.sqlite")


@dataclass(frozen=True)
class Sizes:
    """How big each step is; GPU sizes are explained in the module doc."""

    per_class: int
    test_per_class: int
    batch_size: int
    scale: str
    epochs: int
    repeats: int
    workers: int
    packing_trials: int
    packing_per_class: int | None
    packing_test_per_class: int
    packing_epochs: int
    slots: tuple[int, ...]
    study: str
    study_slots: int
    device: str
    timeout_scale: float  # on the step limits: a dry run's limits only catch hangs


GPU = Sizes(per_class=2000, test_per_class=10, batch_size=128, scale="paper", epochs=3, repeats=2,
            workers=min(8, os.cpu_count() or 1), packing_trials=4, packing_per_class=1000,
            packing_test_per_class=100, packing_epochs=2, slots=(1, 2, 4),
            study="studies/gpu-check-cifar10.toml", study_slots=12, device="cuda", timeout_scale=1.0)
DRY = Sizes(per_class=2, test_per_class=1, batch_size=10, scale="tiny", epochs=2, repeats=1, workers=0,
            packing_trials=2, packing_per_class=2, packing_test_per_class=1, packing_epochs=1, slots=(1, 2),
            study="studies/gpu-check-dry.toml", study_slots=1, device="cpu", timeout_scale=4.0)


@dataclass
class Step:
    """One step: a command run with the check's Python, its time limit and what it leaves."""

    name: str
    title: str
    argv: list[str]
    timeout_s: float
    reserve_s: float = 0.0  # the budget earlier steps must leave for this one
    needs: tuple[str, ...] = ()  # Python modules; a missing one skips the step
    skip: str | None = None  # a reason known before the run
    json_out: Path | None = None  # JSON lines (or one JSON object) the step writes


@dataclass
class StepResult:
    name: str
    title: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)
    command: str = ""


def read_json_lines(path: Path | None) -> list[dict[str, Any]]:
    """The JSON objects a step wrote: one per line, or one (indented) object for the whole file."""
    if path is None or not path.exists():
        return []
    text = path.read_text().strip()
    if not text:
        return []
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return [json.loads(text)]


def run_step(step: Step, env: dict[str, str], limit_s: float, log) -> StepResult:
    """Run one step as a child process group, killed whole when it passes ``limit_s``."""
    command = " ".join(step.argv)
    log.write(f"\n===== {step.name}: {command}\n(limit {limit_s:.0f} s)\n")
    log.flush()
    t0 = time.time()
    proc = subprocess.Popen(step.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        code = proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        # The whole group: the benchmarks start worker processes of their own.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    seconds = round(time.time() - t0, 1)
    results = read_json_lines(step.json_out)
    if code is None:
        status, reason = "timeout", f"stopped after {limit_s:.0f} s"
    elif code != 0:
        status, reason = "failed", f"exit code {code}: {_last_error(step.name, log)}"
    else:
        status, reason = "passed", ""
    log.write(f"===== {step.name}: {status} in {seconds} s {reason}\n")
    log.flush()
    return StepResult(step.name, step.title, status, reason, seconds, results, command)


def _last_error(name: str, log) -> str:
    """The last non-empty line the step printed (the exception line of a traceback)."""
    log.flush()
    text = Path(log.name).read_text(errors="replace")
    section = text[text.rfind(f"===== {name}:"):]
    lines = [x for x in section.splitlines() if x.strip() and not x.startswith("=====")]
    return lines[-1][:300] if lines else "no output"


def run_steps(steps: list[Step], env: dict[str, str], budget_s: float, log, missing: set[str],
              start: float | None = None) -> list[StepResult]:
    """Run ``steps`` in order inside ``budget_s`` (see the module doc); every step gets a result."""
    start = time.time() if start is None else start
    deadline = start + budget_s
    out: list[StepResult] = []
    for i, step in enumerate(steps):
        absent = [m for m in step.needs if m in missing]
        if step.skip or absent:
            reason = step.skip or f"{', '.join(absent)} not installed"
            out.append(StepResult(step.name, step.title, "skipped", reason))
            continue
        reserve = sum(s.reserve_s for s in steps[i + 1:] if not s.skip)
        limit = min(step.timeout_s, deadline - time.time() - reserve)
        if limit < min(20.0, step.timeout_s):
            out.append(StepResult(step.name, step.title, "skipped",
                                  f"out of the check's {budget_s:.0f} s budget"))
            continue
        out.append(run_step(step, env, limit, log))
    return out


# -- install ------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def requirements() -> list[tuple[str, str | None]]:
    """(distribution, pinned version) of bocb's dependencies, plus ray (for the Ray step)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project.get("optional-dependencies", {}).get("ray", [])
    out = []
    for req in [*project["dependencies"], *extra]:
        name, _, pin = req.partition("==")
        out.append((name.strip(), pin.strip() or None))
    return out


def installed_version(dist: str, paths: list[str]) -> str | None:
    for found in metadata.distributions(path=paths + sys.path, name=dist):
        return found.version
    return None


# bocb's dependencies the GPU machine's image lacks (its package list, 2026-11): small pure-Python
# wheels and pycocotools' abi3 wheel, 0.8 MiB together. Ray is left out (see the module doc).
CARRIED = ("pytorch-optimizer", "sophia-opt", "schedulefree", "pycocotools")


def fetch_wheels(folder: Path, python_version: str) -> int:
    """``pip download`` the pinned wheels of :data:`CARRIED` for that machine (CPython, x86-64 Linux)."""
    pins = dict(requirements())
    wanted = [f"{name}=={pins[name]}" for name in CARRIED]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
           "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(folder), *wanted]
    print(" ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code == 0:
        size = sum(f.stat().st_size for f in folder.glob("*.whl"))
        print(f"{len(list(folder.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {folder}")
    return code


def install(wheels: Path | None, site: Path, log) -> dict[str, Any]:
    """Install missing dependencies from ``wheels`` into ``site``; what is there, from where."""
    rows: list[dict[str, Any]] = []
    missing = [d for d, _ in requirements() if installed_version(d, []) is None]
    found = {}
    if wheels and wheels.is_dir():
        for w in sorted(wheels.glob("*.whl")):
            found[_norm(w.name.split("-")[0])] = w
    errors = []
    # One wheel at a time: pip refuses the whole list for one wheel of the wrong Python or platform.
    for wheel in [found[_norm(d)] for d in missing if _norm(d) in found]:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--target", str(site), str(wheel)]
        log.write("\n===== install: " + " ".join(cmd) + "\n")
        log.flush()
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            errors.append(f"{wheel.name}: pip could not install it (see steps.log)")
    for dist, pin in requirements():
        before = installed_version(dist, [])
        version = before or installed_version(dist, [str(site)])
        source = "present" if before else ("wheel" if version else "missing")
        rows.append({"name": dist, "pin": pin, "version": version, "source": source,
                     "matches_pin": version == pin if version else None})
    return {"packages": rows, "wheels_dir": str(wheels) if wheels else None, "errors": errors,
            "missing": [r["name"] for r in rows if r["source"] == "missing"]}


# -- the steps -------------------------------------------------------------------------------------


# Measured on the 2-core CI-like machine (loaded): the Ray step alone took 135 s of a 10-minute dry
# run, for code the suite already runs (tests/test_study_run.py starts a local Ray instance too).
RAY_DRY_SKIP = ("fractional GPUs need CUDA; the Ray executor on the CPU is covered by "
                "tests/test_study_run.py::test_ray_executor_on_a_local_instance")


STREAM_DRY_SKIP = ("nvJPEG needs CUDA; CPU decoding is covered by tests/test_stream.py and "
                   "benchmarks/stream.py")


def build_steps(sizes: Sizes, data: str, work: Path, cache: Path, dry: bool, on_sample: bool) -> list[Step]:
    py = sys.executable
    per_class = min(sizes.per_class, 500) if on_sample else sizes.per_class  # the sample has 500 per class
    common = ["--data", data, "--cache-dir", str(cache), "--device", sizes.device, "--batch-size", str(sizes.batch_size)]

    def throughput(compile: bool) -> Step:
        name = "throughput-compile" if compile else "throughput"
        argv = [py, "benchmarks/throughput.py", "--model", *MODELS, *common, "--epochs", str(sizes.epochs),
                "--per-class", str(per_class), "--test-per-class", str(sizes.test_per_class),
                "--scale", sizes.scale, "--workers", str(sizes.workers),
                "--repeats", str(1 if compile else sizes.repeats), "--json-out", str(work / f"{name}.jsonl")]
        if compile:
            argv += ["--compile", "--no-plain"]
        title = "trial compiled, ResNet-18 and DeiT-S/4" if compile else "plain loop vs trial, ResNet-18 and DeiT-S/4"
        skip = "compile is skipped on the CPU dry run (minutes of C++ compilation)" if compile and dry else None
        return Step(name, title, argv, 180 if compile else 150, json_out=work / f"{name}.jsonl", skip=skip)

    def packing(name: str, trials: int, slots: tuple[int, ...], executor: str) -> list[str]:
        argv = [py, "benchmarks/packing.py", *common, "--trials", str(trials), "--epochs", str(sizes.packing_epochs),
                "--test-per-class", str(sizes.packing_test_per_class), "--scale", sizes.scale,
                "--executor", executor, "--slots", *map(str, slots), "--json-out", str(work / f"{name}.jsonl")]
        if sizes.packing_per_class:
            argv += ["--per-class", str(min(sizes.packing_per_class, 500) if on_sample else sizes.packing_per_class)]
        return argv

    study = work / "ministudy.toml"
    study.write_text(with_data((ROOT / sizes.study).read_text(), data if not dry else "sample"))
    store = work / "ministudy.sqlite"
    ministudy_skip = None
    if on_sample and not dry:
        ministudy_skip = ("the real CIFAR-10 was not found (--data); the bundled sample (500 images per class) "
                          "cannot show the coupling")
    steps = [
        Step("env", "torch, CUDA, GPU; data decoded into the cache",
             [py, "benchmarks/environment.py", "--data", data, "--cache-dir", str(cache),
              "--json-out", str(work / "env.json")], 120, json_out=work / "env.json"),
        throughput(compile=False),
        Step("packing", f"packing: {sizes.packing_trials} ResNet-18 trials at {'/'.join(map(str, sizes.slots))} slots",
             packing("packing", sizes.packing_trials, sizes.slots, "local"), 150, json_out=work / "packing.jsonl"),
        Step("ministudy", f"mini-study: bocb run {sizes.study}",
             [py, "-m", "bocb", "run", str(study), "--store", str(store), "--artifacts", str(work / "artifacts"),
              "--slots", str(sizes.study_slots), "--device", sizes.device], 240, reserve_s=200 if not dry else 0,
             skip=ministudy_skip),
        Step("coupling", "coupling verdict from the mini-study's store",
             [py, "benchmarks/coupling.py", "--store", str(store), "--study", str(study),
              "--json-out", str(work / "coupling.json")], 60, reserve_s=15 if not dry else 0,
             json_out=work / "coupling.json", skip=ministudy_skip),
        throughput(compile=True),
        Step("ray", "Ray: 2 trials as tasks, half a GPU each",
             packing("ray", 2, (2,), "ray"), 90, needs=("ray",), json_out=work / "ray.jsonl",
             skip=RAY_DRY_SKIP if dry else None),
        Step("stream", "streaming loader: JPEG decode on the CPU workers vs nvJPEG on the GPU",
             [py, "benchmarks/stream.py", "--images", "512", "--workers", "2,8", "--noise", "25",
              "--decode", "cpu,cuda", "--json-out", str(work / "stream.json")], 90, json_out=work / "stream.json",
             skip=STREAM_DRY_SKIP if dry else None),
    ]
    return [dataclasses.replace(s, timeout_s=s.timeout_s * sizes.timeout_scale) for s in steps]


def with_data(toml_text: str, data: str) -> str:
    """The study file with its ``[study]`` ``data = ...`` line set to ``data`` (a TOML string)."""
    line = re.compile(r'^data\s*=\s*".*"\s*$', re.MULTILINE)
    if len(line.findall(toml_text)) != 1:
        raise ValueError("the mini-study file must have exactly one 'data = \"...\"' line")
    return line.sub(lambda _: f"data = {json.dumps(data)}", toml_text)


# -- judging and reporting ------------------------------------------------------------------------------


def cuda_paths(results: dict[str, StepResult], on_cpu: bool) -> dict[str, dict[str, str]]:
    """pass/fail/skipped of each CUDA path, from the records of the steps that exercised it.

    On the CPU (dry run) each is ``skipped: needs CUDA``, after the same judgement ran with the
    CPU's expectations (fp32 on cpu), so the judging code cannot rot either.
    """
    device, precision = ("cpu", "fp32") if on_cpu else ("cuda", "bf16")

    def judged(step_names: list[str], ok) -> dict[str, str]:
        steps = [results[s] for s in step_names if s in results]
        bad = [s for s in steps if s.status in ("failed", "timeout")]
        if bad:
            verdict = {"status": "fail", "reason": f"{bad[0].name}: {bad[0].status} {bad[0].reason}".strip()}
        elif not steps or any(s.status == "skipped" for s in steps):
            why = next((s.reason for s in steps if s.status == "skipped"), "not run")
            verdict = {"status": "skipped", "reason": why}
        else:
            reason = ok([r for s in steps for r in s.results])
            verdict = {"status": "pass"} if reason is None else {"status": "fail", "reason": reason}
        if on_cpu:
            shown = verdict["status"] + (f" ({verdict['reason']})" if verdict.get("reason") else "")
            return {"status": "skipped", "reason": f"needs CUDA; the same check on the CPU: {shown}"}
        return verdict

    def bf16(rows):
        if not rows:
            return "no trial recorded"
        bad = [r for r in rows if r.get("bocb_precision") != precision
               or not str(r.get("bocb_device")).startswith(device)]
        return f"trial ran {bad[0].get('bocb_precision')} on {bad[0].get('bocb_device')}" if bad else None

    def compiled(rows):
        return None if rows and all(r.get("compile") for r in rows) else "no compiled trial recorded"

    def two_at_once(rows):
        row = next((r for r in rows if r.get("slots") == 2), None)
        if row is None:
            return "no 2-slot setting recorded"
        if row["status"] != ["done"]:
            return f"trials ended {row['status']}: {row.get('errors')}"
        if not all(d.startswith(device) for d in row["devices"]):
            return f"trials ran on {row['devices']}"
        if row["most_at_once"] < 2:
            return "the two trials never ran at the same time"
        return None

    return {
        "bf16_channels_last": judged(["throughput"], bf16),
        "compile": judged(["throughput-compile"], compiled),
        "two_slots_one_gpu": judged(["packing"], two_at_once),
        "ray_fractional_gpus": judged(["ray"], two_at_once),
    }


def throughput_table(results: dict[str, StepResult]) -> list[dict[str, Any]]:
    """One row per model and compile setting; a compiled trial is set against the eager plain loop."""
    def row_for(step: StepResult | None, model: str) -> dict[str, Any]:
        return next((r for r in (step.results if step else []) if r.get("model") == model), {})

    rows = []
    for model, label in MODELS.items():
        plain = row_for(results.get("throughput"), model).get("plain_images_per_s")
        for name in ("throughput", "throughput-compile"):
            step = results.get(name)
            r = row_for(step, model)
            trial = r.get("bocb_images_per_s")
            ratio = round(trial / plain, 2) if trial and plain else None
            rows.append({"model": label, "compile": name.endswith("compile"),
                         "status": "measured" if r else (step.status if step else "not run"),
                         "plain_images_per_s": plain, "trial_images_per_s": trial, "ratio": ratio,
                         "target": TARGETS[model], "meets_target": None if ratio is None else ratio >= TARGETS[model],
                         "precision": r.get("bocb_precision"), "compile_seconds": r.get("compile_seconds")})
    return rows


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def write_report(summary: dict[str, Any], path: Path) -> None:
    s = summary
    env = s.get("env") or {}
    lines = [f"# bocb GPU check{' (dry run, CPU)' if s['dry_run'] else ''}", "",
             f"{s['started']} UTC, {s['wall_seconds']:.0f} s of a {s['budget_s']:.0f} s budget; "
             f"{env.get('gpu') or 'no GPU'}; torch {env.get('torch', '?')}, CUDA {env.get('cuda') or '-'}, "
             f"Python {env.get('python', '?')}; data: {s['data']}.", ""]
    if s.get("data_note"):
        lines += [f"**Data:** {s['data_note']}", ""]
    if s["dry_run"]:
        lines += ["A dry run: tiny models and sizes on the CPU. It checks that the steps run; none of its "
                  "numbers measure anything.", ""]
    lines += ["## Steps", "", "| step | what | status | seconds | reason |", "|---|---|---|---|---|"]
    for r in s["steps"]:
        lines.append(f"| {r['name']} | {r['title']} | {r['status']} | {r['seconds']} | {r['reason']} |")
    inst = s["install"]
    lines += ["", "## Dependencies", "",
              "Missing: " + (", ".join(inst["missing"]) or "none") + ". Versions that differ from the pins: "
              + (", ".join(f"{p['name']} {p['version']} (pin {p['pin']})" for p in inst["packages"]
                           if p["matches_pin"] is False) or "none") + "."
              + (f" Installed from wheels: {', '.join(p['name'] for p in inst['packages'] if p['source'] == 'wheel')}."
                 if any(p["source"] == "wheel" for p in inst["packages"]) else "")
              + "".join(f" {e}." for e in inst["errors"]), ""]
    lines += ["## CUDA paths", "", "| path | result | reason |", "|---|---|---|"]
    for name, r in s["cuda_paths"].items():
        lines.append(f"| {name} | {r['status']} | {r.get('reason', '')} |")
    lines += ["", "## Throughput (training images/s, one trial)", "",
              "| model | compile | plain loop | bocb trial | ratio | target | met | step |",
              "|---|---|---|---|---|---|---|---|"]
    for r in s["throughput"]:
        met = "-" if r["meets_target"] is None else ("yes" if r["meets_target"] else "no")
        lines.append(f"| {r['model']} | {'yes' if r['compile'] else 'no'} | {_fmt(r['plain_images_per_s'])} | "
                     f"{_fmt(r['trial_images_per_s'])} | {_fmt(r['ratio'], '.2f')} | >= {r['target']} | {met} | "
                     f"{r['status']} |")
    lines += ["", "The plain loop is always eager fp32 with DataLoader workers; a compiled trial is compared "
              "with the eager plain loop of the same model.", "",
              f"## Packing ({_fmt(TARGETS['packing_images_per_s'])} img/s target, H100-class GPU)", "",
              "| executor | slots | at once | aggregate img/s | x of 1 slot | overhead mean | overhead s/trial | evaluation share | trials |",
              "|---|---|---|---|---|---|---|---|---|"]
    packing = s["packing"]
    base = packing[0]["aggregate_images_per_s"] if packing else None
    for r in packing:
        lines.append(f"| {r['executor']} | {r['slots']} | {r['most_at_once']} | {_fmt(r['aggregate_images_per_s'])} | "
                     f"{_fmt(r['aggregate_images_per_s'] / base if base else None, '.2f')} | "
                     f"{_fmt(r['runner_overhead_mean'], '.1%')} | {_fmt(r.get('runner_overhead_seconds_mean'), '.1f')} | "
                     f"{_fmt(r['eval_share_mean'], '.1%')} | {', '.join(r['status'])} |")
    local = [r["aggregate_images_per_s"] for r in packing if r["executor"] == "local"]
    if local:
        best = max(local)
        lines += ["", f"Best packed: {_fmt(best)} img/s, target {_fmt(TARGETS['packing_images_per_s'])}: "
                      f"{'met' if best >= TARGETS['packing_images_per_s'] else 'not met'}."]
    lines += ["", "Runner overhead: the share of a trial's claim-to-finish time not spent in its training or "
              "evaluation (start-up, data onto the device, model build, checkpoint, weight snapshot, store). "
              "A slot's first trial also carries the worker's start-up; these trials are short, so the share is "
              "an upper bound for real ones.",
              "", "## Mini-study: the coupling on CIFAR-10", ""]
    c = s.get("coupling")
    if not c:
        step = next((r for r in s["steps"] if r["name"] == "coupling"), None)
        lines.append(f"No verdict: {step['status'] + ' ' + step['reason'] if step else 'not run'}.")
    else:
        lines += ["| backbone | optimizer | lr | weight decay | top-1 | status |", "|---|---|---|---|---|---|"]
        for r in c["settings"]:
            lines.append(f"| {r['backbone']} | {r['optimizer']} | {r['lr']:g} | {r['weight_decay']:g} | "
                         f"{r['top1']:.2f} | {r['status']} |")
        lines += ["", f"Best-tuned gap {c['alternative']} - {c['reference']} (top-1 points, +- one standard error):", ""]
        for b, g in c["gaps"].items():
            lines.append(f"- {b}: {g['reference']:.2f} -> {g['alternative']:.2f}, gap {g['gap']:+.2f} +- {g['se']:.2f}")
        lines += [f"- interaction (ViT gap - CNN gap): {c['interaction']:+.2f} +- {c['interaction_se']:.2f}", "",
                  f"**Coupling {c['verdict']}** (ViT prefers the adaptive optimizer: {c['vit_prefers_adaptive']}; "
                  f"CNN indifferent: {c['cnn_indifferent']}; interaction beyond 2 se: {c['interaction_clear']}).",
                  "", f"Uncertainty: errors from the {c['se_source']}"
                  + (" with one seed: seed-to-seed variation is not measured, so they are a lower bound"
                     if len(c["seeds"]) == 1 else "")
                  + ("; each pair's lr was chosen on the same test numbers that are reported, which flatters "
                     "every pair a little" if c["selection"] == "same numbers"
                     else "; each pair's lr was chosen on a held-out seed") + "."]
        if c["not_results"]:
            lines.append(f"Not results: {len(c['not_results'])} trial(s): "
                         + "; ".join(f"{r['backbone']} {r['optimizer']} {r['status']} {r['reason']}"
                                     for r in c["not_results"][:4]))
    lines += ["", "## Streaming loader: CPU workers vs nvJPEG", ""]
    st = s.get("stream")
    if not st:
        step = next((r for r in s["steps"] if r["name"] == "stream"), None)
        lines.append(f"Not measured: {step['status'] + ' ' + step['reason'] if step else 'not run'}.")
    else:
        meta = st["meta"]
        lines += [f"{meta['images']} JPEGs of {meta['image_sides'][0]}-{meta['image_sides'][1]} px "
                  f"({meta['kb_per_image']} kB each), crop {meta['crop']}, {meta['machine']}.", "",
                  "| transform | decode | workers | images/s | per worker | first batch s |", "|---|---|---|---|---|---|"]
        for r in st["rows"]:
            lines.append(f"| {r['transform']} | {r['decode']} | {r['workers']} | {r['images_per_s']} | "
                         f"{r['images_per_s_per_worker']} | {r['first_batch_s']} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "gpu-check-out", help="output folder (default: gpu-check-out)")
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help=f"CIFAR-10 Parquet folder (default: {DEFAULT_DATA}; the bundled sample when absent)")
    p.add_argument("--wheels", type=Path, default=None, help="folder of wheels for missing dependencies")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (what CI runs)")
    p.add_argument("--fetch-wheels", type=Path, metavar="DIR",
                   help="only download the wheels the GPU machine lacks into DIR (needs PyPI), then exit")
    p.add_argument("--wheel-python", default="3.12", help="the GPU machine's Python, for --fetch-wheels")
    p.add_argument("--budget-s", type=float, default=None, help="wall-time budget (default: 470; dry run 1200)")
    args = p.parse_args(argv)
    if args.fetch_wheels:
        args.fetch_wheels.mkdir(parents=True, exist_ok=True)
        return fetch_wheels(args.fetch_wheels, args.wheel_python)
    start = time.time()
    dry = args.dry_run
    budget = args.budget_s or (1200.0 if dry else 470.0)
    if args.wheels and not args.wheels.is_dir():
        print(f"--wheels {args.wheels}: no such folder (make gpu-wheels fills .whl)", file=sys.stderr)
        return 2

    # Absolute: the steps run with the repository as their working directory.
    data = args.data if args.data == "sample" else str(Path(args.data).resolve())
    note = None
    if dry:
        data = "sample"
    elif data != "sample" and not Path(data).exists():
        note = (f"{args.data} not found: using the bundled sample (500 train / 100 test images per class); "
                "the mini-study is skipped. Pass DATA=<CIFAR-10 Parquet folder>.")
        print(note, file=sys.stderr)
        data = "sample"
    args.out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # nothing left over from an earlier check
        (args.out / name).unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bocb-gpu-check-"))
    cache, site = work / "cache", work / "site"
    log_path = args.out / "steps.log"
    summary: dict[str, Any] = {
        "dry_run": dry, "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "budget_s": budget,
        "data": data, "data_note": note, "host": platform.node(), "work_dir": str(work),
    }
    with log_path.open("w") as log:
        summary["install"] = inst = install(args.wheels, site, log)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            x for x in (str(ROOT / "src"), str(site), os.environ.get("PYTHONPATH")) if x),
            BOCB_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        sizes = DRY if dry else GPU
        steps = build_steps(sizes, data, work, cache, dry, data == "sample")
        missing = {_norm(m) for m in inst["missing"]}
        results_list = run_steps(steps[:1], env, budget, log, missing, start=start)
        probe = results_list[0].results[-1] if results_list[0].results else {}
        # Only a probe that ran and saw no GPU stops the check; a failed probe lets the rest try.
        if not dry and results_list[0].status == "passed" and not probe.get("cuda_available"):
            reason = "no CUDA GPU here: run with --dry-run (make gpu-check DRY_RUN=1) for the CPU check"
            print(reason, file=sys.stderr)
            results_list += [StepResult(s.name, s.title, "skipped", reason) for s in steps[1:]]
            code = 2
        else:
            results_list += run_steps(steps[1:], env, budget, log, missing, start=start)
            code = 0
    results = {r.name: r for r in results_list}
    summary["env"] = probe
    summary["steps"] = [dataclasses.asdict(r) for r in results_list]
    summary["cuda_paths"] = cuda_paths(results, on_cpu=dry)
    summary["throughput"] = throughput_table(results)
    summary["packing"] = [*results["packing"].results, *results["ray"].results]
    summary["coupling"] = results["coupling"].results[-1] if results["coupling"].results else None
    summary["stream"] = results["stream"].results[-1] if results["stream"].results else None
    summary["wall_seconds"] = round(time.time() - start, 1)
    if (work / "ministudy.sqlite").exists():
        # SQLite's backup, not a file copy: a mini-study stopped at its limit leaves commits in the WAL.
        src, dst = sqlite3.connect(work / "ministudy.sqlite"), sqlite3.connect(args.out / "ministudy.sqlite")
        src.backup(dst)
        src.close()
        dst.close()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_report(summary, args.out / "report.md")
    print((args.out / "report.md").read_text())
    failed = [r.name for r in results_list if r.status in ("failed", "timeout")]
    print(f"gpu-check: {len(results_list) - len(failed)} of {len(results_list)} steps passed or skipped"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f"; output in {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return code or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
