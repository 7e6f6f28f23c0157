"""Dhan scrip master writer: instruments -> one CSV in either of Dhan's layouts, the compact
``api-scrip-master.csv`` or the detailed ``api-scrip-master-detailed.csv`` (both documented in
`resolverd.loaders.dhan`).

The security id is the instrument's ``dhan`` token if it has one, else its exchange token (the
synthetic universe has no Dhan tokens, and Dhan's ids are the exchanges' tokens); an instrument
with neither, or on an exchange Dhan does not list (NCO), is not written. What it writes for the
fields Dhan fills from data this writer does not have:

- the trading symbol: a cash or index row's key symbol as it is (series tag included, so that
  the key reads back unchanged); a derivative's ``NAME-MonYYYY-FUT`` or
  ``NAME-MonYYYY-STRIKE-CE``, with the day in front of the month on MCX and BSE currency
  (``CRUDEOIL-19Apr2024-FUT``), as Dhan writes them.
- the expiry flag: ``M`` on a future and on an option of its underlying's last expiry in that
  calendar month, ``W`` on the other options; ``NA`` on cash and indices.
- the instrument name: ``FUTIDX``/``OPTIDX`` on NFO and BFO when the underlying is not a cash
  symbol of the same instruments, ``FUTSTK``/``OPTSTK`` when it is; ``FUTCUR``/``OPTCUR`` for
  currency, ``FUTCOM``/``OPTFUT`` for commodities.
- the expiry time: 14:30 (NSE and BSE derivatives), 12:30 (currency), 23:30 (MCX), compact layout
  only; the detailed layout writes the date.
- ``SM_SYMBOL_NAME`` of an NSE or BSE derivative is blank, as in Dhan's files; MCX and currency
  rows carry the underlying. Expiry code 0, underlying security id ``NA``, trading flags ``N``.

Dhan serves its masters as plain CSV; a path ending in ``.gz`` is gzipped all the same, for
benchmarks of the gzip path.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from resolverd.loaders.dhan import COMPACT_COLUMNS, DETAILED_COLUMNS
from resolverd.model import Instrument

__all__ = ["COMPACT_HEADER", "DETAILED_HEADER", "write_dhan"]

COMPACT_HEADER = (
    "SEM_EXM_EXCH_ID",
    "SEM_SEGMENT",
    "SEM_SMST_SECURITY_ID",
    "SEM_INSTRUMENT_NAME",
    "SEM_EXPIRY_CODE",
    "SEM_TRADING_SYMBOL",
    "SEM_LOT_UNITS",
    "SEM_CUSTOM_SYMBOL",
    "SEM_EXPIRY_DATE",
    "SEM_STRIKE_PRICE",
    "SEM_OPTION_TYPE",
    "SEM_TICK_SIZE",
    "SEM_EXPIRY_FLAG",
    "SEM_EXCH_INSTRUMENT_TYPE",
    "SEM_SERIES",
    "SM_SYMBOL_NAME",
)
DETAILED_HEADER = (
    "EXCH_ID",
    "SEGMENT",
    "SECURITY_ID",
    "ISIN",
    "INSTRUMENT",
    "UNDERLYING_SECURITY_ID",
    "UNDERLYING_SYMBOL",
    "SYMBOL_NAME",
    "DISPLAY_NAME",
    "INSTRUMENT_TYPE",
    "SERIES",
    "LOT_SIZE",
    "SM_EXPIRY_DATE",
    "STRIKE_PRICE",
    "OPTION_TYPE",
    "TICK_SIZE",
    "EXPIRY_FLAG",
    "BRACKET_FLAG",
    "COVER_FLAG",
    "ASM_GSM_FLAG",
    "BUY_SELL_INDICATOR",
    "MTF_LEVERAGE",
)
assert set(COMPACT_COLUMNS) <= set(COMPACT_HEADER)
assert set(DETAILED_COLUMNS) <= set(DETAILED_HEADER)

# Kite exchange -> (exchange id, segment letter, future's and option's instrument names ("" for
# index or stock, told by the underlying), expiry time, whether symbols carry the day).
_EXCHANGES = {
    "NSE": ("NSE", "E", "", "", "", False),
    "BSE": ("BSE", "E", "", "", "", False),
    "NFO": ("NSE", "D", "", "", "14:30:00", False),
    "BFO": ("BSE", "D", "", "", "14:30:00", False),
    "CDS": ("NSE", "C", "FUTCUR", "OPTCUR", "12:30:00", False),
    "BCD": ("BSE", "C", "FUTCUR", "OPTCUR", "12:30:00", True),
    "MCX": ("MCX", "M", "FUTCOM", "OPTFUT", "23:30:00", True),
}


def write_dhan(
    instruments: Iterable[Instrument],
    path: Path,
    *,
    layout: Literal["compact", "detailed"] = "compact",
) -> int:
    """Write every instrument Dhan can list (see the module) to `path` as a Dhan scrip master
    in `layout`; returns the number of rows written."""
    rows = list(instruments)
    stocks = {
        r.key.partition(":")[2]
        for r in rows
        if r.instrument_type == "EQ" and r.segment != "INDICES"
    }
    # The last expiry of each underlying's options per calendar month: the monthly contract.
    monthly: dict[tuple[str, str, int, int], dt.date] = {}
    for r in rows:
        if r.expiry is not None and r.instrument_type in ("CE", "PE"):
            which = (r.exchange, r.name, r.expiry.year, r.expiry.month)
            if monthly.get(which, r.expiry) <= r.expiry:
                monthly[which] = r.expiry
    detailed = layout == "detailed"
    # Date texts per expiry: formatting a date is most of a row's cost, and there are few dates.
    dates: dict[dt.date, tuple[str, str, str, str]] = {}
    written = 0
    with _open(path) as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(DETAILED_HEADER if detailed else COMPACT_HEADER)
        for r in rows:
            where = _EXCHANGES.get(r.exchange)
            sid = next((t.value for t in r.tokens if t.broker == "dhan"), r.exchange_token)
            if where is None or not sid:
                continue
            exch, letter, fut_name, opt_name, close, with_day = where
            symbol = r.key.partition(":")[2]
            tick = f"{r.tick_size * 100:.4f}"
            lot = f"{r.lot_size}.0"
            if r.instrument_type == "EQ":
                index = r.segment == "INDICES"
                bare, _, tag = symbol.rpartition("-")
                series = "X" if index else tag if bare and len(tag) == 2 else "EQ"
                if exch == "BSE" and not index:
                    series = "A"
                fields = _Row(
                    exch=exch,
                    segment="I" if index else letter,
                    sid=sid,
                    instrument="INDEX" if index else "EQUITY",
                    symbol=symbol,
                    name=r.name,
                    display=r.name.title(),
                    xtype="INDEX" if index else "ES",
                    series=series,
                    lot=lot,
                    expiry="",
                    strike="-0.01000",
                    option="XX",
                    tick=tick,
                    flag="NA",
                    isin=r.isin or "NA",
                )
            else:
                if r.expiry is None:
                    raise ValueError(f"{r.key}: a derivative without an expiry")
                day = r.expiry
                texts = dates.get(day)
                if texts is None:
                    texts = dates[day] = (
                        f"{day:%b%Y}",
                        f"{day:%d}",
                        f"{day:%b}".upper(),
                        day.isoformat(),
                    )
                month, dd, mon, iso = texts
                option = r.instrument_type in ("CE", "PE")
                date = f"{dd}{month}" if with_day else month
                if fut_name:
                    instrument = opt_name if option else fut_name
                else:
                    kind = "STK" if r.name in stocks else "IDX"
                    instrument = f"OPT{kind}" if option else f"FUT{kind}"
                if option:
                    strike = _plain(r.strike)
                    trading = f"{r.name}-{date}-{strike}-{r.instrument_type}"
                    call = "CALL" if r.instrument_type == "CE" else "PUT"
                    display = f"{r.name} {dd} {mon} {strike} {call}"
                    weekly = monthly[r.exchange, r.name, day.year, day.month] != day
                else:
                    trading = f"{r.name}-{date}-FUT"
                    display = f"{r.name} {mon} FUT"
                    weekly = False
                fields = _Row(
                    exch=exch,
                    segment=letter,
                    sid=sid,
                    instrument=instrument,
                    symbol=trading,
                    name=r.name if fut_name else "",
                    display=display,
                    xtype="OP" if option else "FUT",
                    series="NA",
                    lot=lot,
                    expiry=iso if detailed else f"{iso} {close}",
                    strike=f"{r.strike:.5f}" if option else "-0.01000",
                    option=r.instrument_type if option else "XX",
                    tick=tick,
                    flag="W" if weekly else "M",
                    isin="NA",
                    underlying=r.name,
                )
            out.writerow(fields.detailed() if detailed else fields.compact())
            written += 1
    return written


@dataclass
class _Row:
    """One instrument's values, laid out in either column order."""

    exch: str
    segment: str
    sid: int | str
    instrument: str
    symbol: str
    name: str
    display: str
    xtype: str
    series: str
    lot: str
    expiry: str
    strike: str
    option: str
    tick: str
    flag: str
    isin: str
    underlying: str = ""

    def compact(self) -> tuple[object, ...]:
        return (
            self.exch,
            self.segment,
            self.sid,
            self.instrument,
            "0",
            self.symbol,
            self.lot,
            self.display,
            self.expiry,
            self.strike,
            self.option,
            self.tick,
            self.flag,
            self.xtype,
            self.series,
            self.name,
        )

    def detailed(self) -> tuple[object, ...]:
        # Cash and index rows keep their symbol in UNDERLYING_SYMBOL and their name in
        # SYMBOL_NAME; derivatives the other way round (the underlying, then the symbol).
        if self.underlying:
            underlying, symbol_name = self.underlying, self.symbol
        else:
            underlying, symbol_name = self.symbol, self.name
        return (
            self.exch,
            self.segment,
            self.sid,
            self.isin,
            self.instrument,
            "NA",
            underlying,
            symbol_name,
            self.display,
            self.xtype,
            self.series,
            self.lot,
            self.expiry,
            self.strike,
            self.option,
            self.tick,
            self.flag,
            "N",
            "N",
            "N",
            "A",
            "0",
        )


def _plain(value: float) -> str:
    """A strike as Dhan's trading symbols write it: 22500, 83.5."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _open(path: Path) -> TextIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8", newline="", compresslevel=6)
    return path.open("w", encoding="utf-8", newline="")
