"""What makes ``resolverd serve`` reload, and how often: asyncio building blocks the daemon wires
to its reload function.

Triggers come from four places and all end in one `Debouncer`, which calls the reload:

- `watch_files`: a broker dump on disk changed (rewritten, replaced, removed, created);
- `listen_postgres`: the registry notified a write (``resolverd.db.NOTIFY_CHANNEL``);
- `daily`: a time of day in the exchanges' time zone (contracts expire, new ones list);
- the daemon's own: SIGHUP (`Debouncer.trigger` from ``loop.add_signal_handler``) and
  ``resolverd reload`` (`Debouncer.run_now`, which waits for the result).

A trigger is a plain callable taking a human-readable reason (`Trigger`). The reasons of one
run are handed to the reload, so that the log says why a generation was published.

Rules:

1. Reloads are coalesced, never queued. A dump written in pieces, or an ingest that notifies
   once per statement, is a burst of triggers; one reload after the burst settles (``delay``)
   reads the final state. A stream that never settles is still reloaded ``max_delay`` after
   its first trigger, so that a chatty writer cannot keep the published data stale.
2. One reload at a time. A trigger that arrives during a reload describes a change the reload
   may or may not have read; the only safe answer is one more reload after it, and one is
   enough however many arrived.
3. A failed reload is logged and forgotten: the published generation stays, and the next
   trigger tries again. Only `Debouncer.run_now` hands the error on, to a caller waiting for it.
4. Everything runs on the event loop's thread, and `Debouncer.trigger` neither blocks nor
   awaits, so a signal handler installed with ``loop.add_signal_handler`` may call it.
5. Files are polled with ``os.stat``, not watched with inotify: no new dependency, it works on
   every filesystem (inotify misses changes made by another host on NFS, and some overlay and
   FUSE mounts), and a second of delay is nothing for broker dumps published once a day. A file
   is compared by (mtime in ns, size, inode, device), so that a dump replaced by rename is a
   change even when its mtime was preserved (``cp -p``, ``rsync -t``); ``os.stat`` follows
   symbolic links, so a ``current`` link flipped to a new dump is a change too.
6. A LISTEN connection that drops loses whatever is notified until it is back, so every
   reconnect is itself a trigger. Retries back off exponentially up to a cap: a server down for
   an hour sees one attempt per cap, not a storm. The connection string's password appears in
   no message (`resolverd.db.redact_dsn`, `resolverd.db.translate_error`).
7. The schedule follows the wall clock, which can jump (an NTP step, a resumed VM, an
   operator). `daily` sleeps at most `MAX_SLEEP_S` at a time and reads the clock again; each
   time of day fires at most once per date: a jump forward past it fires it once (not once per
   skipped day), a jump back never fires it again on a date it already fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LISTEN_APPLICATION_NAME",
    "MAX_SLEEP_S",
    "Debouncer",
    "Trigger",
    "daily",
    "listen_postgres",
    "next_fire",
    "watch_files",
]

Trigger = Callable[[str], None]
"""Called with a human-readable reason, e.g. ``"file changed: /x/instruments.csv (modified)"``."""

Action = Callable[[list[str]], Awaitable[None]]

log = logging.getLogger("resolverd.reload")

MAX_SLEEP_S = 30.0
"""The longest `daily` sleeps before it reads the wall clock again."""

LISTEN_APPLICATION_NAME = "resolverd-listen"
"""The ``application_name`` of `listen_postgres`'s connection, as ``pg_stat_activity`` shows it."""

