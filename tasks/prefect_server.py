"""The ephemeral Prefect API server of a stage dies with the stage, also when the stage is killed with `kill -9`.

Without PREFECT_API_URL, Prefect 3 starts a temporary API server (uvicorn, `SubprocessASGIServer` in
`prefect.server.api.server`) as a child process the first time a flow needs an API, and stops it at interpreter
exit (atexit). A SIGKILLed stage runs no exit hook, so that server would live on as an orphan.

`start_ephemeral_server` starts Prefect's own server object before the flow, from the main thread, with the Linux
parent-death signal set in the child (prctl PR_SET_PDEATHSIG = SIGKILL): the kernel kills the server the moment
the stage process ends, however it ends. SubprocessASGIServer is a per-port singleton, so the flow engine, its
events and logs all use this instance instead of starting another. Why not the alternatives: a process group
dies only when whoever kills the stage signals the whole group (`kill -9 PID` and the OOM killer do not); reaping
orphans at the next start leaves them running until then, or forever if no stage starts again. The death signal
belongs to the forking thread, which is why this runs on the main thread: it fires only when the process ends.
SIGKILL rather than SIGTERM: nothing is left to wait on a graceful shutdown, and SQLite rolls back an
interrupted write when the next server opens the database.
"""

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial

from prefect.settings import PREFECT_API_URL

PR_SET_PDEATHSIG = 1
"""prctl option: the signal the kernel sends a process when its parent thread ends (linux/prctl.h)."""


def die_with(parent: int) -> Callable[[], None]:
    """A Popen `preexec_fn`: the child gets SIGKILL when `parent` ends, and exits at once if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def start_ephemeral_server() -> None:
    """Start the ephemeral API server this process's flows will use, bound to die with it. Does nothing with
    PREFECT_API_URL set (a running server), off Linux, or when the server is already running."""
    if PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if server.running:
        return
    # Prefect builds the uvicorn command itself (subprocess.Popen in SubprocessASGIServer._run_uvicorn_command, also
    # on its retry with another port); only the preexec hook is added, while start() runs on this thread.
    popen = subprocess.Popen
    subprocess.Popen = partial(popen, preexec_fn=die_with(os.getpid()))  # type: ignore[misc]
    try:
        server.start()
    finally:
        subprocess.Popen = popen  # type: ignore[misc]
