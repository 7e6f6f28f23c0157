"""Fyers symbol master writer: instruments -> one CSV in the layout of Fyers' ``NSE_CM.csv``,
``NSE_FO.csv``... (documented in `resolverd.loaders.fyers`), all segments in one file.

What it writes for the fields Fyers fills from data this writer does not have:

- ``Exchange instrument type``: 0 for cash, 10 for an index; FUTIDX/OPTIDX (11/14) for NFO
  derivatives on an underlying named like an index (NIFTY..., BANKNIFTY, FINNIFTY, MIDCPNIFTY)
  and on every BFO one, FUTSTK/OPTSTK (13/15) for other NFO ones; FUTCUR/OPTCUR (16/19) for
  currency, FUTCOM/OPTFUT (30/31) for commodities.
- ``Symbol ticker``: the key's symbol under Fyers' exchange name; NSE cash symbols without a
  series get ``-EQ`` and BSE shares group ``-A``, which the loader strips again.
- ``Expiry date``: the expiry day at the exchange's close in India (15:30; currency 12:30;
  commodities 23:30), as epoch seconds.
- ``Underlying scrip code`` and ``Underlying Fytoken`` of a derivative: -1, as Fyers' currency
  files write them (the loader reads neither); ``Last update date``: `updated`.

Fyers serves its masters as plain CSV; a path ending in ``.gz`` is gzipped all the same, for
benchmarks of the gzip path.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from resolverd.model import EPOCH, Instrument
from resolverd.synthetic import DEFAULT_TRADE_DATE

__all__ = ["write_fyers"]

# Kite exchange -> (Fyers exchange code, segment code, ticker prefix, close in India as seconds
# after midnight, trading session).
_EXCHANGES = {
    "NSE": ("10", "10", "NSE:", 55_800, "0915-1530|1815-1915:"),
    "NFO": ("10", "11", "NSE:", 55_800, "0915-1530|1815-1915:"),
    "CDS": ("10", "12", "NSE:", 45_000, "0900-1700|1815-1915:"),
    "NCO": ("10", "20", "NSE:", 84_600, "0900-2330|1815-1915:"),
    "BSE": ("12", "10", "BSE:", 55_800, "0915-1530|1815-1915:"),
    "BFO": ("12", "11", "BSE:", 55_800, "0915-1530|1815-1915:"),
    "BCD": ("12", "12", "BSE:", 45_000, "0900-1700|1815-1915:"),
    "MCX": ("11", "20", "MCX:", 84_600, "0900-2330|1815-1915:"),
}
# Kite exchange -> (future's type code, option's type code).
_DERIVATIVE_TYPES = {
    "CDS": ("16", "19"),
    "BCD": ("16", "19"),
    "MCX": ("30", "31"),
    "NCO": ("30", "31"),
}
_INDEX_NAMES = ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY")
_IST = 19_800
_SERIES = re.compile(r"-[A-Z0-9]{2}$")  # NSE's series tags are two characters: -BE, -SM, -E1


def write_fyers(
    instruments: Iterable[Instrument], path: Path, *, updated: dt.date = DEFAULT_TRADE_DATE
) -> int:
    """Write every instrument that has a ``fyers`` token to `path` as a Fyers symbol master;
    returns the number of rows written."""
    stamp = updated.isoformat()
    with _open(path) as f:
        out = csv.writer(f, lineterminator="\n")
        written = 0
        for r in instruments:
            fytoken = next((t.value for t in r.tokens if t.broker == "fyers"), None)
            if fytoken is None:
                continue
            exchange_code, segment_code, prefix, close, session = _EXCHANGES[r.exchange]
            symbol = r.key.partition(":")[2]
            xtoken = str(r.exchange_token)
            if r.instrument_type == "EQ":
                index = r.segment == "INDICES"
                ticker, bare = symbol, symbol
                if index:
                    ticker = symbol
                elif r.exchange == "BSE":
                    ticker = f"{symbol}-A"
                elif _SERIES.search(symbol):
                    bare = symbol[:-3]
                else:
                    ticker = f"{symbol}-EQ"
                fields = [
                    fytoken,
                    r.name,
                    "10" if index else "0",
                    r.lot_size,
                    repr(r.tick_size),
                    r.isin,
                    session,
                    stamp,
                    "",
                    prefix + ticker,
                    exchange_code,
                    segment_code,
                    xtoken,
                    bare,
                    xtoken,
                    "-1.0",
                    "XX",
                    fytoken,
                ]
            else:
                if r.expiry is None:
                    raise ValueError(f"{r.key}: a derivative without an expiry")
                option = r.instrument_type != "FUT"
                strike = repr(r.strike) if option else "-1.0"
                day = r.expiry
                describe = f"{r.name} {day.day:02d} {day:%b} {day.year % 100:02d}"
                fields = [
                    fytoken,
                    f"{describe} {_plain(r.strike)} {r.instrument_type}"
                    if option
                    else f"{describe} FUT",
                    _type_code(r, option),
                    r.lot_size,
                    repr(r.tick_size),
                    r.isin,
                    session,
                    stamp,
                    (day - EPOCH).days * 86_400 + close - _IST,
                    prefix + symbol,
                    exchange_code,
                    segment_code,
                    xtoken,
                    r.name,
                    "-1",
                    strike,
                    r.instrument_type if option else "XX",
                    "-1",
                ]
            fields += ("None", "0", "0.0")
            out.writerow(fields)
            written += 1
    return written


def _plain(value: float) -> str:
    """A strike as Fyers' descriptions write it: 22500, 82.5."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _type_code(r: Instrument, option: bool) -> str:
    if r.exchange in ("NFO", "BFO"):
        index = r.exchange == "BFO" or r.name.startswith(_INDEX_NAMES)
        if option:
            return "14" if index else "15"
        return "11" if index else "13"
    future, opt = _DERIVATIVE_TYPES[r.exchange]
    return opt if option else future


def _open(path: Path) -> TextIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8", newline="", compresslevel=6)
    return path.open("w", encoding="utf-8", newline="")
