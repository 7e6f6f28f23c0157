"""The daemon's reload triggers: the debouncer, the file poller, the daily schedule, and what
the PostgreSQL listener does without a server.

Real short delays (0.01-0.05 s) on a real event loop; the 5 s `asyncio.wait_for` around each
test only turns a hang into a failure. The schedule runs on a fake clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import zoneinfo
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from resolverd.daemon.reload import (
    MAX_SLEEP_S,
    Debouncer,
    daily,
    listen_postgres,
    next_fire,
    watch_files,
)
from resolverd.errors import ConfigError
from resolverd.sources import INDIA

TIMEOUT_S = 5.0
QUIET_S = 0.1  # long enough for a wrongly scheduled run of a 0.05 s debouncer to show up


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, TIMEOUT_S))


async def eventually(condition: Callable[[], bool]) -> None:
    """Return once `condition()` holds (the test's wait_for fails a test that waits forever)."""
    while not condition():
        await asyncio.sleep(0.005)


class Action:
    """A reload that records its reasons, can be held open, and counts overlapping runs."""

    def __init__(self, *, held: bool = False, fail_first: bool = False) -> None:
        self.runs: list[list[str]] = []
        self.finished = 0
        self.active = 0
        self.most_active = 0
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.fail_first = fail_first

    async def __call__(self, reasons: list[str]) -> None:
        self.runs.append(reasons)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await self.release.wait()
            if self.fail_first and len(self.runs) == 1:
                raise RuntimeError("the first reload fails")
        finally:
            self.active -= 1
        self.finished += 1


# -- Debouncer ---------------------------------------------------------------------------------


def test_a_burst_of_triggers_is_one_run_with_every_reason() -> None:
    async def scenario() -> None:
        action = Action()
        debouncer = Debouncer(action, delay=0.05)
        for reason in ("a", "b", "c"):
            debouncer.trigger(reason)
        assert debouncer.pending
        await eventually(lambda: action.finished == 1)
        await asyncio.sleep(QUIET_S)
        assert action.runs == [["a", "b", "c"]]
        assert not debouncer.pending
        await debouncer.close()

    run(scenario())


def test_triggers_during_a_run_cause_exactly_one_more_run() -> None:
    async def scenario() -> None:
        action = Action(held=True)
        debouncer = Debouncer(action, delay=0.01)
        debouncer.trigger("a")
        await eventually(lambda: debouncer.running)
        for reason in ("b", "c", "d"):
            debouncer.trigger(reason)
        assert debouncer.pending
        action.release.set()
        await eventually(lambda: action.finished == 2)
        await asyncio.sleep(QUIET_S)
        assert action.runs == [["a"], ["b", "c", "d"]]
        assert action.most_active == 1
        await debouncer.close()

    run(scenario())


def test_max_delay_runs_a_stream_of_triggers_that_never_goes_quiet() -> None:
    async def scenario() -> None:
        action = Action()
        # Without max_delay, a trigger every 0.01 s would keep a 1 s debouncer waiting past the
        # test's timeout.
        debouncer = Debouncer(action, delay=1.0, max_delay=0.05)
        sent = 0
        while not action.runs:
            debouncer.trigger(f"t{sent}")
            sent += 1
            await asyncio.sleep(0.01)
        first = action.runs[0]
        assert len(first) > 1
        assert first == [f"t{i}" for i in range(len(first))]
        await debouncer.close()

    run(scenario())


def test_run_now_returns_after_its_run_which_takes_the_pending_reasons() -> None:
    async def scenario() -> None:
        action = Action()
        debouncer = Debouncer(action, delay=0.05)
        debouncer.trigger("file changed")
        await debouncer.run_now("resolverd reload")
        assert action.runs == [["file changed", "resolverd reload"]]
        assert action.finished == 1
        assert not debouncer.pending
        await asyncio.sleep(QUIET_S)  # past the pending run's deadline: it was done already
        assert len(action.runs) == 1
        await debouncer.close()

    run(scenario())


def test_run_now_waits_for_a_running_action_and_never_overlaps_it() -> None:
    async def scenario() -> None:
        action = Action(held=True)
        debouncer = Debouncer(action, delay=0.01)
        debouncer.trigger("a")
        await eventually(lambda: debouncer.running)
        now = asyncio.create_task(debouncer.run_now("b"))
        await asyncio.sleep(0.02)
        assert not now.done()
        assert action.runs == [["a"]]
        action.release.set()
        await now
        assert action.runs == [["a"], ["b"]]
        assert action.most_active == 1
        await debouncer.close()

    run(scenario())


def test_run_now_raises_what_the_action_raised_and_the_next_run_still_happens() -> None:
    async def scenario() -> None:
        action = Action(fail_first=True)
        debouncer = Debouncer(action, delay=0.01)
        with pytest.raises(RuntimeError, match="first reload fails"):
            await debouncer.run_now("one")
        await debouncer.run_now("two")
        assert action.runs == [["one"], ["two"]]
        assert action.finished == 1
        await debouncer.close()

    run(scenario())


def test_a_failing_action_is_logged_and_later_triggers_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        action = Action(fail_first=True)
        debouncer = Debouncer(action, delay=0.01)
        debouncer.trigger("broken dump")
        await eventually(lambda: len(action.runs) == 1 and not debouncer.running)
        debouncer.trigger("fixed dump")
        await eventually(lambda: action.finished == 1)
        assert action.runs == [["broken dump"], ["fixed dump"]]
        await debouncer.close()

    with caplog.at_level(logging.ERROR, logger="resolverd.reload"):
        run(scenario())
    [record] = [r for r in caplog.records if r.name == "resolverd.reload"]
    assert record.levelno == logging.ERROR
    assert "broken dump" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_close_cancels_a_pending_run() -> None:
    async def scenario() -> None:
        action = Action()
        debouncer = Debouncer(action, delay=0.02)
        debouncer.trigger("a")
        await debouncer.close()
        assert not debouncer.pending
        await asyncio.sleep(QUIET_S)
        assert action.runs == []

    run(scenario())


def test_close_waits_for_the_running_action_and_drops_the_triggers_behind_it() -> None:
    async def scenario() -> None:
        action = Action(held=True)
        debouncer = Debouncer(action, delay=0.01)
        debouncer.trigger("a")
        await eventually(lambda: debouncer.running)
        debouncer.trigger("b")
        closing = asyncio.create_task(debouncer.close())
        await asyncio.sleep(0.02)
        assert not closing.done()
        action.release.set()
        await closing
        assert action.finished == 1  # completed, not cancelled
        await asyncio.sleep(QUIET_S)
        assert action.runs == [["a"]]

    run(scenario())


def test_after_close_triggers_are_ignored_and_run_now_refuses() -> None:
    async def scenario() -> None:
        action = Action()
        debouncer = Debouncer(action, delay=0.01)
        await debouncer.close()
        debouncer.trigger("late")
        assert not debouncer.pending
        with pytest.raises(RuntimeError, match="closed"):
            await debouncer.run_now("late")
        await asyncio.sleep(QUIET_S)
        assert action.runs == []

    run(scenario())


def test_a_signal_handler_installed_on_the_loop_can_trigger() -> None:
    async def scenario() -> None:
        action = Action()
        debouncer = Debouncer(action, delay=0.01)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, debouncer.trigger, "SIGUSR1")
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            await eventually(lambda: action.finished == 1)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
        assert action.runs == [["SIGUSR1"]]
        await debouncer.close()

    run(scenario())