# An unreachable host fails in seconds rather than the minutes of the kernel's TCP timeout.
_CONNECT_TIMEOUT_S = 10
# A LISTEN connection only reads, so a peer that vanished without a FIN (a dead host, a dropped
# NAT entry) would never raise: TCP keepalives turn that into an error in about a minute.
# libpq ignores them on a unix socket.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class Debouncer:
    """Coalesces triggers into runs of `action` (rules 1 to 4).

    After the first trigger it waits until `delay` seconds pass with no new trigger, but no
    longer than `max_delay` after the first, then awaits ``action(reasons)`` with every reason
    since the last run, in order. Triggers that arrive while the action runs cause exactly one
    more run after it finishes (debounced the same way). Two actions never run at once. An
    action that raises is logged on ``resolverd.reload`` and later triggers run again.

    Create and use it on one event loop, and do not await `close` or `run_now` from inside
    the action: each would wait for the action itself.
    """

    def __init__(self, action: Action, delay: float, max_delay: float | None = None) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, not {delay}")
        if max_delay is not None and max_delay < 0:
            raise ValueError(f"max_delay must be >= 0, not {max_delay}")
        self._action = action
        self._delay = delay
        self._max_delay = max_delay
        self._reasons: list[str] = []
        self._first = 0.0  # loop time of the first waiting reason
        self._last = 0.0  # loop time of the newest one
        self._lock = asyncio.Lock()  # held for each run of the action
        self._worker: asyncio.Task[None] | None = None
        self._worker_busy = False  # the worker is running the action, not waiting
        self._running = False
        self._closed = False

    @property
    def pending(self) -> bool:
        """Whether triggers are waiting for a run that has not started."""
        return bool(self._reasons)

    @property
    def running(self) -> bool:
        """Whether the action is running now."""
        return self._running

    def trigger(self, reason: str) -> None:
        """Ask for a run. Returns at once; call it on the event loop's thread. Ignored after
        `close`."""
        if self._closed:
            log.debug("reload trigger after close ignored: %s", reason)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._reasons:
            self._first = now
        self._reasons.append(reason)
        self._last = now
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work(), name="resolverd-reload-debouncer")

    async def run_now(self, reason: str) -> None:
        """Run the action now, after any run in progress, with `reason` and every pending
        reason (a pending run is thereby done), and return when it finished.

        Raises what the action raised, and `RuntimeError` after `close`. Cancelling the caller
        cancels its run.
        """
        if self._closed:
            raise RuntimeError("the reload debouncer is closed")
        async with self._lock:
            await self._run([*self._take(), reason])

    async def close(self) -> None:
        """Drop the pending triggers, cancel the wait for them, and return once a running action
        finished. Later triggers are ignored."""
        self._closed = True
        self._reasons.clear()
        worker = self._worker
        if worker is not None and not worker.done():
            # Cancelling a running action could leave a reload half done; it is awaited instead,
            # and the worker stops after it because _closed is set.
            if not self._worker_busy:
                worker.cancel()
            await asyncio.wait([worker])
        async with self._lock:  # a run_now in progress
            pass

    def _due(self) -> float:
        """The loop time at which the waiting reasons are run."""
        due = self._last + self._delay
        if self._max_delay is not None:
            due = min(due, self._first + self._max_delay)
        return due

    def _take(self) -> list[str]:
        reasons, self._reasons = self._reasons, []
        return reasons

    async def _run(self, reasons: list[str]) -> None:
        self._running = True
        try:
            await self._action(reasons)
        finally:
            self._running = False

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while self._reasons and not self._closed:
            wait = self._due() - loop.time()
            if wait > 0:
                # A trigger during the sleep only moves the deadline later; it is read again on
                # waking, so the sleep needs no interrupting.
                await asyncio.sleep(wait)
                continue
            async with self._lock:
                # While this waited for the lock, run_now may have taken the reasons, and new
                # ones that arrived during its run are debounced from their own start.
                if self._closed or not self._reasons or self._due() > loop.time():
                    continue
                reasons = self._take()
                self._worker_busy = True
                try:
                    await self._run(reasons)
                except Exception:
                    log.exception("reload failed; triggered by: %s", "; ".join(reasons))
                finally:
                    self._worker_busy = False


# -- files -------------------------------------------------------------------------------------

_MISSING = "missing"
_Signature = tuple[int, int, int, int] | str


