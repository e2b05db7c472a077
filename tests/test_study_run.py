"""Studies end to end through `bocb run`: validation, resumption, failures, concurrency, Ray.

Every trial runs in real worker processes on a real SQLite store. Where the runner's own process
is under test (kill -9, Ctrl-C, two runners at once, Ray's listeners) it is a real `bocb run`
subprocess; elsewhere the command runs in this process through the same ``bocb.cli.main``
(:mod:`cli_inproc`), which saves it a second import of torch. The trials are tiny (tiny models,
1-3 epochs on 20 images per class).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bocb.executors import sockets
from bocb.store import SQLiteStore
from bocb.study import StudyError, load_study
from cli_inproc import bocb as _bocb
from procs import alive

TINY = """
[study]
name = "{name}"
data = "sample"
tier = "smoke"
tuning = "fixed"
seeds = [0]
epochs = {epochs}
train_per_class = 20
test_per_class = 10
{extra}
"""


def _study(tmp_path: Path, name: str, backbones: list[str], optimizers: list[str], epochs: int = 1,
           extra: str = "", opt_tables: str = "") -> Path:
    text = TINY.format(name=name, epochs=epochs, extra=extra)
    text += "".join(f'\n[[backbones]]\nname = "{b}"\npolicy = "cifar"\n' for b in backbones)
    text += "".join(f'\n[[optimizers]]\nname = "{o}"\n' for o in optimizers)
    text += opt_tables
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# -- validation: every mistake is one line, before any trial starts ------------------------------

# Bad TOML, unknown backbone, wrong type, empty grid: also checked through `bocb run`.
_CLI_CASES = ("not valid TOML", "backbones[1].name: unknown backbone",
              "[study].seeds: expected array or integer", "backbones: empty list")
_MALFORMED = [
    ("[study\nname='x'", "not valid TOML"),
    ('[study]\nname="x"\n[[backbones]]\nname="ResNet-5O"\n[[optimizers]]\nname="AdamW"', "backbones[1].name: unknown backbone"),
    ('[study]\nname="x"\nseeds="three"\n[[backbones]]\nname="R-50"\n[[optimizers]]\nname="AdamW"', "[study].seeds: expected array or integer"),
    ('[study]\nname="x"\n[[backbones]]\nname="R-50"\n[[optimizers]]\nname="AdamW"\nlr=[]', "optimizers[1].lr: empty list"),
    ('backbones=[]\noptimizers=["AdamW"]\n[study]\nname="x"', "backbones: empty list"),
    ('[study]\nname="x"\ntuning="random"\n[[backbones]]\nname="R-50"\n[[optimizers]]\nname="AdamW"', "valid: grid, paper, fixed"),
    ('[study]\nname="x"\nepoch=3\n[[backbones]]\nname="R-50"\n[[optimizers]]\nname="AdamW"', "unknown key 'epoch'"),
]


@pytest.mark.parametrize("body, expected", _MALFORMED)
def test_malformed_study_fails_in_one_line_before_any_trial(tmp_path, body, expected):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert expected in str(err.value) and str(path) in str(err.value)


# The CLI path is the same for every StudyError: run it for the four.
@pytest.mark.slow
@pytest.mark.parametrize("body, expected", [c for c in _MALFORMED if c[1] in _CLI_CASES])
def test_malformed_study_is_one_line_exit_2_through_bocb_run(tmp_path, cache, body, expected):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    store = tmp_path / "store.sqlite"
    proc = _bocb("run", path, "--store", store, cache=cache)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert not store.exists()


@pytest.mark.slow
def test_malformed_study_is_one_line_from_a_real_bocb_process(tmp_path, cache):
    """The in-process runs above cannot see what a fresh interpreter prints at import time or as
    a warning: one case through `python -m bocb`, the way a user meets it."""
    body, expected = next(c for c in _MALFORMED if "unknown backbone" in c[1])
    path = tmp_path / "bad.toml"
    path.write_text(body)
    proc = subprocess.run([sys.executable, "-m", "bocb", "run", str(path), "--store", str(tmp_path / "s.sqlite")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, BOCB_CACHE_DIR=str(cache)))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_paper_tuning_skips_pairs_without_paper_values_as_data(tmp_path, cache):
    # TNX-T is not in the paper's hyper-parameter tables: that pair is recorded as skipped.
    path = _study(tmp_path, "paper", ["R-50", "TNX-T"], ["AdamW"]).read_text().replace('"fixed"', '"paper"')
    (tmp_path / "p.toml").write_text(path)
    from bocb.study_setup import prepare

    prepared = prepare(tmp_path / "p.toml", cache, [], False)
    assert len(prepared.trials) == 1 and prepared.trials[0].optimizer.lr == 1e-3  # paper: AdamW on R-50
    assert len(prepared.skipped) == 1 and "no lr/wd for AdamW on TNX-T" in prepared.skipped[0][2]


# -- running, resuming, reporting ----------------------------------------------------------------


@pytest.mark.slow
def test_run_twice_runs_nothing_new_and_one_new_knob_runs_only_that(tmp_path, cache):
    store = tmp_path / "store.sqlite"
    path = _study(tmp_path, "twice", ["R-50"], ["SGD-M", "AdamW"])
    # Relative --store and --artifacts, as typed in the study's folder: what is stored must still
    # mean the same files from any other working directory (checked with diagnose below).
    first = _bocb("run", path, "--store", "store.sqlite", "--artifacts", "artifacts", cache=cache, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _last_json(first.stdout)["done"] == 2
    with SQLiteStore(store) as s:
        before = {r["trial_id"]: r["finished"] for r in s.trials()}
    again = _bocb("run", path, "--store", store, cache=cache)
    assert again.returncode == 0 and "0 new" in again.stdout and "0 to run" in again.stdout
    path = _study(tmp_path, "twice", ["R-50"], ["SGD-M", "AdamW", "LAMB"])
    third = _bocb("run", path, "--store", store, cache=cache)
    assert "1 new" in third.stdout and _last_json(third.stdout)["done"] == 3
    with SQLiteStore(store) as s:
        after = {r["trial_id"]: r["finished"] for r in s.trials()}
        # Weight diagnostics: every trial's final weights, and the backbone's init once.
        sources = sorted(x["source"] for x in s.snapshots(load_study(path).study_id) if x["error"] is None)
    assert all(after[t] == before[t] for t in before)  # nothing re-run
    assert sources == ["final", "final", "final", "init"]
    status = _bocb("status", path, "--store", store, "--json", cache=cache)
    counts = _last_json(status.stdout)
    assert counts["done"] == 3 and counts["total"] == 3 and counts["study"] == "twice"
    export = _bocb("export", "--store", store, "--format", "csv", cache=cache)
    lines = export.stdout.strip().splitlines()
    assert lines[0].startswith("trial_id,") and len(lines) == 1 + 3
    with SQLiteStore(store) as s:
        paths = [Path(s.artifacts(t)["final_weights"]) for t in after]
    assert all(p.is_absolute() and p.exists() for p in paths)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    forced = _bocb("diagnose", path, "--store", store, "--force", "--workers", "1", cache=cache, cwd=elsewhere)
    assert forced.returncode == 0 and _last_json(forced.stdout)["errors"] == 0, forced.stderr[-3000:]
    with SQLiteStore(store) as s:
        good = [x for x in s.snapshots(load_study(path).study_id) if x["error"] is None]
        assert len(good) == 4 and all(s.layer_metrics([x["snapshot_id"]]) for x in good)


@pytest.mark.slow
def test_raising_diverging_and_overlong_trials_are_recorded_and_the_study_completes(tmp_path, cache):
    store = tmp_path / "store.sqlite"
    tables = (
        # In range for validation ([0, 1]), refused by torch's Adam (beta1 < 1): raises when built.
        '\n[[optimizers]]\nname = "Adam"\nargs = { betas = [1.0, 0.999] }\n'
        '\n[[optimizers]]\nname = "RMSProp"\nlr = 1e6\n'  # diverges
    )
    path = _study(tmp_path, "faults", ["R-50"], ["SGD-M"], epochs=1, extra="time_limit_s = 300",
                  opt_tables=tables)
    slow = _study(tmp_path, "slow", ["R-50"], ["SGD-M"], epochs=50, extra="time_limit_s = 12")
    slow_text = slow.read_text().replace("train_per_class = 20", "train_per_class = 500").replace(
        'policy = "cifar"\n', 'policy = "cifar"\nscale = "paper"\n')
    slow.write_text(slow_text)
    proc = _bocb("run", path, "--store", store, cache=cache)
    # Exit 1: the study completed, but with a failed trial (stderr's last line says so).
    assert proc.returncode == 1 and "1 trial(s) not finished: 1 failed" in proc.stderr, proc.stderr[-3000:]
    proc = _bocb("run", slow, "--store", store, cache=cache)
    assert proc.returncode == 1, proc.stderr[-3000:]
    with SQLiteStore(store) as s:
        rows = {r["optimizer"]: r for r in s.trials(load_study(path).study_id)}
        slow_row = s.trials(load_study(slow).study_id)[0]
    assert rows["SGD-M"]["status"] == "done"
    assert rows["Adam"]["status"] == "failed" and "beta" in rows["Adam"]["error"]
    assert rows["RMSProp"]["status"] == "diverged" and rows["RMSProp"]["diverged_epoch"] == 1
    assert slow_row["status"] == "failed" and "time limit of 12 s" in slow_row["error"]


@pytest.mark.slow
def test_kill_9_mid_study_then_rerun_finishes_every_trial_once(tmp_path, cache):
    store = tmp_path / "store.sqlite"
    path = _study(tmp_path, "killed", ["R-50", "CNX-T"], ["SGD-M", "AdamW"], epochs=3)
    env = dict(os.environ, BOCB_CACHE_DIR=str(cache))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bocb", "run", str(path), "--store", str(store), "--lease", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    artifacts = tmp_path / "artifacts"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill once one trial is done and another has a checkpoint
            time.sleep(0.5)
            if not store.exists():
                continue
            with SQLiteStore(store) as s:
                rows = s.trials()
            running = [r for r in rows if r["status"] == "running"]
            if any(r["status"] == "done" for r in rows) and any(
                (artifacts / r["trial_id"] / "checkpoint.safetensors").exists() for r in running
            ):
                break
        else:
            pytest.fail("the study never reached a done trial and a checkpointed running one")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its worker processes, no cleanup
        proc.wait()
    with SQLiteStore(store) as s:
        before = {r["trial_id"]: (r["finished"], r["best_top1"]) for r in s.trials() if r["status"] == "done"}
        interrupted = [r["trial_id"] for r in s.trials() if r["status"] == "running"]
    assert before and interrupted
    # No wait for the lease: the rerun sees that the killed runner's pid is gone and reclaims.
    rerun = _bocb("run", path, "--store", store, "--lease", "300", cache=cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"reclaimed {len(interrupted)} trial(s) left running by dead runner" in rerun.stdout
    with SQLiteStore(store) as s:
        rows = s.trials()
        assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
        for tid, (finished, top1) in before.items():
            row = next(r for r in rows if r["trial_id"] == tid)
            assert (row["finished"], row["best_top1"]) == (finished, top1)  # untouched
        for tid in interrupted:
            assert s.record(tid).get("resumed_from_epoch", 0) >= 1  # resumed from its checkpoint


@pytest.mark.slow
def test_two_runners_at_once_run_each_trial_once(tmp_path, cache):
    store = tmp_path / "store.sqlite"
    path = _study(tmp_path, "pair", ["R-50", "PFV2-12"], ["SGD-M", "AdamW", "LAMB"])
    plan = _bocb("plan", path, "--store", store, cache=cache)  # works before anything is stored
    assert plan.returncode == 0 and "6 trials" in plan.stdout, plan.stderr[-2000:]
    env = dict(os.environ, BOCB_CACHE_DIR=str(cache))
    procs = [
        subprocess.Popen([sys.executable, "-m", "bocb", "run", str(path), "--store", str(store)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    with SQLiteStore(store) as s:
        rows = s.trials()
    assert len(rows) == 6 and all(r["status"] == "done" for r in rows)
    assert all(r["attempts"] == 1 for r in rows)  # no trial was run twice
    assert len({r["host"] for r in rows}) == 1


def _listeners_of(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP / bound UDP socket of ``pids``, from ``ss`` (an
    outside view of what the library's /proc reader sees), else from that reader."""
    if shutil.which("ss"):
        out = subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True).stdout
        found = []
        for line in out.splitlines():
            fields = line.split()
            address, _, port = fields[4].rpartition(":")
            for pid in map(int, re.findall(r"pid=(\d+)", line)):
                if pid in pids:  # ss writes a wildcard as *, IPv6 in brackets, a scope after %
                    address = "::" if address == "*" else address.strip("[]").split("%")[0]
                    found.append((pid, address, int(port)))
        return found
    return [(s.pid, s.address, s.port) for s in sockets.listening(pids)]


