"""Tell the service manager how the daemon is doing: the sd_notify(3) protocol, spoken directly.

The protocol (sd_notify(3), "Notes" and "Environment"): the manager puts the address of a
datagram socket in ``$NOTIFY_SOCKET``; the service sends one ``AF_UNIX``/``SOCK_DGRAM`` datagram
per message, a newline-separated list of ``KEY=VALUE`` assignments. An address that starts with
``/`` is a filesystem path; one that starts with ``@`` names a socket in the abstract namespace
(the ``@`` stands for a leading NUL byte). Other forms (``vsock:``, systemd 253+) are not spoken
here. The assignments resolverd sends:

- ``READY=1``: start-up (or a reload) is finished. The daemon sends it only once the first
  snapshot is published and its signal handlers are installed, so that ``systemctl start``
  returning means readers can resolve and a SIGHUP cannot kill it.
- ``RELOADING=1`` with ``MONOTONIC_USEC=``: a reload began. ``Type=notify-reload`` (systemd 253+)
  requires the ``CLOCK_MONOTONIC`` timestamp so the manager can match the message to its own
  reload request; ``READY=1`` ends the reload.
- ``STOPPING=1``, ``STATUS=<free text>``, ``MAINPID=<pid>``, ``WATCHDOG=1``.

The watchdog (sd_watchdog_enabled(3)): ``$WATCHDOG_USEC`` is the timeout the manager enforces;
the daemon should ping at half of it. ``$WATCHDOG_PID``, when set, names the one process the
watchdog is meant for.

We write the few lines of socket code instead of depending on libsystemd or python-systemd:
the protocol is stable, tiny and documented as such, and the daemon then runs unchanged where
neither library exists (containers, other init systems). Without ``$NOTIFY_SOCKET`` every method
is a no-op, so the same code path serves a foreground run from a terminal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("resolverd.notify")


def _address(value: str) -> bytes | None:
    """The socket address `value` names, or None when it is empty or not an AF_UNIX address."""
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def _clean(value: str) -> str:
    # A newline inside a value would start a new assignment: a status text could otherwise
    # smuggle in READY=1 or MAINPID=.
    return value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


class Notifier:
    """Sends sd_notify(3) messages to the service manager that started this process.

    `environ` defaults to `os.environ`; the variables are read once, here. A notifier never
    raises from sending: if the socket cannot be reached, it logs one warning on the
    ``resolverd.notify`` logger and drops the message, because a daemon that is serving
    readers must not die over its status reports.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw)
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not an AF_UNIX address; not notifying", raw)
        self.enabled: bool = self._address is not None
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None
        self._warned = False

    def ready(self, status: str | None = None) -> None:
        """Start-up is finished: READY=1, MAINPID=<this pid>, and STATUS= when given."""
        # MAINPID= is redundant when the manager forked us directly, and right when a wrapper
        # did; it costs nothing, so send it.
        self._send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def reloading(self) -> None:
        """A reload began: RELOADING=1 with MONOTONIC_USEC=<CLOCK_MONOTONIC now, in µs>."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(RELOADING="1", MONOTONIC_USEC=str(usec))

    def ready_after_reload(self, status: str | None = None) -> None:
        """The reload begun by `reloading` is finished: READY=1, and STATUS= when given."""
        self._send(READY="1", STATUS=status)

    def status(self, text: str) -> None:
        """A one-line status for ``systemctl status`` (newlines become spaces)."""
        self._send(STATUS=text)

    def watchdog(self) -> None:
        """Keep-alive ping: WATCHDOG=1."""
        self._send(WATCHDOG="1")

    def stopping(self) -> None:
        """Shutdown began: STOPPING=1."""
        self._send(STOPPING="1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
        recommends), or None when there is nothing to ping: notifications are disabled, no
        watchdog is configured, the value is not a positive integer, or $WATCHDOG_PID names
        another process (a child that inherited the environment)."""
        if not self.enabled:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            # Compared at call time, not at construction: after a fork the pid has changed.
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Closes the socket; later messages open a new one. Safe to call more than once."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, **fields: str | None) -> None:
        if self._address is None:
            return
        message = "\n".join(f"{k}={_clean(v)}" for k, v in fields.items() if v is not None)
        try:
            if self._sock is None:
                # SOCK_CLOEXEC: a process the daemon spawns must not inherit a way to speak
                # for it. The socket is blocking, like libsystemd's: the manager drains its end
                # promptly, and dropping READY=1 on a momentarily full queue would fail the start.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify the service manager at %r: %s; status messages are dropped",
                    os.fsdecode(self._address).replace("\0", "@", 1),
                    exc,
                )


async def watchdog_loop(notifier: Notifier, interval: float) -> None:
    """Pings WATCHDOG=1 now and then every `interval` seconds until cancelled.

    It runs as a task on the daemon's event loop rather than in a thread on purpose: if the
    loop wedges, the pings stop and the manager restarts the daemon, which is the point of
    the watchdog. Raises ValueError for an `interval` that is not positive.
    """
    if not interval > 0:
        raise ValueError(f"watchdog interval must be positive, got {interval!r}")
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
