"""A resolver opened by registry name follows the publisher from generation to generation."""

from __future__ import annotations

import errno
import gc
import os
import struct
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

from resolverd import (
    Registry,
    Resolver,
    UnavailableError,
    UntrustedError,
    _follow,
    compile_snapshot,
)
from resolverd.daemon import publish
from resolverd.daemon.publish import Publisher, purge
from resolverd.shm_layout import (
    CONTROL_SEQUENCE_LIMIT,
    CONTROL_SEQUENCE_OFFSET,
    control_file_name,
)

from ..fuzzing import of_the_previous_major_version
from ..publishing import publish_until_a_renewal_is_next
from .registries import instrument


def snapshot(generation: int, infy: int, *, extra: str | None = None) -> bytearray:
    instruments = [instrument("NSE:INFY", infy), instrument("NSE:TCS", 2953217)]
    if extra:
        instruments.append(instrument(extra, 5000 + generation))
    return compile_snapshot(Registry.from_instruments(instruments), generation=generation)


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    publisher = Publisher(tmp_path, "universe", grace=0.0)
    publisher.adopt()
    publisher.publish(snapshot(1, 408065))
    return publisher


def open_followed(publisher: Publisher, **options: bool) -> Resolver:
    return Resolver.open("universe", directory=publisher.directory, **options)


def test_a_named_resolver_follows_the_next_generation_on_its_next_lookup(
    publisher: Publisher,
) -> None:
    with open_followed(publisher) as resolver:
        assert resolver.following
        assert resolver.token("NSE:INFY", "kite") == 408065
        publisher.publish(snapshot(2, 999, extra="NSE:WIPRO"))
        assert resolver.token("NSE:INFY", "kite") == 999
        assert resolver.generation == 2
        assert resolver.key(5002, "kite") == "NSE:WIPRO"


@pytest.mark.parametrize(
    "options", [{}, {"strict": True}, {"cache": True}, {"strict": True, "cache": True}]
)
def test_every_lookup_kind_follows_in_every_mode(
    publisher: Publisher, options: dict[str, bool]
) -> None:
    with open_followed(publisher, **options) as resolver:
        assert resolver.get_token("NSE:INFY", "kite") == 408065
        publisher.publish(snapshot(2, 999))
        assert resolver.get_token("NSE:INFY", "kite") == 999
        publisher.publish(snapshot(3, 1001))
        assert resolver.token("NSE:INFY", "kite") == 1001
        publisher.publish(snapshot(4, 1002))
        assert resolver.get_key(1002, "kite") == "NSE:INFY"
        publisher.publish(snapshot(5, 1003))
        assert resolver.key(1003, "kite") == "NSE:INFY"
        assert resolver.get_key(1002, "kite", "gone") == "gone"


def test_a_lookup_bound_before_a_swap_resolves_from_the_new_generation(
    publisher: Publisher,
) -> None:
    with open_followed(publisher) as resolver:
        token = resolver.token
        publisher.publish(snapshot(2, 999))
        assert token("NSE:INFY", "kite") == 999


def test_batch_lookups_and_metadata_follow(publisher: Publisher) -> None:
    with open_followed(publisher) as resolver:
        publisher.publish(snapshot(2, 999, extra="NSE:WIPRO"))
        assert resolver.tokens(["NSE:INFY", "NSE:WIPRO"], "kite").tolist() == [999, 5002]
        assert resolver.keys(np.array([999, 5002]), "kite").tolist() == [b"NSE:INFY", b"NSE:WIPRO"]
        assert len(resolver) == 3
        assert "NSE:WIPRO" in resolver
        assert resolver.record("NSE:WIPRO").tokens[0].value == 5002


def test_on_swap_reports_old_and_new_generation_once(publisher: Publisher) -> None:
    seen: list[tuple[int, int]] = []
    with open_followed(publisher) as resolver:
        resolver.on_swap(lambda old, new: seen.append((old, new)))
        publisher.publish(snapshot(2, 999))
        resolver.token("NSE:INFY", "kite")
        resolver.token("NSE:INFY", "kite")
        assert seen == [(1, 2)]


