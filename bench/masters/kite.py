"""Kite ``instruments`` dump writer: instruments -> the CSV Kite Connect serves (the format is
documented in `resolverd.loaders.kite`).

Every instrument with a ``kite`` token is written, one row each, in the live API's form:
``YYYY-MM-DD`` expiries, empty for cash; ``last_price`` 0 (the loader does not read it). The
trading symbol is the key's symbol, so the key reads back unchanged. A path ending in ``.gz`` is
gzipped, for benchmarks of the gzip path.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable
from pathlib import Path

from resolverd.loaders.kite import COLUMNS
from resolverd.model import Instrument

__all__ = ["write_kite"]


def write_kite(instruments: Iterable[Instrument], path: Path) -> int:
    """Write the instruments that carry a Kite token to `path`; returns the rows written."""
    text = io.StringIO(newline="")
    out = csv.writer(text, lineterminator="\n")
    out.writerow(COLUMNS)
    written = 0
    for i in instruments:
        token = next((t.value for t in i.tokens if t.broker == "kite"), None)
        if token is None:
            continue
        row = {
            "instrument_token": token,
            "exchange_token": i.exchange_token,
            "tradingsymbol": i.key.partition(":")[2],
            "name": i.name,
            "last_price": 0,
            "expiry": "" if i.expiry is None else i.expiry.isoformat(),
            "strike": f"{i.strike:g}",
            "tick_size": f"{i.tick_size:g}",
            "lot_size": i.lot_size,
            "instrument_type": i.instrument_type,
            "segment": i.segment,
            "exchange": i.exchange,
        }
        out.writerow([row[c] for c in COLUMNS])
        written += 1
    data = text.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return written
