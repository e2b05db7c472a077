"""Worker processes never outlive the runner that started them.

Two independent mechanisms, because each has a gap:

- the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, Linux): the worker is
  killed the moment its parent exits, even by SIGKILL. It fires when the parent *thread* that
  started the worker exits, so workers are started from a main thread: the runner's under
  ``spawn``; under ``forkserver`` the fork server's, which exits as soon as the runner is gone
  (workers close their copy of its "alive" pipe, see :mod:`bocb.executors.local`), so the kernel
  takes the workers down right after. The signal is lost if the parent died before the call,
  which is checked right after it.
- a watchdog thread checking every ``interval_s`` that the worker's parent is still the one it
  started under and that the runner is alive: otherwise it kills itself. It covers systems
  without ``prctl`` and anything that clears the signal (a set-uid exec); it needs the GIL, so a
  worker stuck in a call that holds it relies on the kernel alone.

A worker killed this way may die mid-write: files are only ever published by an atomic rename
(:mod:`bocb.fencing`), so at worst a temporary file is left, which the next claim deletes.
Grandchildren are not started by bocb itself; ``torch.compile``'s compile workers watch their own
parent the same way (torch ``compile_worker``). Process trees that a library starts (a private Ray
instance) get a reaper sidecar instead (:func:`start_reaper`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (a reused pid): not the runner
        return False
    return True


def _watch(parent_pid: int, runner_pid: int, interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent_pid or not _alive(runner_pid):
            os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(runner_pid: int, interval_s: float = 1.0) -> None:
    """Arrange for this process to be killed when ``runner_pid`` dies; call first thing in a worker.

    The runner is this process's parent (``spawn``) or its grandparent through a fork server that
    exits with it. Exits at once when the runner is already gone."""
    _set_parent_death_signal()
    parent = os.getppid()
    if parent == 1 or not _alive(runner_pid):  # orphaned before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, runner_pid, interval_s), name="bocb-parent-watchdog",
                     daemon=True).start()


# -- a reaper for process trees bocb does not start itself (a private Ray instance) ---------------


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat): tells a pid apart from its reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def start_reaper() -> subprocess.Popen:
    """Start a sidecar that SIGKILLs every descendant of this process once this process is gone.

    For process trees started by a library (Ray's GCS, raylet, agents and workers), whose own
    fate sharing leaves some processes running after the driver is killed with SIGKILL (in Ray
    2.60, its dashboard and runtime-env agents). The sidecar learns the tree once a second while
    this process lives; when its stdin pipe closes (this process died, or called
    :func:`stop_reaper`) it kills every process it saw that still runs (matched by start time,
    so a reused pid is never hit). It lives in its own session and ignores SIGINT, so a Ctrl-C
    or a kill of the terminal's process group does not take it down before it has cleaned up.
    """
    return subprocess.Popen([sys.executable, "-m", "bocb.executors.orphans", str(os.getpid())],
                            stdin=subprocess.PIPE, start_new_session=True)


def stop_reaper(reaper: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Tell the reaper to clean up now (the tree should already be down) and wait for it."""
    if reaper.stdin is not None:
        reaper.stdin.close()
    try:
        reaper.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        reaper.kill()


def _reap(parent: int) -> None:
    import select

    from bocb.executors.sockets import descendants

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    seen: dict[int, str] = {}
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin], [], [], 1.0)
        if ready and not os.read(stdin, 4096):
            break  # EOF: the parent exited (any way) or asked for the clean-up
        for pid in descendants(parent) - {me}:
            started = _start_time(pid)
            if started is not None:
                seen.setdefault(pid, started)
    for pid, started in seen.items():
        if _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    _reap(int(sys.argv[1]))
