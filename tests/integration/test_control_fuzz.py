"""Garbage on the running daemon's control socket: every kind of client and payload, and after
each batch the daemon still answers ``status`` with the generation it had, and lives.

test_daemon.py checks one garbage payload of each broad kind; these go further: random bytes,
every prefix of a valid request, msgpack of every shape (hypothesis), empty, many and huge
frames, each ZeroMQ socket type a client could use, raw connections that speak no ZMTP or bad
ZMTP, clients that leave before their reply, and a burst from many clients at once.
"""

from __future__ import annotations

import os
import random
import re
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolverd.daemon import control
from resolverd.daemon.control import request

from .daemons import AARTI, NIFTY_CALL, Daemon, wait_for, write_kite

pytestmark = pytest.mark.integration
zmq = pytest.importorskip("zmq", reason="pyzmq is not installed (the daemon extra)")

# Generous: a reply needs one event-loop turn, but the machine may be loaded.
REPLY_MS = 10_000
VALID = msgspec.msgpack.encode({"command": "status", "registry": "universe", "wait": True})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("control-fuzz")
    kite = root / "instruments.csv"
    write_kite(kite, AARTI, NIFTY_CALL)
    (root / "shm").mkdir()
    running = Daemon(
        root / "shm", [f"kite={kite}"], RESOLVERD__REGISTRIES__UNIVERSE__WATCH="false"
    ).start()
    yield running
    assert running.stop() == 0
    # Nothing a client sent made the daemon log an error (an internal one included).
    assert '"level":"error"' not in running.output()


@pytest.fixture(autouse=True)
def still_serving(daemon: Daemon) -> Iterator[None]:
    """After each batch: the process lives and answers status with the generation it had."""
    generation = daemon.status()["generation"]
    yield
    assert daemon.process is not None
    assert daemon.process.poll() is None, f"the daemon died:\n{daemon.output()}"
    status = request(daemon.control, "status", timeout=REPLY_MS / 1000)
    assert status["registries"]["universe"]["generation"] == generation


def client(kind: int, daemon: Daemon) -> Any:
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.control)
    return sock


def reply_of(sock: Any) -> control.Reply:
    """The reply the socket receives next: the last frame of the message."""
    assert sock.poll(REPLY_MS), "no reply within the timeout"
    frames = sock.recv_multipart()
    return msgspec.msgpack.decode(frames[-1], type=control.Reply)


def assert_malformed(reply: control.Reply) -> None:
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.startswith("malformed request: "), reply.error


def counted(daemon: Daemon, command: str) -> int:
    """resolverd_control_requests_total for `command` ("error": requests refused)."""
    text = request(daemon.control, "stats")["metrics"]
    pattern = rf'^resolverd_control_requests_total\{{command="{command}"\}} (\d+)$'
    found = re.search(pattern, text, re.M)
    return int(found.group(1)) if found else 0


def error_count(daemon: Daemon) -> int:
    return counted(daemon, "error")


# -- payloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_bytes_from_a_req_client_get_a_malformed_request_reply(
    daemon: Daemon, seed: int
) -> None:
    generator = random.Random(seed)
    req = client(zmq.REQ, daemon)
    try:
        for _ in range(50):
            size = generator.choice([0, 1, 2, 7, 64, 1000, generator.randrange(1, 70_000)])
            req.send(generator.randbytes(size))
            assert_malformed(reply_of(req))
    finally:
        req.close()


def test_every_prefix_of_a_valid_request_is_malformed(daemon: Daemon) -> None:
    req = client(zmq.REQ, daemon)
    try:
        for end in range(len(VALID)):
            req.send(VALID[:end])
            assert_malformed(reply_of(req))
        req.send(VALID)  # the whole of it is a request
        assert reply_of(req).ok
    finally:
        req.close()


# Any msgpack value, and maps that look like requests with wrong parts.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(0, 9), inner, max_size=4)
    ),
    max_leaves=20,
)
requestish = st.fixed_dictionaries(
    # No "reload": a fuzz that builds would be slow, and reload has tests of its own.
    {"command": st.sampled_from(["status", "stats", "purge", "", "STATUS"]) | values},
    optional={
        "registry": st.sampled_from(["universe", "nope", ""]) | values,
        "wait": values,
        "unknown": values,
    },
)


