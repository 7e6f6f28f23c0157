"""Publishing helpers: a publisher brought to where its next swap renews the control file (see
shm_layout), and a daemon's build job."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from resolverd.daemon.build import Job
from resolverd.daemon.publish import Publisher
from resolverd.shm_layout import CONTROL_SEQUENCE_LIMIT, read_control

KITE_ROWS = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange\n"
    "1793,7,AARTIIND,AARTI INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE\n"
)


def first_kite_job(directory: Path) -> Job:
    """A daemon's first build (generation 1) of a one-row Kite master it writes in `directory`,
    into `directory`/shm."""
    kite = directory / "instruments.csv"
    kite.write_text(KITE_ROWS)
    shm = directory / "shm"
    shm.mkdir()
    return Job(
        registry="universe",
        sources=(f"kite={kite}",),
        mappings=(),
        trade_date=dt.date(2024, 4, 3),
        max_drop=0.2,
        generation=1,
        out=str(shm / ".resolverd.universe.1.tmp"),
        previous=None,
        previous_checksum=None,
    )


def publish_until_a_renewal_is_next(
    publisher: Publisher, snapshot: Callable[[int], bytearray]
) -> None:
    """Publish `snapshot(generation)` for the next generations until one more swap would take
    the control file's sequence past CONTROL_SEQUENCE_LIMIT."""
    while read_control(publisher.control_path.read_bytes()).sequence + 2 <= (
        CONTROL_SEQUENCE_LIMIT
    ):
        publisher.publish(snapshot(publisher.next_generation))
