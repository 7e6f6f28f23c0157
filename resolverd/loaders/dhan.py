"""DhanHQ's scrip master CSV (both layouts) -> `Instrument` records.

Dhan publishes its instrument list in two layouts ("Instrument List", dhanhq.co/docs/v2/
instruments), one row per tradable instrument and a header row:

- compact, ``api-scrip-master.csv``: ``SEM_EXM_EXCH_ID, SEM_SEGMENT, SEM_SMST_SECURITY_ID,
  SEM_INSTRUMENT_NAME, SEM_EXPIRY_CODE, SEM_TRADING_SYMBOL, SEM_LOT_UNITS, SEM_CUSTOM_SYMBOL,
  SEM_EXPIRY_DATE, SEM_STRIKE_PRICE, SEM_OPTION_TYPE, SEM_TICK_SIZE, SEM_EXPIRY_FLAG,
  SEM_EXCH_INSTRUMENT_TYPE, SEM_SERIES, SM_SYMBOL_NAME``;
- detailed, ``api-scrip-master-detailed.csv``: ``EXCH_ID, SEGMENT, SECURITY_ID, ISIN,
  INSTRUMENT, UNDERLYING_SECURITY_ID, UNDERLYING_SYMBOL, SYMBOL_NAME, DISPLAY_NAME,
  INSTRUMENT_TYPE, SERIES, LOT_SIZE, SM_EXPIRY_DATE, STRIKE_PRICE, OPTION_TYPE, TICK_SIZE,
  EXPIRY_FLAG`` and trading flags and limits (``BRACKET_FLAG``, ``MTF_LEVERAGE``, ...). It has
  no trading-symbol column: a cash or index row's symbol is in ``UNDERLYING_SYMBOL`` (its name in
  ``SYMBOL_NAME``), a derivative's symbol is in ``SYMBOL_NAME`` (its underlying in
  ``UNDERLYING_SYMBOL``).

The layout is told by the header (``SEM_SMST_SECURITY_ID`` or ``SECURITY_ID``); columns are
found by name, extra columns are ignored, and every row must have as many fields as the header.
Columns this loader does not read: the expiry code (0/1/2 = near/next/far), the custom or
display symbol, the underlying security id and everything after the expiry flag but the series
(``SEM_SERIES`` / ``SERIES``) and, in the detailed layout, ``ISIN``.

Reading one row, in the layout-neutral names used below (compact / detailed column):

- *exchange id* (``SEM_EXM_EXCH_ID`` / ``EXCH_ID``) and *segment* (``SEM_SEGMENT`` /
  ``SEGMENT``) pick the Kite exchange and Dhan's API exchange segment (annexure): NSE E -> NSE
  (``NSE_EQ``), NSE D -> NFO (``NSE_FNO``), NSE C -> CDS (``NSE_CURRENCY``), BSE E -> BSE
  (``BSE_EQ``), BSE D -> BFO (``BSE_FNO``), BSE C -> BCD (``BSE_CURRENCY``), MCX M -> MCX
  (``MCX_COMM``), NSE I and BSE I -> NSE and BSE indices (``IDX_I``). Another pair is skipped
  with a warning.
- *instrument* (``SEM_INSTRUMENT_NAME`` / ``INSTRUMENT``): ``EQUITY`` (segment E) is cash,
  ``INDEX`` (segment I) an index, ``FUTIDX FUTSTK FUTCUR FUTCOM`` a future and ``OPTIDX OPTSTK
  OPTCUR OPTFUT`` an option (segments D, C, M). Another name is skipped with a warning; a known
  name in the wrong segment (``EQUITY`` in D) is an error. Every cash row loads as ``EQ``,
  whatever its exchange instrument type (``SEM_EXCH_INSTRUMENT_TYPE`` / ``INSTRUMENT_TYPE``):
  ``ES`` (shares), ``ETF``, ``MF``, ``REIT``, ``InvITU``, ``PS``, and the debt types ``DBT DEB
  CB GB TB PTC`` (bonds, gold bonds, bills, debentures) too, because users resolve tokens for
  those, as Kite lists them.
- *security id* (``SEM_SMST_SECURITY_ID`` / ``SECURITY_ID``): Dhan's token, a positive integer
  below 2**32 (the live feed carries it in four bytes). Unique only within an exchange segment,
  so the token is ``BrokerToken("dhan", "dhan:<segment>", id)`` with Dhan's segment name
  (``dhan:NSE_FNO``, ``dhan:IDX_I``). For cash and derivatives it is the exchange's own token
  (Dhan: "exchange standard ID") and so also the record's ``exchange_token``; an index's id is
  Dhan's own number (13 is NIFTY 50), not an exchange token, so an index has ``exchange_token``
  0 and joins no other broker's row.
- *symbol*: the key is ``EXCHANGE:SYMBOL``. Cash and indices use the symbol less a ``-EQ`` tag
  (``NSE:HDFCBANK``, ``NSE:NIFTY``). An NSE row of a debt type gets its series (*series*,
  ``SEM_SERIES`` / ``SERIES``) appended unless the symbol already ends in it or the series is
  ``EQ``, empty or ``NA``: Dhan writes a gold bond's symbol bare (``SGBAUG28V``, series ``GB``),
  while NSE lists one issuer's bonds under one symbol in several series (``N1``, ``N2``...), so the
  series is what keeps their keys apart, and it is how Kite names them (``NSE:SGBAUG28V-GB``). BSE's
  series column holds the group (``A``, ``F``), which is left out as Kite leaves it out
  (``BSE:RELIANCE``); BSE symbols are unique without it. Derivatives use Dhan's trading symbol,
  ``UNDERLYING-MonYYYY-FUT`` or ``UNDERLYING-MonYYYY-STRIKE-CE`` (``NFO:NIFTY-Apr2024-22500-CE``;
  MCX and BSE currency write the day too: ``MCX:CRUDEOIL-19Apr2024-FUT``). Dhan gives every weekly
  option of a month the monthly form, so ``NIFTY-Oct2024-25800-CE`` names the contracts of 3, 10, 17
  and 24 October at once. A row whose expiry flag (``SEM_EXPIRY_FLAG`` / ``EXPIRY_FLAG``) is ``W``
  therefore gets the expiry day put in front of the month, in Dhan's own day-first form:
  ``NFO:NIFTY-03Oct2024-25800-CE``. Monthly contracts keep Dhan's symbol as it is.
- *name*: cash and index rows take ``SM_SYMBOL_NAME`` / ``SYMBOL_NAME`` (the company or index
  name). Derivatives take the underlying: ``UNDERLYING_SYMBOL`` in the detailed layout; in the
  compact layout the trading symbol's part before the month (``SM_SYMBOL_NAME`` is blank on most
  NSE and BSE derivatives and a contract mnemonic such as ``BRITOPT`` on others), or
  ``SM_SYMBOL_NAME`` if the symbol does not have that shape.
- *expiry* (``SEM_EXPIRY_DATE`` / ``SM_EXPIRY_DATE``): ``YYYY-MM-DD``, optionally followed by
  the time of expiry (``2024-04-25 14:30:00``, the compact layout); ``DD/MM/YY``, reported for
  some detailed files, is also taken. Required for derivatives; ``0001-01-01`` is Dhan's
  placeholder for none and is refused there. Not read for cash and indices.
- *strike* (``SEM_STRIKE_PRICE`` / ``STRIKE_PRICE``) in rupees, read for options only: futures,
  cash and indices carry placeholders there (``-0.01000``). *Option type* (``SEM_OPTION_TYPE``
  / ``OPTION_TYPE``) must be ``CE`` or ``PE`` on an option and is not read otherwise (``XX``).
- *tick size* (``SEM_TICK_SIZE`` / ``TICK_SIZE``) is in paise and is divided by 100:
  ``5.0000`` is 0.05 rupees, ``0.2500`` (USDINR) 0.0025, ``100.0000`` (crude oil) 1. The docs
  give no unit; paise is what the published files hold, and what other Dhan integrations read.
- *lot size* (``SEM_LOT_UNITS`` / ``LOT_SIZE``) is written as a decimal (``50.0``) and must be a
  whole number below 2**32.
- ``isin`` from the detailed layout's ``ISIN`` (``NA`` on derivatives means none); one that is
  not 12 letters and digits is dropped with a warning. The compact layout has no ISIN.

Skipped with a warning, and not checked further: an exchange and segment pair not listed above
(NCDEX's, say) and an instrument name not listed above (``FUTIRC`` interest-rate futures and
whatever Dhan adds): kinds resolverd does not model.

Rows are numbered like a spreadsheet (header = row 1); blank lines are skipped but counted. Every
rejection is a `SourceError` naming the row and the column as the file calls it, e.g.
``dhan=api-scrip-master.csv: row 812, field SEM_SMST_SECURITY_ID: '35x01' is not an integer``.
Duplicate keys and tokens and expired contracts are left to `resolverd.validate`.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Final, NamedTuple, NoReturn

from ..errors import SourceError
from ..model import BrokerToken, Instrument
from ._common import (
    Loaded,
    Warn,
    csv_field_at,
    csv_rows,
    decode_utf8,
    fail,
    header_indexes,
    parse_date,
    parse_number,
    parse_uint,
    read_source,
    strip_eq,
    wrong_width,
)

__all__ = [
    "COMPACT_COLUMNS",
    "DETAILED_COLUMNS",
    "Warn",
    "load_dhan",
    "parse_dhan_rows",
    "read_dhan",
    "sniff",
]


# The columns the loader reads, per layout, in the order the hot loop unpacks them.
COMPACT_COLUMNS: Final = (
    "SEM_EXM_EXCH_ID",
    "SEM_SEGMENT",
    "SEM_SMST_SECURITY_ID",
    "SEM_INSTRUMENT_NAME",
    "SEM_EXCH_INSTRUMENT_TYPE",
    "SEM_TRADING_SYMBOL",
    "SM_SYMBOL_NAME",
    "SEM_LOT_UNITS",
    "SEM_EXPIRY_DATE",
    "SEM_STRIKE_PRICE",
    "SEM_OPTION_TYPE",
    "SEM_TICK_SIZE",
    "SEM_EXPIRY_FLAG",
    "SEM_SERIES",
)
DETAILED_COLUMNS: Final = (
    "EXCH_ID",
    "SEGMENT",
    "SECURITY_ID",
    "INSTRUMENT",
    "INSTRUMENT_TYPE",
    "UNDERLYING_SYMBOL",
    "SYMBOL_NAME",
    "LOT_SIZE",
    "SM_EXPIRY_DATE",
    "STRIKE_PRICE",
    "OPTION_TYPE",
    "TICK_SIZE",
    "EXPIRY_FLAG",
    "SERIES",
    "ISIN",
)

(
    _EXCH,
    _SEG,
    _SID,
    _INST,
    _XTYPE,
    _SYM_A,
    _SYM_B,
    _LOT,
    _EXPIRY,
    _STRIKE,
    _OPT,
    _TICK,
    _FLAG,
    _SERIES,
) = range(14)

_U32_MAX = 2**32 - 1

# (exchange id, segment) -> (Kite exchange, Dhan's API exchange segment).
_SEGMENTS: Final = {
    ("NSE", "E"): ("NSE", "NSE_EQ"),
    ("NSE", "I"): ("NSE", "IDX_I"),
    ("NSE", "D"): ("NFO", "NSE_FNO"),
    ("NSE", "C"): ("CDS", "NSE_CURRENCY"),
    ("BSE", "E"): ("BSE", "BSE_EQ"),
    ("BSE", "I"): ("BSE", "IDX_I"),
    ("BSE", "D"): ("BFO", "BSE_FNO"),
    ("BSE", "C"): ("BCD", "BSE_CURRENCY"),
    ("MCX", "M"): ("MCX", "MCX_COMM"),
}

_CASH, _INDEX, _FUTURE, _OPTION = "cash", "index", "future", "option"
_KINDS: Final = {
    "EQUITY": _CASH,
    "INDEX": _INDEX,
    "FUTIDX": _FUTURE,
    "FUTSTK": _FUTURE,
    "FUTCUR": _FUTURE,
    "FUTCOM": _FUTURE,
    "OPTIDX": _OPTION,
    "OPTSTK": _OPTION,
    "OPTCUR": _OPTION,
    "OPTFUT": _OPTION,
}
_SEGMENT_KINDS: Final = {
    "E": (_CASH,),
    "I": (_INDEX,),
    "D": (_FUTURE, _OPTION),
    "C": (_FUTURE, _OPTION),
    "M": (_FUTURE, _OPTION),
}
# Debt types: their NSE keys carry the series (see the module docstring).
_DEBT_TYPES: Final = frozenset({"DBT", "DEB", "CB", "GB", "TB", "PTC"})
# Series texts that name no series.
_NO_SERIES: Final = frozenset({"", "NA", "EQ"})
_OPTION_TYPES: Final = frozenset({"CE", "PE"})
_NO_EXPIRY: Final = dt.date(1, 1, 1)


class _Plan(NamedTuple):
    """What rows of one (exchange id, segment, instrument) triple become: records of this kind,
    or, if `skip` is set, nothing but a warning on column `skip_column`."""

    kind: str
    exchange: str = ""
    segment: str = ""
    instrument_type: str = ""
    feed: str = ""
    dashes: int = 0
    """How many dashes a derivative's trading symbol has after its underlying."""
    skip: str = ""
    skip_column: int = 0


