"""A full publishing directory, in process: write(2) is made to run out of space the way a full
tmpfs does (part of a write lands, then ENOSPC), without needing a mount.

The daemon-level version, on a real tmpfs of a few pages, is in
``tests/integration/test_faults.py``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from resolverd import Registry, Resolver, compile_snapshot
from resolverd.daemon import publish
from resolverd.daemon.build import Built, Failed, build_generation
from resolverd.daemon.publish import Publisher
from resolverd.shm_layout import control_file_name, read_control, snapshot_file_name

from ..publishing import first_kite_job
from .registries import instrument


def snapshot(generation: int, token: int) -> bytearray:
    registry = Registry.from_instruments(
        [instrument("NSE:INFY", token), instrument("NSE:TCS", 2953217)]
    )
    return compile_snapshot(registry, generation=generation)


@contextmanager
def disk_with_room_for(room: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Inside the block, write(2) stores at most `room` more bytes in all, then fails with
    ENOSPC, as on a tmpfs at its size limit. Yields the list of bytes each call stored."""
    real_write = os.write
    stored: list[int] = []

    def write(fd: int, data: bytes | bytearray | memoryview) -> int:
        left = room - sum(stored)
        if left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = real_write(fd, memoryview(data)[:left])
        stored.append(count)
        return count

    with monkeypatch.context() as patch:
        patch.setattr(publish.os, "write", write)
        yield stored


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.endswith(".lock")}


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Publisher]:
    publisher = Publisher(tmp_path, "universe", grace=0.0)
    publisher.adopt()
    yield publisher
    publisher.close()


def test_a_publish_that_runs_out_of_space_says_enospc_and_where_and_leaves_nothing_behind(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher.publish(snapshot(1, 408065))
    before = read_control((publisher.directory / control_file_name("universe")).read_bytes())
    with Resolver.open("universe", directory=publisher.directory) as reader:
        with (
            disk_with_room_for(100, monkeypatch) as stored,
            pytest.raises(OSError) as caught,
        ):
            publisher.publish(snapshot(2, 408066))
        assert stored == [100]  # a part landed before the disk was full
        assert caught.value.errno == errno.ENOSPC
        message = str(caught.value)
        assert "No space left on device (ENOSPC)" in message
        assert str(publisher.temporary_path(2)) in message  # the file, so the directory
        assert files(publisher.directory) == {
            control_file_name("universe"),
            snapshot_file_name("universe", 1),
        }
        after = read_control((publisher.directory / control_file_name("universe")).read_bytes())
        assert (after.generation, after.payload_checksum, after.sequence) == (
            before.generation,
            before.payload_checksum,
            before.sequence,
        )
        assert reader.token("NSE:INFY", "kite") == 408065
        assert publisher.next_generation == 2

        publisher.publish(snapshot(2, 408066))  # space again: the same generation goes out
        assert reader.token("NSE:INFY", "kite") == 408066
        assert reader.generation == 2


def test_a_build_whose_file_does_not_fit_fails_as_unavailable_naming_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = first_kite_job(tmp_path)
    shm = tmp_path / "shm"
    with disk_with_room_for(0, monkeypatch):
        result = build_generation(job)
    assert isinstance(result, Failed)
    assert (result.reason, result.exit_code) == ("unavailable", 69)
    assert "No space left on device (ENOSPC)" in result.error
    assert f"{shm}/" in result.error
    assert list(shm.iterdir()) == []

    built = build_generation(job)
    assert isinstance(built, Built)
    assert Path(job.out).stat().st_size > 0
