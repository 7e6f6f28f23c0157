"""Faults around a running `resolverd serve`: a full publishing directory, PostgreSQL going away
during reloads, a source rewritten in place, readers that never close or die mid-lookup.

Every fault is held to the daemon's rule 2 (``resolverd.daemon.app``): the failure is clear
(logged and in ``status``'s ``last_reload``), the generation that was serving keeps serving
(same generation and checksum, and a reader opened before it still resolves), and the daemon
recovers by itself or on the next reload once the fault is gone.

kill -9 of the daemon itself is in ``test_daemon.py``; the in-process versions of some faults
are in ``tests/unit/test_publish_faults.py`` and ``tests/unit/test_source_faults.py``.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

import pytest

from resolverd import Resolver
from resolverd.daemon.control import request

from .daemons import (
    AARTI,
    AARTI_RENUMBERED,
    HEADER,
    NIFTY_CALL,
    Daemon,
    ingest,
    wait_for,
    write_kite,
)

pytestmark = pytest.mark.integration
pytest.importorskip("zmq", reason="pyzmq is not installed (the daemon extra)")

# Enough for the control file and two tiny generations, small enough to fill in a moment.
TMPFS_BYTES = 1 << 20


def aarti(exchange_token: int) -> str:
    """AARTIIND renumbered to `exchange_token` (its Kite token follows: et << 8 | NSE)."""
    return AARTI.replace("1793,7,", f"{exchange_token << 8 | 1},{exchange_token},", 1)


def equities(count: int, first_exchange_token: int) -> list[str]:
    """`count` NSE equities SYM0.. numbered from `first_exchange_token`."""
    return [
        f"{(et := first_exchange_token + i) << 8 | 1},{et},SYM{i},SYM {i},0,,0,0.05,1,EQ,NSE,NSE"
        for i in range(count)
    ]


def snapshots(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(".snap")}


def temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def failed_reload(daemon: Daemon, count: int = 1) -> dict[str, Any]:
    """The status once at least `count` reloads have failed."""
    status: dict[str, Any] = wait_for(
        lambda: (s := daemon.status())["reloads"]["failed"] >= count and s,
        f"{count} failed reload(s)",
    )
    return status


# -- 1. the publishing directory is full -------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs of its own, TMPFS_BYTES large, unmounted at the end."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount/umount command to make a small tmpfs")
    options = f"size={TMPFS_BYTES},mode=0700"
    tried = subprocess.run(
        [mount, "-t", "tmpfs", "-o", options, "resolverd-test", str(point)],
        capture_output=True,
        text=True,
    )
    if tried.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN; "
            f"tests/unit/test_publish_faults.py covers ENOSPC in process): {tried.stderr.strip()}"
        )
    try:
        yield point
    finally:
        # A mapping still alive in this process (a generation a test leaked) keeps the mount
        # busy: detach it lazily rather than leave it mounted.
        if subprocess.run([umount, str(point)], capture_output=True).returncode != 0:
            subprocess.run([umount, "-l", str(point)], capture_output=True)


def fill(directory: Path) -> Path:
    """A file that takes every free block of `directory`'s filesystem."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    block = bytes(4096)
    try:
        while True:
            os.write(fd, block)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def test_a_full_publishing_directory_fails_the_reload_with_enospc_and_keeps_serving(
    tmpfs: Path, kite: Path
) -> None:
    daemon = Daemon(tmpfs, [f"kite={kite}"]).start()
    try:
        with Resolver.open("universe", directory=tmpfs) as reader:
            before = daemon.status()
            filler = fill(tmpfs)
            write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)  # the watcher reloads
            failed = failed_reload(daemon)
            last = failed["last_reload"]
            assert (last["result"], last["reason"], last["exit_code"]) == (
                "failed",
                "unavailable",
                69,
            )
            assert "No space left on device (ENOSPC)" in last["error"]
            assert f"{tmpfs}/" in last["error"]
            assert "No space left on device (ENOSPC)" in daemon.output()
            assert temporaries(tmpfs) == []
            assert (failed["generation"], failed["checksum"]) == (
                before["generation"],
                before["checksum"],
            )
            assert reader.token("NSE:AARTIIND", "kite") == 1793

            filler.unlink()
            reloaded = request(daemon.control, "reload", "universe", timeout=60)["universe"]
            assert reloaded["last_reload"]["result"] == "ok"
            assert reloaded["generation"] == before["generation"] + 1
            assert reader.token("NSE:AARTIIND", "kite") == 2049
    finally:
        assert daemon.stop() == 0