# -- watch_files -------------------------------------------------------------------------------

INTERVAL_S = 0.01


async def watching(
    paths: list[Path], change: Callable[[], object], rounds_after: int = 5
) -> list[str]:
    """The triggers of a watcher of `paths` when `change()` is made once it has looked, and
    for a few rounds after the first trigger."""
    reasons: list[str] = []
    watcher = asyncio.create_task(watch_files(paths, INTERVAL_S, reasons.append))
    await asyncio.sleep(0)  # the watcher's first step: its look at the files before the change
    try:
        change()
        await eventually(lambda: bool(reasons))
        await asyncio.sleep(rounds_after * INTERVAL_S)
    finally:
        watcher.cancel()
        await asyncio.wait([watcher])
    return reasons


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    path = tmp_path / "instruments.csv"
    path.write_text("instrument_token,exchange\n408065,NSE\n")
    return path


def test_a_file_that_changes_size_is_one_trigger_naming_it(dump: Path) -> None:
    def append() -> None:
        with dump.open("a") as f:
            f.write("5633,NSE\n")

    async def scenario() -> None:
        assert await watching([dump], append) == [f"file changed: {dump} (modified)"]

    run(scenario())


def test_a_file_replaced_by_rename_with_the_same_mtime_and_size_is_a_change(
    dump: Path,
) -> None:
    before = dump.stat()

    def replace() -> None:
        new = dump.with_name("instruments.csv.tmp")
        new.write_bytes(dump.read_bytes())
        os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))  # what cp -p does
        os.replace(new, dump)

    async def scenario() -> None:
        assert await watching([dump], replace) == [f"file changed: {dump} (replaced)"]

    run(scenario())
    after = dump.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert after.st_ino != before.st_ino


