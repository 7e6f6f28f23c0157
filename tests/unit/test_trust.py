"""Readers resolve only from files a trusted user published; a planted file is refused.

Tests that hand a file to another user need root (chown); they skip without it.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from resolverd import Registry, Resolver, UntrustedError, compile_snapshot
from resolverd._trust import trusted_owners
from resolverd.daemon.publish import Publisher
from resolverd.shm_layout import control_file_name, snapshot_file_name

from .registries import instrument

STRANGER = 65534  # nobody: the user who plants files in a world-writable /dev/shm
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="handing a file to another user (chown) needs root"
)


def snapshot(generation: int, infy: int = 408065) -> bytearray:
    instruments = [instrument("NSE:INFY", infy), instrument("NSE:TCS", 2953217)]
    return compile_snapshot(Registry.from_instruments(instruments), generation=generation)


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    publisher = Publisher(tmp_path, "universe", grace=60.0)
    publisher.adopt()
    publisher.publish(snapshot(1))
    yield publisher
    publisher.close()


def plant(path: Path, data: bytes, *, uid: int | None = None, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


def test_a_snapshot_others_can_write_is_refused(tmp_path: Path) -> None:
    path = plant(tmp_path / "s.snap", bytes(snapshot(1)), mode=0o666)
    with pytest.raises(UntrustedError, match=r"mode 0o666 lets users other than its owner write"):
        Resolver.open(path)
    os.chmod(path, 0o664)
    with pytest.raises(UntrustedError, match="mode 0o664"):
        Resolver.open(path)
    os.chmod(path, 0o644)
    with Resolver.open(path) as resolver:
        assert resolver.token("NSE:INFY", "kite") == 408065


def test_a_symlink_in_place_of_a_snapshot_is_refused(tmp_path: Path) -> None:
    real = plant(tmp_path / "real.snap", bytes(snapshot(1)))
    link = tmp_path / "link.snap"
    link.symlink_to(real)
    with pytest.raises(UntrustedError, match="symbolic link"):
        Resolver.open(link)


def test_a_symlink_planted_as_the_control_segment_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    publisher = Publisher(elsewhere, "universe")
    publisher.adopt()
    publisher.publish(snapshot(1))
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / control_file_name("universe")).symlink_to(elsewhere / control_file_name("universe"))
    with pytest.raises(UntrustedError, match="symbolic link"):
        Resolver.open("universe", directory=shared)
    publisher.close()


@needs_root
def test_a_snapshot_of_an_untrusted_owner_is_refused_unless_its_owner_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = plant(tmp_path / "s.snap", bytes(snapshot(1)), uid=STRANGER)
    with pytest.raises(UntrustedError, match=r"owned by .*uid 65534.*not trusted to publish"):
        Resolver.open(path)
    with Resolver.open(path, owner=STRANGER) as resolver:
        assert resolver.token("NSE:INFY", "kite") == 408065
    stranger = pwd.getpwuid(STRANGER).pw_name
    with Resolver.open(path, owner=[stranger]) as resolver:
        assert resolver.generation == 1
    monkeypatch.setenv("RESOLVERD_OWNER", f"daemon,{stranger}")
    with Resolver.open(path) as resolver:
        assert resolver.generation == 1


@needs_root
def test_the_owner_of_a_directory_no_one_else_may_write_is_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o750)
    os.chown(folder, STRANGER, -1)
    assert STRANGER in trusted_owners(folder)
    path = plant(folder / "s.snap", bytes(snapshot(1)), uid=STRANGER)
    with Resolver.open(path) as resolver:
        assert resolver.token("NSE:INFY", "kite") == 408065
    os.chmod(folder, 0o1777)  # /dev/shm's mode: anyone may create files here
    assert STRANGER not in trusted_owners(folder)
    with pytest.raises(UntrustedError, match="not trusted"):
        Resolver.open(path)


@needs_root
def test_a_planted_control_segment_is_refused_by_readers_and_by_the_daemon(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    honest = Publisher(source, "universe")
    honest.adopt()
    honest.publish(snapshot(1, infy=666))
    honest.close()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    for file in source.glob("resolverd.universe.*"):
        plant(shared / file.name, file.read_bytes(), uid=STRANGER)
    with pytest.raises(UntrustedError, match=r"resolverd\.universe\.ctl: owned by"):
        Resolver.open("universe", directory=shared)
    publisher = Publisher(shared, "universe")
    with pytest.raises(UntrustedError, match=r"resolverd\.universe\.ctl: owned by"):
        publisher.adopt()
    publisher.close()


@needs_root
def test_a_generation_not_owned_by_the_control_segments_owner_is_never_resolved(
    publisher: Publisher,
) -> None:
    with Resolver.open("universe", directory=publisher.directory, owner=STRANGER) as resolver:
        planted = plant(
            publisher.directory / "planted.snap", bytes(snapshot(2, infy=666)), uid=STRANGER
        )
        header = bytes(snapshot(2, infy=666))
        checksum = int.from_bytes(header[56:64], "little")
        publisher._write_control(2, checksum, planted.name)  # a control that names it
        assert resolver.token("NSE:INFY", "kite") == 408065
        assert resolver.generation == 1
        assert resolver.last_error is not None
        assert "not by" in resolver.last_error and "planted" in resolver.last_error


@needs_root
def test_adopt_never_takes_a_planted_generation_and_publishes_past_it(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path, "universe")
    publisher.adopt()
    publisher.publish(snapshot(1))
    publisher.close()
    planted = plant(
        tmp_path / snapshot_file_name("universe", 9), bytes(snapshot(9, infy=666)), uid=STRANGER
    )
    successor = Publisher(tmp_path, "universe")
    successor.adopt()
    assert successor.generation == 1
    published = successor.publish(snapshot(successor.next_generation))
    assert published.generation == 10
    successor.close()
    with Resolver.open("universe", directory=tmp_path) as resolver:
        assert resolver.token("NSE:INFY", "kite") == 408065
        assert resolver.generation == 10
    assert not planted.exists()  # adopt removed it: the daemon's user here is root


def test_adopt_ignores_a_stale_file_it_may_not_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a sticky /dev/shm another user's planted file cannot be unlinked: adopt goes on."""
    publisher = Publisher(tmp_path, "universe")
    publisher.adopt()
    publisher.publish(snapshot(1))
    publisher.close()
    planted = plant(tmp_path / snapshot_file_name("universe", 9), b"not a snapshot")
    unlink = Path.unlink

    def refuse(path: Path, missing_ok: bool = False) -> None:
        if path == planted:
            raise PermissionError(1, "Operation not permitted", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    successor = Publisher(tmp_path, "universe")
    assert planted not in successor.adopt()
    assert successor.generation == 1
    assert successor.publish(snapshot(successor.next_generation)).generation == 10
    successor.close()
    assert planted.exists()


def test_a_native_write_through_the_mapping_faults_and_changes_nothing(tmp_path: Path) -> None:
    """PROT_READ: even native code cannot write through a client's mapping (SIGSEGV)."""
    path = plant(tmp_path / "s.snap", bytes(snapshot(1)))
    before = path.read_bytes()
    program = (
        "import ctypes, sys\n"
        "from resolverd import Resolver\n"
        "r = Resolver.open(sys.argv[1])\n"
        "target = r.records.__array_interface__['data'][0]\n"
        "ctypes.memset(target, 0x41, 8)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(path)], capture_output=True, timeout=60
    )
    assert result.returncode == -11, result.stderr.decode()
    assert path.read_bytes() == before