# -- 2. PostgreSQL goes away during reloads ----------------------------------------------------

SECRET = "s3cr3t-pw"


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream`. `stop` drops every connection and closes the
    port (new connections are refused); `start` opens the same port again. `cut_after` has the
    server go down in the middle of a connection's data."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.forwarded: list[int] = []
        """Bytes sent server -> client on each connection, in the order they were accepted."""
        self.cut: int | None = None
        """The index in `forwarded` of the connection `cut_after` cut, once it did."""
        self.down = threading.Event()
        """Set once a cut has closed every connection and the port."""
        self._limit: int | None = None
        self._turning_away = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.05)  # how often the acceptor looks for a stop
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._turning_away.clear()
        self.down.clear()
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()
        return self

    def cut_after(self, limit: int) -> None:
        """Arm a cut for the connections accepted from now on: the first whose server sends
        more than `limit` bytes gets exactly `limit` of them, then both its sides are closed and
        the proxy goes down as a server does: every other connection dropped, the port closed
        (`down` is set then). `start` brings it back, disarmed."""
        with self._lock:
            self._limit = limit

    def stop(self) -> None:
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=10)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets = list(self._open)
        self._close(*sockets)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            if self._turning_away.is_set():  # cut, and the port is about to close
                client.close()
                continue
            client.settimeout(None)
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
                counter = len(self.forwarded)
                self.forwarded.append(0)
                limit = self._limit
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(server, client, counter, limit), daemon=True
            ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        counter: int | None = None,
        limit: int | None = None,
    ) -> None:
        try:
            while data := source.recv(65536):
                if counter is not None:
                    sent = self.forwarded[counter]
                    if limit is not None and sent + len(data) > limit:
                        sink.sendall(data[: limit - sent])
                        self.forwarded[counter] = limit
                        self._go_down(counter, source, sink)
                        return
                    self.forwarded[counter] = sent + len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _go_down(self, counter: int, *cut: socket.socket) -> None:
        self._turning_away.set()
        with self._lock:
            self.cut, self._limit = counter, None
        self._close(*cut)  # first, so that the reader of this connection sees its data end
        self.stop()
        self.down.set()

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._open.discard(sock)
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv
            sock.close()


def _upstream(registry_dsn: str) -> tuple[str, int, str]:
    """The server's TCP address (127.0.0.1:5432 when the fixture's DSN reaches it over a unix
    socket) and the user it connects as; skips when that address does not answer."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(registry_dsn, connect_timeout=3) as conn:
        host, port = conn.info.host, conn.info.port
        user = conn.info.user
    if host.startswith("/"):
        host, port = "127.0.0.1", 5432
    try:
        with psycopg.connect(make_conninfo(registry_dsn, host=host, port=port), connect_timeout=3):
            pass
    except psycopg.Error as exc:
        pytest.skip(f"the registry's PostgreSQL is not reachable over TCP at {host}:{port}: {exc}")
    return host, port, user


@pytest.fixture
def proxied_dsn(registry_dsn: str) -> Iterator[tuple[str, TcpProxy]]:
    """A DSN with a password (that trust authentication ignores) to the registry's database
    through a TcpProxy, and the proxy."""
    from psycopg.conninfo import conninfo_to_dict

    host, port, user = _upstream(registry_dsn)
    proxy = TcpProxy((host, port)).start()
    dbname = conninfo_to_dict(registry_dsn)["dbname"]
    try:
        yield f"postgresql://{user}:{SECRET}@127.0.0.1:{proxy.port}/{dbname}", proxy
    finally:
        proxy.stop()


def test_postgresql_stopped_fails_reloads_without_the_password_and_a_restart_recovers(
    registry_dsn: str, proxied_dsn: tuple[str, TcpProxy], directory: Path, kite: Path
) -> None:
    dsn, proxy = proxied_dsn
    ingest(registry_dsn, kite)
    daemon = Daemon(directory, [dsn], RESOLVERD__REGISTRIES__UNIVERSE__RETRY_SECONDS="0.3")
    daemon.start()
    try:

        def listening() -> int:
            return daemon.output().count("registry listener listening on")

        wait_for(listening, "the LISTEN connection")
        with Resolver.open("universe", directory=directory) as reader:
            before = daemon.status()
            proxy.stop()
            cli = subprocess.run(
                [sys.executable, "-m", "resolverd", "reload", "--control", daemon.control],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert cli.returncode == 69, cli.stdout + cli.stderr
            assert f"@127.0.0.1:{proxy.port}/" in cli.stdout  # the redacted DSN
            assert "cannot connect" in cli.stdout
            assert "Connection refused" in cli.stdout
            failed = failed_reload(daemon, 3)  # the first and two retries after RETRY_SECONDS
            shown = [json.dumps(failed), cli.stdout, cli.stderr]
            assert failed["last_reload"]["reason"] == "unavailable"
            assert failed["last_reload"]["trigger"] == "retry after a failure"
            assert (failed["generation"], failed["checksum"]) == (
                before["generation"],
                before["checksum"],
            )
            assert reader.token("NSE:AARTIIND", "kite") == 1793
            wait_for(lambda: "retrying in 1 s" in daemon.output(), "the listener to back off twice")
            reconnected = listening() + 1

            proxy.start()
            wait_for(lambda: listening() >= reconnected, "the LISTEN connection back")
            recovered = wait_for(
                lambda: (s := daemon.status())["last_reload"]["result"] == "unchanged" and s,
                "a reload that reaches the server",
            )
            assert recovered["retry_at"] is None  # no more retries
            assert recovered["generation"] == before["generation"]
            write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
            ingest(registry_dsn, kite)
            wait_for(lambda: reader.get_token("NSE:AARTIIND", "kite") == 2049, "the NOTIFY")
            assert "NOTIFY" in daemon.status()["last_reload"]["trigger"]
        shown.append(json.dumps(request(daemon.control, "status")))
    finally:
        assert daemon.stop() == 0
    log = daemon.output()
    assert "disconnected: " in log
    for text in (log, *shown):
        assert SECRET not in text


# The cut falls past a load's prologue (authentication, the schema version, the count and the
# feeds: under 1 KB from the server), inside the COPY of instrument_keys, which for INSTRUMENTS
# rows of about 50 bytes runs to about three times CUT_BYTES.
CUT_BYTES = 64 * 1024
INSTRUMENTS = 4000


def kite_token(exchange_token: int) -> int:
    return exchange_token << 8 | 1


def test_postgresql_going_down_mid_copy_fails_the_reload_and_the_retry_after_its_restart_publishes(
    registry_dsn: str, proxied_dsn: tuple[str, TcpProxy], directory: Path, kite: Path
) -> None:
    dsn, proxy = proxied_dsn
    redacted = dsn.replace(f":{SECRET}@", "@")
    first = equities(INSTRUMENTS, 1000)
    write_kite(kite, *first)
    ingest(registry_dsn, kite)
    # No LISTEN: the ingest's NOTIFY would reload before the cut is armed, and the listener's
    # reconnection would race the retry this test is about.
    daemon = Daemon(
        directory,
        [dsn],
        RESOLVERD__REGISTRIES__UNIVERSE__RETRY_SECONDS="0.3",
        RESOLVERD__REGISTRIES__UNIVERSE__LISTEN="false",
    ).start()
    try:
        with Resolver.open("universe", directory=directory) as reader:
            before = daemon.status()
            assert before["generation"] == 1
            assert max(proxy.forwarded) > 2 * CUT_BYTES  # the first load ran well past the cut
            write_kite(kite, *equities(10, 90_000), *first[10:])  # SYM0..SYM9 renumbered
            ingest(registry_dsn, kite)
            opened = len(proxy.forwarded)
            proxy.cut_after(CUT_BYTES)

            cut = request(daemon.control, "reload", "universe", timeout=120)["universe"]
            last = cut["last_reload"]
            assert (last["result"], last["reason"], last["exit_code"]) == (
                "failed",
                "unavailable",
                69,
            ), last
            assert last["trigger"] == "resolverd reload"
            assert f"{redacted}: loading the registry" in last["error"]
            assert "went away" in last["error"]
            assert "server closed the connection unexpectedly" in last["error"]
            # The reload's own connection, cut once CUT_BYTES had flowed: mid-COPY.
            assert proxy.cut == opened
            assert proxy.forwarded[opened] == CUT_BYTES
            assert proxy.down.wait(timeout=20)
            shown = [json.dumps(cut)]

            down = wait_for(
                lambda: (
                    (s := daemon.status())["last_reload"]["trigger"] == "retry after a failure"
                    and "Connection refused" in (s["last_reload"]["error"] or "")
                    and s
                ),
                "a retry refused while the server is down",
            )
            shown.append(json.dumps(down))
            assert f"{redacted}: cannot connect" in down["last_reload"]["error"]
            assert (down["generation"], down["checksum"]) == (
                before["generation"],
                before["checksum"],
            )
            assert snapshots(directory) == {"resolverd.universe.1.snap"}
            assert temporaries(directory) == []
            assert reader.token("NSE:SYM0", "kite") == kite_token(1000)
            assert reader.generation == 1

            proxy.start()
            published = wait_for(
                lambda: (s := daemon.status())["generation"] == 2 and s,
                "the retry to publish generation 2",
            )
            shown.append(json.dumps(published))
            assert published["last_reload"]["result"] == "ok"
            assert published["last_reload"]["trigger"] == "retry after a failure"
            assert published["retry_at"] is None
            assert published["checksum"] != before["checksum"]
            assert published["instruments"] == INSTRUMENTS
            wait_for(
                lambda: reader.get_token("NSE:SYM0", "kite") == kite_token(90_000),
                "the reader to follow generation 2",
            )
            assert reader.generation == 2
            assert reader.token("NSE:SYM9", "kite") == kite_token(90_009)
            assert reader.token("NSE:SYM10", "kite") == kite_token(1010)
            assert temporaries(directory) == []
    finally:
        assert daemon.stop() == 0
    log = daemon.output()
    assert "registry universe: reload failed, generation 1 stays" in log
    assert "Traceback" not in log
    for text in (log, *shown):
        assert SECRET not in text


# -- 3. a source rewritten in place ------------------------------------------------------------


class Sampler:
    """A thread that resolves through its own following reader until stopped and records each
    (generation, instrument count, SYM0's token) it sees."""

    def __init__(self, directory: Path) -> None:
        self.reader = Resolver.open("universe", directory=directory)
        self.seen: set[tuple[int, int, int | str | None]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader = self.reader
        while not self._stop.is_set():
            # Each call may switch generations: a sample counts only if none switched it.
            generation = reader.generation
            sample = (generation, len(reader), reader.get_token("NSE:SYM0", "kite"))
            if reader.generation == generation:
                self.seen.add(sample)
            self._stop.wait(0.001)

    def stop(self) -> set[tuple[int, int, int | str | None]]:
        self._stop.set()
        self._thread.join(timeout=10)
        self.reader.close()
        return self.seen


@pytest.mark.parametrize(
    ("cut", "reason", "refusal"),
    [
        ("mid-row", "source", "row 102, field exchange_token: 1 fields, but the header has 12"),
        ("row boundary", "gate", "broker kite: 100 instruments against 200"),
    ],
    ids=["cut-mid-row", "cut-at-a-row-boundary"],
)
def test_a_source_rewritten_in_place_is_never_served_half_written(
    directory: Path, tmp_path: Path, cut: str, reason: str, refusal: str
) -> None:
    old, new = equities(200, 1000), equities(200, 5000)
    source = tmp_path / "instruments.csv"
    write_kite(source, *old)
    content = "".join(f"{line}\n" for line in (HEADER, *new)).encode()
    # The first half ends after 100 rows, or 5 bytes into row 102 (header is row 1).
    half = len("".join(f"{line}\n" for line in (HEADER, *new[:100]))) + (
        5 if cut == "mid-row" else 0
    )
    daemon = Daemon(directory, [f"kite={source}"]).start()
    try:
        sampler = Sampler(directory)
        try:
            before = daemon.status()
            with open(source, "r+b") as file:
                file.truncate(0)
                file.write(content[:half])
                file.flush()
                refused = wait_for(
                    lambda: (
                        (s := daemon.status())["reloads"]["failed"]
                        and refusal in (s["last_reload"]["error"] or "")
                        and s
                    ),
                    "the half-written file to be refused",
                )
                assert refused["last_reload"]["reason"] == reason
                assert (refused["generation"], refused["checksum"]) == (
                    before["generation"],
                    before["checksum"],
                )
                file.write(content[half:])
            published = wait_for(
                lambda: (s := daemon.status())["generation"] > before["generation"] and s,
                "the whole new file to be published",
            )
            assert published["generation"] == before["generation"] + 1
            assert published["instruments"] == 200
            wait_for(lambda: (2, 200, 5000 << 8 | 1) in sampler.seen, "the reader to follow")
        finally:
            seen = sampler.stop()
    finally:
        assert daemon.stop() == 0
    assert seen == {(1, 200, 1000 << 8 | 1), (2, 200, 5000 << 8 | 1)}
    assert "reload failed" in daemon.output()


# -- 4. a reader that never closes -------------------------------------------------------------


def _maps_of_this_process() -> str:
    return Path("/proc/self/maps").read_text()


def test_a_reader_that_never_closes_keeps_its_generation_and_pins_no_file(
    daemon: Daemon, kite: Path
) -> None:
    directory = daemon.directory
    first = directory / "resolverd.universe.1.snap"
    pinned = Resolver.open(first)  # a plain file reader: it never follows
    idle = Resolver.open("universe", directory=directory)  # follows, but is not used meanwhile
    try:
        swaps = 8
        for generation in range(2, 2 + swaps):
            write_kite(kite, aarti(100 + generation), NIFTY_CALL)
            status = wait_for(
                lambda g=generation: (s := daemon.status())["generation"] == g and s,
                f"generation {generation}",
            )
            # Nothing is published until the next write, only unlinked: every file listed now
            # is one the daemon counts as linked (current, or in its grace period).
            assert snapshots(directory) <= set(status["linked_generations"])
        last = 1 + swaps
        wait_for(
            lambda: snapshots(directory) == {f"resolverd.universe.{last}.snap"},
            "the replaced generations to be unlinked",
        )
        assert daemon.status()["linked_generations"] == [f"resolverd.universe.{last}.snap"]
        assert f"{os.path.realpath(first)} (deleted)" in _maps_of_this_process()

        assert pinned.generation == 1
        assert pinned.token("NSE:AARTIIND", "kite") == 1793
        assert pinned.token("NFO:NIFTY24APR22500CE", "kite") == 17437186
        assert sorted(pinned) == ["NFO:NIFTY24APR22500CE", "NSE:AARTIIND"]

        assert idle.token("NSE:AARTIIND", "kite") == (100 + last) << 8 | 1
        assert (idle.generation, idle.swaps) == (last, 1)  # straight to the newest
    finally:
        pinned.close()
        idle.close()


# -- 5. a reader killed mid-lookup -------------------------------------------------------------

READER = """
import sys, time
from resolverd import Resolver

reader = Resolver.open("universe", directory=sys.argv[1])
print("resolving", flush=True)
last = None
while True:
    seen = reader.token("NSE:AARTIIND", "kite")
    if seen != last:
        print(seen, flush=True)
        last = seen
    if sys.argv[2] == "gently":
        time.sleep(0.001)
"""


class ReaderProcess:
    """A subprocess that resolves AARTIIND in a loop and prints each token it sees."""

    def __init__(self, directory: Path, pace: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER, str(directory), pace],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line.strip())

    def expect(self, wanted: str, timeout: float = 30.0) -> None:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"the reader never printed {wanted!r}: {self.stderr()}")
            if line == wanted:
                return

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def test_a_reader_killed_mid_lookup_disturbs_neither_the_daemon_nor_the_other_readers(
    daemon: Daemon, kite: Path
) -> None:
    victim = ReaderProcess(daemon.directory, "flat out")
    survivor = ReaderProcess(daemon.directory, "gently")
    try:
        with Resolver.open("universe", directory=daemon.directory) as reader:
            for process in (victim, survivor):
                process.expect("resolving")
                process.expect("1793")
            victim.process.send_signal(signal.SIGKILL)
            assert victim.process.wait(timeout=30) == -signal.SIGKILL
            write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
            survivor.expect("2049")
            assert reader.token("NSE:AARTIIND", "kite") == 2049
            status = daemon.status()
            assert status["generation"] == 2
            assert status["reloads"]["failed"] == 0
            assert survivor.process.poll() is None
    finally:
        victim.end()
        survivor.end()