def test_a_failing_swap_callback_does_not_fail_the_lookup(
    publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(old: int, new: int) -> None:
        raise RuntimeError("callback bug")

    with open_followed(publisher) as resolver:
        resolver.on_swap(broken)
        publisher.publish(snapshot(2, 999))
        assert resolver.token("NSE:INFY", "kite") == 999
    assert "callback bug" in caplog.text


def test_refresh_switches_without_a_lookup(publisher: Publisher) -> None:
    with open_followed(publisher) as resolver:
        assert resolver.refresh() is False
        publisher.publish(snapshot(2, 999))
        assert resolver.refresh() is True
        assert resolver.generation == 2


def test_a_generation_whose_file_is_gone_keeps_the_current_one_until_the_next_swap(
    publisher: Publisher,
) -> None:
    with open_followed(publisher) as resolver:
        published = publisher.publish(snapshot(2, 999))
        published.path.unlink()
        assert resolver.token("NSE:INFY", "kite") == 408065
        assert resolver.failed_refreshes == 1  # type: ignore[attr-defined]
        assert "generation 2 is gone" in (resolver.last_error or "")  # type: ignore[attr-defined]
        assert resolver.token("NSE:INFY", "kite") == 408065
        assert resolver.failed_refreshes == 1  # type: ignore[attr-defined]
        publisher.publish(snapshot(3, 1001))
        assert resolver.token("NSE:INFY", "kite") == 1001


def test_a_writer_killed_mid_swap_leaves_readers_on_their_generation_until_repaired(
    publisher: Publisher,
) -> None:
    control = publisher.directory / control_file_name("universe")
    with open_followed(publisher) as resolver:
        publisher.close()
        with open(control, "r+b") as file:
            sequence = struct.unpack("<Q", file.read(24)[16:24])[0]
            file.seek(CONTROL_SEQUENCE_OFFSET)
            file.write(struct.pack("<Q", sequence + 1))
        assert resolver.token("NSE:INFY", "kite") == 408065
        assert resolver.failed_refreshes == 1  # type: ignore[attr-defined]
        restarted = Publisher(publisher.directory, "universe")
        restarted.adopt()
        assert resolver.token("NSE:INFY", "kite") == 408065
        restarted.publish(snapshot(restarted.next_generation, 999))
        assert resolver.token("NSE:INFY", "kite") == 999


def test_a_reader_keeps_resolving_while_the_publisher_is_gone_and_follows_its_successor(
    publisher: Publisher,
) -> None:
    with open_followed(publisher) as resolver:
        publisher.close()
        assert resolver.token("NSE:INFY", "kite") == 408065
        successor = Publisher(publisher.directory, "universe")
        successor.adopt()
        successor.publish(snapshot(successor.next_generation, 999))
        assert resolver.token("NSE:INFY", "kite") == 999


def test_a_follower_moves_to_a_renewed_control_file_and_its_check_stays_a_small_int(
    publisher: Publisher,
) -> None:
    with open_followed(publisher) as resolver:
        bound = resolver.token  # bound to generation 1, and to the first control file
        swaps: list[tuple[int, int]] = []
        resolver.on_swap(lambda old, new: swaps.append((old, new)))
        last = CONTROL_SEQUENCE_LIMIT + 20  # two renewals
        for generation in range(2, last + 1):
            publisher.publish(snapshot(generation, 10_000 + generation))
            assert resolver.token("NSE:INFY", "kite") == 10_000 + generation
            assert resolver.key(10_000 + generation, "kite") == "NSE:INFY"
            words = resolver._words  # type: ignore[attr-defined]
            assert words is not None and words[2] <= CONTROL_SEQUENCE_LIMIT
        assert resolver.generation == last
        assert swaps == [(g - 1, g) for g in range(2, last + 1)]
        assert bound("NSE:INFY", "kite") == 10_000 + last
        assert resolver.failed_refreshes == 0  # type: ignore[attr-defined]


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".retiring"))]