@pytest.fixture(scope="module")
def clients(daemon: Daemon) -> Iterator[dict[str, Any]]:
    sockets = {
        "req": client(zmq.REQ, daemon),
        "dealer": client(zmq.DEALER, daemon),
        "dealer without delimiter": client(zmq.DEALER, daemon),
    }
    yield sockets
    for sock in sockets.values():
        sock.close()


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    # The daemon's health is checked once around all the examples, not after each.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    value=values | requestish,
    kind=st.sampled_from(["req", "dealer", "dealer without delimiter"]),
)
def test_msgpack_of_any_shape_gets_a_reply_that_follows_the_protocol(
    daemon: Daemon, clients: dict[str, Any], value: Any, kind: str
) -> None:
    payload = msgspec.msgpack.encode(value)
    sock = clients[kind]
    sock.send_multipart([payload] if kind != "dealer" else [b"", payload])
    reply = reply_of(sock)
    try:
        decoded = control.decode_request(payload)
    except ValueError:
        assert_malformed(reply)
        return
    if decoded.registry not in (None, "universe"):
        assert not reply.ok
        assert reply.error is not None
        assert reply.error.startswith(f"unknown registry {decoded.registry!r}"), reply.error
        return
    assert reply.ok, reply.error
    if decoded.command == "status":
        assert reply.result["registries"]["universe"]["generation"] == 1
    else:
        assert "resolverd_control_requests_total" in reply.result["metrics"]


def test_deeply_nested_and_lying_msgpack_is_malformed(daemon: Daemon) -> None:
    deep = b"\x91" * 1_000_000 + b"\xc0"  # a million nested one-element arrays
    payloads = [
        deep,
        b"\x81\xa7command" + deep,
        b"\x82\xa7command\xa6status\xa8registry" + b"\x81\xa1a" * 500_000 + b"\xc0",
        b"\x82\xa7command\xa6status\xa3zzz" + deep,
        b"\xdf\xff\xff\xff\xff",  # a map that claims 4 billion entries
        b"\xdd\xff\xff\xff\xff",  # an array that claims as many
        b"\xdb\xff\xff\xff\xff" + b"x" * 10,  # a string that claims 4 GB
        b"\xc1",  # the one byte msgpack never uses
        b"\x81\xa7command\xa3\xff\xfe\xfd",  # a string that is not UTF-8
        b"\x81\xa3\xe9t\xe9\xa6status",  # a key that is not UTF-8
        b"\x81\xa7command\xd6\xff\x00\x00\x00\x00",  # a timestamp extension
        b"\x81\xa7command\xa6status" + b"\x00" * 1000,  # trailing bytes
    ]
    req = client(zmq.REQ, daemon)
    try:
        for payload in payloads:
            req.send(payload)
            assert_malformed(reply_of(req))
    finally:
        req.close()


# -- frames --------------------------------------------------------------------------------------


def test_empty_many_and_huge_frames_get_replies(daemon: Daemon) -> None:
    dealer = client(zmq.DEALER, daemon)
    req = client(zmq.REQ, daemon)
    try:
        for frames in (
            [b""],
            [b"", b""],
            [b""] * 10_000,
            [b"x"] * 10_000,
            [b"", os.urandom(4_000_000)],
            [b"", b"\xa6status" * 500_000],  # 3.5 MB of msgpack strings
            [b"", msgspec.msgpack.encode({"command": "s" * 4_000_000})],
            [b"", msgspec.msgpack.encode({"command": "status", "registry": "r" * 4_000_000})],
        ):
            dealer.send_multipart(frames)
            reply = reply_of(dealer)
            assert not reply.ok
            assert reply.error is not None
            assert len(reply.error) < 1_000  # a huge bad value is not echoed back in full
        # A REQ client's multipart request: the last frame is the payload.
        req.send_multipart([b"first", b"", os.urandom(3_000_000)])
        assert_malformed(reply_of(req))
        req.send_multipart([b"ignored", VALID])
        assert reply_of(req).ok
    finally:
        dealer.close()
        req.close()


def test_the_reply_goes_back_through_the_envelope_it_came_with(daemon: Daemon) -> None:
    dealer = client(zmq.DEALER, daemon)
    try:
        for envelope in ([], [b""], [b"hop", b""], [b"a", b"b", b"c", b""]):
            dealer.send_multipart([*envelope, VALID])
            assert dealer.poll(REPLY_MS)
            *back, payload = dealer.recv_multipart()
            assert back == envelope
            assert msgspec.msgpack.decode(payload, type=control.Reply).ok
    finally:
        dealer.close()


