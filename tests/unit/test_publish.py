"""The publisher: complete files only, a seqlocked control file, grace, adoption and purge."""

from __future__ import annotations

import mmap
import os
import stat
import struct
import threading
from pathlib import Path

import pytest

from resolverd import LayoutError, Registry, UnavailableError, compile_snapshot
from resolverd.daemon import publish
from resolverd.daemon.publish import Publisher, purge
from resolverd.shm_layout import (
    CONTROL_SEQUENCE_LIMIT,
    CONTROL_SEQUENCE_OFFSET,
    control_file_name,
    read_control,
    read_header,
    snapshot_file_name,
)

from ..publishing import publish_until_a_renewal_is_next
from .registries import instrument


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snapshot(generation: int, token: int = 408065) -> bytearray:
    registry = Registry.from_instruments(
        [instrument("NSE:INFY", token), instrument("NSE:TCS", 2953217)]
    )
    return compile_snapshot(registry, generation=generation)


def control(directory: Path, name: str = "universe") -> bytes:
    return (directory / control_file_name(name)).read_bytes()


def names(directory: Path) -> set[str]:
    """The directory's files but the publisher's lock file."""
    return {p.name for p in directory.iterdir() if not p.name.endswith(".lock")}


def kill(publisher: Publisher) -> None:
    """What kill -9 does to a publisher: the kernel drops its lock, and nothing else runs."""
    assert publisher._lock is not None
    os.close(publisher._lock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def publisher(tmp_path: Path, clock: Clock) -> Publisher:
    publisher = Publisher(tmp_path, "universe", grace=5.0, clock=clock)
    publisher.adopt()
    return publisher


def test_a_new_directory_gets_a_control_file_with_no_generation(publisher: Publisher) -> None:
    state = read_control(control(publisher.directory))
    assert (state.generation, state.snapshot, state.sequence % 2) == (0, "", 0)
    assert publisher.next_generation == 1


def test_publish_makes_the_generation_current_with_mode_0640(publisher: Publisher) -> None:
    published = publisher.publish(snapshot(1))
    state = read_control(control(publisher.directory))
    assert state.generation == published.generation == 1
    assert state.snapshot == snapshot_file_name("universe", 1)
    assert state.payload_checksum == published.header.payload_checksum
    assert state.publisher_pid == os.getpid()
    assert stat.S_IMODE(published.path.stat().st_mode) == 0o640
    assert names(publisher.directory) == {
        control_file_name("universe"),
        snapshot_file_name("universe", 1),
    }


def test_every_swap_moves_the_sequence_by_two_and_leaves_it_even(publisher: Publisher) -> None:
    before = read_control(control(publisher.directory)).sequence
    publisher.publish(snapshot(1))
    publisher.publish(snapshot(2))
    assert read_control(control(publisher.directory)).sequence == before + 4


def test_a_swap_past_the_sequence_limit_goes_to_a_new_control_file_and_retires_the_old(
    publisher: Publisher,
) -> None:
    path = publisher.directory / control_file_name("universe")
    first = os.stat(path).st_ino
    held = path.open("rb")  # what a follower maps: the file it opened, whatever the name says
    swaps = CONTROL_SEQUENCE_LIMIT // 2 + 5
    inodes, sequences = {first}, []
    for generation in range(1, swaps + 1):
        publisher.publish(snapshot(generation, token=1000 + generation))
        state = read_control(control(publisher.directory))
        assert (state.generation, state.snapshot) == (
            generation,
            f"resolverd.universe.{generation}.snap",
        )
        sequences.append(state.sequence)
        inodes.add(os.stat(path).st_ino)
    assert max(sequences) <= CONTROL_SEQUENCE_LIMIT
    assert len(inodes) == 2
    retired = read_control(held.read())
    held.close()
    assert retired.generation == 0 and retired.snapshot == ""
    assert not [p for p in publisher.directory.iterdir() if p.name.endswith(".tmp")]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_a_control_file_that_cannot_be_renewed_is_written_in_place(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = publisher.directory / control_file_name("universe")
    first = os.stat(path).st_ino
    publish_until_a_renewal_is_next(publisher, snapshot)
    full = OSError(28, "No space left on device")

    def no_space(*args: object, **kwargs: object) -> None:
        raise full

    monkeypatch.setattr(publish, "create_file", no_space)
    publisher.publish_file(_written(publisher, snapshot(publisher.next_generation)))
    state = read_control(control(publisher.directory))
    assert state.generation == publisher.generation
    assert state.sequence > CONTROL_SEQUENCE_LIMIT
    assert os.stat(path).st_ino == first
    assert not [p for p in publisher.directory.iterdir() if p.name.endswith(".tmp")]


def _written(publisher: Publisher, snapshot: bytearray) -> Path:
    """`snapshot` at the publisher's temporary path, as the daemon's build worker leaves it."""
    path = publisher.temporary_path(publisher.next_generation)
    path.write_bytes(snapshot)
    return path


def test_the_files_get_the_configured_group(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path, "universe", gid=os.getgid(), mode=0o600)
    publisher.adopt()
    path = publisher.publish(snapshot(1)).path
    assert path.stat().st_gid == os.getgid()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_replaced_generation_stays_linked_for_the_grace_period(
    publisher: Publisher, clock: Clock
) -> None:
    first = publisher.publish(snapshot(1)).path
    publisher.publish(snapshot(2))
    clock.now += 4.9
    assert publisher.expire() == []
    assert first.exists()
    assert publisher.next_expiry() == pytest.approx(0.1)
    clock.now += 0.2
    assert publisher.expire() == [first]
    assert not first.exists()
    assert publisher.linked() == [publisher.current]


def test_a_corrupt_snapshot_is_refused_and_the_current_one_stays(publisher: Publisher) -> None:
    publisher.publish(snapshot(1))
    bad = snapshot(2)
    bad[-1] ^= 0xFF
    with pytest.raises(LayoutError, match="checksum"):
        publisher.publish(bad)
    assert read_control(control(publisher.directory)).generation == 1
    assert names(publisher.directory) == {
        control_file_name("universe"),
        snapshot_file_name("universe", 1),
    }


def test_a_snapshot_stamped_with_another_generation_is_refused(publisher: Publisher) -> None:
    with pytest.raises(LayoutError, match="generation 7 in the file, expected 1"):
        publisher.publish(snapshot(7))
    assert publisher.generation == 0


def test_checking_a_file_publishes_nothing_until_the_checked_file_is_published(
    publisher: Publisher,
) -> None:
    publisher.publish(snapshot(1))
    path = _written(publisher, snapshot(2))
    header = publisher.check_file(path)  # what the daemon runs in a thread
    assert header.generation == 2
    assert read_control(control(publisher.directory)).generation == 1
    assert publisher.generation == 1
    published = publisher.publish_checked(path, header)
    assert published.generation == 2 == read_control(control(publisher.directory)).generation


def test_a_check_that_fails_removes_the_file_and_changes_nothing(publisher: Publisher) -> None:
    publisher.publish(snapshot(1))
    bad = snapshot(2)
    bad[-1] ^= 0xFF
    path = _written(publisher, bad)
    with pytest.raises(LayoutError, match="checksum"):
        publisher.check_file(path)
    assert not path.exists()
    assert read_control(control(publisher.directory)).generation == 1


def test_a_checked_header_that_is_no_longer_the_next_generation_is_refused(
    publisher: Publisher,
) -> None:
    path = publisher.directory / ".checked.tmp"
    path.write_bytes(snapshot(1))
    header = publisher.check_file(path)
    publisher.publish(snapshot(1))  # something else published generation 1 meanwhile
    assert path.exists()
    with pytest.raises(LayoutError, match="generation 1 is not the next, 2"):
        publisher.publish_checked(path, header)
    assert not path.exists()
    assert publisher.generation == 1


def test_a_stop_leaves_the_control_file_and_the_current_generation(
    publisher: Publisher,
) -> None:
    publisher.publish(snapshot(1))
    publisher.publish(snapshot(2))
    publisher.close()
    assert names(publisher.directory) == {
        control_file_name("universe"),
        snapshot_file_name("universe", 2),
    }


def test_adopt_keeps_the_current_generation_and_removes_what_a_dead_instance_left(
    tmp_path: Path,
) -> None:
    first = Publisher(tmp_path, "universe", grace=60)
    first.adopt()
    for generation in (1, 2, 3):
        first.publish(snapshot(generation))
    # Killed: generations 1 and 2 still in their grace period, a half-written fourth.
    (tmp_path / ".resolverd.universe.4.tmp").write_bytes(b"half")
    kill(first)
    (tmp_path / snapshot_file_name("other", 1)).write_bytes(b"not ours")
    second = Publisher(tmp_path, "universe")
    removed = second.adopt()
    assert {p.name for p in removed} == {
        snapshot_file_name("universe", 1),
        snapshot_file_name("universe", 2),
        ".resolverd.universe.4.tmp",
    }
    assert second.generation == 3
    assert second.next_generation == 4
    assert read_control(control(tmp_path)).generation == 3
    assert (tmp_path / snapshot_file_name("other", 1)).exists()


def test_adopt_repairs_a_control_file_left_odd_by_a_killed_writer(tmp_path: Path) -> None:
    first = Publisher(tmp_path, "universe")
    first.adopt()
    first.publish(snapshot(1))
    kill(first)
    path = tmp_path / control_file_name("universe")
    raw = bytearray(path.read_bytes())
    odd = struct.unpack_from("<Q", raw, CONTROL_SEQUENCE_OFFSET)[0] + 1
    struct.pack_into("<Q", raw, CONTROL_SEQUENCE_OFFSET, odd)
    with open(path, "r+b") as file:
        file.write(raw)
    with pytest.raises(LayoutError, match="never became stable"):
        read_control(path.read_bytes(), retries=10)
    second = Publisher(tmp_path, "universe")
    second.adopt()
    state = read_control(path.read_bytes())
    assert state.sequence > odd
    assert state.generation == 1


def test_adopt_falls_back_to_the_newest_intact_generation(tmp_path: Path) -> None:
    first = Publisher(tmp_path, "universe", grace=60)
    first.adopt()
    first.publish(snapshot(1))
    first.publish(snapshot(2))
    kill(first)
    current = tmp_path / snapshot_file_name("universe", 2)
    data = bytearray(current.read_bytes())
    data[-1] ^= 0xFF
    current.unlink()
    current.write_bytes(data)
    second = Publisher(tmp_path, "universe")
    second.adopt()
    assert second.generation == 1
    assert read_control(control(tmp_path)).generation == 1
    assert not current.exists()
    assert second.next_generation == 3


def test_a_foreign_file_with_the_control_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / control_file_name("universe")).write_bytes(b"x" * 128)
    with pytest.raises(LayoutError, match="not a resolverd control file"):
        Publisher(tmp_path, "universe").adopt()


def test_purge_removes_every_file_of_the_registry_and_only_those(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path, "universe", grace=60)
    publisher.adopt()
    publisher.publish(snapshot(1))
    publisher.publish(snapshot(2))
    publisher.close()
    (tmp_path / snapshot_file_name("universe.eu", 1)).write_bytes(b"another registry")
    removed = purge(tmp_path, "universe")
    assert {p.name for p in removed} == {
        control_file_name("universe"),
        snapshot_file_name("universe", 2),
    }
    assert {p.name for p in tmp_path.iterdir()} == {snapshot_file_name("universe.eu", 1)}


def test_a_second_publisher_of_the_same_registry_is_refused_while_the_first_runs(
    publisher: Publisher,
) -> None:
    with pytest.raises(UnavailableError, match="served by another running process"):
        Publisher(publisher.directory, "universe").adopt()
    with pytest.raises(UnavailableError, match="served by another running process"):
        purge(publisher.directory, "universe")
    publisher.close()
    second = Publisher(publisher.directory, "universe")
    second.adopt()
    second.close()


def test_the_published_file_is_the_compiled_bytes(publisher: Publisher) -> None:
    data = snapshot(1)
    path = publisher.publish(data).path
    assert path.read_bytes() == bytes(data)
    assert read_header(path.read_bytes()).generation == 1


def test_purge_in_a_directory_that_does_not_exist_says_so(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="no such directory"):
        purge(tmp_path / "absent", "universe")


def test_a_reader_waits_out_a_writer_held_up_in_the_middle_of_its_write(
    publisher: Publisher,
) -> None:
    # A publisher preempted between the odd and the even store keeps `sequence` odd for as
    # long as it waits for a CPU; 100 back-to-back retries take microseconds, so a reader
    # that did not back off would give up on a swap that is about to complete.
    publisher.publish(snapshot(1))
    path = publisher.directory / control_file_name("universe")
    with open(path, "r+b") as file, mmap.mmap(file.fileno(), 0) as live:
        stable = struct.unpack_from("<Q", live, CONTROL_SEQUENCE_OFFSET)[0]
        struct.pack_into("<Q", live, CONTROL_SEQUENCE_OFFSET, stable + 1)
        finished = threading.Timer(
            0.001, struct.pack_into, ("<Q", live, CONTROL_SEQUENCE_OFFSET, stable + 2)
        )
        finished.start()
        try:
            state = read_control(live, retries=100)
        finally:
            finished.join()
    assert (state.sequence, state.generation) == (stable + 2, 1)