def test_a_deleted_file_is_a_change(dump: Path) -> None:
    async def scenario() -> None:
        assert await watching([dump], dump.unlink) == [f"file changed: {dump} (removed)"]

    run(scenario())


def test_a_created_file_is_a_change(tmp_path: Path) -> None:
    later = tmp_path / "later.csv"

    async def scenario() -> None:
        reasons = await watching([later], lambda: later.write_text("x\n"))
        assert reasons == [f"file changed: {later} (created)"]

    run(scenario())


def test_files_changed_in_one_round_are_named_in_one_trigger(tmp_path: Path, dump: Path) -> None:
    other = tmp_path / "NSE_FO.csv"
    other.write_text("fyers\n")

    def change_both() -> None:
        dump.unlink()
        other.write_text("fyers, longer\n")

    async def scenario() -> None:
        reasons = await watching([dump, other], change_both)
        assert reasons == [f"files changed: {dump} (removed), {other} (modified)"]

    run(scenario())


def test_files_that_do_not_change_give_no_trigger(dump: Path, tmp_path: Path) -> None:
    absent = tmp_path / "absent.csv"

    async def scenario() -> None:
        reasons: list[str] = []
        watcher = asyncio.create_task(watch_files([dump, absent], INTERVAL_S, reasons.append))
        await asyncio.sleep(10 * INTERVAL_S)
        assert reasons == []
        # ... and the watcher was looking all along.
        dump.write_text("changed\n")
        await eventually(lambda: bool(reasons))
        watcher.cancel()
        await asyncio.wait([watcher])

    run(scenario())


# -- next_fire and daily -----------------------------------------------------------------------