# -- socket types and raw connections --------------------------------------------------------


def test_a_router_client_is_answered(daemon: Daemon) -> None:
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.CONNECT_ROUTING_ID, b"daemon")
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send before the handshake raises, not drops
    router.connect(daemon.control)
    try:

        def sent() -> bool:
            try:
                router.send_multipart([b"daemon", b"", b"\xff garbage"])
            except zmq.ZMQError:  # EHOSTUNREACH until the connection is up
                return False
            return True

        wait_for(sent, "the router to connect")
        assert router.poll(REPLY_MS)
        peer, delimiter, payload = router.recv_multipart()
        assert (peer, delimiter) == (b"daemon", b"")
        assert_malformed(msgspec.msgpack.decode(payload, type=control.Reply))
    finally:
        router.close()


@pytest.mark.parametrize("kind", ["PUSH", "PUB", "PAIR", "SUB", "REP"])
def test_sockets_of_a_type_router_refuses_get_nothing_and_change_nothing(
    daemon: Daemon, kind: str
) -> None:
    sock = client(getattr(zmq, kind), daemon)
    try:
        if kind in ("PUSH", "PUB", "PAIR"):
            for _ in range(100):
                try:
                    sock.send(VALID, zmq.NOBLOCK)
                except zmq.Again:  # no peer takes it: the handshake was refused
                    break
        assert request(daemon.control, "status", timeout=REPLY_MS / 1000)
        if kind in ("PAIR", "SUB", "REP"):
            assert not sock.poll(300)
    finally:
        sock.close()


def zmtp_greeting() -> bytes:
    """ZMTP 3.0, NULL mechanism, as a client (rfc.zeromq.org/spec/23)."""
    return b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + bytes(31)


def zmtp_ready(socket_type: bytes) -> bytes:
    body = b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return b"\x04" + bytes([len(body)]) + body


def raw_connection(daemon: Daemon, endpoint: str = "resolverd.control") -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(REPLY_MS / 1000)
    conn.connect(str(daemon.directory / endpoint))
    return conn


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(random.Random(7).randbytes(5000), id="random-bytes"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(b"\xff" + bytes(8) + b"\x7f\x01\x00" + bytes(100), id="zmtp-1.0"),
        pytest.param(zmtp_greeting()[:12] + b"CURVE" + bytes(47), id="curve-mechanism"),
        pytest.param(zmtp_greeting() + zmtp_ready(b"PUSH") + b"\x00\x03abc", id="push-type"),
        pytest.param(zmtp_greeting() + zmtp_ready(b"BOGUS"), id="unknown-type"),
        pytest.param(zmtp_greeting() + b"\x04\x05\x05READY", id="ready-cut-short"),
        pytest.param(zmtp_greeting() + zmtp_ready(b"DEALER") + b"\xf0\x01x", id="reserved-flags"),
        pytest.param(
            zmtp_greeting() + zmtp_ready(b"DEALER") + b"\x02" + struct.pack(">Q", 2**63),
            id="frame-of-2^63-bytes",
        ),
        pytest.param(
            zmtp_greeting() + zmtp_ready(b"DEALER") + b"\x02" + struct.pack(">Q", 2**40),
            id="frame-of-a-terabyte",
        ),
    ],
)
def test_a_raw_connection_speaking_bad_zmtp_holds_up_no_one(daemon: Daemon, data: bytes) -> None:
    with raw_connection(daemon) as conn:
        assert conn.recv(1) == b"\xff"  # the daemon's greeting: the connection is accepted
        conn.sendall(data)
        for _ in range(5):
            assert request(daemon.control, "status", timeout=REPLY_MS / 1000)


