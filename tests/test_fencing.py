"""No process outlives its runner, and a stale worker's writes never land.

Fences: real files and ``flock`` in a temporary trial directory; the stale-worker case is a real
trial (tiny ResNet on the bundled sample) whose claim is superseded while it trains, as when a
runner dies and another claims the trial. Orphans: real processes killed with SIGKILL.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
from procs import alive

from bocb import checkpoint
from bocb.data import DatasetSpec, load_dataset
from bocb.executors.worker import WorkerConfig, execute
from bocb.fencing import CLAIM_FILE, Fence, StaleClaimError, raise_fence
from bocb.spec import resolve_trial
from bocb.trial import CHECKPOINT, FINAL_WEIGHTS, RunOptions, run_trial

SAMPLE = DatasetSpec("sample")


def test_a_superseded_claim_cannot_publish_and_its_temp_file_goes(tmp_path):
    trial = tmp_path / "t"
    raise_fence(trial, "old")
    (trial / "w.tmp").write_bytes(b"first")
    Fence(trial, "old").replace(trial / "w.tmp", trial / "w")
    assert (trial / "w").read_bytes() == b"first"
    (trial / "left.safetensors.abc.tmp").write_bytes(b"half-written by a killed worker")
    (trial / ".tmpA1b2C3").write_bytes(b"safetensors' own temporary file, cut")
    raise_fence(trial, "new")  # another runner claims the trial
    assert not (trial / "left.safetensors.abc.tmp").exists() and not (trial / ".tmpA1b2C3").exists()
    assert (trial / CLAIM_FILE).read_text() == "new"
    (trial / "w2.tmp").write_bytes(b"stale")
    with pytest.raises(StaleClaimError, match="superseded"):
        Fence(trial, "old").replace(trial / "w2.tmp", trial / "w")
    assert (trial / "w").read_bytes() == b"first" and not (trial / "w2.tmp").exists()
    with pytest.raises(StaleClaimError):
        Fence(trial, "old").check()
    Fence(trial, "new").check()


@pytest.fixture(scope="module")
def sample():
    return load_dataset(SAMPLE)


def _tiny(epochs: int):
    spec = resolve_trial("resnet18", "sgd_m", data=SAMPLE, num_classes=10, tier="smoke", epochs=epochs)
    return dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=20, test_per_class=10))


@pytest.mark.slow
def test_a_stale_worker_never_rewrites_a_finished_trials_files(sample, tmp_path):
    """The issue's case: an orphan kept training after its runner died; another runner claimed,
    finished and stored the trial; the orphan then rewrote final.safetensors. With the fence the
    orphan's next checkpoint is refused, it stops, and the finished files keep their sha256."""
    spec = _tiny(epochs=2)
    trial_dir = tmp_path / spec.trial_id
    raise_fence(trial_dir, "orphan")
    after_first_epoch = []

    def superseded(event: dict) -> None:  # while the orphan evaluates epoch 1, another runner claims
        if event["event"] == "epoch":
            after_first_epoch.append(event["epoch"])
            raise_fence(trial_dir, "runner-2")

    orphan = run_trial(spec, sample, RunOptions(device="cpu", work_dir=trial_dir,
                                                fence=Fence(trial_dir, "orphan")), superseded)
    assert after_first_epoch == [0]  # it stopped at its first write after the new claim
    assert orphan["status"] == "failed" and "StaleClaimError" in orphan["error"]
    assert not (trial_dir / CHECKPOINT).exists() and list(trial_dir.glob("*.tmp")) == []

    config = WorkerConfig(artifacts_dir=str(tmp_path))
    done = execute(spec.to_dict(), config, device="cpu", claim="runner-2")
    assert done["status"] == "done" and done["claim"] == "runner-2"
    digest = checkpoint.file_sha256(trial_dir / FINAL_WEIGHTS)
    # The orphan, still holding its old claim, tries again: refused before it trains.
    late = execute(spec.to_dict(), config, device="cpu", claim="orphan")
    assert late["status"] == "failed" and "superseded" in late["error"] and late["claim"] == "orphan"
    assert checkpoint.file_sha256(trial_dir / FINAL_WEIGHTS) == digest


_CHILD = """
import os, sys, time, ctypes
from bocb.executors.orphans import die_with_parent
die_with_parent(os.getppid(), interval_s=0.2)
if sys.argv[1] == "watchdog-only":  # disarm the kernel's parent-death signal
    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
print(os.getpid(), flush=True)
time.sleep(120)
"""

_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc are Linux")
@pytest.mark.parametrize("mode", ["both", "watchdog-only"])
def test_a_worker_dies_when_its_parent_is_killed(mode):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, _CHILD, mode], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    child = int(parent.stdout.readline())
    assert alive(child)
    os.kill(parent.pid, signal.SIGKILL)  # the OOM killer, a preempted node
    parent.wait()
    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(child), f"worker {child} outlived its parent ({mode})"
