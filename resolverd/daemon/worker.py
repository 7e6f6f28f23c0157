"""The build worker: one spawned process that runs `build_generation` for the daemon.

Builds run outside the daemon so that a large compile never stalls the event loop (watchdog,
control socket, announcements) and a build that runs out of memory kills only the worker. The
worker is a plain process fed through a pipe, not a ProcessPoolExecutor: the executor's queues
hold multiprocessing semaphores, which under the spawn start method are named files in
/dev/shm (``sem.mp-*``) that only multiprocessing's resource tracker removes, and a SIGKILL to
the whole unit (``systemctl kill``, the OOM killer, a stop that times out) takes the tracker
too and leaves them there for good. A pipe leaves nothing behind. Spawn, not fork: forking a
process that holds ZeroMQ's I/O threads and an event loop gives a child with broken copies of
both.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from ..errors import EX_SOFTWARE
from .build import Built, Failed, Job, build_generation

__all__ = ["BuildWorker"]


class BuildWorker:
    """Runs one build at a time, in order, in a worker process started on the first build and
    again after one dies."""

    def __init__(self) -> None:
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._serial: asyncio.Lock | None = None  # one request on the pipe at a time
        self._closing = threading.Lock()  # `_close` runs in a build's thread and in `stop`

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def build(self, job: Job) -> Built | Failed:
        """`build_generation(job)` in the worker; Failed("internal") if the worker dies."""
        if self._serial is None:
            self._serial = asyncio.Lock()
        async with self._serial:
            if self._process is None or self._conn is None or not self._process.is_alive():
                # Started from the event loop's thread, not the build's: the kernel's
                # parent-death signal fires when the thread that started the worker ends.
                self._close()
                self._start()
            return await asyncio.to_thread(self._round_trip, job)

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve, args=(theirs, os.getpid()), name="resolverd-build", daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours

    def _round_trip(self, job: Job) -> Built | Failed:
        process, conn = self._process, self._conn
        assert process is not None and conn is not None
        try:
            conn.send(job)
            result: Built | Failed = conn.recv()
            return result
        except (EOFError, OSError) as exc:  # killed, out of memory, or stopped
            self._close()
            code = process.exitcode
            how = f"exit code {code}" if code is not None else type(exc).__name__
            return Failed("internal", f"the build worker died ({how})", EX_SOFTWARE)

    def stop(self) -> None:
        """End the worker; a build still running is abandoned (its `build` returns Failed)."""
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()  # its pipe closes: a waiting `build` gets EOFError
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        self._close()

    def _close(self) -> None:
        with self._closing:
            if self._conn is not None:
                self._conn.close()
            if self._process is not None:
                self._process.join(1)  # reaped if it is gone
            self._process, self._conn = None, None


def _serve(conn: Connection, parent: int) -> None:
    """The worker's loop: a Job in, its Built or Failed out, until the pipe closes."""
    _die_with_parent(parent)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(build_generation(job))


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill the worker when the daemon dies, kill -9 included (prctl
    PR_SET_PDEATHSIG, Linux), so that no build outlives its daemon."""
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: a stop still ends the worker
        return
    if os.getppid() != parent:  # the daemon died before the request took effect
        os._exit(1)
