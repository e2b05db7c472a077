"""`bocb COMMAND ...` run inside the test process, through the same ``bocb.cli.main`` that the
console script calls.

Why: a `bocb` subprocess imports torch, torchvision and timm again (about 5-8 s of CPU on this
kind of machine before any work), and the suite runs a few hundred commands. Tests about what a
command *does* (its exit code, its lines, what it stores) call it here; tests about the *process*
(a kill, Ctrl-C, orphans, sockets, the console script itself) keep a real subprocess. Workers that
a command starts are real processes either way (forked from a fork server, or spawned), so trials
still run as in production.

The result is a :class:`subprocess.CompletedProcess`, so a test reads it as it would a subprocess's.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

from bocb.cli import main


def bocb(*args, cache: Path | str | None = None, env: dict[str, str] | None = None,
         cwd: Path | str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run one command; ``cache`` sets ``BOCB_CACHE_DIR`` (and ``env`` more variables) for its
    duration (workers get it through their config, not their environment); ``cwd``: the working directory meanwhile. An exception the command does not turn into
    an exit status propagates, with its traceback, into the test. ``timeout`` is accepted so that
    calls read as the subprocess helpers' do; nothing here can enforce it."""
    argv = [str(a) for a in args]
    extra = dict(env or {})
    if cache is not None:
        extra["BOCB_CACHE_DIR"] = str(cache)
    saved = {k: os.environ.get(k) for k in extra}
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(extra)
    try:
        with (contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out),
              contextlib.redirect_stderr(err)):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse errors, --help, --version
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["bocb", *argv], code or 0, out.getvalue(), err.getvalue())
