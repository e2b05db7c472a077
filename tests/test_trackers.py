"""Experiment trackers (``--log``): tiny trials on the bundled sample, logged to TensorBoard, W&B
(offline) and MLflow (file store), then read back with each library's own reader and compared
with the record bocb stored; a missing library, an unknown name and a failing tracker."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bocb import trackers
from bocb.data import DatasetSpec, load_dataset
from bocb.spec import resolve_trial
from bocb.store import SQLiteStore
from bocb.trial import RunOptions, run_trial
from cli_inproc import bocb

TINY_TRAIN = ("--backbone", "R-18", "--optimizer", "SGD-M", "--tier", "smoke", "--epochs", "2",
              "--train-per-class", "2", "--test-per-class", "2", "--batch-size", "10", "--device", "cpu", "--json")
STUDY = """
[study]
name = "tracked"
data = "sample"
tier = "smoke"
tuning = "fixed"
seeds = [0]
epochs = 2
train_per_class = 2
test_per_class = 2
batch_size = 10

[[backbones]]
name = "R-18"
policy = "cifar"

[[optimizers]]
name = "SGD-M"

[[optimizers]]
name = "AdamW"
"""


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """W&B offline (no account, no network) and no tracker settings from the environment."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _record(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- readers: each tracker's files through its own library -------------------------------------


def _tensorboard(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    status = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors("status/text_summary")]
    return scalars, status


