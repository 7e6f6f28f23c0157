"""What a running daemon exposes, and to whom: file modes and groups, sockets, listeners, secrets.

Tests that act as another user (a process outside the readers' group) need root; they skip
without it.
"""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from resolverd.daemon.control import request

from .daemons import AARTI, NIFTY_CALL, Daemon, write_kite

pytestmark = pytest.mark.integration
pytest.importorskip("zmq", reason="pyzmq is not installed (the daemon extra)")

STRANGER = 65534  # nobody
READERS_GROUP = "adm"  # an existing group that nobody is not in, standing in for `resolverd`
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="acting as another user (setuid, chown) needs root"
)


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A publishing directory other users can reach (pytest's tmp_path is private to us)."""
    top = Path(tempfile.mkdtemp(prefix="resolverd-security-"))
    os.chmod(top, 0o755)
    folder = top / "shm"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(top)


def listening_tcp(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            if width == 8:
                text = ".".join(str(b) for b in reversed(raw))
            else:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                text = ":".join(b"".join(words).hex()[i : i + 4] for i in range(0, 32, 4))
            found.append((text, int(port, 16)))
    return found


def as_stranger(*command: str, groups: list[int] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        user=STRANGER,
        group=STRANGER,
        extra_groups=groups or [],
        capture_output=True,
        text=True,
        timeout=30,
    )


@needs_root
def test_segments_and_sockets_belong_to_the_configured_group_and_no_one_else(
    open_directory: Path,
) -> None:
    kite = open_directory.parent / "instruments.csv"
    write_kite(kite, AARTI, NIFTY_CALL)
    gid = grp.getgrnam(READERS_GROUP).gr_gid
    daemon = Daemon(open_directory, [f"kite={kite}"], RESOLVERD__DAEMON__GROUP=READERS_GROUP)
    daemon.start()
    try:
        published = [
            p for p in open_directory.iterdir() if p.name.startswith("resolverd.universe.")
        ]
        assert {p.suffix for p in published} == {".ctl", ".snap"}
        for path in published:
            status = path.stat()
            assert stat.S_IMODE(status.st_mode) == 0o640, path
            assert status.st_gid == gid, path
        for name in ("resolverd.control", "resolverd.pub"):
            status = (open_directory / name).lstat()
            assert stat.S_ISSOCK(status.st_mode)
            assert stat.S_IMODE(status.st_mode) & 0o007 == 0, name  # nothing for others
            assert status.st_gid == gid, name
        snapshot = next(p for p in published if p.suffix == ".snap")
        outside = as_stranger("cat", str(snapshot))
        assert outside.returncode != 0
        assert "Permission denied" in outside.stderr
        inside = as_stranger("head", "-c", "8", str(snapshot), groups=[gid])
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout == "RSLVSNAP"
    finally:
        daemon.stop()


def test_the_daemon_listens_on_no_tcp_port_but_its_loopback_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "shm"
    folder.mkdir()
    kite = tmp_path / "instruments.csv"
    write_kite(kite, AARTI, NIFTY_CALL)
    daemon = Daemon(folder, [f"kite={kite}"]).start()
    try:
        assert daemon.process is not None
        metrics = request(daemon.control, "status")["metrics"]
        listening = listening_tcp(daemon.process.pid)
        assert [f"{host}:{port}" for host, port in listening] == [metrics], (
            os.listdir(f"/proc/{daemon.process.pid}/fd"),
            Path(f"/proc/{daemon.process.pid}/net/tcp").read_text(),
        )
        assert metrics.startswith("127.0.0.1:")
    finally:
        daemon.stop()


def test_the_metrics_endpoint_defaults_to_loopback() -> None:
    from resolverd.config import DaemonConfig

    assert DaemonConfig().metrics.startswith("127.0.0.1:")


@pytest.mark.parametrize("spell", ["{dsn}", "postgres={dsn}"], ids=["dsn", "mistyped"])
def test_a_dsn_password_appears_nowhere_when_the_database_cannot_be_reached(
    tmp_path: Path, spell: str
) -> None:
    secret = "s3cr3t-never-printed"
    folder = tmp_path / "shm"
    folder.mkdir()
    dsn = f"postgresql://resolverd:{secret}@127.0.0.1:9/test?connect_timeout=2"
    daemon = Daemon(folder, [spell.format(dsn=dsn)])
    daemon.start(wait=False)
    assert daemon.process is not None
    code = daemon.process.wait(timeout=60)
    output = daemon.output()
    assert code != 0
    assert "127.0.0.1" in output  # the error says where it tried
    assert secret not in output


@needs_root
def test_a_user_who_may_not_write_the_directory_gets_an_error_line_not_a_traceback(
    open_directory: Path,
) -> None:
    try:
        probe = as_stranger(sys.executable, "-c", "import resolverd")
    except PermissionError as exc:  # the interpreter lives where nobody may not look (/root)
        pytest.skip(f"user nobody cannot run this Python: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this Python or import resolverd: {probe.stderr[-99:]}")
    lock = open_directory / ".resolverd.universe.lock"
    where = ["--dir", str(open_directory)]
    for argv in (
        ["purge", "universe", *where],
        ["serve", "synthetic=1000", "--name", "universe", *where, "--metrics", ""],
    ):
        result = as_stranger(sys.executable, "-m", "resolverd", *argv)
        assert (result.returncode, result.stderr) == (
            77,
            f"resolverd: error: {lock}: Permission denied\n",
        ), argv
