"""Imported first by the workers' fork server: it dies with the process that started it.

The fork server is started early (:func:`bocb.executors.local.start_fork_server`), so that its
imports of torch, timm and the trainer (seconds) overlap the runner's own start-up. While it
imports it reads nothing from the runner, so it would not notice the runner's exit (a study file
that turned out bad, a SIGKILL) until its imports were done: it would outlive the command by
seconds. The kernel's parent-death signal, armed here before any heavy import, kills it at once.
Ctrl-C is ignored from here on (CPython's fork server ignores it only after its imports): the
runner handles it, and a traceback from the server's half-done imports would only add noise.

The runner passes its pid in ``BOCB_FORK_SERVER_PARENT`` (only when it starts the server from its
main thread: the signal follows the thread that started the process); a server whose parent is
already another process (the runner died before the signal was armed) exits. The variable is
removed here, so the workers forked from this server, and what they start, never see it. Without
it (the module imported anywhere else) this does nothing.
"""

import os
import signal

from bocb.executors.orphans import _set_parent_death_signal

_parent = os.environ.pop("BOCB_FORK_SERVER_PARENT", None)
if _parent is not None and _parent.isdigit():
    _set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != int(_parent):
        os._exit(1)