def _mlflow_runs(root: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return [(client, run) for run in client.search_runs([found.experiment_id])]


def _wandb_records(path: Path) -> list:
    """The records of an offline run's ``.wandb`` file, parsed with wandb's own protobuf ``Record``.
    wandb 0.31 keeps no Python reader of the file (it moved into wandb-core), so the framing is read
    here: a 7-byte header, then LevelDB-log chunks (crc32 4, length 2, type 1: full, first, middle,
    last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            raw, pending = pending + chunk, b""
            record = pb.Record()
            record.ParseFromString(raw)
            out.append(record)
        elif kind in (2, 3):
            pending += chunk
    return out


def _wandb_run(records: list) -> dict:
    """Config, group and name, the history by step, the final summary and the exit code."""
    out: dict = {"history": {}, "summary": {}, "config": {}}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(group=r.run.run_group, name=r.run.display_name)
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            out["history"][int(items["_step"])] = items
        elif kind == "summary":
            out["summary"].update({"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in r.summary.update})
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


# -- what every tracker must hold -----------------------------------------------------------------


def _check_tensorboard(folder: Path, record: dict) -> None:
    scalars, status = _tensorboard(folder)
    for row in record["epochs"]:
        for key in ("test_top1", "train_loss", "lr", "seconds_train"):
            assert scalars[key][row["epoch"]] == pytest.approx(row[key], rel=1e-6), key  # float32 on disk
    assert set(scalars["test_top1"]) == {r["epoch"] for r in record["epochs"]}
    assert scalars["final_top1"][record["epochs"][-1]["epoch"]] == pytest.approx(record["final_top1"])
    assert status == [record["status"]]


def _check_mlflow(client, run, record: dict) -> None:
    params = run.data.params
    assert params["optimizer.args.lr"] == json.dumps(record["spec"]["optimizer"]["args"]["lr"])
    assert params["backbone.short"] == "R-18" and params["trial_id"] == record["trial_id"]
    for key in ("test_top1", "train_loss", "lr"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert history == {r["epoch"]: pytest.approx(r[key]) for r in record["epochs"]}, key
    assert run.data.metrics["final_top1"] == pytest.approx(record["final_top1"])
    assert run.data.metrics["best_epoch"] == record["best_epoch"]
    assert run.data.tags["bocb.status"] == record["status"] and run.info.status == "FINISHED"
    assert run.data.tags["bocb.trial_id"] == record["trial_id"]


def _check_wandb(run: dict, record: dict, group: str) -> None:
    assert run["group"] == group and record["trial_id"][:8] in run["name"]
    assert run["config"]["optimizer"]["args"]["lr"] == record["spec"]["optimizer"]["args"]["lr"]
    assert run["config"]["trial_id"] == record["trial_id"]
    assert sorted(run["history"]) == [r["epoch"] for r in record["epochs"]]
    for row in record["epochs"]:
        for key in ("test_top1", "train_loss", "lr"):
            assert run["history"][row["epoch"]][key] == pytest.approx(row[key]), key
    assert run["summary"]["final_top1"] == pytest.approx(record["final_top1"])
    assert run["summary"]["status"] == record["status"] and run["exit_code"] == 0


# -- the commands -------------------------------------------------------------------------------------


def test_train_logs_to_all_three_trackers_and_each_reads_back_the_record(offline):
    logs = offline / "logs"
    record = _record(bocb("train", *TINY_TRAIN, "--log", "tensorboard", "--log", "wandb", "--log", "mlflow",
                          "--log-dir", logs, cache=offline / "cache"))
    assert record["status"] == "done" and len(record["epochs"]) == 2
    [folder] = (logs / "tensorboard" / trackers.TRAIN_GROUP).iterdir()
    assert folder.name.startswith("R-18_x_SGD-M_lr=") and record["trial_id"][:8] in folder.name
    _check_tensorboard(folder, record)
    [(client, run)] = _mlflow_runs(logs, trackers.TRAIN_GROUP)
    _check_mlflow(client, run, record)
    [wandb_file] = (logs / "wandb").glob("offline-run-*/*.wandb")
    _check_wandb(_wandb_run(_wandb_records(wandb_file)), record, trackers.TRAIN_GROUP)


@pytest.mark.slow
def test_run_logs_each_trial_from_the_runner_grouped_by_study(offline):
    """Trials run in worker processes; the runner logs them from their events and records."""
    (offline / "s.toml").write_text(STUDY)
    store = offline / "out" / "store.sqlite"
    proc = bocb("run", offline / "s.toml", "--store", store, "--log", "tensorboard", "--log", "mlflow",
                "--log", "wandb", "--json", cache=offline / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with SQLiteStore(store) as s:
        records = [s.record(t["trial_id"]) for t in s.trials()]
    assert len(records) == 2 and all(r["status"] == "done" for r in records)
    root = store.parent  # the default: beside the store
    mlflow_runs = {run.data.tags["bocb.trial_id"]: (client, run) for client, run in _mlflow_runs(root, "tracked")}
    wandb_runs = [_wandb_run(_wandb_records(f)) for f in (root / "wandb").glob("offline-run-*/*.wandb")]
    assert len(mlflow_runs) == 2 and len(wandb_runs) == 2
    for record in records:
        [folder] = (root / "tensorboard" / "tracked").glob(f"*{record['trial_id'][:8]}")
        _check_tensorboard(folder, record)
        _check_mlflow(*mlflow_runs[record["trial_id"]], record)
        [run] = [w for w in wandb_runs if w["config"]["trial_id"] == record["trial_id"]]
        _check_wandb(run, record, "tracked")


@pytest.mark.slow
def test_a_tracker_failing_mid_run_leaves_the_trial_and_the_other_trackers_whole(offline, monkeypatch):
    log_epoch = trackers.TensorBoard.log_epoch

    def full_disk(self, metrics, step):
        if step == 2:
            raise OSError(28, "No space left on device")
        log_epoch(self, metrics, step)

    monkeypatch.setattr(trackers.TensorBoard, "log_epoch", full_disk)
    (offline / "s.toml").write_text(STUDY)
    store = offline / "store.sqlite"
    proc = bocb("run", offline / "s.toml", "--store", store, "--log", "tensorboard", "--log", "mlflow",
                cache=offline / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with SQLiteStore(store) as s:
        records = [s.record(t["trial_id"]) for t in s.trials()]
    assert [r["status"] for r in records] == ["done", "done"]
    text = " ".join((proc.stdout + proc.stderr).split())
    for record in records:
        assert (f"trial {record['trial_id']}: tensorboard failed to log epoch 2 (OSError: [Errno 28] No space left "
                f"on device)") in text
        [folder] = (offline / "tensorboard" / "tracked").glob(f"*{record['trial_id'][:8]}")
        scalars, status = _tensorboard(folder)
        assert set(scalars["test_top1"]) == {1} and status == ["incomplete"]  # closed as such
    for client, run in _mlflow_runs(offline, "tracked"):  # the other tracker is unaffected
        _check_mlflow(client, run, next(r for r in records if r["trial_id"] == run.data.tags["bocb.trial_id"]))


@pytest.mark.parametrize("command", ["train", "run"])
def test_a_missing_tracker_library_is_one_line_exit_2_before_anything_trains(offline, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    (offline / "s.toml").write_text(STUDY)
    args = TINY_TRAIN if command == "train" else (offline / "s.toml", "--store", offline / "store.sqlite")
    proc = bocb(command, *args, "--log", "tensorboard", "--log", "wandb", cache=offline / "cache")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("bocb: error: --log wandb needs the wandb package") and "pip install 'bocb[wandb]'" in line
    assert not (offline / "cache").exists() and not (offline / "store.sqlite").exists()  # no data read, no store
    assert proc.stdout == ""


def test_an_unknown_tracker_names_the_valid_ones_exit_2(offline):
    proc = bocb("train", *TINY_TRAIN, "--log", "tensorbord", cache=offline / "cache")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bocb: error: unknown tracker 'tensorbord': did you mean 'tensorboard'? "
                                   "valid: tensorboard, wandb, mlflow")


def test_commands_that_do_not_train_import_no_tracker_library():
    # wandb is left out: timm imports it whenever it is installed (timm.utils.summary), not bocb.
    code = ("import sys; from bocb.cli import main; main(['zoo', 'optimizers', '--format', 'csv']); "
            "print(sorted(m for m in ('mlflow', 'tensorboard', 'torch.utils.tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- the session, with a recording tracker ----------------------------------------------------------


class Recording:
    """A tracker that keeps what it was given (and can be told to fail)."""

    runs: list[Recording] = []
    fail_start = False

    def __init__(self, root: Path):
        self.steps: list[int] = []
        self.final: tuple | None = None
        Recording.runs.append(self)

    def start(self, run):
        if Recording.fail_start:
            raise RuntimeError("not logged in")
        self.run = run

    def log_epoch(self, metrics, step):
        self.steps.append(step)

    def finish(self, final, status, error):
        self.final = (final, status, error)


@pytest.fixture
def recording():
    Recording.runs, Recording.fail_start = [], False
    trackers.TRACKERS.add(trackers.TrackerInfo("recording", (), "recording", Recording, lambda root, group: "here"))
    yield Recording
    trackers.TRACKERS.remove("recording")


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "test_top1": 10.0 + epoch, "train_loss": 2.0 / epoch, "lr": 0.1, "flag": True}


def test_rows_are_logged_once_each_in_epoch_order_late_ones_from_the_record(recording, tmp_path):
    session = trackers.Session(["recording"], tmp_path, "study")
    spec = {"backbone": {"short": "R-18"}, "optimizer": {"short": "LAMB", "args": {"lr": 0.005, "weight_decay": 0.02}},
            "seed": 1}
    session.started("abcdef0123456789", spec)
    session.event("abcdef0123456789", {"event": "resumed", "epoch": 2, "rows": [_row(1), _row(2)]})
    session.event("abcdef0123456789", {"event": "epoch", "epoch": 2, "row": _row(3)})
    session.event("abcdef0123456789", {"event": "epoch", "epoch": 1, "row": _row(2)})  # a repeat: dropped
    # The record adds the epoch whose event had not arrived and the diverging one (no event).
    record = {"status": "diverged", "epochs": [_row(e) for e in range(1, 6)], "final_top1": 15.0,
              "best_epoch": 4, "seconds": {"wall": 3.5}, "error": None}
    session.finished("abcdef0123456789", record)
    session.event("abcdef0123456789", {"event": "epoch", "epoch": 4, "row": _row(5)})  # after the end: ignored
    [run] = recording.runs
    assert run.steps == [1, 2, 3, 4, 5]
    assert run.run.name == "R-18 x LAMB lr=0.005 wd=0.02 seed=1 [abcdef01]" and run.run.group == "study"
    final, status, error = run.final
    assert status == "diverged" and error is None
    assert final["final_top1"] == 15.0 and final["best_epoch"] == 4 and final["total_seconds_wall"] == 3.5
    assert session.notes == []


def test_a_tracker_that_cannot_start_is_noted_once_and_not_tried_again(recording, tmp_path):
    recording.fail_start = True
    session = trackers.Session(["recording"], tmp_path, "study")
    for trial in ("t1", "t2"):
        session.started(trial, {})
        session.event(trial, {"event": "epoch", "epoch": 0, "row": _row(1)})
        session.finished(trial, {"status": "done", "epochs": [_row(1)]})
    assert len(recording.runs) == 1  # the second trial did not try again
    [note] = session.notes
    assert "recording could not start a run for trial t1 (RuntimeError: not logged in)" in note


def test_runs_still_open_at_the_end_finish_interrupted(recording, tmp_path):
    session = trackers.Session(["recording"], tmp_path, "study")
    session.started("t1", {})
    session.started("t2", {})
    session.finished("t2", {"status": "running", "epochs": []}, "pending")  # handed back by the runner
    session.close()
    assert [r.final[1] for r in recording.runs] == ["interrupted", "interrupted"]


def test_a_second_attempt_of_the_same_trial_closes_the_first(recording, tmp_path):
    """A lost lease closes the attempt's run; a run never closed is closed, not leaked, when the
    same trial starts again in this command."""
    session = trackers.Session(["recording"], tmp_path, "study")
    session.started("t1", {})
    session.started("t1", {})
    session.finished("t1", {"status": "done", "epochs": []})
    assert [r.final[1] for r in recording.runs] == ["lost", "done"]


def test_a_resumed_trial_sends_its_restored_rows_before_its_new_epochs(tmp_path):
    sample = load_dataset(DatasetSpec("sample"))
    spec = resolve_trial("resnet18", "sgd_m", data=DatasetSpec("sample"), num_classes=10, tier="smoke", epochs=2)
    spec = dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=2, test_per_class=2,
                                                                     batch_size=10))
    first = run_trial(spec, sample, RunOptions(device="cpu", work_dir=tmp_path, stop_after_epochs=1))
    assert first["status"] == "interrupted"
    events: list[dict] = []
    second = run_trial(spec, sample, RunOptions(device="cpu", work_dir=tmp_path),
                       lambda e: events.append(e) if e["event"] != "step" else None)
    assert [e["event"] for e in events] == ["resumed", "epoch"]
    assert events[0]["rows"] == first["epochs"] and events[1]["row"] == second["epochs"][1]
