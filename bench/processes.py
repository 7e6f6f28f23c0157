"""Reader processes for the daemon suites: spawned interpreters talking over a pipe each."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

RECEIVE_TIMEOUT_S = 60.0
"""The longest a harness waits for a reader or an announcement before it calls the run broken
(a reader spawning on a busy 2-core machine takes a few seconds)."""


def spawn(target: Callable[..., None], arguments: list[tuple[Any, ...]]) -> list[Any]:
    """Start one process per argument tuple, each given its end of a pipe first; returns
    (process, connection) pairs. The caller ends them with `finish`."""
    context = multiprocessing.get_context("spawn")
    started = []
    for args in arguments:
        ours, theirs = context.Pipe()
        process = context.Process(target=target, args=(theirs, *args), daemon=True)
        process.start()
        theirs.close()
        started.append((process, ours))
    return started


def receive(conn: Connection, what: str, timeout: float = RECEIVE_TIMEOUT_S) -> Any:
    """The next message on `conn`; RuntimeError naming `what` if none comes within `timeout`."""
    if not conn.poll(timeout):
        raise RuntimeError(f"no answer from {what} within {timeout:g} s")
    return conn.recv()


def finish(started: list[Any]) -> None:
    """Tell each process to end (None), then join it, terminating any that does not."""
    for process, conn in started:
        with contextlib.suppress(OSError, ValueError):  # it has already gone
            conn.send(None)
        conn.close()
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join()
