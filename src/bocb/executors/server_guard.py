"""Imported first by the workers' fork server: it dies with the process that started it.

The fork server is started early (:func:`bocb.executors.local.start_fork_server`), so that its
imports of torch, timm and the trainer (seconds) overlap the runner's own start-up. While it
imports it reads nothing from the runner, so it would not notice the runner's exit (a study file
that turned out bad, a SIGKILL) until its imports were done: it would outlive the command by
seconds. The kernel's parent-death signal, armed here before any heavy import, kills it at once.

The runner passes its pid in :data:`PARENT_ENV`; a server whose parent is already another process
(the runner died before the signal was armed) exits. Without the variable (the module imported
anywhere else) this does nothing.
"""

import os

from bocb.executors.orphans import _set_parent_death_signal

PARENT_ENV = "BOCB_FORK_SERVER_PARENT"

_parent = os.environ.get(PARENT_ENV)
if _parent is not None and _parent.isdigit():
    _set_parent_death_signal()
    if os.getppid() != int(_parent):
        os._exit(1)
