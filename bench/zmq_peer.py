"""The peer of the announcement figure: a bare pyzmq PUB socket in a process of its own.

It sends what the daemon sends (two frames, a topic and a payload of the size of a real Swap)
at the pace the daemon's swaps came, with ``time.time_ns()`` written into the payload's first 8
bytes just before each send, as the daemon stamps ``published_ns`` just before it encodes and
sends. No event loop, no build, no log line: what is left is ZeroMQ over ``ipc://`` and the
wake-ups of the two processes' threads on this machine, the floor under the daemon's figure.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection


def publish(
    conn: Connection, endpoint: str, topic: bytes, size: int, count: int, gap: float
) -> None:
    """Bind `endpoint`, say ``"bound"``, wait for ``"go"`` (the subscriber has joined), then
    send `count` messages `gap` seconds apart and say ``"done"``."""
    import zmq

    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(endpoint)
    try:
        conn.send("bound")
        conn.recv()
        padding = bytes(max(0, size - 8))
        for _ in range(count):
            time.sleep(gap)
            socket.send_multipart([topic, time.time_ns().to_bytes(8, "little") + padding])
        conn.send("done")
    finally:
        socket.close()


def stamp(payload: bytes) -> int:
    """The send time written into a payload by `publish`."""
    return int.from_bytes(payload[:8], "little")
