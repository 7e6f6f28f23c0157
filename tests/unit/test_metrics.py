"""Metrics.render read back by a small exposition-format parser, and serve_metrics over real
loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from resolverd.daemon.metrics import MAX_HEAD, Metrics, serve_metrics
from resolverd.errors import ConfigError

T = TypeVar("T")

FAMILIES = {
    "resolverd_start_time_seconds": ("gauge", ()),
    "resolverd_generation": ("gauge", ("registry",)),
    "resolverd_last_reload_timestamp_seconds": ("gauge", ("registry",)),
    "resolverd_last_reload_duration_seconds": ("gauge", ("registry",)),
    "resolverd_last_reload_success": ("gauge", ("registry",)),
    "resolverd_reloads_total": ("counter", ("registry", "result")),
    "resolverd_reload_failures_total": ("counter", ("registry", "reason")),
    "resolverd_instruments": ("gauge", ("registry", "feed")),
    "resolverd_segment_bytes": ("gauge", ("registry",)),
    "resolverd_segments": ("gauge", ("registry",)),
    "resolverd_subscribers": ("gauge", ()),
    "resolverd_control_requests_total": ("counter", ("command",)),
}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    help: str | None = None
    type: str | None = None
    samples: dict[Labels, str] = field(default_factory=dict)


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def parse_labels(text: str) -> Labels:
    labels: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match is not None, f"bad label set at {text[pos:]!r}"
        value = re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], match.group(2))
        labels.append((match.group(1), value))
        pos = match.end()
        if pos < len(text):
            assert text[pos] == ",", f"no comma at {text[pos:]!r}"
            pos += 1
    return tuple(labels)


def parse(body: bytes) -> dict[str, Family]:
    """The families of an exposition text, checking the rules a scraper relies on."""
    text = body.decode("utf-8")
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"{name} introduced twice"
            families[name] = Family(help=help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert families[name].type is None and not families[name].samples
            families[name].type = kind
        else:
            match = _SAMPLE.fullmatch(line)
            assert match is not None, f"not a sample line: {line!r}"
            name = match.group(1)
            family = families[name]
            assert family.type is not None, f"{name} sampled before its TYPE"
            assert list(families)[-1] == name, f"{name} samples not together"
            labels = parse_labels(match.group(2) or "")
            assert labels not in family.samples
            family.samples[labels] = match.group(3)
    return families


def populated() -> Metrics:
    metrics = Metrics()
    metrics.generation["main"] = 7
    metrics.last_reload_time["main"] = 1_712_100_000.25
    metrics.last_reload_duration["main"] = 0.5
    metrics.last_reload_success["main"] = True
    metrics.reloads[("main", "ok")] = 6
    metrics.reload_failures[("main", "gate")] = 1
    metrics.instruments[("main", "kite")] = 90_000
    metrics.segment_bytes["main"] = 4096
    metrics.segments["main"] = 2
    metrics.subscribers = 3
    metrics.control_requests["reload"] = 5
    return metrics


def test_every_family_has_help_and_type_and_the_named_labels() -> None:
    families = parse(populated().render())

    assert set(families) == set(FAMILIES)
    for name, family in families.items():
        kind, label_names = FAMILIES[name]
        assert family.help, name
        assert family.type == kind
        assert family.samples, name
        for labels in family.samples:
            assert tuple(label for label, _ in labels) == label_names


def test_values_render_as_the_daemon_set_them() -> None:
    metrics = populated()
    metrics.started_time = 1_712_000_000.5

    families = parse(metrics.render())

    assert families["resolverd_generation"].samples == {(("registry", "main"),): "7"}
    assert families["resolverd_last_reload_success"].samples == {(("registry", "main"),): "1"}
    assert families["resolverd_last_reload_duration_seconds"].samples == {
        (("registry", "main"),): "0.5"
    }
    assert families["resolverd_instruments"].samples == {
        (("registry", "main"), ("feed", "kite")): "90000"
    }
    assert families["resolverd_subscribers"].samples == {(): "3"}
    assert families["resolverd_start_time_seconds"].samples == {(): "1712000000.5"}


def test_a_failed_reload_renders_success_as_zero() -> None:
    metrics = Metrics()
    metrics.last_reload_success["main"] = False

    families = parse(metrics.render())

    assert families["resolverd_last_reload_success"].samples == {(("registry", "main"),): "0"}


def test_a_counter_sample_follows_increments() -> None:
    metrics = Metrics()
    metrics.reloads[("main", "ok")] = 1
    before = parse(metrics.render())["resolverd_reloads_total"].samples

    metrics.reloads[("main", "ok")] += 1
    after = parse(metrics.render())["resolverd_reloads_total"].samples

    key = (("registry", "main"), ("result", "ok"))
    assert (before[key], after[key]) == ("1", "2")


def test_empty_metrics_render_only_help_and_type_for_labelled_families() -> None:
    families = parse(Metrics().render())

    assert set(families) == set(FAMILIES)
    for name, family in families.items():
        if FAMILIES[name][1]:
            assert family.samples == {}, name
    assert families["resolverd_subscribers"].samples == {(): "0"}


@pytest.mark.parametrize(
    "registry", ['quote"d', "back\\slash", "new\nline", 'all\\"\n\\n', "ünïcode ₹"]
)
def test_label_values_are_escaped_and_read_back_unchanged(registry: str) -> None:
    metrics = Metrics()
    metrics.generation[registry] = 1

    families = parse(metrics.render())

    assert families["resolverd_generation"].samples == {(("registry", registry),): "1"}


def test_label_escaping_uses_the_format_spelling() -> None:
    metrics = Metrics()
    metrics.generation['a\\b"c\nd'] = 1

    assert b'resolverd_generation{registry="a\\\\b\\"c\\nd"} 1\n' in metrics.render()


def test_an_unpaired_surrogate_in_a_name_does_not_break_the_scrape() -> None:
    metrics = Metrics()
    metrics.generation["bad\udcff"] = 1

    families = parse(metrics.render())

    assert families["resolverd_generation"].samples == {(("registry", "bad?"),): "1"}


def test_non_finite_floats_use_the_go_spelling() -> None:
    metrics = Metrics()
    metrics.last_reload_duration.update({"a": float("inf"), "b": float("-inf"), "c": float("nan")})

    samples = parse(metrics.render())["resolverd_last_reload_duration_seconds"].samples

    assert sorted(samples.values()) == ["+Inf", "-Inf", "NaN"]


# The HTTP server, over real sockets on the loopback.


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_response(raw: bytes) -> Response:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version.startswith("HTTP/1.")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return Response(int(status), headers, body)


def with_server(
    metrics: Metrics, scenario: Callable[[int], Awaitable[T]], *, head_timeout: float = 5.0
) -> T:
    async def main() -> T:
        server = await serve_metrics(metrics, "127.0.0.1", 0, head_timeout=head_timeout)
        try:
            port: int = server.sockets[0].getsockname()[1]
            # A guard against a hung test, not a claim about speed.
            async with asyncio.timeout(20):
                return await scenario(port)
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


async def exchange(port: int, request: bytes, *, half_close: bool = False) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        if half_close:
            writer.write_eof()
        await writer.drain()
        return parse_response(await reader.read())
    finally:
        writer.close()
        await writer.wait_closed()


def ask(request: bytes, *, half_close: bool = False, metrics: Metrics | None = None) -> Response:
    return with_server(
        metrics or Metrics(), lambda port: exchange(port, request, half_close=half_close)
    )


def test_get_metrics_answers_200_with_the_exposition() -> None:
    metrics = populated()

    response = ask(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", metrics=metrics)

    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["connection"] == "close"
    assert b"resolverd_generation" in response.body
    assert response.body == metrics.render()


def test_http_1_0_and_a_query_string_are_served() -> None:
    response = ask(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n")

    assert response.status == 200
    assert b"# TYPE resolverd_generation gauge" in response.body


@pytest.mark.parametrize("target", [b"/", b"/metricsx", b"/favicon.ico"])
def test_other_paths_are_404(target: bytes) -> None:
    assert ask(b"GET " + target + b" HTTP/1.1\r\n\r\n").status == 404


@pytest.mark.parametrize("method", [b"POST", b"HEAD", b"DELETE", b"get"])
def test_methods_other_than_get_are_405_with_allow(method: bytes) -> None:
    response = ask(method + b" /metrics HTTP/1.1\r\n\r\n")

    assert response.status == 405
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"hello\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    ],
)
def test_a_malformed_request_is_400(request_bytes: bytes) -> None:
    assert ask(request_bytes).status == 400


def test_an_unknown_http_major_version_is_505() -> None:
    assert ask(b"GET /metrics HTTP/2.0\r\n\r\n").status == 505


def test_a_client_that_closes_mid_head_gets_400() -> None:
    response = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n", half_close=True)

    assert response.status == 400


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: aaaaaaaaaa\r\n" * (MAX_HEAD // 10) + b"\r\n",
        b"GET /" + b"m" * (2 * MAX_HEAD),
    ],
    ids=["long-line", "many-lines", "no-line-break"],
)
def test_an_oversized_head_is_refused(request_bytes: bytes) -> None:
    assert ask(request_bytes).status in (400, 431)


def test_a_silent_client_is_answered_408_after_the_head_timeout() -> None:
    async def scenario(port: int) -> Response:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\n")
            await writer.drain()
            return parse_response(await reader.read())
        finally:
            writer.close()
            await writer.wait_closed()

    assert with_server(Metrics(), scenario, head_timeout=0.2).status == 408


def test_a_client_that_sends_nothing_does_not_break_the_next_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="resolverd.metrics")

    async def scenario(port: int) -> Response:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        # A reset rather than a clean close, the rudest way to leave.
        rude = socket.create_connection(("127.0.0.1", port))
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()
        return await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")

    assert with_server(Metrics(), scenario).status == 200
    metrics_records = [r for r in caplog.records if r.name == "resolverd.metrics"]
    assert all(r.levelno == logging.DEBUG for r in metrics_records)


def test_clients_past_the_limit_are_reset_and_a_slot_comes_back_when_one_leaves() -> None:
    """Silent connections, opened faster than the head timeout closes them, must not pile up:
    past the limit a connection is reset at once."""

    async def refused(port: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
            await writer.drain()
            return await reader.read() == b""
        except ConnectionResetError:
            return True
        finally:
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()

    async def scenario(port: int) -> tuple[list[bool], Response]:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        await asyncio.sleep(0.1)  # let the server take all four
        outcomes = [await refused(port) for _ in range(3)]
        _, leaving = silent.pop()
        leaving.close()
        await leaving.wait_closed()
        await asyncio.sleep(0.1)
        served = await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        for _, writer in silent:
            writer.close()
            await writer.wait_closed()
        return outcomes, served

    async def main() -> tuple[list[bool], Response]:
        server = await serve_metrics(Metrics(), "127.0.0.1", 0, max_clients=4)
        try:
            async with asyncio.timeout(20):  # a guard against a hung test
                return await scenario(server.sockets[0].getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()

    outcomes, served = asyncio.run(main())
    assert outcomes == [True, True, True]
    assert served.status == 200


def test_an_address_already_in_use_is_a_config_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]

        async def main() -> None:
            await serve_metrics(Metrics(), "127.0.0.1", port)

        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            asyncio.run(main())


def test_a_connection_cut_short_by_shutdown_is_not_reported_as_an_error() -> None:
    errors: list[dict[str, object]] = []

    async def main() -> socket.socket:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        server = await serve_metrics(Metrics(), "127.0.0.1", 0)
        # A blocking socket outlives the loop, so the server's handler is still waiting for the
        # rest of the head when asyncio.run cancels it.
        client = socket.create_connection(server.sockets[0].getsockname()[:2])
        client.sendall(b"GET /metrics HTTP/1.1\r\n")
        await asyncio.sleep(0.1)
        server.close()
        return client

    asyncio.run(main()).close()

    assert errors == []


def test_the_daemon_raises_its_soft_open_file_limit_to_the_hard_one() -> None:
    """Under systemd a service starts with 1024 descriptors however high the hard limit."""
    program = (
        "import resource\n"
        "from resolverd.daemon.app import raise_open_file_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))\n"
        "print(raise_open_file_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    returned, soft, hard = (int(v) for v in result.stdout.split())
    assert returned == soft
    assert soft == hard or hard == resource.RLIM_INFINITY