def ist(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """A moment in April 2024 on the exchanges' clock."""
    return dt.datetime(2024, 4, day, hour, minute, tzinfo=INDIA)


T0915 = dt.time(9, 15)
T1530 = dt.time(15, 30)


def test_next_fire_is_the_next_time_today_or_the_first_tomorrow() -> None:
    assert next_fire([T1530, T0915], ist(3, 8)) == ist(3, 9, 15)
    assert next_fire([T1530, T0915], ist(3, 12)) == ist(3, 15, 30)
    assert next_fire([T1530, T0915], ist(3, 16)) == ist(4, 9, 15)


def test_next_fire_is_strictly_after_the_given_moment() -> None:
    assert next_fire([T0915], ist(3, 9, 15)) == ist(4, 9, 15)


def test_next_fire_reads_times_in_the_moments_time_zone() -> None:
    after = dt.datetime(2024, 4, 3, 3, 0, tzinfo=dt.UTC)  # 08:30 in India
    assert next_fire([T0915], after) == dt.datetime(2024, 4, 3, 9, 15, tzinfo=dt.UTC)
    assert next_fire([T0915], after.astimezone(INDIA)) == ist(3, 9, 15)


def test_next_fire_refuses_a_naive_moment_and_an_empty_schedule() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        next_fire([T0915], dt.datetime(2024, 4, 3, 8))
    with pytest.raises(ValueError, match="no times"):
        next_fire([], ist(3, 8))


class Stop(Exception):
    """The fake clock reached its end."""


class FakeClock:
    """A wall clock that `sleep` advances, with scheduled jumps: when the clock reaches a jump's
    moment it is set to the jump's target (forward or back)."""

    def __init__(
        self, start: dt.datetime, end: dt.datetime, jumps: list[tuple[dt.datetime, dt.datetime]]
    ) -> None:
        self.now = start
        self.end = end
        self.jumps = sorted(jumps, key=lambda j: j[0].timestamp())
        self.longest_sleep = 0.0

    def read(self) -> dt.datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.longest_sleep = max(self.longest_sleep, seconds)
        # In UTC: arithmetic on a datetime in a zone with daylight saving is wall-clock
        # arithmetic, which is off by an hour across a change.
        moved = self.now.astimezone(dt.UTC) + dt.timedelta(seconds=seconds)
        self.now = moved.astimezone(self.now.tzinfo)
        if self.jumps and self.now.timestamp() >= self.jumps[0][0].timestamp():
            self.now = self.jumps.pop(0)[1]
        if self.now.timestamp() >= self.end.timestamp():
            raise Stop
        await asyncio.sleep(0)


def schedule(
    times: list[dt.time],
    start: dt.datetime,
    end: dt.datetime,
    jumps: Sequence[tuple[dt.datetime, dt.datetime]] = (),
    tz: dt.tzinfo = INDIA,
) -> tuple[list[tuple[str, dt.datetime]], FakeClock]:
    """Each firing of `daily` in `tz` between `start` and `end` on a fake clock, with when it
    fired."""
    clock = FakeClock(start, end, list(jumps))
    fired: list[tuple[str, dt.datetime]] = []

    async def scenario() -> None:
        def trigger(reason: str) -> None:
            fired.append((reason, clock.now))

        with pytest.raises(Stop):
            await daily(times, tz, trigger, now=clock.read, sleep=clock.sleep)

    run(scenario())
    return fired, clock


def test_daily_fires_at_the_time_once_a_day() -> None:
    fired, clock = schedule([T0915], ist(3, 8), ist(5, 10))
    assert fired == [
        ("schedule 09:15", ist(3, 9, 15)),
        ("schedule 09:15", ist(4, 9, 15)),
        ("schedule 09:15", ist(5, 9, 15)),
    ]
    assert clock.longest_sleep <= MAX_SLEEP_S


def test_daily_fires_several_times_a_day_in_order() -> None:
    fired, _ = schedule([T1530, T0915], ist(3, 8), ist(4, 10))
    assert fired == [
        ("schedule 09:15", ist(3, 9, 15)),
        ("schedule 15:30", ist(3, 15, 30)),
        ("schedule 09:15", ist(4, 9, 15)),
    ]


def test_daily_does_not_fire_a_time_already_past_at_start() -> None:
    fired, _ = schedule([T0915], ist(3, 10), ist(4, 9, 30))
    assert fired == [("schedule 09:15", ist(4, 9, 15))]


def test_a_jump_forward_past_the_times_fires_each_once_not_once_per_skipped_day() -> None:
    # At 08:00 on the 3rd the clock jumps to 16:00 on the 6th: three days of 09:15 and 15:30
    # were skipped.
    fired, _ = schedule([T0915, T1530], ist(3, 7), ist(7, 10), jumps=[(ist(3, 8), ist(6, 16))])
    assert fired == [
        ("schedule 09:15", ist(6, 16)),
        ("schedule 15:30", ist(6, 16)),
        ("schedule 09:15", ist(7, 9, 15)),
    ]


def test_a_jump_back_does_not_fire_a_time_again_on_the_same_date() -> None:
    # Fired at 09:15, then at 09:30 the clock goes back to 09:00 and passes 09:15 again.
    fired, _ = schedule([T0915], ist(3, 9), ist(4, 10), jumps=[(ist(3, 9, 30), ist(3, 9))])
    assert fired == [("schedule 09:15", ist(3, 9, 15)), ("schedule 09:15", ist(4, 9, 15))]


def test_a_jump_back_across_midnight_does_not_fire_on_a_date_that_already_fired() -> None:
    # Fired on the 3rd and the 4th; at 09:30 on the 4th the clock goes back to 23:00 on the 3rd
    # and passes 09:15 on the 4th again.
    fired, _ = schedule([T0915], ist(3, 9), ist(5, 9, 30), jumps=[(ist(4, 9, 30), ist(3, 23))])
    assert fired == [
        ("schedule 09:15", ist(3, 9, 15)),
        ("schedule 09:15", ist(4, 9, 15)),
        ("schedule 09:15", ist(5, 9, 15)),
    ]


def test_a_clock_that_keeps_jumping_back_over_the_time_fires_it_once_not_a_storm() -> None:
    # An unsettled NTP client steps the clock back from 09:20 to 09:10 five times running.
    jumps = [(ist(3, 9, 20), ist(3, 9, 10))] * 5
    fired, _ = schedule([T0915], ist(3, 9), ist(3, 12), jumps=jumps)
    assert fired == [("schedule 09:15", ist(3, 9, 15))]


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except zoneinfo.ZoneInfoNotFoundError:
        return dt.UTC  # the tests that need it skip


NEW_YORK = _zone("America/New_York")  # in 2024, daylight time from March 10 to November 3
needs_new_york = pytest.mark.skipif(
    NEW_YORK is dt.UTC, reason="no time zone database (system or tzdata) for America/New_York"
)


def new_york(month: int, day: int, hour: int, minute: int = 0, fold: int = 0) -> dt.datetime:
    return dt.datetime(2024, month, day, hour, minute, fold=fold, tzinfo=NEW_YORK)


def instants(moments: Sequence[dt.datetime]) -> list[float]:
    """POSIX timestamps: datetimes of one zone compare by wall clock, blind to `fold`."""
    return [moment.timestamp() for moment in moments]


@needs_new_york
def test_a_time_of_day_keeps_its_wall_clock_time_across_both_daylight_saving_changes() -> None:
    spring, _ = schedule([dt.time(8, 45)], new_york(3, 9, 8), new_york(3, 11, 9), tz=NEW_YORK)
    autumn, _ = schedule([dt.time(8, 45)], new_york(11, 2, 8), new_york(11, 4, 9), tz=NEW_YORK)
    assert instants([moment for _, moment in spring + autumn]) == instants(
        [
            new_york(3, 9, 8, 45),
            new_york(3, 10, 8, 45),  # 23 hours later
            new_york(3, 11, 8, 45),
            new_york(11, 2, 8, 45),
            new_york(11, 3, 8, 45),  # 25 hours later
            new_york(11, 4, 8, 45),
        ]
    )


@needs_new_york
def test_a_time_in_the_hour_skipped_in_spring_fires_once_that_day_an_hour_late() -> None:
    # 02:30 does not exist on March 10: it is read with the offset before the change, which
    # is 03:30 daylight time.
    fired, _ = schedule([dt.time(2, 30)], new_york(3, 9, 12), new_york(3, 11, 12), tz=NEW_YORK)
    assert {reason for reason, _ in fired} == {"schedule 02:30"}
    assert instants([moment for _, moment in fired]) == instants(
        [new_york(3, 10, 3, 30), new_york(3, 11, 2, 30)]
    )


@needs_new_york
def test_a_time_in_the_hour_repeated_in_autumn_fires_once_at_its_first_occurrence() -> None:
    fired, _ = schedule([dt.time(1, 30)], new_york(11, 2, 12), new_york(11, 4, 12), tz=NEW_YORK)
    assert {reason for reason, _ in fired} == {"schedule 01:30"}
    assert instants([moment for _, moment in fired]) == instants(
        [new_york(11, 3, 1, 30, fold=0), new_york(11, 4, 1, 30)]  # 05:30 UTC, not 06:30
    )


# -- listen_postgres without a server ----------------------------------------------------------

SECRET = "s3cr3t-pw"


def test_the_listener_backs_off_doubling_to_the_cap_and_never_shows_the_password() -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")
    # Port 1 on the loopback refuses at once: no server is needed to fail.
    dsn = f"host=127.0.0.1 port=1 dbname=registry user=resolverd password={SECRET}"
    states: list[str] = []
    reasons: list[str] = []

    async def scenario() -> None:
        listener = asyncio.create_task(
            listen_postgres(
                dsn,
                "registry_changed",
                reasons.append,
                backoff_start=0.01,
                backoff_max=0.04,
                on_state=states.append,
            )
        )
        await eventually(lambda: len(states) >= 4)
        listener.cancel()
        await asyncio.wait([listener])

    run(scenario())
    assert [s.rpartition("retrying in ")[2] for s in states[:4]] == [
        "0.01 s",
        "0.02 s",
        "0.04 s",
        "0.04 s",
    ]
    assert all(s.startswith("disconnected: host=127.0.0.1 port=1") for s in states)
    assert not any(SECRET in s for s in states)
    assert reasons == []  # never listened, so nothing to reload for


def test_the_listener_refuses_a_malformed_dsn_without_quoting_its_password() -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")

    async def scenario() -> None:
        with pytest.raises(ConfigError, match="not a valid connection string") as caught:
            await listen_postgres(f"host=x password={SECRET} 'unterminated", "c", print)
        assert SECRET not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__context__ is None

    run(scenario())