def _signature(path: Path) -> _Signature:
    """What a poll compares: (mtime ns, size, inode, device), "missing", or why stat failed."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _MISSING
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _change(old: _Signature, new: _Signature) -> str:
    if new == _MISSING:
        return "removed"
    if old == _MISSING:
        return "created"
    if isinstance(new, str):
        return new
    if isinstance(old, str) or old[2:] != new[2:]:
        return "replaced"
    return "modified"


async def watch_files(paths: Sequence[Path], interval: float, trigger: Trigger) -> None:
    """Poll each of `paths` every `interval` seconds (rule 5) until cancelled, and call `trigger`
    once per poll round in which any of them changed, naming each changed path and how:
    ``"file changed: /x/instruments.csv (modified)"``; ``(replaced)``, ``(removed)``,
    ``(created)`` or ``(unreadable: ...)`` likewise, and ``"files changed: a (...), b (...)"``
    for several.

    The baseline is the files' state when the coroutine starts running, before its first await.
    """
    if interval <= 0:
        raise ValueError(f"interval must be > 0, not {interval}")
    watched = [Path(p) for p in paths]
    # On the loop's thread: a stat of a few paths takes microseconds, and a round that no other
    # code interleaves with is one consistent look at the files.
    seen = [_signature(p) for p in watched]
    while True:
        await asyncio.sleep(interval)
        now = [_signature(p) for p in watched]
        changed = [
            f"{path} ({_change(old, new)})"
            for path, old, new in zip(watched, seen, now, strict=True)
            if old != new
        ]
        seen = now
        if changed:
            trigger(
                ("file changed: " if len(changed) == 1 else "files changed: ") + ", ".join(changed)
            )


# -- PostgreSQL --------------------------------------------------------------------------------


def _log_state(state: str) -> None:
    if state.startswith("disconnected"):
        log.warning("registry listener %s", state)
    else:
        log.info("registry listener %s", state)


async def listen_postgres(
    dsn: str,
    channel: str,
    trigger: Trigger,
    *,
    backoff_start: float = 0.5,
    backoff_max: float = 30.0,
    on_state: Callable[[str], None] | None = None,
) -> None:
    """LISTEN on `channel` at `dsn` until cancelled (rule 6), calling
    ``trigger("NOTIFY <channel>: <payload>")`` for each notification (without ``": <payload>"``
    when it is empty).

    `on_state` (by default a log line on ``resolverd.reload``) hears
    ``"listening on <channel> at <redacted dsn>"`` after each successful LISTEN, and
    ``"disconnected: <error>; retrying in <s> s"`` when a connection cannot be made or is lost;
    the wait starts at `backoff_start`, doubles up to `backoff_max`, and starts over after a
    successful LISTEN. Each LISTEN that follows a failure calls
    ``trigger("listening again on <channel> at <redacted dsn>")``: a change may have been missed
    meanwhile. A first LISTEN that succeeds at once does not; the daemon should start this
    before its first load, or load after the first "listening" state, so that nothing falls in
    between.

    The connection's ``application_name`` is `LISTEN_APPLICATION_NAME`. Raises `ConfigError` for
    a malformed connection string; no message carries its password.
    """
    import psycopg
    from psycopg import sql

    from ..db import redact_dsn, translate_error

    if not 0 < backoff_start <= backoff_max:
        raise ValueError(f"need 0 < backoff_start ({backoff_start}) <= backoff_max ({backoff_max})")
    where = redact_dsn(dsn)
    report = on_state or _log_state
    options = _listen_options(dsn)
    listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
    backoff = backoff_start
    failed = False
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **options)
            async with conn:
                await conn.execute(listen)
                backoff = backoff_start
                report(f"listening on {channel} at {where}")
                if failed:
                    trigger(f"listening again on {channel} at {where}")
                # aclosing: a cancelled listener must not leave the generator to the loop's
                # finalizer, which would close it after the connection is gone.
                async with contextlib.aclosing(conn.notifies()) as notifies:
                    async for note in notifies:
                        trigger(
                            f"NOTIFY {channel}: {note.payload}"
                            if note.payload
                            else f"NOTIFY {channel}"
                        )
            problem = f"{where}: the connection closed"
        except psycopg.Error as exc:
            # One line: libpq's messages run over several, indented with tabs.
            problem = " ".join(str(translate_error(exc, dsn, f"listening on {channel}")).split())
        failed = True
        report(f"disconnected: {problem}; retrying in {backoff:g} s")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, backoff_max)


def _listen_options(dsn: str) -> dict[str, Any]:
    """Connection keywords for the listener, on top of what `dsn` and the environment set."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from ..db import redact_dsn
    from ..errors import ConfigError

    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        given = None
    if given is None:
        # Raised outside the handler: psycopg's message may quote the password.
        raise ConfigError(f"{redact_dsn(dsn)}: not a valid connection string")
    options: dict[str, Any] = {"application_name": LISTEN_APPLICATION_NAME}
    if "connect_timeout" not in given and "PGCONNECT_TIMEOUT" not in os.environ:
        options["connect_timeout"] = _CONNECT_TIMEOUT_S
    options.update({k: v for k, v in _KEEPALIVES.items() if k not in given})
    return options


