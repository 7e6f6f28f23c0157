"""Zerodha Kite Connect's ``instruments`` CSV dump -> `Instrument` records.

The dump has a header row and twelve columns::

    instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,
    lot_size,instrument_type,segment,exchange

Columns are found by name in the header, so their order may change and extra columns are
ignored; every row must have as many fields as the header. ``last_price`` is a stale snapshot
price and is not read.

Mapping, one row to one `Instrument`:

- ``key`` is ``EXCHANGE:TRADINGSYMBOL`` (``NSE:RELIANCE``, ``NFO:NIFTY24APR22500CE``); a key
  listed twice is an error naming both rows.
- ``exchange``, ``segment``, ``instrument_type`` and ``name`` are copied as they are.
- ``expiry`` is ``YYYY-MM-DD`` (the live API) or ``DD-MM-YYYY`` (a dump re-saved by a
  spreadsheet); empty means no expiry.
- ``strike`` and ``tick_size`` are finite, non-negative floats; ``lot_size`` and
  ``exchange_token`` are non-negative integers.
- ``tokens`` holds one `BrokerToken` for broker and feed ``kite``: Kite's instrument tokens are
  unique across all of Kite, so Kite is a single feed.

Kite builds ``instrument_token`` as ``exchange_token << 8 | segment_id``: the low byte is the
segment, which the ticker also uses to pick a price divisor. Every row must satisfy that identity;
the segment ids themselves are Kite's to assign and are not checked against a table.

Rows are numbered like a spreadsheet: the header is row 1 and the first instrument row 2. A row
is one CSV record; blank lines are skipped but counted, so for a file without quoted line breaks
(Kite writes none) row N is line N. Every rejection is a `SourceError` carrying the row and the
column, e.g. ``kite=instruments.csv: row 5021, field instrument_token: '12x34' is not an integer``.

`parse_kite` is the pure core (text lines in, records out); `load_kite` reads a file.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import NoReturn

from ..errors import SourceError
from ..model import BrokerToken, Instrument
from ._common import (
    Loaded,
    csv_field_at,
    csv_rows,
    decode_utf8,
    fail,
    header_indexes,
    parse_number,
    parse_uint,
    read_source,
    wrong_width,
)

__all__ = ["COLUMNS", "HEADER_PREFIX", "load_kite", "parse_kite", "parse_kite_rows", "read_kite"]

COLUMNS = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)

# How a Kite dump's first line starts; `resolverd.loaders` sniffs bare paths with it.
HEADER_PREFIX = "instrument_token,exchange_token,tradingsymbol"

# The columns the loader reads, in the order the hot loop unpacks them.
_READ = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)

_U32_MAX = 2**32 - 1
_NUMBER_CHARS = frozenset("0123456789.eE+-")


def parse_kite(lines: Iterable[str], source: str) -> Iterator[Instrument]:
    """Yield one `Instrument` per data row of a Kite ``instruments`` CSV (`parse_kite_rows`
    without the row numbers)."""
    for _, instrument in parse_kite_rows(lines, source):
        yield instrument


def parse_kite_rows(lines: Iterable[str], source: str) -> Iterator[tuple[int, Instrument]]:
    """Yield (row number, `Instrument`) per data row of a Kite ``instruments`` CSV.

    `lines` is the text, split into lines as a file opened with ``newline=""`` splits it (any
    iterable of strings `csv.reader` accepts). `source` labels the input in error messages
    (``kite=instruments.csv``). Performs no I/O.

    Raises `SourceError` for the first bad row, for a key listed twice, and, once the input is
    exhausted, if it held no instruments at all. Records already yielded stay valid.
    """
    records = csv_rows(lines, source)
    first = next(records, None)
    if first is None:
        raise SourceError(source, "no instruments: the input is empty")
    header = first[1]
    pick = itemgetter(*header_indexes(header, _READ, source))
    width = len(header)

    kite = "kite"
    seen: dict[str, int] = {}
    dates: dict[str, dt.date | None] = {"": None}
    floats: dict[str, float] = {}
    # Hot loop: one itemgetter call unpacks a row, integers are checked with str methods rather
    # than a regex, and each distinct expiry and number text is parsed once (the real dump has
    # 40 distinct expiries and 1,173 distinct strikes in 31,373 rows). It loads in about 0.1 s;
    # test_loader_kite.py::test_real_file_loads_in_well_under_a_quarter_second holds it there.
    for row, fields in records:
        if len(fields) != width:
            if not fields:
                continue
            wrong_width(source, row, header, fields)
        (
            token_s,
            xtoken_s,
            symbol,
            name,
            expiry_s,
            strike_s,
            tick_s,
            lot_s,
            itype,
            segment,
            exchange,
        ) = pick(fields)

        if token_s.isdigit() and token_s.isascii() and len(token_s) <= 20:
            token = int(token_s)
            if token > _U32_MAX:
                fail(source, row, "instrument_token", f"{token_s!r} is out of range 0..{_U32_MAX}")
        else:
            _bad_uint(token_s, source, row, "instrument_token")
        if xtoken_s.isdigit() and xtoken_s.isascii() and len(xtoken_s) <= 20:
            xtoken = int(xtoken_s)
        else:
            _bad_uint(xtoken_s, source, row, "exchange_token")
        if token >> 8 != xtoken:
            fail(
                source,
                row,
                "instrument_token",
                f"instrument_token {token} does not match exchange_token {xtoken}: Kite's rule is"
                f" instrument_token == exchange_token << 8 | segment id, but {token} >> 8 is"
                f" {token >> 8}",
            )
        if not symbol:
            fail(source, row, "tradingsymbol", "is empty")
        if not exchange:
            fail(source, row, "exchange", "is empty")

        try:
            expiry = dates[expiry_s]
        except KeyError:
            expiry = dates[expiry_s] = _date(expiry_s, source, row)
        strike = floats.get(strike_s)
        if strike is None:
            strike = floats[strike_s] = parse_number(strike_s, source, row, "strike")
        tick = floats.get(tick_s)
        if tick is None:
            tick = floats[tick_s] = parse_number(tick_s, source, row, "tick_size")
        if lot_s.isdigit() and lot_s.isascii() and len(lot_s) <= 20:
            lot = int(lot_s)
            if lot > _U32_MAX:
                fail(source, row, "lot_size", f"{lot_s!r} is out of range 0..{_U32_MAX}")
        else:
            _bad_uint(lot_s, source, row, "lot_size")

        key = f"{exchange}:{symbol}"
        first_row = seen.setdefault(key, row)
        if first_row != row:
            fail(source, row, "tradingsymbol", f"{key} is listed twice: rows {first_row} and {row}")
        yield (
            row,
            Instrument(
                key=key,
                exchange=exchange,
                segment=segment,
                instrument_type=itype,
                name=name,
                expiry=expiry,
                strike=strike,
                tick_size=tick,
                lot_size=lot,
                exchange_token=xtoken,
                tokens=(BrokerToken(broker=kite, feed=kite, value=token),),
            ),
        )
    if not seen:
        raise SourceError(source, "no instruments: the header has no data rows after it")


def load_kite(path: str | os.PathLike[str], source: str | None = None) -> list[Instrument]:
    """Read a Kite ``instruments`` CSV file into a list of records (`read_kite`'s records)."""
    return read_kite(path, source).instruments


def read_kite(path: str | os.PathLike[str], source: str | None = None) -> Loaded:
    """Read a Kite ``instruments`` CSV file (plain or gzip) with each record's row number.

    The file must be UTF-8 (a leading byte-order mark is tolerated). `source` labels the file in
    error messages and defaults to ``kite=<file name>``.

    Raises `SourceMissingError` if the file does not exist or cannot be read, and `SourceError`
    for a byte that is not UTF-8 (naming its row and column) or any bad row (see `parse_kite`).
    """
    path = Path(path)
    if source is None:
        source = f"kite={path.name}"
    text = decode_utf8(read_source(path, source), source, field_at=csv_field_at)
    loaded = Loaded(source)
    for row, instrument in parse_kite_rows(io.StringIO(text, newline=""), source):
        loaded.add(row, instrument)
    return loaded


def _bad_uint(text: str, source: str, row: int, field: str) -> NoReturn:
    """Reject `text`, which the hot loop found is not a plain run of ASCII digits, saying why."""
    parse_uint(text, source, row, field)
    raise AssertionError("unreachable: parse_uint accepted what isdigit() refused")


def _date(text: str, source: str, row: int) -> dt.date:
    """``YYYY-MM-DD`` or ``DD-MM-YYYY`` (the empty string is handled by the caller's cache)."""
    if len(text) == 10 and text.isascii():
        if text[4] == "-" == text[7]:
            year, month, day = text[0:4], text[5:7], text[8:10]
        elif text[2] == "-" == text[5]:
            day, month, year = text[0:2], text[3:5], text[6:10]
        else:
            year = month = day = ""
        if year.isdigit() and month.isdigit() and day.isdigit():
            try:
                return dt.date(int(year), int(month), int(day))
            except ValueError as exc:
                fail(source, row, "expiry", f"{text!r} is not a date: {exc}")
    fail(source, row, "expiry", f"{text!r} is not a date (expected YYYY-MM-DD or DD-MM-YYYY)")
