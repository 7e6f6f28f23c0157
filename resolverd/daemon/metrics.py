"""The daemon's metrics, in the Prometheus text exposition format 0.0.4, and the server for them.

`Metrics` holds plain counters and gauges that the daemon updates in place on its event loop;
`Metrics.render` turns them into the exposition text without any I/O, and `serve_metrics` answers
``GET /metrics`` with it over a deliberately tiny HTTP/1.x server (one request per connection).

The format, as Prometheus specifies it (``exposition_formats.md``, version 0.0.4):

- Lines end in ``\\n``; the text ends with one.
- Each family is introduced once by ``# HELP <name> <text>`` and ``# TYPE <name> <type>``, its
  samples follow together. In HELP text a backslash is written ``\\\\`` and a line feed ``\\n``.
- A sample is ``<name>{<label>="<value>",...} <number>``; in a label value a backslash is
  written ``\\\\``, a double quote ``\\"`` and a line feed ``\\n``. The text is UTF-8.
- Numbers are Go floats: ``+Inf``, ``-Inf`` and ``NaN`` are spelled that way.
- A counter's family is named with its ``_total`` suffix in this version of the format.

The HTTP side follows RFC 9112 only as far as a scraper needs it. Rules:

1. No client can hold a connection or memory without bound: at most `MAX_HEAD` bytes of request
   head are read, within `HEAD_TIMEOUT` seconds; the response must be taken within as long, and
   it always closes the connection. At most `MAX_CLIENTS` connections are served at once; one
   more is reset at once, so that local clients opening connections faster than the timeout
   closes them cannot take the file descriptors the daemon's reloads need.
2. No client can raise into the event loop: every failure of a connection ends that connection
   and is logged at debug on ``resolverd.metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from resolverd.errors import ConfigError

__all__ = [
    "CONTENT_TYPE",
    "HEAD_TIMEOUT",
    "MAX_CLIENTS",
    "MAX_HEAD",
    "Metrics",
    "serve_metrics",
]

log = logging.getLogger("resolverd.metrics")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD: Final = 8 * 1024
HEAD_TIMEOUT: Final = 5.0
MAX_CLIENTS: Final = 32  # a scraper uses one; a few people with curl add a handful


class Metrics:
    """The daemon's counters and gauges, as plain attributes the daemon updates directly.

    Keys are registry names (and feed, result, reason or command where a metric has more than
    one label); a key that is absent renders no sample. Counters only ever grow.
    """

    def __init__(self) -> None:
        self.generation: dict[str, int] = {}
        #: Unix seconds of the last reload attempt, whatever its result.
        self.last_reload_time: dict[str, float] = {}
        self.last_reload_duration: dict[str, float] = {}
        self.last_reload_success: dict[str, bool] = {}
        #: (registry, result) -> count; result is "ok", "failed" or "unchanged".
        self.reloads: dict[tuple[str, str], int] = {}
        #: (registry, reason) -> count; reason is "source", "gate", "layout", "unavailable",
        #: "config" or "internal".
        self.reload_failures: dict[tuple[str, str], int] = {}
        #: (registry, feed) -> tokens in the current generation.
        self.instruments: dict[tuple[str, str], int] = {}
        #: Bytes and number of the generation segments currently linked, old ones included.
        self.segment_bytes: dict[str, int] = {}
        self.segments: dict[str, int] = {}
        #: ZeroMQ PUB subscribers as counted from socket monitor events: approximate.
        self.subscribers = 0
        #: command -> count; "error" counts malformed requests.
        self.control_requests: dict[str, int] = {}
        self.started_time = time.time()

    def render(self) -> bytes:
        """The exposition text of every family, UTF-8, samples sorted by label values."""
        lines: list[str] = []
        for family in _FAMILIES:
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in sorted(family.samples(self)):
                lines.append(f"{family.name}{_labels(family.labels, labels)} {_number(value)}")
        lines.append("")
        # A registry name is operator text; an unpaired surrogate in it must not make the whole
        # scrape fail, so it becomes '?'.
        return "\n".join(lines).encode("utf-8", "replace")


_Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    samples: Callable[[Metrics], Iterable[_Sample]]


def _by_registry(values: Mapping[str, float]) -> Iterable[_Sample]:
    return (((registry,), value) for registry, value in values.items())


def _by_pair(values: Mapping[tuple[str, str], int]) -> Iterable[_Sample]:
    return ((key, value) for key, value in values.items())


def _by_command(values: Mapping[str, int]) -> Iterable[_Sample]:
    return (((command,), value) for command, value in values.items())


_REGISTRY = ("registry",)
_FAMILIES: Final = (
    _Family(
        "resolverd_start_time_seconds",
        "gauge",
        "Unix time the daemon started.",
        (),
        lambda m: [((), m.started_time)],
    ),
    _Family(
        "resolverd_generation",
        "gauge",
        "Generation currently published.",
        _REGISTRY,
        lambda m: _by_registry(m.generation),
    ),
    _Family(
        "resolverd_last_reload_timestamp_seconds",
        "gauge",
        "Unix time of the last reload attempt.",
        _REGISTRY,
        lambda m: _by_registry(m.last_reload_time),
    ),
    _Family(
        "resolverd_last_reload_duration_seconds",
        "gauge",
        "Duration of the last reload attempt.",
        _REGISTRY,
        lambda m: _by_registry(m.last_reload_duration),
    ),
    _Family(
        "resolverd_last_reload_success",
        "gauge",
        "1 if the last reload attempt published or found nothing to change, else 0.",
        _REGISTRY,
        lambda m: _by_registry(m.last_reload_success),
    ),
    _Family(
        "resolverd_reloads_total",
        "counter",
        "Reload attempts by result.",
        ("registry", "result"),
        lambda m: _by_pair(m.reloads),
    ),
    _Family(
        "resolverd_reload_failures_total",
        "counter",
        "Failed reloads by reason.",
        ("registry", "reason"),
        lambda m: _by_pair(m.reload_failures),
    ),
    _Family(
        "resolverd_instruments",
        "gauge",
        "Tokens per feed in the current generation.",
        ("registry", "feed"),
        lambda m: _by_pair(m.instruments),
    ),
    _Family(
        "resolverd_segment_bytes",
        "gauge",
        "Bytes of the generation segments linked, old generations included.",
        _REGISTRY,
        lambda m: _by_registry(m.segment_bytes),
    ),
    _Family(
        "resolverd_segments",
        "gauge",
        "Generation segments linked.",
        _REGISTRY,
        lambda m: _by_registry(m.segments),
    ),
    _Family(
        "resolverd_subscribers",
        "gauge",
        "ZeroMQ announcement subscribers (approximate).",
        (),
        lambda m: [((), m.subscribers)],
    ),
    _Family(
        "resolverd_control_requests_total",
        "counter",
        "Control requests by command; 'error' counts malformed ones.",
        ("command",),
        lambda m: _by_command(m.control_requests),
    ),
)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{name}="{_escape_label(value)}"' for name, value in zip(names, values, strict=True)
    )
    return "{" + pairs + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


# RFC 9112 section 3: request-line = method SP request-target SP HTTP-version, the method a
# token (RFC 9110 section 5.6.2). Only origin-form targets are expected from a scraper.
_REQUEST_LINE: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/([0-9])\.([0-9])\r?\n"
)
# field-line = field-name ":" OWS field-value OWS; the value is not needed, only the shape.
_FIELD_LINE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n]*\r?\n")

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}


class _HeadTooLarge(Exception):
    pass


def _response(
    status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8", extra: str = ""
) -> bytes:
    if not body and status != 200:
        body = f"{status} {_REASONS[status]}\n".encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _answer(metrics: Metrics, head: list[bytes]) -> bytes:
    """The whole response to a complete request head (its lines, blank line excluded)."""
    request = _REQUEST_LINE.fullmatch(head[0])
    if request is None or not all(_FIELD_LINE.fullmatch(line) for line in head[1:]):
        return _response(400)
    method, target, major = request.group(1), request.group(2), request.group(3)
    if major != b"1":
        return _response(505)
    if method != b"GET":
        return _response(405, extra="Allow: GET\r\n")
    if target.partition(b"?")[0] != b"/metrics":
        return _response(404)
    try:
        body = metrics.render()
    except Exception:
        # Not the client's fault: worth more than a debug line.
        log.exception("rendering metrics failed")
        return _response(500)
    return _response(200, body, CONTENT_TYPE)


async def _read_head(reader: asyncio.StreamReader) -> list[bytes] | None:
    """The head's lines, or None if the client closed without sending a byte.

    Raises `_HeadTooLarge` past `MAX_HEAD` bytes and `asyncio.IncompleteReadError` if the client
    closes mid-head.
    """
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError as exc:
            # readline's way of saying one line ran past the stream's limit (MAX_HEAD).
            raise _HeadTooLarge from exc
        size += len(line)
        if size > MAX_HEAD:
            raise _HeadTooLarge
        if not line.endswith(b"\n"):
            if size == 0:
                return None
            raise asyncio.IncompleteReadError(line, None)
        if line in (b"\r\n", b"\n"):
            if lines:
                return lines
            # RFC 9112 section 2.2: ignore an empty line received before the request-line.
            continue
        lines.append(line)


async def _serve_one(
    metrics: Metrics,
    head_timeout: float,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    peer = writer.get_extra_info("peername")
    try:
        try:
            async with asyncio.timeout(head_timeout):
                head = await _read_head(reader)
        except TimeoutError:
            log.debug("metrics client %s: no complete request head in %ss", peer, head_timeout)
            response = _response(408)
        except _HeadTooLarge:
            log.debug("metrics client %s: request head over %d bytes", peer, MAX_HEAD)
            response = _response(431)
        except asyncio.IncompleteReadError:
            log.debug("metrics client %s: closed in the middle of the request head", peer)
            response = _response(400)
        else:
            if head is None:
                log.debug("metrics client %s: closed without a request", peer)
                return
            response = _answer(metrics, head)
        writer.write(response)
        # Rule 1 again: a client that stops reading must not hold the connection forever.
        async with asyncio.timeout(head_timeout):
            await writer.drain()
    except Exception as exc:
        # Rule 2: a reset, a client that stops reading, anything else ends this connection only.
        log.debug("metrics client %s: %s: %s", peer, type(exc).__name__, exc)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except Exception as exc:
            log.debug("metrics client %s: closing: %s: %s", peer, type(exc).__name__, exc)


async def serve_metrics(
    metrics: Metrics,
    host: str,
    port: int,
    *,
    head_timeout: float = HEAD_TIMEOUT,
    max_clients: int = MAX_CLIENTS,
) -> asyncio.Server:
    """Start serving ``GET /metrics`` on host:port (port 0 picks a free one: read it from the
    returned server's ``sockets``). The server is already listening; close it to stop.

    Raises ConfigError when the address cannot be listened on (in use, not ours, unresolvable).
    """

    clients = 0

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal clients
        if clients >= max_clients:
            writer.transport.abort()  # at once: the descriptor is what is being kept free
            return
        clients += 1
        try:
            await _serve_one(metrics, head_timeout, reader, writer)
        except asyncio.CancelledError:
            # Shutdown cut a connection short. Python 3.11's start_server reports a cancelled
            # handler task as an unhandled error, so the task ends normally instead; it is the
            # top of its own task, so nobody waits for the cancellation to come through.
            log.debug("metrics client %s: cancelled", writer.get_extra_info("peername"))
        finally:
            clients -= 1

    try:
        # The stream's limit bounds a single line, so a head without line breaks cannot grow
        # the buffer past MAX_HEAD either.
        return await asyncio.start_server(serve_one, host, port, limit=MAX_HEAD)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"metrics: cannot listen on {host}:{port}: {reason}") from exc
