"""sd_notify(3) over a real datagram socket standing in for the service manager."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from resolverd.daemon.notify import Notifier, watchdog_loop

# Guards a receive against hanging the run if a message never comes; not a speed bound.
RECV_TIMEOUT = 5.0


@pytest.fixture
def manager_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in tmp_path and the NOTIFY_SOCKET value naming it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(RECV_TIMEOUT)
    yield sock, str(path)
    sock.close()


@pytest.fixture
def make_notifier() -> Iterator[Callable[[Mapping[str, str]], Notifier]]:
    """Builds notifiers from an environ dict and closes them after the test."""
    made: list[Notifier] = []

    def make(environ: Mapping[str, str]) -> Notifier:
        made.append(Notifier(environ))
        return made[-1]

    yield make
    for notifier in made:
        notifier.close()


@pytest.fixture
def notifier(
    manager_socket: tuple[socket.socket, str],
    make_notifier: Callable[[Mapping[str, str]], Notifier],
) -> Notifier:
    return make_notifier({"NOTIFY_SOCKET": manager_socket[1]})


def received(manager_socket: tuple[socket.socket, str]) -> str:
    return manager_socket[0].recv(4096).decode()


def test_ready_sends_ready_status_and_our_pid(
    notifier: Notifier, manager_socket: tuple[socket.socket, str]
) -> None:
    notifier.ready("serving 3 registries")
    expected = f"READY=1\nSTATUS=serving 3 registries\nMAINPID={os.getpid()}"
    assert received(manager_socket) == expected


def test_ready_without_status_sends_no_status_line(
    notifier: Notifier, manager_socket: tuple[socket.socket, str]
) -> None:
    notifier.ready()
    assert received(manager_socket) == f"READY=1\nMAINPID={os.getpid()}"


def test_reloading_carries_the_monotonic_clock_in_microseconds(
    notifier: Notifier, manager_socket: tuple[socket.socket, str]
) -> None:
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000
    first, second = received(manager_socket).split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after


def test_ready_after_reload_ends_the_reload_with_ready(
    notifier: Notifier, manager_socket: tuple[socket.socket, str]
) -> None:
    notifier.ready_after_reload("generation 7")
    assert received(manager_socket) == "READY=1\nSTATUS=generation 7"
    notifier.ready_after_reload()
    assert received(manager_socket) == "READY=1"


def test_status_newlines_cannot_smuggle_in_other_assignments(
    notifier: Notifier, manager_socket: tuple[socket.socket, str]
) -> None:
    notifier.status("reload failed:\nREADY=1\r\nbad row")
    assert received(manager_socket) == "STATUS=reload failed: READY=1 bad row"


def test_watchdog_and_stopping_send_one_datagram_each(
    notifier: Notifier, manager_socket: tuple[socket.socket, str]
) -> None:
    notifier.watchdog()
    notifier.stopping()
    assert received(manager_socket) == "WATCHDOG=1"
    assert received(manager_socket) == "STOPPING=1"


def test_abstract_namespace_address_is_reached(
    make_notifier: Callable[[Mapping[str, str]], Notifier],
) -> None:
    name = f"resolverd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(RECV_TIMEOUT)
        notifier = make_notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_messages_still_arrive_after_close(
    notifier: Notifier, manager_socket: tuple[socket.socket, str]
) -> None:
    notifier.close()
    notifier.close()
    notifier.stopping()
    assert received(manager_socket) == "STOPPING=1"


def test_without_notify_socket_every_method_is_a_silent_no_op(
    make_notifier: Callable[[Mapping[str, str]], Notifier],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("a disabled notifier opened a socket")

    monkeypatch.setattr(socket, "socket", no_socket)
    notifier = make_notifier({"WATCHDOG_USEC": "10000000"})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.reloading()
    notifier.ready_after_reload()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    assert notifier.watchdog_interval() is None
    assert caplog.records == []


def test_unreachable_socket_warns_once_and_never_raises(
    tmp_path: Path,
    make_notifier: Callable[[Mapping[str, str]], Notifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = make_notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert notifier.enabled
    with caplog.at_level(logging.WARNING, logger="resolverd.notify"):
        notifier.ready("up")
        notifier.watchdog()
        notifier.status("still up")
        notifier.stopping()
    warnings = [r for r in caplog.records if r.name == "resolverd.notify"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "nobody-listens.sock" in warnings[0].getMessage()


def test_address_that_is_not_af_unix_disables_notifying_with_a_warning(
    make_notifier: Callable[[Mapping[str, str]], Notifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="resolverd.notify"):
        notifier = make_notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
        notifier.ready()
    assert not notifier.enabled
    assert [r.name for r in caplog.records] == ["resolverd.notify"]


@pytest.mark.parametrize(
    ("extra", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.25),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
    ],
    ids=["half-of-usec", "our-pid", "another-pid", "unset", "zero", "garbage"],
)
def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process(
    manager_socket: tuple[socket.socket, str],
    make_notifier: Callable[[Mapping[str, str]], Notifier],
    extra: dict[str, str],
    interval: float | None,
) -> None:
    notifier = make_notifier({"NOTIFY_SOCKET": manager_socket[1], **extra})
    assert notifier.watchdog_interval() == interval


def test_watchdog_loop_pings_repeatedly_until_cancelled(
    notifier: Notifier, manager_socket: tuple[socket.socket, str]
) -> None:
    sock = manager_socket[0]
    sock.setblocking(False)

    async def run() -> list[bytes]:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(watchdog_loop(notifier, 0.01))
        pings = [await asyncio.wait_for(loop.sock_recv(sock, 4096), RECV_TIMEOUT) for _ in range(2)]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pings

    assert asyncio.run(run()) == [b"WATCHDOG=1", b"WATCHDOG=1"]


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_watchdog_loop_refuses_an_interval_that_would_spin(
    notifier: Notifier, interval: float
) -> None:
    with pytest.raises(ValueError, match="positive"):
        asyncio.run(watchdog_loop(notifier, interval))
