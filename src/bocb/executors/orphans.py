"""Worker processes never outlive the runner that started them.

Two independent mechanisms, because each has a gap:

- the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, Linux): the worker is
  killed the moment its parent exits, even by SIGKILL. It fires when the parent *thread* that
  started the worker exits, so the executors start workers from the runner's main thread; and
  it is lost if the parent died before the call, which is checked right after it.
- a watchdog thread polling ``os.getppid()`` once a second: when the parent is gone the worker is
  re-parented (to init or a subreaper) and kills itself. It covers systems without ``prctl`` and
  anything that clears the signal (a set-uid exec).

A worker killed this way may die mid-write: files are only ever published by an atomic rename
(:mod:`bocb.fencing`), so at worst a temporary file is left, which the next claim deletes.
Grandchildren are not started by bocb itself; ``torch.compile``'s compile workers watch their own
parent the same way (torch ``compile_worker``).
"""

from __future__ import annotations

import ctypes
import os
import signal
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


def _watch(parent_pid: int, interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Arrange for this process to be killed when ``parent_pid`` (its parent) dies; call first thing
    in a worker process. Exits at once when the parent is already gone."""
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid, interval_s), name="bocb-parent-watchdog",
                     daemon=True).start()