def sniff(head: str) -> bool:
    """Whether text starting with `head` is a Dhan scrip master: its header names the security
    id column of either layout with its exchange id and segment columns."""
    names = {name.strip() for name in head.partition("\n")[0].rstrip("\r").split(",")}
    return {"SEM_EXM_EXCH_ID", "SEM_SEGMENT", "SEM_SMST_SECURITY_ID"} <= names or {
        "EXCH_ID",
        "SEGMENT",
        "SECURITY_ID",
    } <= names


def parse_dhan_rows(
    lines: Iterable[str], source: str, warn: Warn | None = None
) -> Iterator[tuple[int, Instrument]]:
    """Yield (row number, `Instrument`) per kept data row of a Dhan scrip master, either layout.

    `lines` is the text split as a file opened with ``newline=""`` splits it. `source` labels
    the input in error messages (``dhan=api-scrip-master.csv``). A row of a kind not modelled
    (an unknown exchange segment or instrument) is not yielded: `warn` is told of it
    with its row and column, if given. Performs no I/O.

    Raises `SourceError` for the first bad row and, once the input is exhausted, if it kept no
    instruments at all. Records already yielded stay valid.
    """
    records = csv_rows(lines, source)
    first = next(records, None)
    if first is None:
        raise SourceError(source, "no instruments: the input is empty")
    header = first[1]
    names = [name.strip() for name in header]
    if names:
        names[0] = names[0].removeprefix("\ufeff")
    columns: tuple[str, ...]
    if "SEM_SMST_SECURITY_ID" in names:
        columns, detailed = COMPACT_COLUMNS, False
    elif "SECURITY_ID" in names:
        columns, detailed = DETAILED_COLUMNS, True
    else:
        fail(
            source,
            1,
            None,
            "the header names neither SEM_SMST_SECURITY_ID (the compact layout) nor"
            " SECURITY_ID (the detailed layout)",
        )
    indexes = header_indexes(names, columns, source)
    pick = itemgetter(*indexes[:14])
    isin_at = indexes[14] if detailed else -1
    width = len(header)
    field = columns.__getitem__

    plans: dict[tuple[str, str, str], _Plan] = {}
    dates: dict[str, dt.date] = {}
    strikes: dict[str, float] = {}
    ticks: dict[str, float] = {}
    lots: dict[str, int] = {}
    dhan = "dhan"
    kept = skipped = 0
    # Hot loop: one itemgetter call unpacks a row, one dict lookup classifies it, and each
    # distinct date, strike, tick and lot text is parsed once (a master has a few dozen
    # expiries and a few thousand strikes across a quarter of a million rows).
    for row, fields in records:
        if len(fields) != width:
            if not fields:
                continue
            wrong_width(source, row, names, fields)
        (
            exch_s,
            seg_s,
            sid_s,
            inst_s,
            xtype_s,
            sym_a,
            sym_b,
            lot_s,
            expiry_s,
            strike_s,
            opt_s,
            tick_s,
            flag_s,
            series_s,
        ) = pick(fields)

        triple = (exch_s, seg_s, inst_s)
        plan = plans.get(triple)
        if plan is None:
            plan = plans[triple] = _plan(exch_s, seg_s, inst_s, source, row, field)
        kind = plan.kind
        if plan.skip:
            skipped += 1
            if warn is not None:
                warn(plan.skip, row, field(plan.skip_column))
            continue

        if sid_s.isdigit() and sid_s.isascii():
            sid = int(sid_s)
            if not 0 < sid <= _U32_MAX:
                _bad_id(sid_s, source, row, field(_SID))
        else:
            _bad_id(sid_s, source, row, field(_SID))

        lot = lots.get(lot_s)
        if lot is None:
            lot = lots[lot_s] = _lot(lot_s, source, row, field(_LOT))
        tick = ticks.get(tick_s)
        if tick is None:
            tick = ticks[tick_s] = parse_number(tick_s, source, row, field(_TICK)) / 100

        isin = ""
        if detailed:
            isin = fields[isin_at]
            if isin == "NA":
                isin = ""
            elif isin and not (len(isin) == 12 and isin.isalnum() and isin.isascii()):
                if warn is not None:
                    warn(f"{isin!r} is not an ISIN; dropped", row, "ISIN")
                isin = ""

        expiry: dt.date | None = None
        strike = 0.0
        instrument_type = plan.instrument_type
        if kind is _CASH or kind is _INDEX:
            symbol = sym_a
            if not symbol:
                fail(source, row, field(_SYM_A), "is empty")
            symbol = strip_eq(symbol)
            if (
                xtype_s in _DEBT_TYPES
                and plan.exchange == "NSE"
                and kind is _CASH
                and series_s not in _NO_SERIES
                and not symbol.endswith(f"-{series_s}")
            ):
                symbol = f"{symbol}-{series_s}"
            key = f"{plan.exchange}:{symbol}"
            name = sym_b
            xtoken = sid if kind is _CASH else 0
        else:
            expiry = dates.get(expiry_s)
            if expiry is None:
                expiry = dates[expiry_s] = _expiry(expiry_s, source, row, field(_EXPIRY))
            if kind is _OPTION:
                if opt_s not in _OPTION_TYPES:
                    fail(source, row, field(_OPT), f"{opt_s!r} is not CE or PE")
                instrument_type = opt_s
                strike = strikes.get(strike_s, -1.0)
                if strike < 0:
                    strike = strikes[strike_s] = parse_number(strike_s, source, row, field(_STRIKE))
            if detailed:
                symbol, name = sym_b, sym_a
                if not symbol:
                    fail(source, row, field(_SYM_B), "is empty")
            else:
                symbol, name = sym_a, sym_b
                if not symbol:
                    fail(source, row, field(_SYM_A), "is empty")
            # UNDERLYING-DATE-FUT or UNDERLYING-DATE-STRIKE-CE, DATE being MonYYYY or DDMonYYYY;
            # the underlying may hold dashes itself (BAJAJ-AUTO), so split from the right.
            parts = symbol.rsplit("-", plan.dashes)
            date = parts[1] if len(parts) > plan.dashes else ""
            if parts[0] and len(date) in (7, 9) and date[-4:].isdigit() and date[-7:-4].isalpha():
                if not detailed:
                    name = parts[0]
                if flag_s == "W" and len(date) == 7:
                    parts[1] = f"{expiry.day:02d}{date}"
                    symbol = "-".join(parts)
            key = f"{plan.exchange}:{symbol}"
            xtoken = sid

        kept += 1
        yield (
            row,
            Instrument(
                key=key,
                exchange=plan.exchange,
                segment=plan.segment,
                instrument_type=instrument_type,
                name=name,
                expiry=expiry,
                strike=strike,
                tick_size=tick,
                lot_size=lot,
                isin=isin,
                exchange_token=xtoken,
                tokens=(BrokerToken(dhan, plan.feed, sid),),
            ),
        )
    if not kept:
        if skipped:
            raise SourceError(
                source, f"no instruments: all {skipped} rows are of kinds not modelled"
            )
        raise SourceError(source, "no instruments: the header has no data rows after it")


