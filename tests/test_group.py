"""Multi-process trials inside a study: the local executor's process groups (bocb.executors.group),
streamed data split by rank, and studies that stream.

The reference for the numbers is the same trial in one process: a streamed epoch's global batch
is the same images with the same crops whatever the number of processes (rank r reads positions
r, r + W, ... of one permutation, and each image's crop is seeded by the image), so with a
LayerNorm model and no augmentation drawn on the device two processes must agree with one to
float rounding (the tolerance of tests/test_distributed.py); evaluation, split between the ranks
and summed, must give the very same accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
import torch

from bocb.data import DatasetSpec, open_data
from bocb.data.augment import AugmentConfig
from bocb.executors import sockets
from bocb.executors.local import LocalExecutor
from bocb.executors.worker import WorkerConfig
from bocb.spec import resolve_trial
from bocb.trial import RunOptions, run_trial

from imagenet_like import write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("in") / "data", {"train": 4, "val": 3}, sides=(40, 72))


def _spec(folder: Path, batch: int = 20):
    data = DatasetSpec("folder", root=str(folder), stream=True)
    spec = resolve_trial("DeiT-S", "SGD-M", data=data, num_classes=10, tier="smoke", policy="cifar",
                         lr=0.05, weight_decay=1e-4)
    recipe = spec.recipe.with_changes(augment=AugmentConfig(crop_padding=None, flip=False), epochs=2,
                                      warmup_epochs=0, batch_size=batch, train_per_class=None, test_per_class=None,
                                      drop_path_rate=0.0)
    return dataclasses.replace(spec, recipe=recipe, backbone=dataclasses.replace(spec.backbone, drop_path_rate=0.0))


def _run(executor: LocalExecutor, trials: dict[str, dict], listeners: set, limit_s: float = 240) -> dict[str, dict]:
    """Submit ``trials``, poll until each came back; ``listeners`` gathers every listening socket
    of this process and its descendants meanwhile (the slots, the leader's store, the ranks)."""
    for trial_id, spec in trials.items():
        executor.submit(trial_id, spec, "claim-" + trial_id)
    records: dict[str, dict] = {}
    deadline = time.time() + limit_s
    while len(records) < len(trials) and time.time() < deadline:
        records.update(executor.poll(timeout=0.5))
        listeners.update(sockets.listening(sockets.descendants(os.getpid()) | {os.getpid()}))
    return records


def _orphans() -> set[int]:
    """Python processes adopted by init (their parent died): what a killed group must not leave."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            if entry.name.isdigit() and stat.split(")")[-1].split()[1] == "1" and b"python" in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _kill_after_first_epoch(executor: LocalExecutor, spec, artifacts: Path) -> set[int]:
    """Start ``spec`` and SIGKILL its group's leader once epoch 1's checkpoint is written; returns
    the pids of the ranks it had spawned."""
    import signal

    executor.submit(spec.trial_id, spec.to_dict(), "claim-" + spec.trial_id)
    leader = next(s.process.pid for s in executor._slots if s.trial_id == spec.trial_id and s.lent_to is None)
    checkpoint = artifacts / spec.trial_id / "checkpoint.safetensors"
    deadline = time.time() + 180
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists()
    ranks = sockets.descendants(leader)
    os.kill(leader, signal.SIGKILL)
    return ranks


@pytest.mark.slow
def test_a_two_process_streamed_trial_in_a_slot_group_matches_one_process(folder, tmp_path):
    torch.set_num_threads(1)
    spec = _spec(folder)
    single = run_trial(spec, open_data(spec.data), RunOptions(device="cpu", data_workers=0))
    assert single["status"] == "done", single.get("error")

    config = WorkerConfig(artifacts_dir=str(tmp_path / "art"), device="cpu")
    bad = _spec(folder, batch=21)  # 21 does not split over 2 processes: both ranks fail at once
    executor = LocalExecutor(config, slots=2, processes=lambda s: 2)
    try:
        assert executor.free_slots == 2
        started = time.time()
        listeners: set = set()
        failed = _run(executor, {bad.trial_id: bad.to_dict()}, listeners)[bad.trial_id]
        elapsed = time.time() - started
        # Killed once epoch 1 is checkpointed: the ranks die with their leader, the trial comes
        # back failed, and run again every rank resumes from rank 0's checkpoint.
        adopted = _orphans()
        ranks = _kill_after_first_epoch(executor, spec, tmp_path / "art")
        killed, = executor.poll(timeout=5)
        assert killed[0] == spec.trial_id and "worker process lost" in killed[1]["error"]
        deadline = time.time() + 10
        while any(_alive(pid) for pid in ranks) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(6)  # past DataLoader's own 5 s check, which a worker started late never passes
        left = [pid for pid in ranks | (_orphans() - adopted) if _alive(pid)]
        assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in left]
        records = _run(executor, {spec.trial_id: spec.to_dict()}, listeners)
        events = executor.events()
    finally:
        executor.shutdown()
    group = records[spec.trial_id]
    assert group["resumed_from_epoch"] == 1
    assert group["status"] == "done", group.get("error")
    assert (group["processes"], group["batch_per_process"], group["claim"]) == (2, 10, "claim-" + spec.trial_id)
    for x, y in zip(group["epochs"], single["epochs"], strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["test_loss"] == pytest.approx(y["test_loss"], rel=1e-4)
        assert (x["test_top1"], x["test_top5"]) == (y["test_top1"], y["test_top5"])  # split, summed, equal
    assert Path(group["artifacts"]["final_weights"]).exists() and "diagnostics" in group  # rank 0 measured
    # Rank 0's progress reached the runner's queue like any slot's.
    assert {e["event"] for trial_id, e in events if trial_id == spec.trial_id} >= {"step", "epoch"}

    assert failed["status"] == "failed" and failed["claim"] == "claim-" + bad.trial_id
    assert "2-process trial failed" in failed["error"] and "does not split evenly" in failed["error"]
    assert "\n" not in failed["error"] and elapsed < 200
    # The leader's rendezvous store and the ranks' gloo sockets were seen, all on loopback.
    assert len({s.pid for s in listeners}) >= 3
    assert [s for s in listeners if not s.loopback] == []


def test_a_group_waits_for_its_slots_and_one_that_cannot_fit_fails_at_once(tmp_path):
    """Slot accounting without training: a 3-process trial on 2 slots comes back failed at the next
    poll, saying what to change; the executor is then free again."""
    config = WorkerConfig(artifacts_dir=str(tmp_path), device="cpu")
    executor = LocalExecutor(config, slots=2, processes=lambda s: 3)
    try:
        executor.submit("t1", {"backbone": {"name": "x"}}, "c1")
        assert executor.running == ["t1"]
        (trial_id, record), = executor.poll(timeout=0.1)
        assert trial_id == "t1" and record["status"] == "failed" and record["claim"] == "c1"
        assert "runs on 3 processes but this run has 2 slots (--slots)" in record["error"]
        assert executor.running == [] and executor.free_slots == 2
    finally:
        executor.shutdown()


@pytest.mark.slow
def test_a_study_streams_its_data_and_runs_trials_on_two_processes(folder, tmp_path):
    """`bocb run` on a study with streamed data, an ImageNet recipe and processes_per_trial = 2,
    beside a backbone on one process: both trials done, each record says how it ran."""
    from cli_inproc import bocb

    study = tmp_path / "in1k-mini.toml"
    study.write_text(f'''[study]
name = "in1k-mini"
data = "stream:folder:{folder}"
tuning = "fixed"
epochs = 1
batch_size = 8
processes_per_trial = 2

[[backbones]]
name = "R-18"
scale = "tiny"
policy = "upsample"
recipe = "in1k-rsb-a3"

[[backbones]]
name = "CNX-T"
scale = "tiny"
policy = "upsample"
recipe = "in1k-rsb-a3"
processes_per_trial = 1

[[optimizers]]
name = "LAMB"
''')
    store = tmp_path / "s.sqlite"
    done = bocb("run", study, "--store", store, "--slots", "2", "--device", "cpu", "--json", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["done"] == 2
    from bocb.store import SQLiteStore

    with SQLiteStore(store) as opened:
        records = {r["spec"]["backbone"]["short"]: r for r in map(opened.record, [t["trial_id"] for t in opened.trials()])}
    assert records["R-18"]["processes"] == 2 and "processes" not in records["CNX-T"]
    for record in records.values():
        streamed = record["dataset"]["streamed"]
        assert (streamed["train"]["size"], streamed["eval"]["size"]) == (160, 224)
        assert record["dataset"]["train_images"] == 40 and record["dataset"]["test_images"] == 30

    # The ImageNet-style model is a transfer study's pre-trained model: fine-tuned on CIFAR in
    # memory with the backbone's own recipe (the ImageNet crops need streamed data).
    transfer = tmp_path / "transfer.toml"
    transfer.write_text(f'''[study]
name = "from-in1k-mini"
task = "classification"
data = "sample"
tier = "smoke"
tuning = "fixed"
epochs = 1
train_per_class = 8
test_per_class = 4
batch_size = 16

[[pretrained]]
study = "{study.name}"
backbones = ["R-18"]

[[optimizers]]
name = "SGD-M"
''')
    done = bocb("transfer", transfer, "--store", store, "--device", "cpu", "--json", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    with SQLiteStore(store) as opened:
        tuned = [opened.record(t["trial_id"]) for t in opened.trials() if t["trial_id"] not in
                 {r["trial_id"] for r in records.values()}]
    assert len(tuned) == 1 and tuned[0]["status"] == "done"
    spec = tuned[0]["spec"]
    assert spec["pretrained"]["trial_id"] == records["R-18"]["trial_id"]
    assert spec["recipe"]["name"] != "in1k-rsb-a3" and spec["backbone"]["input_size"] == 224


@pytest.mark.slow
def test_an_idle_or_lent_worker_that_died_is_replaced_before_it_is_used(tmp_path):
    """A lent slot's worker killed while its leader's group runs (the out-of-memory killer, say)
    used to be handed the next trial once freed: a broken pipe that ended the whole run."""
    executor = LocalExecutor(WorkerConfig(artifacts_dir=str(tmp_path), device="cpu"), slots=2)
    try:
        idle, lent = executor._slots
        lent.trial_id, lent.lent_to = "group-trial", idle.index
        for slot in (idle, lent):
            slot.process.kill()
            slot.process.join(timeout=10)
        executor.poll(timeout=0.1)
        assert idle.process.is_alive() and lent.process.is_alive()
        assert (lent.trial_id, lent.lent_to) == ("group-trial", idle.index) and idle.trial_id is None
    finally:
        executor.shutdown()


def test_processes_per_trial_is_read_per_entry_and_checked_before_anything_is_stored(tmp_path):
    """The study's value, a backbone entry's own (matched on name and recipe: one backbone may be
    listed twice), the run's flag over both; and a run that can never give a trial its processes
    is refused in one line, exit 2, with no store written."""
    from cli_inproc import bocb

    from bocb.study import StudyError, load_study

    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "p"\nprocesses_per_trial = 3\n'
                    '[[backbones]]\nname = "R-50"\nrecipe = "pytorch"\nprocesses_per_trial = 2\n'
                    '[[backbones]]\nname = "R-50"\nrecipe = "rsb-a2"\n[[backbones]]\nname = "DeiT-S"\n'
                    '[[optimizers]]\nname = "SGD-M"\n')
    study = load_study(path)

    def spec(name, recipe):
        return {"backbone": {"name": name, "policy": "cifar", "scale": "tiny"}, "recipe": {"name": recipe}}

    assert study.processes_for(spec("resnet50", "pytorch")) == 2
    assert study.processes_for(spec("resnet50", "rsb-a2")) == 3
    assert study.processes_for(spec("deit_small_patch16_224", "deit")) == 3
    path.write_text(path.read_text().replace("processes_per_trial = 3", "processes_per_trial = 0"))
    with pytest.raises(StudyError, match="processes_per_trial: expected a whole number from 1 to 1024, got 0"):
        load_study(path)

    store = tmp_path / "store.sqlite"
    done = bocb("run", tmp_path / "nope.toml", "--store", store)  # the study file's own errors first
    assert done.returncode == 2
    small = tmp_path / "small.toml"
    small.write_text('[study]\nname = "small"\ntuning = "fixed"\n[[backbones]]\nname = "R-18"\n'
                     '[[optimizers]]\nname = "SGD-M"\n')
    done = bocb("run", small, "--store", store, "--device", "cpu", "--slots", "2", "--processes-per-trial", "3",
                cache=tmp_path / "cache")
    assert done.returncode == 2 and not store.exists()
    line, = done.stderr.strip().splitlines()
    assert "trials run on up to 3 processes" in line and "this run has 2 slot(s) (--slots): give the run 3" in line


@pytest.mark.slow
def test_a_rank_without_evaluation_images_does_not_stall_a_batchnorm_model(tmp_path):
    """A test set of one image over two processes: rank 1 evaluates nothing. With BatchNorm, DDP's
    forward broadcasts buffers (a collective) that such a rank would skip, and both ranks waited
    until the process group's timeout; bocb broadcasts them itself before evaluating."""
    import threading

    from bocb.executors.group import run_group
    from bocb.fencing import raise_fence

    root = write_folder(tmp_path / "data", {"train": 2, "val": 1}, sides=(40, 64), classes=2)
    for extra in sorted((root / "val").glob("*/*.JPEG"))[1:]:
        extra.unlink()
    data = DatasetSpec("folder", root=str(root), stream=True)
    spec = resolve_trial("R-18", "SGD-M", data=data, num_classes=2, tier="smoke", policy="cifar", scale="tiny",
                         lr=0.05, weight_decay=1e-4)
    spec = dataclasses.replace(spec, recipe=spec.recipe.with_changes(epochs=1, batch_size=4, warmup_epochs=0,
                                                                     train_per_class=None, test_per_class=None))
    single = run_trial(spec, open_data(spec.data), RunOptions(device="cpu", data_workers=0))
    config = dataclasses.asdict(WorkerConfig(artifacts_dir=str(tmp_path / "art"), device="cpu"))
    raise_fence(tmp_path / "art" / spec.trial_id, "c")
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(record=run_group(
        spec.trial_id, spec.to_dict(), config, "c", ["cpu", "cpu"], 1)), daemon=True)
    worker.start()
    worker.join(timeout=150)
    assert "record" in out, "the group did not finish: a collective was skipped"
    record = out["record"]
    assert record["status"] == "done", record.get("error")
    assert record["dataset"]["test_images"] == 1
    assert record["epochs"][0]["test_top1"] == single["epochs"][0]["test_top1"]
