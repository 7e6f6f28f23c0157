"""Upstox instrument master writer: instruments -> one JSON array in the layout of Upstox's
``complete.json.gz`` (documented in `resolverd.loaders.upstox`), all segments in one file, on one
line as Upstox serves it; gzipped when the path ends in ``.gz``, as Upstox distributes it.

Each instrument with an ``upstox`` token becomes one object. ``instrument_key`` is that token,
which must start with the segment of the instrument's exchange (``NSE_FO|`` for NFO); the
``segment``, ``exchange``, ``exchange_token``, ``isin``, ``lot_size``, ``tick_size`` (in paise),
``expiry`` (epoch milliseconds of 23:59:59 in India on the expiry day, as Upstox writes it) and
``strike_price`` (rupees) follow from the record. What it writes for the rest:

- ``trading_symbol``: the key's symbol, so that a round trip keeps the key. For NSE cash a Kite
  series tag (``-BE``, ``-SM``, ``-GB``: a dash and two letters or digits) moves to
  ``instrument_type``, as Upstox keeps it; NSE cash
  without one is series ``EQ``, and BSE cash is group ``A``. Derivatives keep Kite's symbol
  (``NIFTY24APR22500CE``), not Upstox's ``NIFTY 22500 CE 25 APR 24``.
- ``name`` and ``underlying_symbol`` of a derivative: the record's name (its underlying);
  ``weekly``: whether the symbol carries a weekly expiry code (``NIFTY24411...``) rather than a
  month's (``NIFTY24APR...``).
- ``freeze_quantity``, ``minimum_lot``, ``short_name``, ``security_type``: placeholders of the
  shape Upstox's sample objects have (``100000.0``, the lot size, the name, ``NORMAL``). The
  loader reads none of them; they are there so that a benchmark reads objects of a real size.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from resolverd.model import EPOCH, Instrument

__all__ = ["write_upstox"]

# Kite exchange -> (cash or derivative segment, index segment or "", Upstox exchange).
_SEGMENTS = {
    "NSE": ("NSE_EQ", "NSE_INDEX", "NSE"),
    "BSE": ("BSE_EQ", "BSE_INDEX", "BSE"),
    "NFO": ("NSE_FO", "", "NSE"),
    "BFO": ("BSE_FO", "", "BSE"),
    "CDS": ("NCD_FO", "", "NSE"),
    "BCD": ("BCD_FO", "", "BSE"),
    "MCX": ("MCX_FO", "", "MCX"),
    "NCO": ("NSE_COM", "", "NSE"),
}
_NSE_SERIES = re.compile(r"[A-Z0-9]{2}")  # NSE's series tags: BE, SM, N1, GB...
_LAST_SECOND_IN_INDIA = 86_399 - 19_800  # 23:59:59 IST, in seconds after 00:00 UTC
_BATCH = 10_000


def write_upstox(instruments: Iterable[Instrument], path: Path) -> int:
    """Write every instrument that has an ``upstox`` token to `path` as an Upstox JSON master;
    returns the number of objects written. Raises ValueError for a token whose segment is not
    the instrument's exchange's, or a derivative without an expiry."""
    encode = msgspec.json.Encoder().encode
    written = 0
    with _open(path) as f:
        f.write(b"[")
        batch: list[dict[str, Any]] = []
        for r in instruments:
            token = next((t.value for t in r.tokens if t.broker == "upstox"), None)
            if token is None:
                continue
            batch.append(_object(r, str(token)))
            if len(batch) == _BATCH:
                f.write((b"," if written else b"") + encode(batch)[1:-1])
                written += len(batch)
                batch.clear()
        if batch:
            f.write((b"," if written else b"") + encode(batch)[1:-1])
            written += len(batch)
        f.write(b"]")
    return written


def _object(r: Instrument, token: str) -> dict[str, Any]:
    cash_segment, index_segment, exchange = _SEGMENTS[r.exchange]
    index = r.segment == "INDICES"
    segment = index_segment if index else cash_segment
    if not token.startswith(segment + "|"):
        raise ValueError(f"{r.key}: upstox token {token!r} is not in segment {segment}")
    symbol = r.key.partition(":")[2]
    if index:
        return {
            "segment": segment,
            "name": r.name,
            "exchange": exchange,
            "instrument_type": "INDEX",
            "instrument_key": token,
            "exchange_token": str(r.exchange_token),
            "trading_symbol": symbol,
        }
    paise = round(r.tick_size * 100, 8)
    if r.instrument_type == "EQ":
        itype = "A" if r.exchange == "BSE" else "EQ"
        head, _, series = symbol.rpartition("-")
        if r.exchange == "NSE" and head and series != "EQ" and _NSE_SERIES.fullmatch(series):
            symbol, itype = head, series
        return {
            "segment": segment,
            "name": r.name,
            "exchange": exchange,
            "isin": r.isin,
            "instrument_type": itype,
            "instrument_key": token,
            "lot_size": r.lot_size,
            "freeze_quantity": 100000.0,
            "exchange_token": str(r.exchange_token),
            "tick_size": paise,
            "trading_symbol": symbol,
            "short_name": r.name,
            "security_type": "NORMAL",
        }
    if r.expiry is None:
        raise ValueError(f"{r.key}: a derivative without an expiry")
    code = symbol[len(r.name) : len(r.name) + 5] if symbol.startswith(r.name) else ""
    return {
        "weekly": len(code) == 5 and not code[2:].isalpha(),
        "segment": segment,
        "name": r.name,
        "exchange": exchange,
        "expiry": ((r.expiry - EPOCH).days * 86_400 + _LAST_SECOND_IN_INDIA) * 1000,
        "instrument_type": r.instrument_type,
        "underlying_symbol": r.name,
        "instrument_key": token,
        "lot_size": r.lot_size,
        "freeze_quantity": 100000.0,
        "exchange_token": str(r.exchange_token),
        "minimum_lot": r.lot_size,
        "tick_size": paise,
        "trading_symbol": symbol,
        "strike_price": r.strike,
    }


def _open(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(path, "wb", compresslevel=6)
    return path.open("wb")