def load_dhan(path: str | os.PathLike[str], source: str | None = None) -> list[Instrument]:
    """Read a Dhan scrip master into a list of records (`read_dhan`'s records)."""
    return read_dhan(path, source).instruments


def read_dhan(path: str | os.PathLike[str], source: str | None = None) -> Loaded:
    """Read a Dhan scrip master (either layout, plain or gzip) with each record's row number
    and a warning per skipped row.

    The file must be UTF-8 (a leading byte-order mark is tolerated). `source` labels the file in
    error messages and defaults to ``dhan=<file name>``.

    Raises `SourceMissingError` if the file cannot be read, and `SourceError` for a byte that is
    not UTF-8 (naming its row and column) or any bad row (see `parse_dhan_rows`).
    """
    path = Path(path)
    if source is None:
        source = f"dhan={path.name}"
    text = decode_utf8(read_source(path, source), source, field_at=csv_field_at)
    loaded = Loaded(source)
    for row, instrument in parse_dhan_rows(io.StringIO(text, newline=""), source, loaded.warn):
        loaded.add(row, instrument)
    # A file cut inside its last field still has full rows; only the missing line end shows it.
    if not text.endswith("\n"):
        loaded.warn("the file does not end with a line break: it may be cut off", None, None)
    return loaded


def _plan(
    exch: str, seg: str, inst: str, source: str, row: int, field: Callable[[int], str]
) -> _Plan:
    """What rows of this exchange id, segment and instrument become."""
    if not exch:
        fail(source, row, field(_EXCH), "is empty")
    if not seg:
        fail(source, row, field(_SEG), "is empty")
    if not inst:
        fail(source, row, field(_INST), "is empty")
    kind = _KINDS.get(inst)
    allowed = _SEGMENT_KINDS.get(seg)
    if kind is not None and allowed is not None and kind not in allowed:
        fail(source, row, field(_INST), f"{inst} is not an instrument of segment {seg}")
    where = _SEGMENTS.get((exch, seg))
    if where is None:
        return _Plan(
            "", skip=f"skipped: exchange {exch} segment {seg} is not modelled", skip_column=_SEG
        )
    if kind is None:
        return _Plan("", skip=f"skipped: instrument {inst} is not modelled", skip_column=_INST)
    exchange, dhan_segment = where
    feed = f"dhan:{dhan_segment}"
    if kind is _CASH:
        return _Plan(kind, exchange, exchange, "EQ", feed)
    if kind is _INDEX:
        return _Plan(kind, exchange, "INDICES", "EQ", feed)
    if kind is _FUTURE:
        return _Plan(kind, exchange, f"{exchange}-FUT", "FUT", feed, dashes=2)
    return _Plan(kind, exchange, f"{exchange}-OPT", "", feed, dashes=3)