def _address_space_kib(daemon: Daemon) -> int:
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    return int(re.search(r"^VmSize:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize("bits", [33, 36])
@pytest.mark.parametrize(
    ("endpoint", "peer"), [("resolverd.control", b"DEALER"), ("resolverd.pub", b"SUB")]
)
def test_a_frame_that_claims_gigabytes_is_refused_before_any_memory_is_set_aside(
    daemon: Daemon, endpoint: str, peer: bytes, bits: int
) -> None:
    """A frame's length comes first on the wire: without a cap libzmq sets aside that much
    address space for it at once (8 and 64 GiB here) and waits for the bytes."""
    before = _address_space_kib(daemon)
    with raw_connection(daemon, endpoint) as conn:
        assert conn.recv(1) == b"\xff"
        conn.sendall(zmtp_greeting() + zmtp_ready(peer) + b"\x02" + struct.pack(">Q", 2**bits))
        assert request(daemon.control, "status", timeout=REPLY_MS / 1000)
        grown = _address_space_kib(daemon) - before
    assert grown < 256 * 1024, f"the daemon set aside {grown / 2**20:.1f} GiB for one frame"


def test_an_idle_or_half_sent_connection_holds_up_no_one(daemon: Daemon) -> None:
    assert daemon.process is not None
    rss = _rss(daemon.process.pid)
    with raw_connection(daemon) as idle, raw_connection(daemon) as half:
        # A frame that claims 8 GB and then stalls: the daemon must not reserve it in memory.
        half.sendall(zmtp_greeting() + zmtp_ready(b"DEALER"))
        half.sendall(b"\x02" + struct.pack(">Q", 2**33) + os.urandom(1000))
        idle.sendall(zmtp_greeting()[:5])
        for _ in range(20):
            assert request(daemon.control, "status", timeout=REPLY_MS / 1000)
        assert _rss(daemon.process.pid) - rss < 512 * 2**20


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M)
    assert found is not None
    return int(found.group(1)) * 1024


# -- clients that leave, and many at once -----------------------------------------------------


def test_clients_that_leave_before_their_reply_do_not_disturb_the_next(daemon: Daemon) -> None:
    before = daemon.status()["reloads"]
    reload = msgspec.msgpack.encode({"command": "reload", "wait": True})
    for payload in [VALID, b"\xff", msgspec.msgpack.encode({"command": "stats"})] * 20 + [reload]:
        leaving = client(zmq.REQ, daemon)
        # Lingering, the request is delivered after the close: the client is gone by the reply.
        leaving.setsockopt(zmq.LINGER, 10_000)
        leaving.send(payload)
        leaving.close()
    # Its reload still runs to the end (the sources are unchanged), and nobody gets its reply.
    wait_for(
        lambda: daemon.status()["reloads"]["unchanged"] == before["unchanged"] + 1,
        "the reload of the client that left",
    )
    req = client(zmq.REQ, daemon)
    try:
        for _ in range(10):
            req.send(VALID)
            reply = reply_of(req)
            assert reply.ok
            assert reply.result["registries"]["universe"]["generation"] == 1
    finally:
        req.close()


def test_a_burst_from_many_clients_is_answered_one_reply_each(daemon: Daemon) -> None:
    errors = error_count(daemon)
    generator = random.Random(11)
    dealers = [client(zmq.DEALER, daemon) for _ in range(8)]
    sent = 250
    try:
        for number, dealer in enumerate(dealers):
            for i in range(sent):
                garbage = generator.randbytes(generator.randrange(0, 300))
                # A tag frame in the envelope tells each reply's request apart.
                dealer.send_multipart([f"{number}:{i}".encode(), b"", garbage])
        # Answered while the burst is still being worked through.
        assert request(daemon.control, "status", timeout=REPLY_MS / 1000)
        for number, dealer in enumerate(dealers):
            tags = []
            for _ in range(sent):
                assert dealer.poll(REPLY_MS)
                tag, _, payload = dealer.recv_multipart()
                assert_malformed(msgspec.msgpack.decode(payload, type=control.Reply))
                tags.append(tag)
            assert sorted(tags) == sorted(f"{number}:{i}".encode() for i in range(sent))
            assert not dealer.poll(100)  # one reply per request, no more
    finally:
        for dealer in dealers:
            dealer.close()
    assert error_count(daemon) == errors + len(dealers) * sent


def test_a_refused_request_counts_once_as_an_error_not_under_its_command(
    daemon: Daemon,
) -> None:
    reloads, errors = counted(daemon, "reload"), counted(daemon, "error")
    req = client(zmq.REQ, daemon)
    try:
        req.send(msgspec.msgpack.encode(control.Request("reload", "no-such-registry", True)))
        reply = msgspec.msgpack.decode(req.recv(), type=control.Reply)
    finally:
        req.close()
    assert not reply.ok and reply.error is not None
    assert reply.error.startswith("unknown registry 'no-such-registry'")
    assert (counted(daemon, "reload"), counted(daemon, "error")) == (reloads, errors + 1)
