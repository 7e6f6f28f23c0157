"""`resolverd watch`: the daemon's announcements (see `announce`), a line each as they arrive.

For the people running a host: what changed at this morning's reload, and whether the daemon
is alive, without writing a subscriber. Programs subscribe themselves and use `announce.decode`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import msgspec

from ..errors import UnavailableError
from . import announce

_EXAMPLES = 3  # keys shown per list of a diff; `--json` has all the message carries


def describe(message: announce.Message) -> str:
    """One line of text for an announcement."""
    if isinstance(message, announce.Heartbeat):
        generations = ", ".join(f"{n} {g}" for n, g in sorted(message.registries.items()))
        return f"{_time(message.sent_ns)} heartbeat from pid {message.pid}: {generations}"
    if isinstance(message, announce.Stopping):
        return f"{_time(message.sent_ns)} daemon pid {message.pid} is stopping"
    line = (
        f"{_time(message.published_ns)} {message.registry}: generation"
        f" {message.previous_generation} -> {message.generation} ({message.reason},"
        f" {message.reload_seconds:.2f} s), {message.instruments:,} instruments, trade date"
        f" {message.trade_date}, checksum {message.checksum}"
    )
    diff = message.diff
    if diff is None:
        return line
    changes = [
        _counted("added", diff.added, diff.added_keys),
        _counted("removed", diff.removed, diff.removed_keys),
        _counted("expired", diff.expired, diff.expired_keys),
        _counted("tokens changed", diff.tokens_changed, [c.key for c in diff.token_changes]),
        _counted("lot sizes changed", diff.lots_changed, [c.key for c in diff.lot_changes]),
        _counted("tick sizes changed", diff.ticks_changed, [c.key for c in diff.tick_changes]),
    ]
    return f"{line}; " + ("; ".join(c for c in changes if c) or "no instrument changed")


def _counted(what: str, count: int, keys: list[str]) -> str:
    """``3 added (A, B, C, ...)``, or '' for none."""
    if not count:
        return ""
    # More than shown: past the examples, or past what the message carries (its diff limit).
    shown = ", ".join(keys[:_EXAMPLES]) + (", ..." if count > min(len(keys), _EXAMPLES) else "")
    return f"{count:,} {what} ({shown})"


def _time(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9).isoformat(timespec="milliseconds")


def watch(
    endpoint: str,
    *,
    registry: str | None = None,
    heartbeats: bool = False,
    as_json: bool = False,
    count: int | None = None,
    idle: float | None = None,
    out: Callable[[str], object] = print,
) -> None:
    """Subscribe to `endpoint` and hand each announcement to `out` as text (or a JSON object):
    swaps of `registry` (default every registry), the daemon's stopping, and heartbeats if
    asked. Returns after `count` announcements; UnavailableError after `idle` seconds without
    one."""
    import zmq

    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.MAXMSGSIZE, 64 << 20)  # a swap with its diff is far smaller
    try:
        socket.connect(endpoint)
        prefix = announce.SWAP_PREFIX + (registry.encode() if registry else b"")
        topics = [prefix, announce.STOPPING_TOPIC]
        if heartbeats:
            topics.append(announce.HEARTBEAT_TOPIC)
        for topic in topics:
            socket.setsockopt(zmq.SUBSCRIBE, topic)
        shown = 0
        while count is None or shown < count:
            if not socket.poll(-1 if idle is None else int(idle * 1000)):
                raise UnavailableError(f"no announcement on {endpoint} within {idle:g} s")
            message = announce.decode(socket.recv_multipart())
            if isinstance(message, announce.Swap) and registry and message.registry != registry:
                continue  # a prefix match: swap.universe2 for swap.universe
            out(msgspec.json.encode(message).decode() if as_json else describe(message))
            shown += 1
    finally:
        socket.close()