def _external_addresses() -> list[str]:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout if shutil.which("hostname") else ""
    return [a for a in out.split() if not sockets.is_loopback(a)]


@pytest.mark.slow
def test_ray_executor_on_a_local_instance_listens_on_loopback_only(tmp_path, cache):
    """Also the adaptive tuner under Ray: the study of test_tuning_run's end-to-end test, the
    same candidates, rungs and promotions as there under the local executor."""
    pytest.importorskip("ray")
    from test_tuning_run import TINY as ADAPTIVE

    store = tmp_path / "store.sqlite"
    path = tmp_path / "ray.toml"
    path.write_text(ADAPTIVE.format(name="ray"))

    marker = f"BOCB_RAY_TEST={uuid.uuid4().hex}".encode()

    def raylets() -> list[int]:
        """This run's raylets: they carry its marker in their environment (another test's Ray
        instance may be running beside it)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"raylet" not in f.read():
                        continue
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(int(pid))
            except OSError:
                continue
        return found

    env = dict(os.environ, BOCB_CACHE_DIR=str(cache), BOCB_RAY_TEST=marker.decode().partition("=")[2])
    proc = subprocess.Popen([sys.executable, "-m", "bocb", "run", path, "--store", store, "--executor", "ray",
                             "--slots", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: dict[tuple[int, str, int], str] = {}  # every socket any Ray process listened on, over the run
    marked_raylet = False  # the marker reached this run's raylet, so the check at the end means something
    while proc.poll() is None:
        pids = sockets.descendants(proc.pid) | {proc.pid}
        for key in _listeners_of(pids):
            seen.setdefault(key, sockets.process_name(key[0]))
        marked_raylet = marked_raylet or bool(raylets())
        time.sleep(1.0)  # the listeners live as long as the run; a finer watch only costs CPU
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    with SQLiteStore(store) as s:
        counts = s.counts(load_study(path).study_id)
    # 9 candidates at epoch 1, the best 3 resumed to epoch 2, the optimum repeated on seed 1
    assert counts["paused"] == 6 and counts["done"] + counts["diverged"] == 4 and counts["pending"] == 0, counts
    assert counts["failed"] == 0 and counts["running"] == 0, counts
    names = " ".join(seen.values())
    # The watch saw the components that listen: GCS, raylet and task workers (and the driver).
    assert "gcs_server" in names and "raylet" in names and "ray::" in names, seen
    exposed = [f"{addr}:{port} ({seen[(pid, addr, port)]})" for pid, addr, port in seen
               if not sockets.is_loopback(addr)]
    assert exposed == [], f"non-loopback listeners: {exposed}"
    for address in _external_addresses():  # and nothing answers on the machine's own addresses
        for _, _, port in seen:
            with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
                probe.settimeout(1)
                assert probe.connect_ex((address, port)) != 0, f"{address}:{port} accepted a connection"
    deadline = time.time() + 30  # a loaded machine takes a while to reap them
    while raylets() and time.time() < deadline:
        time.sleep(0.5)
    assert marked_raylet and raylets() == []  # the instance this run started is stopped


def _wait_state(pid: int) -> str:
    """A process's command, state and kernel wait channel, from /proc (for a hang's report)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
        with open(f"/proc/{pid}/stat") as f:
            status = f.read().rpartition(")")[2].split()[0]
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read()
    except OSError as err:
        return f"gone ({err.strerror})"
    return f"{cmd} [{status}, {wchan}]"


