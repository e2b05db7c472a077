"""How the local executor starts its workers: forked from a fork server that preloaded the trainer."""

import json
import os
import subprocess
import sys

import pytest
from procs import alive, children, cmdline

from bocb.executors.local import PRELOAD, LocalExecutor
from bocb.executors.worker import WorkerConfig

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is used on Linux")

# Every way torch reaches the CUDA driver, replaced by a recorder before the preloaded modules are
# imported: a CUDA driver initialised in the fork server would break every GPU worker forked from it.
_PROBE = """
import importlib, json, sys
import torch
calls = []
def recorder(name):
    def call(*args, **kwargs):
        calls.append(name)
        raise RuntimeError(name + " called at import")
    return call
for name in ("is_available", "device_count", "init", "_lazy_init", "current_device", "get_device_name"):
    setattr(torch.cuda, name, recorder("torch.cuda." + name))
if hasattr(torch._C, "_cuda_getDeviceCount"):
    torch._C._cuda_getDeviceCount = recorder("torch._C._cuda_getDeviceCount")
errors = []
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except Exception as exc:
        errors.append(f"{module}: {exc!r}")
print(json.dumps({"calls": calls, "errors": errors, "initialized": torch.cuda.is_initialized()}))
"""


def test_the_preloaded_modules_touch_no_cuda_at_import():
    out = subprocess.run([sys.executable, "-c", _PROBE, *PRELOAD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"calls": [], "errors": [], "initialized": False}, result


def test_the_preload_loads_what_the_lazy_registries_defer():
    """The registries import torch, timm and torchvision lazily (bocb.lazy); the fork server must
    load them anyway, or every worker pays for them at its first trial."""
    probe = ("import importlib, json, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
             "from bocb import lazy\nprint(json.dumps([sorted(sys.modules), sorted(lazy.NAMES)]))")
    out = subprocess.run([sys.executable, "-c", probe, *PRELOAD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded, named = map(set, json.loads(out.stdout.strip().splitlines()[-1]))
    needed = {"torch", "timm", "torchvision", "torchvision.transforms.v2", "timm.models.resnet",
              "timm.data.mixup", "bocb.zoo.models.moganet", "safetensors.torch"}
    assert needed <= named  # the trainer's modules name them lazily...
    assert named <= loaded, sorted(named - loaded)  # ...and the server has imported every one


@linux_only
def test_workers_are_forked_by_the_fork_server_not_the_runner(tmp_path):
    executor = LocalExecutor(WorkerConfig(artifacts_dir=str(tmp_path), device="cpu"), slots=1)
    try:
        pid = executor._slots[0].process.pid
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rpartition(")")[2].split()[1])
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            parent_cmd = f.read().replace(b"\0", b" ").decode()
    finally:
        executor.shutdown()
    assert parent != os.getpid() and "forkserver" in parent_cmd, parent_cmd
    assert not executor._slots[0].process.is_alive()


def _maps_torch(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libtorch" in f.read()
    except OSError:
        return False


@linux_only
def test_a_fork_server_still_importing_dies_with_its_sigkilled_runner():
    """`bocb run` starts the fork server before it reads the study, and the server imports torch
    and the trainer for seconds before it would notice anything: killed then, the runner must
    take the server with it at once, not when those imports end (its guard's parent-death signal)."""
    import signal
    import time

    script = ("from bocb.executors.local import start_fork_server; start_fork_server(); "
              "print('started', flush=True); import time; time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        # Its siblings: multiprocessing's resource tracker, which imports nothing and reads its pipe.
        # start_fork_server does not wait: on a loaded machine the server may not have exec'd yet.
        deadline = time.time() + 30
        servers = []
        while not servers and time.time() < deadline:
            servers = [p for p in children(proc.pid) if "multiprocessing.forkserver" in cmdline(p)]
            time.sleep(0.01)
        assert len(servers) == 1, {p: cmdline(p) for p in children(proc.pid)}
        # Past its guard and inside its imports: torch's library is mapped (the rest takes seconds).
        deadline = time.time() + 60
        while time.time() < deadline and alive(servers[0]) and not _maps_torch(servers[0]):
            time.sleep(0.01)
        assert _maps_torch(servers[0]), "the fork server never started importing torch"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Its imports take 3-10 s; a second is ample for the kernel's signal.
    deadline = time.time() + 1.0
    while alive(servers[0]) and time.time() < deadline:
        time.sleep(0.02)
    left = alive(servers[0])
    if left:
        os.kill(servers[0], signal.SIGKILL)
    assert not left, "the fork server outlived its SIGKILLed runner while importing"


_RUNNER = """
import sys, time
from bocb.data import DatasetSpec
from bocb.executors import local
from bocb.executors.local import LocalExecutor
# Without the fork server's guard (its own parent-death signal would take it down whatever the
# workers do): this runner checks that workers let go of the server's alive pipe.
local.PRELOAD = [m for m in local.PRELOAD if m != "bocb.executors.server_guard"]
from bocb.executors.worker import WorkerConfig
from bocb.spec import resolve_trial
config = WorkerConfig(artifacts_dir=sys.argv[1] + "/artifacts", cache_dir=sys.argv[1] + "/cache", device="cpu")
executor = LocalExecutor(config, slots=1, watchdog_s=600)
import dataclasses
spec = resolve_trial("resnet18", "sgd_m", data=DatasetSpec("sample"), num_classes=10, tier="smoke", epochs=500)
# 20 images a class: the first epoch (and checkpoint) comes in seconds, then it trains for minutes.
spec = dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=20, test_per_class=10))
executor.submit(spec.trial_id, spec.to_dict(), "claim")
print(executor._slots[0].process.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.slow
@linux_only
def test_workers_die_with_a_sigkilled_runner_without_their_watchdog(tmp_path):
    """The kernel alone (the watchdog is set to 10 minutes; the worker is training, so it does not
    notice its pipe's end either): the runner's death closes the fork server's alive pipe, the
    server exits, and its child's parent-death signal fires. A worker that kept a copy of that
    pipe kept the server, and itself, alive until its watchdog."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(proc.stdout.readline())
        deadline = time.time() + 120
        while not list((tmp_path / "artifacts").glob("*/checkpoint*")) and time.time() < deadline:
            time.sleep(0.2)  # training: past its first epoch
        assert alive(worker) and time.time() < deadline
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while alive(worker) and time.time() < deadline:
        time.sleep(0.05)
    left = alive(worker)
    if left:
        os.kill(worker, signal.SIGKILL)
    assert not left, "the worker outlived its SIGKILLed runner"


@linux_only
def test_the_guards_variable_is_the_servers_alone_and_ctrl_c_is_the_runners(tmp_path):
    """The variable that tells the fork server whose death to follow is removed from the runner's
    environment after the start, and by the guard from the server's, so the workers forked from it
    never pass it on (a `bocb run` inside a trial is not taken for an orphaned server); the guarded
    server ignores Ctrl-C, which is the runner's to handle."""
    runner = ("import os; from bocb.executors.local import start_fork_server; start_fork_server(); "
              "print('BOCB_FORK_SERVER_PARENT' in os.environ)")
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
    server = ("import os, signal; import bocb.executors.server_guard; "
              "print('BOCB_FORK_SERVER_PARENT' in os.environ, signal.getsignal(signal.SIGINT) == signal.SIG_IGN)")
    env = dict(os.environ, BOCB_FORK_SERVER_PARENT=str(os.getpid()))
    out = subprocess.run([sys.executable, "-c", server], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "False True", (out.stdout, out.stderr[-2000:])
    # A process whose parent is not the one named (the runner already gone) exits at once.
    env["BOCB_FORK_SERVER_PARENT"] = "1"
    out = subprocess.run([sys.executable, "-c", server], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1 and out.stdout == ""


def test_streamed_loader_workers_follow_the_slots_share_of_the_cores(monkeypatch):
    """Each slot sets its share of the cores; a streamed trial's default loader workers are that
    share but one (not the whole machine's per slot)."""
    from bocb.executors.local import SLOT_CORES_ENV
    from bocb.trial import _workers

    monkeypatch.setenv(SLOT_CORES_ENV, "3")
    assert _workers(None) == 2 and _workers(5) == 5
    monkeypatch.setenv(SLOT_CORES_ENV, "1")
    assert _workers(None) == 1
    monkeypatch.delenv(SLOT_CORES_ENV)
    assert _workers(None) == min(8, max(1, (os.cpu_count() or 2) - 1))


_IN_AN_ALLOCATION = """
import dataclasses, json, sys, time
from bocb.data import DatasetSpec
from bocb.executors.local import LocalExecutor
from bocb.executors.worker import WorkerConfig
from bocb.spec import resolve_trial
config = WorkerConfig(artifacts_dir=sys.argv[1] + "/artifacts", cache_dir=sys.argv[1] + "/cache", device="cpu")
executor = LocalExecutor(config, slots=1)
spec = resolve_trial("resnet18", "sgd_m", data=DatasetSpec("sample"), num_classes=10, tier="smoke", epochs=1)
spec = dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=10, test_per_class=5, batch_size=20))
executor.submit(spec.trial_id, spec.to_dict(), "claim")
records = []
while not records:
    records = executor.poll(timeout=1.0)
executor.shutdown()
record = records[0][1]
print(json.dumps({"status": record["status"], "error": record.get("error"), "processes": record.get("processes")}))
"""


@pytest.mark.slow
def test_a_runner_inside_a_launchers_allocation_runs_each_slot_as_one_process(tmp_path):
    """`bocb run` started where torchrun/SLURM variables are set (WORLD_SIZE=2, rank 1 of a group
    whose store nobody serves): a slot's trial must not try to join that group (it would wait for
    it until the store's timeout); it trains as one process."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "9", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _IN_AN_ALLOCATION, str(tmp_path)], capture_output=True, text=True,
                          timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record == {"status": "done", "error": None, "processes": None}
