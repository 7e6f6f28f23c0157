"""A publisher brought to where its next swap renews the control file (see shm_layout)."""

from __future__ import annotations

from collections.abc import Callable

from resolverd.daemon.publish import Publisher
from resolverd.shm_layout import CONTROL_SEQUENCE_LIMIT, read_control


def publish_until_a_renewal_is_next(
    publisher: Publisher, snapshot: Callable[[int], bytearray]
) -> None:
    """Publish `snapshot(generation)` for the next generations until one more swap would take
    the control file's sequence past CONTROL_SEQUENCE_LIMIT."""
    while read_control(publisher.control_path.read_bytes()).sequence + 2 <= (
        CONTROL_SEQUENCE_LIMIT
    ):
        publisher.publish(snapshot(publisher.next_generation))
