"""`resolverd watch`'s lines (resolverd/daemon/watch.py); the subscription runs in
tests/integration/test_daemon.py against a real daemon."""

from __future__ import annotations

import datetime as dt

import msgspec

from resolverd.daemon.announce import Diff, Heartbeat, Stopping
from resolverd.daemon.watch import describe

from .test_announce import a_swap


def at(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9).isoformat(timespec="milliseconds")


def test_a_swap_is_one_line_with_its_counts_and_the_first_keys_of_each_change() -> None:
    swap = a_swap()
    assert describe(swap) == (
        f"{at(swap.published_ns)} universe: generation 7 -> 8 (inotify, 0.25 s), 3 instruments,"
        " trade date 2024-04-26, checksum 00ab00cd00ef0012; 1 added (NSE:NEW); 2 expired"
        " (NFO:A24APRFUT, ...); 3 tokens changed (NSE:A, NSE:A, NSE:B); 1 lot sizes changed"
        " (NFO:X); 1 tick sizes changed (NFO:Y)"
    )


def test_a_swap_without_changes_or_diff_says_so() -> None:
    nothing = Diff(0, 0, 0, 0, 0, 0, [], [], [], [], [], [], truncated=False)
    swap = msgspec.structs.replace(a_swap(), diff=nothing)
    assert describe(swap).endswith("checksum 00ab00cd00ef0012; no instrument changed")
    first = msgspec.structs.replace(a_swap(), diff=None)
    assert describe(first).endswith("checksum 00ab00cd00ef0012")


def test_heartbeat_and_stopping_lines() -> None:
    beat = Heartbeat(pid=4242, sent_ns=1_714_000_000_000_000_000, interval=1.0, registries={})
    beat = msgspec.structs.replace(beat, registries={"universe": 8, "fo": 3})
    assert describe(beat) == f"{at(beat.sent_ns)} heartbeat from pid 4242: fo 3, universe 8"
    stop = Stopping(pid=4242, sent_ns=1_714_000_000_000_000_001)
    assert describe(stop) == f"{at(stop.sent_ns)} daemon pid 4242 is stopping"