def _expiry(text: str, source: str, row: int, field: str) -> dt.date:
    if not text:
        fail(source, row, field, "is empty, but a derivative needs an expiry")
    if len(text) in (8, 10) and text[2] == "/" == text[5] and text.isascii():
        day, month, year = text[0:2], text[3:5], text[6:]
        if day.isdigit() and month.isdigit() and year.isdigit():
            try:
                date = dt.date(int(year) + (2000 if len(year) == 2 else 0), int(month), int(day))
            except ValueError as exc:
                fail(source, row, field, f"{text!r} is not a date: {exc}")
        else:
            fail(source, row, field, f"{text!r} is not a date (expected DD/MM/YY)")
    else:
        date = parse_date(text, source, row, field)
    if date == _NO_EXPIRY:
        fail(source, row, field, f"{text!r} is Dhan's no-expiry placeholder on a derivative")
    return date


def _lot(text: str, source: str, row: int, field: str) -> int:
    """A whole number of units, as Dhan writes it (``50``, ``50.0``)."""
    whole, dot, fraction = text.partition(".")
    if whole.isdigit() and whole.isascii() and (not dot or fraction.isdigit() or not fraction):
        if fraction.strip("0"):
            fail(source, row, field, f"{text!r} is not a whole number of units")
        return parse_uint(whole, source, row, field, _U32_MAX)
    parse_number(text, source, row, field)  # says why: empty, negative, not a number
    fail(source, row, field, f"{text!r} is not a whole number of units")


def _bad_id(text: str, source: str, row: int, field: str) -> NoReturn:
    value = parse_uint(text, source, row, field, _U32_MAX)
    if value == 0:
        fail(source, row, field, "is 0; Dhan's security ids start at 1")
    raise AssertionError("unreachable: _bad_id called with a good security id")