# -- schedule ----------------------------------------------------------------------------------


def _times_of_day(times: Sequence[dt.time]) -> list[dt.time]:
    if not times:
        raise ValueError("no times of day to schedule")
    for t in times:
        if t.tzinfo is not None:
            raise ValueError(f"{t} has a time zone; times of day are read in the schedule's")
    return sorted(set(times))


def _aware(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment} has no time zone")
    return moment


# Datetimes that share a tzinfo object compare as wall-clock times, which is wrong across a
# daylight-saving change; instants are compared as timestamps instead.


def next_fire(times: Sequence[dt.time], after: dt.datetime) -> dt.datetime:
    """The first of `times` (wall-clock times of day in `after`'s time zone) strictly after
    the aware datetime `after`, in that time zone."""
    tz = _aware(after).tzinfo
    schedule = _times_of_day(times)
    limit = after.timestamp()
    candidates = [
        dt.datetime.combine(after.date() + dt.timedelta(days=days), t, tz)
        for days in range(3)  # today, tomorrow, and a spare for a day with a DST gap
        for t in schedule
    ]
    return min((c for c in candidates if c.timestamp() > limit), key=dt.datetime.timestamp)


def _latest(t: dt.time, moment: dt.datetime) -> dt.datetime:
    """The latest occurrence of time of day `t` at or before `moment`, in its time zone."""
    today = dt.datetime.combine(moment.date(), t, moment.tzinfo)
    if today.timestamp() <= moment.timestamp():
        return today
    return dt.datetime.combine(moment.date() - dt.timedelta(days=1), t, moment.tzinfo)


async def daily(
    times: Sequence[dt.time],
    tz: dt.tzinfo,
    trigger: Trigger,
    *,
    now: Callable[[], dt.datetime] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Call ``trigger("schedule HH:MM")`` at each of `times` (wall-clock times of day in `tz`)
    every day, until cancelled (rule 7). Times already past when it starts wait for the next
    day. Several due at once fire in the order of their occurrences.

    `now` (default ``datetime.now(tz)``) must return aware datetimes; `now` and `sleep` are
    there for tests.
    """
    schedule = _times_of_day(times)

    def clock() -> dt.datetime:
        return _aware(now() if now is not None else dt.datetime.now(tz)).astimezone(tz)

    current = clock()
    # Per time of day, the date it last fired on; the occurrences before the start count as
    # fired. Comparing dates rather than instants is what makes a jump back harmless.
    fired = {t: _latest(t, current).date() for t in schedule}
    while True:
        wait = next_fire(schedule, current).timestamp() - current.timestamp()
        await sleep(min(MAX_SLEEP_S, wait))
        current = clock()
        due = [(o, t) for t in schedule if (o := _latest(t, current)).date() > fired[t]]
        for occurrence, t in sorted(due, key=lambda d: d[0].timestamp()):
            fired[t] = occurrence.date()
            trigger(f"schedule {t:%H:%M}")
