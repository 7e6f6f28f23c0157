"""The control protocol: requests to a running daemon and its replies, and the client side.

The daemon binds a ZeroMQ ROUTER socket (a REQ client talks to it as to a REP socket): a
ROUTER answers requests concurrently, so a ``reload`` that waits for its build does not hold
up ``status``, and it can reply to a malformed request instead of wedging, as a REP socket
would on a frame it cannot pair with a reply. Every payload is a msgpack map:

    request  {"command": "status" | "stats" | "reload", "registry": NAME or nil, "wait": bool}
    reply    {"ok": bool, "error": str or nil, "result": any}

A request that does not decode gets ``ok: false`` and an error that says why.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .._extras import require
from ..errors import UnavailableError

__all__ = ["Reply", "Request", "decode_request", "encode_reply", "request"]

Command = Literal["status", "stats", "reload"]


# A registry name as the client accepts one (client._NAME): at most 64 characters.
RegistryName = Annotated[str, msgspec.Meta(max_length=64)]
# msgspec quotes a bad value in its message: a reply quotes at most this much of it.
_MAX_ERROR = 300


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    command: Command
    registry: RegistryName | None = None
    wait: bool = True


class Reply(msgspec.Struct, frozen=True):
    ok: bool
    error: str | None = None
    result: Any = None


_request_decoder = msgspec.msgpack.Decoder(Request)
_reply_decoder = msgspec.msgpack.Decoder(Reply)
_encoder = msgspec.msgpack.Encoder()


def decode_request(payload: bytes) -> Request:
    """The request in `payload`; raises ValueError with a message fit for the reply."""
    try:
        return _request_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        detail = str(exc)
        if len(detail) > _MAX_ERROR:
            detail = f"{detail[:_MAX_ERROR]}... ({len(detail):,} characters)"
        raise ValueError(f"malformed request: {detail}") from None
    except UnicodeDecodeError as exc:  # msgspec's error for a msgpack string that is not UTF-8
        raise ValueError(f"malformed request: a string is not UTF-8 ({exc.reason})") from None


def encode_reply(reply: Reply) -> bytes:
    return _encoder.encode(reply)


def request(
    endpoint: str,
    command: Command,
    registry: str | None = None,
    *,
    wait: bool = True,
    timeout: float = 5.0,
) -> Any:
    """Send one request to the daemon at `endpoint` and return its result.

    Raises UnavailableError if no daemon answers within `timeout` seconds, and for an error
    reply (whose text it carries).
    """
    require("daemon", "zmq", needed_by="a request to the daemon")
    import zmq

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(endpoint)
        socket.send(_encoder.encode(Request(command, registry, wait)))
        if not socket.poll(int(timeout * 1000)):
            raise UnavailableError(
                f"no answer from the daemon at {endpoint} within {timeout:g} s;"
                " is `resolverd serve` running?"
            )
        reply = _reply_decoder.decode(socket.recv())
    finally:
        socket.close()
    if not reply.ok:
        raise UnavailableError(f"the daemon refused {command}: {reply.error}")
    return reply.result