class Killed(BaseException):
    """What kill -9 does to a publisher at one point: nothing after it runs."""


def _near_the_sequence_limit(publisher: Publisher) -> None:
    """Publish until the next swap renews the control file, INFY at 10,000 + generation."""
    publish_until_a_renewal_is_next(publisher, lambda g: snapshot(g, 10_000 + g))


def test_a_publisher_killed_between_renaming_and_retiring_is_finished_by_its_successor(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_followed(publisher) as resolver:
        _near_the_sequence_limit(publisher)
        assert resolver.token("NSE:INFY", "kite") == 10_000 + publisher.generation
        writes = publish._write_control

        def killed_at_the_retire(control: object, generation: int, *args: object) -> None:
            if generation == 0:
                raise Killed
            writes(control, generation, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(publish, "_write_control", killed_at_the_retire)
        renewed = publisher.next_generation
        with pytest.raises(Killed):
            publisher.publish(snapshot(renewed, 77))
        monkeypatch.undo()
        os.close(publisher._lock)  # type: ignore[arg-type]  # the kernel drops a dead lock
        # The new file holds the swap, but nobody told the followers of the old one.
        assert resolver.token("NSE:INFY", "kite") == 10_000 + renewed - 1
        successor = Publisher(publisher.directory, "universe")
        removed = successor.adopt()
        assert any(p.name.endswith(".retiring") for p in removed)
        assert resolver.token("NSE:INFY", "kite") == 77
        successor.publish(snapshot(successor.next_generation, 78))
        assert resolver.token("NSE:INFY", "kite") == 78
        assert not leftovers(publisher.directory)


def test_a_publisher_killed_before_renaming_leaves_a_file_its_successor_adopts(
    publisher: Publisher,
) -> None:
    """Killed after linking the old file's second name and writing the new file, before the
    rename: the file at the name is still the current one, and must not be retired."""
    control = publisher.directory / control_file_name("universe")
    with open_followed(publisher) as resolver:
        os.link(control, control.with_name(f".{control.name}.retiring"))
        control.with_name(f".{control.name}.4242.tmp").write_bytes(control.read_bytes())
        os.close(publisher._lock)  # type: ignore[arg-type]
        successor = Publisher(publisher.directory, "universe")
        successor.adopt()
        assert resolver.token("NSE:INFY", "kite") == 408065
        assert resolver.failed_refreshes == 0  # type: ignore[attr-defined]
        successor.publish(snapshot(successor.next_generation, 999))
        assert resolver.token("NSE:INFY", "kite") == 999
        assert not leftovers(publisher.directory)


def test_a_renewal_that_names_the_same_generation_is_not_a_swap(publisher: Publisher) -> None:
    with open_followed(publisher) as resolver:
        _near_the_sequence_limit(publisher)
        generation = publisher.generation
        token = resolver.token("NSE:INFY", "kite")
        swaps: list[tuple[int, int]] = []
        resolver.on_swap(lambda old, new: swaps.append((old, new)))
        before = resolver.swaps  # type: ignore[attr-defined]
        publisher.close()
        successor = Publisher(publisher.directory, "universe")
        successor.adopt()  # rewrites the current generation: past the limit, a new file
        assert resolver.token("NSE:INFY", "kite") == token
        assert (resolver.generation, resolver.swaps, swaps) == (generation, before, [])  # type: ignore[attr-defined]
        successor.publish(snapshot(successor.next_generation, 5))
        assert resolver.token("NSE:INFY", "kite") == 5
        assert swaps == [(generation, generation + 1)]


def test_after_a_purge_a_follower_keeps_its_generation(publisher: Publisher) -> None:
    with open_followed(publisher) as resolver:
        publisher.close()
        purge(publisher.directory, "universe")
        assert resolver.token("NSE:INFY", "kite") == 408065
        assert resolver.generation == 1
    with pytest.raises(UnavailableError, match="not published"):
        open_followed(publisher)


def test_a_follower_of_a_purged_registry_follows_it_when_it_is_served_again(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_follow, "RETRY_SECONDS", 3600.0)
    with open_followed(publisher) as resolver:
        publisher.close()
        purge(publisher.directory, "universe")
        assert resolver.token("NSE:INFY", "kite") == 408065
        successor = Publisher(publisher.directory, "universe")
        successor.adopt()
        successor.publish(snapshot(successor.next_generation, 999))
        # Within the retry interval the follower does not look at the name yet.
        assert resolver.token("NSE:INFY", "kite") == 408065
        assert resolver.get_key(408065, "kite") == "NSE:INFY"
        assert resolver.tokens(["NSE:INFY"], "kite").tolist() == [408065]
        assert resolver.generation == 1
        resolver._retry_at = 0.0  # type: ignore[attr-defined]  # the interval is over
        # Generations are numbered from 1 again: the checksum tells the two 1s apart.
        assert resolver.token("NSE:INFY", "kite") == 999
        assert (resolver.generation, resolver.swaps) == (1, 1)  # type: ignore[attr-defined]
        successor.publish(snapshot(successor.next_generation, 1000))
        assert resolver.token("NSE:INFY", "kite") == 1000
        assert resolver._retry_at is None  # type: ignore[attr-defined]
        successor.close()


def test_a_renewed_control_file_that_cannot_be_mapped_is_tried_again(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_followed(publisher) as resolver:
        _near_the_sequence_limit(publisher)
        before = publisher.generation
        assert resolver.token("NSE:INFY", "kite") == 10_000 + before
        monkeypatch.setattr(_follow, "RETRY_SECONDS", 0.0)
        maps = _follow._map_file
        failures = []

        def out_of_files(path: Path, **options: object) -> object:
            if path.name == control_file_name("universe") and len(failures) < 2:
                failures.append(path)
                raise OSError(errno.EMFILE, "Too many open files")
            return maps(path, **options)  # type: ignore[arg-type]

        monkeypatch.setattr(_follow, "_map_file", out_of_files)
        publisher.publish(snapshot(before + 1, 77))  # renews the control file
        assert resolver.token("NSE:INFY", "kite") == 10_000 + before  # mapping it failed
        assert resolver.token("NSE:INFY", "kite") == 10_000 + before  # and failed again
        assert resolver.token("NSE:INFY", "kite") == 77
        assert len(failures) == 2
        assert resolver.failed_refreshes == 2  # type: ignore[attr-defined]
        publisher.publish(snapshot(before + 2, 78))
        assert resolver.token("NSE:INFY", "kite") == 78


def test_a_generation_unlinked_after_its_grace_still_resolves_for_its_holder(
    publisher: Publisher,
) -> None:
    with open_followed(publisher) as resolver:
        old_lookup = resolver._current.token  # type: ignore[attr-defined]
        publisher.publish(snapshot(2, 999))
        resolver.refresh()
        publisher.expire()
        assert not (publisher.directory / "resolverd.universe.1.snap").exists()
        assert resolver._current.token("NSE:INFY", "kite") == 999  # type: ignore[attr-defined]
        del old_lookup


def test_a_closed_follower_refuses_lookups(publisher: Publisher) -> None:
    resolver = open_followed(publisher)
    token = resolver.token
    resolver.close()
    with pytest.raises(ValueError, match="closed"):
        resolver.token("NSE:INFY", "kite")
    with pytest.raises(ValueError):  # a lookup bound before close: its views are released
        token("NSE:INFY", "kite")
    with pytest.raises(ValueError, match="closed"):
        len(resolver)


def test_a_dropped_follower_is_freed_without_the_cycle_collector(publisher: Publisher) -> None:
    gc.disable()
    try:
        resolver = open_followed(publisher)
        ref = weakref.ref(resolver)
        del resolver
        assert ref() is None
    finally:
        gc.enable()


def test_a_resolver_of_a_file_does_not_follow(publisher: Publisher) -> None:
    assert publisher.current is not None
    with Resolver.open(publisher.current) as resolver:
        assert not resolver.following
        assert resolver.refresh() is False
        with pytest.raises(UnavailableError, match="registry name"):
            resolver.on_swap(lambda old, new: None)


def test_threads_resolving_through_swaps_always_see_a_whole_generation(
    publisher: Publisher,
) -> None:
    """Each generation g maps NSE:INFY to 1000 + g and NSE:G<g> to g: a lookup that mixed two
    generations would return a token that disagrees with the generation it came from."""
    errors: list[str] = []
    stop = threading.Event()
    with open_followed(publisher) as resolver:

        def read() -> None:
            while not stop.is_set():
                batch = resolver.tokens(["NSE:INFY"], "kite")
                if batch[0] not in (408065,) and batch[0] < 1000:
                    errors.append(f"batch {batch[0]}")
                token = resolver.get_token("NSE:INFY", "kite")
                if token != 408065 and not 1000 < token < 2000:
                    errors.append(f"token {token}")

        threads = [threading.Thread(target=read) for _ in range(3)]
        for thread in threads:
            thread.start()
        for generation in range(2, 60):
            publisher.publish(snapshot(generation, 1000 + generation))
            publisher.expire()
        stop.set()
        for thread in threads:
            thread.join()
        assert resolver.token("NSE:INFY", "kite") == 1059
    assert errors == []
    assert set(os.listdir(publisher.directory)) == {
        ".resolverd.universe.lock",
        control_file_name("universe"),
        "resolverd.universe.59.snap",
    }


def test_a_closed_follower_of_a_purged_registry_refuses_lookups(publisher: Publisher) -> None:
    resolver = open_followed(publisher)
    token = resolver.token
    publisher.close()
    purge(publisher.directory, "universe")
    assert token("NSE:INFY", "kite") == 408065  # now waiting to look at the name again
    resolver.close()
    with pytest.raises(ValueError):  # its views are released
        token("NSE:INFY", "kite")


def test_open_waits_for_a_registry_that_is_published_while_it_waits(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path, "universe", grace=0.0)

    def publish_later() -> None:
        time.sleep(0.3)
        publisher.adopt()
        publisher.publish(snapshot(1, 408065))

    later = threading.Thread(target=publish_later)
    later.start()
    try:
        with Resolver.open("universe", directory=tmp_path, wait=30) as resolver:
            assert resolver.token("NSE:INFY", "kite") == 408065
    finally:
        later.join()
        publisher.close()


def test_open_gives_up_waiting_with_unavailable_and_never_waits_on_an_untrusted_file(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="not published"):
        Resolver.open("universe", directory=tmp_path, wait=0.2)
    assert time.monotonic() - started >= 0.2
    planted = tmp_path / control_file_name("universe")
    planted.write_bytes(bytes(128))
    planted.chmod(0o666)  # anyone may write it: never trusted
    started = time.monotonic()
    with pytest.raises(UntrustedError):
        Resolver.open("universe", directory=tmp_path, wait=3600)
    assert time.monotonic() - started < 60


def test_after_an_upgrade_of_the_layout_the_new_daemon_replaces_the_old_generation(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous release's generation (another major layout version) is unreadable to the
    new daemon: it removes the file, sets the control file to no generation in place, publishes
    a fresh generation into it, and readers follow at once (no retry interval: the file they
    watch is the one at the name)."""
    monkeypatch.setattr(_follow, "RETRY_SECONDS", 3600.0)
    with open_followed(publisher) as resolver:
        assert resolver.token("NSE:INFY", "kite") == 408065
        publisher.close()
        old = publisher.directory / "resolverd.universe.1.snap"
        of_the_previous_major_version(old)
        successor = Publisher(publisher.directory, "universe")
        assert old in successor.adopt()
        assert resolver.token("NSE:INFY", "kite") == 408065  # the mapping outlives the file
        assert resolver._retry_at is None  # type: ignore[attr-defined]  # watching, not polling
        successor.publish(snapshot(successor.next_generation, 999))
        assert resolver.token("NSE:INFY", "kite") == 999
        assert resolver.generation == 2
        successor.close()