@pytest.mark.slow
def test_ctrl_c_stops_quietly_and_leaves_no_running_trial_nor_process(tmp_path, cache):
    """Ctrl-C (again and again, as people press it) while a trial trains: exit 130, one line saying what was
    stopped and to rerun the command, no traceback from the runner or its workers, the running
    trial handed back, and no process of the run left behind."""
    store = tmp_path / "store.sqlite"
    path = _study(tmp_path, "interrupt", ["R-50"], ["SGD-M", "AdamW", "LAMB"], epochs=3)
    env = dict(os.environ, BOCB_CACHE_DIR=str(cache))
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    # SIGINT as a terminal leaves it: the test process may run with it ignored (a disposition a
    # child inherits), and then the run never sees the Ctrl-C and finishes with 0.
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "bocb", "run", str(path), "--store", str(store)],
                                stdout=stdout, stderr=stderr, env=env, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        if store.exists():
            with SQLiteStore(store) as s:
                if s.counts()["running"]:
                    break
    time.sleep(2)  # into the trial's steps, where a worker's own KeyboardInterrupt would print
    processes = sockets.descendants(proc.pid)  # the fork server and the worker
    for _ in range(8):  # what Ctrl-C sends to the terminal's process group, pressed again and again
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:  # the run is over
            break
        time.sleep(0.1)
    try:
        # Usually 2-4 s. Should it hang, say where each process of the run waits.
        code = proc.wait(timeout=150)
    except subprocess.TimeoutExpired:
        state = {pid: _wait_state(pid) for pid in sockets.descendants(proc.pid) | {proc.pid}}
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"bocb run did not stop within 150 s of Ctrl-C; its processes: {state}")
    assert code == 130
    assert "Traceback" not in err.read_text(), err.read_text()[-3000:]
    last = out.read_text().strip().splitlines()[-1]
    assert re.fullmatch(r"stopped: \d running trial\(s\) handed back, finished ones stored; rerun the same "
                        r"command to resume", last), last
    assert processes, "the run had no worker process to check"
    deadline = time.time() + 10  # the fork server exits once the runner's end of its pipe closes
    while any(alive(pid) for pid in processes) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in processes if alive(pid)], "a process of the run outlived it"
    with SQLiteStore(store) as s:
        counts = s.counts()
    assert counts["running"] == 0 and counts["pending"] >= 1 and counts["total"] == 3


@pytest.mark.parametrize("name", ["demo", "paper-cifar100-fast", "paper-cifar100", "transfer-pretrain"])
def test_shipped_study_files_are_valid(name):
    study = load_study(Path(__file__).resolve().parents[1] / "studies" / f"{name}.toml")
    if name == "paper-cifar100":  # check the declaration, not every pair's space
        assert len(study.backbones) == 20 and len(study.optimizers) == 20 and study.seeds == (0, 1, 2)
        assert study.tuning == "adaptive"
        return
    if study.tuning == "adaptive":  # trials come from the tuner; every pair has a search space
        from bocb.tuning.adapter import pairs

        assert len(pairs(study)) == 400
        return
    from bocb.study import expand

    trials, skipped = expand(study, num_classes=100 if "cifar100" in name else 10)
    assert len(trials) == {"demo": 24, "transfer-pretrain": 6}.get(name, 400) and not skipped
