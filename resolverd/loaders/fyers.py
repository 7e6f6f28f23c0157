"""Fyers' symbol master CSVs (``NSE_CM.csv``, ``NSE_FO.csv``, ``NSE_CD.csv``, ``BSE_CM.csv``,
``BSE_FO.csv``, ``MCX_COM.csv``) -> `Instrument` records.

Fyers publishes one file per exchange segment; they share one layout and this loader reads any of
them, or several concatenated. There is no header row: every line is one instrument of 21
comma-separated fields, named here as Fyers' documentation names them (errors use these names)::

     1 Fytoken                   10100000002885 / 101124042568114; see "The Fytoken rule"
     2 Symbol details            RELIANCE INDUSTRIES LTD / NIFTY 25 Apr 24 22500 CE
     3 Exchange instrument type  a code; see "Instrument types"
     4 Minimum lot size          units per lot (1 for cash; 50 for a 2024 NIFTY contract)
     5 Tick size                 rupees: 0.05, 0.01, 0.0025 (currency), 1.0 (crude oil)
     6 ISIN                      12 characters, empty for indices and derivatives
     7 Trading session           0915-1530|1815-1915:  (not read)
     8 Last update date          2024-06-25            (not read)
     9 Expiry date               epoch seconds of the expiry's close; empty or 0 for cash
    10 Symbol ticker             NSE:SBIN-EQ, BSE:SBIN-A, NSE:NIFTY24APR22500CE, MCX:GOLD24JUNFUT
    11 Exchange                  10 NSE, 11 MCX, 12 BSE
    12 Segment                   10 capital market, 11 equity derivatives, 12 currency
                                 derivatives, 20 commodity derivatives
    13 Scrip code                the exchange's token for the instrument
    14 Underlying symbol         SBIN / NIFTY
    15 Underlying scrip code     (not read)
    16 Strike price              rupees; -1.0 for anything but an option
    17 Option type               CE, PE, or XX for anything but an option
    18 Underlying Fytoken        (not read)
    19-21 reserved               (not read)

Every row must have exactly 21 fields. A file cut off in the middle of a row therefore fails on
that row, unless the cut falls inside field 21, which is reserved and never read: nothing the
records hold is lost then.

Exchange and segment, the Kite exchange they map to, and the prefix their tickers carry:

=====  ========  ================  =============
code   segment   Kite exchange     ticker prefix
=====  ========  ================  =============
10 10  NSE CM    ``NSE``           ``NSE:``
10 11  NSE FO    ``NFO``           ``NSE:``
10 12  NSE CD    ``CDS``           ``NSE:``
10 20  NSE COM   ``NCO``           ``NSE:``
12 10  BSE CM    ``BSE``           ``BSE:``
12 11  BSE FO    ``BFO``           ``BSE:``
12 12  BSE CD    ``BCD``           ``BSE:``
11 20  MCX COM   ``MCX``           ``MCX:``
=====  ========  ================  =============

Any other pair is refused (field ``Exchange`` or ``Segment``), as is a ticker without its prefix.

Instrument types (field 3), per segment, and what becomes of them:

- Capital market: 0 EQ, 1 PREFSHARES, 3 WARRANTS, 4 MISC (InvITs on NSE), 8 MF, 9 ETF and
  50 MISC (BSE) trade like shares and load as ``EQ``; 10 INDEX loads as an index (segment
  ``INDICES``, type ``EQ``). 2 DEBENTURES, 5 SGB (and state loans), 6 G-Secs and 7 T-Bills
  trade in the cash segment too and load as ``EQ`` with their series in the key
  (``NSE:656MH32-SG``), as Kite lists its cash-segment bonds.
- Equity derivatives: 11 FUTIDX, 12 FUTIVX, 13 FUTSTK load as ``FUT``; 14 OPTIDX, 15 OPTSTK as
  options.
- Currency derivatives: 16 FUTCUR, 17 FUTIRT, 18 FUTIRC, 25 FUTIRD load as ``FUT``; 19 OPTCUR as
  an option; 20-23 (the UND* underlyings) and 24 INDEX_CD are reference rows, not contracts:
  skipped.
- Commodity derivatives: 11 FUTIDX, 30 FUTCOM, 33 FUTBAS, 34 FUTBLN, 35 FUTENR load as ``FUT``;
  31 OPTFUT, 32 OPTCOM, 36 OPTBLN, 37 OPTFUT as options.

A skipped row, or a code Fyers does not document for its segment, is reported through the
``warn`` callback (one call per row, with its row number) and yields nothing; a code that is not
an integer is refused. An option's ``Option type`` must be ``CE`` or ``PE``; anything else's
must be ``XX``.

Mapping, one kept row to one `Instrument`:

- ``key`` is the Kite exchange, a colon, and the ticker's symbol (after the colon): less a
  trailing ``-EQ`` on NSE cash (`strip_eq`: ``NSE:SBIN-EQ`` is ``NSE:SBIN``; ``NSE:IDEA-BE``
  keeps its series, as Kite's symbol does); less the trailing ``-<group>`` on BSE cash shares,
  because Kite names BSE shares without their group (``BSE:SBIN-A`` is ``BSE:SBIN``; a share's
  group changes without the share changing); as it is for indices (``NSE:NIFTY50-INDEX``) and
  derivatives (``NSE:NIFTY24APR22500CE`` is ``NFO:NIFTY24APR22500CE``).
- ``segment`` is `kite_segment` of the exchange and type (``NFO-OPT``), ``INDICES`` for an index.
- ``instrument_type`` is ``EQ``, ``FUT``, or the option type ``CE``/``PE``.
- ``name`` is ``Symbol details`` for cash and indices (the company's name) and ``Underlying
  symbol`` for derivatives, as Kite names them (``NIFTY``).
- ``expiry`` is the date, in India (UTC+05:30), of the ``Expiry date`` instant; derivatives must
  have one; for cash and indices it is always None (the field is checked, then dropped).
- ``strike`` (options only, else 0) and ``tick_size`` are finite, non-negative rupees.
- ``lot_size`` is ``Minimum lot size``; ``isin`` is ``ISIN`` (empty or 12 letters and digits);
  ``exchange_token`` is ``Scrip code`` (at most 2**32 - 1, as exchanges' tokens are 32 bits).
- ``tokens`` holds one `BrokerToken` for broker and feed ``fyers``: a Fytoken carries its
  exchange and segment, so it is unique across all of Fyers and Fyers is a single feed.

The Fytoken rule (a gate, refused with field ``Fytoken``): a Fytoken's decimal text is the
exchange code, the segment code, six digits, and the scrip code: ``1010`` + ``000000`` +
``2885`` for NSE:RELIANCE-EQ. The six digits are ``000000`` for cash and indices and the expiry
as ``YYMMDD`` (in India) for derivatives: ``1011`` + ``240425`` + ``68114`` for
NSE:NIFTY24APR22500CE. Each part is checked against fields 11, 12, 9 and 13; the value must also
be below 2**64 - 1, the snapshot's "no token".

Refused besides: an empty Fytoken, Scrip code, Exchange, Segment, Exchange instrument type,
Minimum lot size, Tick size or Symbol ticker; an integer that is not plain ASCII digits, or
above its bound (Fytoken 2**64 - 2, Scrip code and Minimum lot size 2**32 - 1, a type code 999);
a tick size or strike that is not a finite, non-negative plain decimal; an expiry that is not
epoch seconds; a row longer than `csv.field_size_limit` (131,072 characters); and input without
a single row.

Rows are numbered from 1 (no header); blank lines are skipped but counted, so row N is line N.
Every refusal is a `SourceError` with the row and the field, e.g. ``fyers=NSE_FO.csv: row 7,
field Fytoken: '10112404256811' does not end with Scrip code 68114``. Duplicate keys or tokens
and expired contracts are not this module's business (`resolverd.validate`).

`parse_fyers_rows` is the pure core (text in, records out); `read_fyers` reads a file.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import itertools
import os
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple, NoReturn

from ..errors import SourceError
from ..model import EPOCH, BrokerToken, Instrument
from ._common import (
    Loaded,
    Warn,
    csv_field_at,
    decode_utf8,
    fail,
    kite_segment,
    missing_field,
    parse_number,
    parse_uint,
    read_source,
    strip_eq,
)

__all__ = [
    "FIELDS",
    "Warn",
    "load_fyers",
    "parse_fyers",
    "parse_fyers_rows",
    "read_fyers",
    "sniff",
]

FIELDS = (
    "Fytoken",
    "Symbol details",
    "Exchange instrument type",
    "Minimum lot size",
    "Tick size",
    "ISIN",
    "Trading session",
    "Last update date",
    "Expiry date",
    "Symbol ticker",
    "Exchange",
    "Segment",
    "Scrip code",
    "Underlying symbol",
    "Underlying scrip code",
    "Strike price",
    "Option type",
    "Underlying Fytoken",
    "Reserved 1",
    "Reserved 2",
    "Reserved 3",
)
WIDTH = len(FIELDS)


# The fields the loader reads, in the order the hot loop unpacks them.
_READ = itemgetter(0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 15, 16)

_BOM = "\ufeff"
_U32_MAX = 2**32 - 1
_FYTOKEN_MAX = 2**64 - 2  # 2**64 - 1 is the snapshot's NO_TOKEN
_IST = 19_800  # seconds east of UTC; Fyers' expiries are close times in India
_EXPIRY_MAX = 253_402_300_799 - _IST  # 9999-12-31 23:59:59 in India
_NUMBER_CHARS = frozenset("0123456789.eE+-")
_NO_STRIKE = frozenset({"-1.0", "-1"})  # what Fyers writes as the strike of a non-option

_EXCHANGES = {"10": "NSE", "11": "MCX", "12": "BSE"}


class _Segment(NamedTuple):
    exchange: str  # Kite's
    ticker_prefix: str
    name: str


_SEGMENTS = {
    ("10", "10"): _Segment("NSE", "NSE:", "NSE CM"),
    ("10", "11"): _Segment("NFO", "NSE:", "NSE FO"),
    ("10", "12"): _Segment("CDS", "NSE:", "NSE CD"),
    ("10", "20"): _Segment("NCO", "NSE:", "NSE COM"),
    ("12", "10"): _Segment("BSE", "BSE:", "BSE CM"),
    ("12", "11"): _Segment("BFO", "BSE:", "BSE FO"),
    ("12", "12"): _Segment("BCD", "BSE:", "BSE CD"),
    ("11", "20"): _Segment("MCX", "MCX:", "MCX COM"),
}

# Kinds of row: what a (segment code, instrument type code) pair loads as.
_EQ, _INDEX, _FUT, _OPT = "EQ", "INDEX", "FUT", "OPT"

# Per segment code: type code -> (Fyers' name, kind, or None to skip the row).
_TYPES: dict[str, dict[str, tuple[str, str | None]]] = {
    "10": {
        "0": ("EQ", _EQ),
        "1": ("PREFSHARES", _EQ),
        "2": ("DEBENTURES", _EQ),
        "3": ("WARRANTS", _EQ),
        "4": ("MISC", _EQ),
        "5": ("SGB", _EQ),
        "6": ("G-Secs", _EQ),
        "7": ("T-Bills", _EQ),
        "8": ("MF", _EQ),
        "9": ("ETF", _EQ),
        "10": ("INDEX", _INDEX),
        "50": ("MISC", _EQ),
    },
    "11": {
        "11": ("FUTIDX", _FUT),
        "12": ("FUTIVX", _FUT),
        "13": ("FUTSTK", _FUT),
        "14": ("OPTIDX", _OPT),
        "15": ("OPTSTK", _OPT),
    },
    "12": {
        "16": ("FUTCUR", _FUT),
        "17": ("FUTIRT", _FUT),
        "18": ("FUTIRC", _FUT),
        "19": ("OPTCUR", _OPT),
        "20": ("UNDCUR", None),
        "21": ("UNDIRC", None),
        "22": ("UNDIRT", None),
        "23": ("UNDIRD", None),
        "24": ("INDEX_CD", None),
        "25": ("FUTIRD", _FUT),
    },
    "20": {
        "11": ("FUTIDX", _FUT),
        "30": ("FUTCOM", _FUT),
        "31": ("OPTFUT", _OPT),
        "32": ("OPTCOM", _OPT),
        "33": ("FUTBAS", _FUT),
        "34": ("FUTBLN", _FUT),
        "35": ("FUTENR", _FUT),
        "36": ("OPTBLN", _OPT),
        "37": ("OPTFUT", _OPT),
    },
}


class _Kind(NamedTuple):
    """Everything the hot loop needs to know about one (exchange, segment, type) triple."""

    skip: str | None  # the warning for a row we do not load, else None
    exchange: str
    segment: str  # Kite's segment; for an option, the -OPT one
    instrument_type: str  # "" for an option: the row's Option type says which
    ticker_prefix: str
    fytoken_prefix: str
    cash: bool  # cash or index: no expiry, Fytoken middle 000000, name from Symbol details
    symbol_rule: str  # "eq": strip -EQ; "group": strip the BSE group; "": keep


def _kind(exchange_code: str, segment_code: str, type_code: str) -> _Kind:
    segment = _SEGMENTS[(exchange_code, segment_code)]
    name, kind = _TYPES[segment_code].get(type_code, ("", None))
    skip = None
    if kind is None:
        skip = (
            f"skipped: Exchange instrument type {type_code} ({name}) is not cash equity, an"
            " index, a future or an option"
            if name
            else f"skipped: Exchange instrument type {type_code} is not one Fyers documents for"
            f" {segment.name}"
        )
    exchange = segment.exchange
    if kind == _INDEX:
        kite_type, kite_seg, rule = "EQ", "INDICES", ""
    elif kind == _EQ:
        kite_type, kite_seg = "EQ", kite_segment(exchange, "EQ")
        rule = "group" if exchange == "BSE" else "eq"
    elif kind == _FUT:
        kite_type, kite_seg, rule = "FUT", kite_segment(exchange, "FUT"), ""
    else:
        kite_type, kite_seg, rule = "", kite_segment(exchange, "CE"), ""
    return _Kind(
        skip=skip,
        exchange=exchange,
        segment=kite_seg,
        instrument_type=kite_type,
        ticker_prefix=segment.ticker_prefix,
        fytoken_prefix=exchange_code + segment_code,
        cash=kind in (_EQ, _INDEX),
        symbol_rule=rule,
    )


_KINDS = {
    (exchange, segment, code): _kind(exchange, segment, code)
    for exchange, segment in _SEGMENTS
    for code in _TYPES[segment]
}


def sniff(head: str) -> bool:
    """Whether text starting with `head` is a Fyers symbol master: its first line has 21 fields,
    a Fytoken that starts with the line's exchange and segment codes (a known pair) and ends
    with its scrip code, and a ticker with the exchange's prefix (``NSE:``). A file with a
    header row (Kite's, Upstox's, Dhan's) or JSON (Angel One's) fails on the first test."""
    line = head.partition("\n")[0].rstrip("\r")
    try:
        fields = next(csv.reader([line]), [])
    except csv.Error:
        return False
    if len(fields) != WIDTH:
        return False
    fytoken, ticker, exchange, segment, scrip = fields[0], *fields[9:13]
    known = _SEGMENTS.get((exchange, segment))
    return (
        known is not None
        and fytoken.isdigit()
        and fytoken.isascii()
        and scrip.isdigit()
        and fytoken.startswith(exchange + segment)
        and fytoken.endswith(scrip)
        and ticker.startswith(known.ticker_prefix)
    )


def parse_fyers(
    text_or_lines: str | Iterable[str], source: str, warn: Warn | None = None
) -> Iterator[Instrument]:
    """Yield one `Instrument` per kept row (`parse_fyers_rows` without the row numbers)."""
    for _, instrument in parse_fyers_rows(text_or_lines, source, warn):
        yield instrument


def parse_fyers_rows(
    text_or_lines: str | Iterable[str], source: str, warn: Warn | None = None
) -> Iterator[tuple[int, Instrument]]:
    """Yield (row number, `Instrument`) per row of a Fyers symbol master that we model.

    `text_or_lines` is the whole text, or its lines as a file opened with ``newline=""`` splits
    them; a leading byte-order mark is ignored. `source` labels the input in error messages
    (``fyers=NSE_FO.csv``). A row of a kind we do not model is not yielded: `warn`, if given,
    is called with (detail, row, field) for each. Performs no I/O.

    Raises `SourceError` for the first bad row, and, once the input is exhausted, if it held no
    rows at all. Records already yielded stay valid.
    """
    records = _records(text_or_lines, source)
    fyers = "fyers"
    kinds = dict(_KINDS)
    dates: dict[str, tuple[dt.date | None, str]] = {}
    floats: dict[str, float] = {}
    rows = row = 0
    # Hot loop: one itemgetter call unpacks a row, one dict lookup classifies it, integers are
    # checked with str methods (and a length bound, since int() refuses over 4,300 digits)
    # rather than a regex, and each distinct expiry, strike and tick text is parsed once (a
    # derivatives master repeats each of them over many rows). The split path of `_records`
    # and this loop read about 275,000 rows per CPU second (a 1,000,000-row file written by
    # bench/masters/fyers.py).
    try:
        for row, fields in records:
            if len(fields) != WIDTH:
                if not fields or fields == [""]:
                    continue
                _wrong_width(fields, source, row)
            rows += 1
            (
                fytoken_s,
                details,
                type_s,
                lot_s,
                tick_s,
                isin,
                expiry_s,
                ticker,
                exchange_s,
                segment_s,
                scrip_s,
                underlying,
                strike_s,
                option,
            ) = _READ(fields)

            kind = kinds.get((exchange_s, segment_s, type_s))
            if kind is None:
                kind = kinds[(exchange_s, segment_s, type_s)] = _unknown_kind(
                    exchange_s, segment_s, type_s, source, row
                )
            if kind.skip is not None:
                if warn is not None:
                    warn(kind.skip, row, "Exchange instrument type")
                continue

            if len(fytoken_s) <= 20 and fytoken_s.isdigit() and fytoken_s.isascii():
                token = int(fytoken_s)
                if token > _FYTOKEN_MAX:
                    _out_of_range(fytoken_s, _FYTOKEN_MAX, source, row, "Fytoken")
            else:
                _bad_uint(fytoken_s, _FYTOKEN_MAX, source, row, "Fytoken")
            if len(scrip_s) <= 10 and scrip_s.isdigit() and scrip_s.isascii():
                xtoken = int(scrip_s)
                if xtoken > _U32_MAX:
                    _out_of_range(scrip_s, _U32_MAX, source, row, "Scrip code")
            else:
                _bad_uint(scrip_s, _U32_MAX, source, row, "Scrip code")

            try:
                expiry, yymmdd = dates[expiry_s]
            except KeyError:
                expiry, yymmdd = dates[expiry_s] = _expiry(expiry_s, source, row)
            if kind.cash:
                expiry, yymmdd = None, "000000"
            elif expiry is None:
                fail(source, row, "Expiry date", f"{expiry_s!r}: a future or option needs one")
            if fytoken_s != f"{kind.fytoken_prefix}{yymmdd}{scrip_s}":
                _bad_fytoken(fytoken_s, kind.fytoken_prefix, yymmdd, scrip_s, source, row)

            prefix = kind.ticker_prefix
            if not ticker.startswith(prefix) or len(ticker) == len(prefix):
                _bad_ticker(ticker, prefix, source, row)
            symbol = ticker[len(prefix) :]
            if kind.symbol_rule == "eq":
                symbol = strip_eq(symbol)
            elif kind.symbol_rule == "group":
                share, dash, _ = symbol.rpartition("-")
                if dash and share:
                    symbol = share

            itype = kind.instrument_type
            if itype:
                if option != "XX":
                    fail(
                        source,
                        row,
                        "Option type",
                        f"{option!r} on a row of type {itype} (expected XX)",
                    )
                strike = 0.0
                if strike_s not in _NO_STRIKE and strike_s not in floats:
                    floats[strike_s] = parse_number(strike_s, source, row, "Strike price")
            else:
                if option != "CE" and option != "PE":
                    fail(source, row, "Option type", f"{option!r} on an option (expected CE or PE)")
                itype = option
                # Parsed values are never negative, so -1.0 stands for "not parsed yet".
                strike = floats.get(strike_s, -1.0)
                if strike < 0:
                    strike = floats[strike_s] = parse_number(strike_s, source, row, "Strike price")
            tick = floats.get(tick_s, -1.0)
            if tick < 0:
                tick = floats[tick_s] = parse_number(tick_s, source, row, "Tick size")
            if len(lot_s) <= 10 and lot_s.isdigit() and lot_s.isascii():
                lot = int(lot_s)
                if lot > _U32_MAX:
                    _out_of_range(lot_s, _U32_MAX, source, row, "Minimum lot size")
            else:
                _bad_uint(lot_s, _U32_MAX, source, row, "Minimum lot size")
            if isin and not (len(isin) == 12 and isin.isalnum() and isin.isascii()):
                fail(source, row, "ISIN", f"{isin!r} is not 12 letters and digits")

            yield (
                row,
                Instrument(
                    key=f"{kind.exchange}:{symbol}",
                    exchange=kind.exchange,
                    segment=kind.segment,
                    instrument_type=itype,
                    name=details if kind.cash else underlying,
                    expiry=expiry,
                    strike=strike,
                    tick_size=tick,
                    lot_size=lot,
                    isin=isin,
                    exchange_token=xtoken,
                    tokens=(BrokerToken(broker=fyers, feed=fyers, value=token),),
                ),
            )
    except csv.Error as exc:
        fail(source, row + 1, None, f"not valid CSV: {exc}")
    if not rows:
        raise SourceError(source, "no instruments: the input is empty")


def _records(text_or_lines: str | Iterable[str], source: str) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) per line, without a leading byte-order mark.

    Text without a double quote (Fyers quotes nothing) is split with `str.split`, twice as
    fast as `csv.reader` and free of a generator per row; a row longer than
    `csv.field_size_limit` is refused there, as `csv.reader` would refuse a field that long.
    Anything else goes through `csv.reader`, whose `csv.Error` the caller turns into a
    `SourceError`.
    """
    if isinstance(text_or_lines, str):
        text = text_or_lines.removeprefix(_BOM)
        if '"' in text:
            return enumerate(csv.reader(io.StringIO(text, newline="")), 1)
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        lengths = list(map(len, lines))
        limit = csv.field_size_limit()
        if lengths and max(lengths) > limit:
            row = next(i for i, n in enumerate(lengths, 1) if n > limit)
            fail(
                source,
                row,
                None,
                f"{lengths[row - 1]:,} characters, beyond the CSV limit {limit:,}",
            )
        return enumerate(map(str.split, lines, itertools.repeat(",")), 1)
    it = iter(text_or_lines)
    first = next(it, None)
    lines_in = it if first is None else itertools.chain((first.removeprefix(_BOM),), it)
    return enumerate(csv.reader(lines_in), 1)


def load_fyers(path: str | os.PathLike[str], source: str | None = None) -> list[Instrument]:
    """Read a Fyers symbol master file into a list of records (`read_fyers`'s records)."""
    return read_fyers(path, source).instruments


def read_fyers(path: str | os.PathLike[str], source: str | None = None) -> Loaded:
    """Read a Fyers symbol master file (plain or gzip) with each record's row number; each row
    of a kind we do not model is a warning of the result.

    The file must be UTF-8 (a leading byte-order mark is tolerated). `source` labels the file in
    error messages and defaults to ``fyers=<file name>``.

    Raises `SourceMissingError` if the file does not exist or cannot be read, and `SourceError`
    for a byte that is not UTF-8 (naming its row and column) or any bad row (see the module
    docstring).
    """
    path = Path(path)
    if source is None:
        source = f"fyers={path.name}"
    named = functools.partial(csv_field_at, columns=FIELDS)
    text = decode_utf8(read_source(path, source), source, field_at=named)
    loaded = Loaded(source)
    for row, instrument in parse_fyers_rows(text, source, loaded.warn):
        loaded.add(row, instrument)
    return loaded


def _wrong_width(fields: list[str], source: str, row: int) -> NoReturn:
    hint = " (is the file cut off?)" if len(fields) < WIDTH else ""
    field = missing_field(FIELDS, fields)
    if len(fields) < WIDTH and fields[0].isalpha():
        hint, field = " (a header row? Fyers' masters have none)", None
    fail(source, row, field, f"{len(fields)} fields, but a Fyers master row has {WIDTH}{hint}")


def _unknown_kind(exchange_s: str, segment_s: str, type_s: str, source: str, row: int) -> _Kind:
    """The kind of a row whose triple is not in the table: a skip for a type code Fyers does
    not document, or a refusal of the exchange, the segment or a type code that is no integer."""
    if exchange_s not in _EXCHANGES:
        if exchange_s.isdigit():
            fail(source, row, "Exchange", f"{exchange_s[:20]!r} is not a Fyers exchange code")
        _bad_uint(exchange_s, 99, source, row, "Exchange")
    if (exchange_s, segment_s) not in _SEGMENTS:
        if not segment_s.isdigit():
            _bad_uint(segment_s, 99, source, row, "Segment")
        known = ", ".join(s for e, s in _SEGMENTS if e == exchange_s)
        fail(
            source,
            row,
            "Segment",
            f"{segment_s[:20]!r} is not a segment of exchange {exchange_s}"
            f" ({_EXCHANGES[exchange_s]}), whose segments are {known}",
        )
    if not (len(type_s) <= 3 and type_s.isdigit() and type_s.isascii()):
        _bad_uint(type_s, 999, source, row, "Exchange instrument type")
    return _kind(exchange_s, segment_s, type_s)


def _bad_uint(text: str, maximum: int, source: str, row: int, field: str) -> NoReturn:
    """Reject `text`, which the hot loop found is not a run of at most so many ASCII digits,
    saying why."""
    if text.isdigit() and text.isascii():
        _out_of_range(text, maximum, source, row, field)
    parse_uint(text, source, row, field)
    raise AssertionError("unreachable: parse_uint accepted what isdigit() refused")


def _out_of_range(text: str, maximum: int, source: str, row: int, field: str) -> NoReturn:
    shown = repr(text) if len(text) <= 30 else f"a {len(text):,}-digit number"
    fail(source, row, field, f"{shown} is out of range 0..{maximum}")


def _bad_fytoken(
    fytoken: str, prefix: str, yymmdd: str, scrip: str, source: str, row: int
) -> NoReturn:
    """Say which part of the Fytoken rule `fytoken` breaks."""
    middle_length = len(fytoken) - len(prefix) - len(scrip)
    if not fytoken.startswith(prefix):
        why = f"does not start with Exchange and Segment {prefix}"
    elif not fytoken.endswith(scrip):
        why = f"does not end with Scrip code {scrip}"
    elif middle_length != 6:
        why = f"has {max(middle_length, 0)} digits between {prefix} and {scrip}, not 6"
    else:
        middle = fytoken[len(prefix) : -len(scrip)]
        why = f"has {middle!r} between exchange, segment and scrip code, where the rule wants" + (
            " 000000 for cash" if yymmdd == "000000" else f" the expiry {yymmdd} (YYMMDD)"
        )
    fail(
        source,
        row,
        "Fytoken",
        f"{fytoken!r} {why}: a Fytoken is exchange + segment + YYMMDD of the expiry (000000 for"
        " cash) + scrip code",
    )


def _bad_ticker(ticker: str, prefix: str, source: str, row: int) -> NoReturn:
    if not ticker:
        fail(source, row, "Symbol ticker", "is empty")
    fail(
        source,
        row,
        "Symbol ticker",
        f"{ticker!r} is not {prefix}<symbol>, as the row's Exchange says",
    )


def _expiry(text: str, source: str, row: int) -> tuple[dt.date | None, str]:
    """The date in India of an ``Expiry date`` in epoch seconds, with its YYMMDD; (None,
    "000000") for an empty field or 0, which is what cash rows hold."""
    if text == "0" or not text.strip():
        return None, "000000"
    if not (text.isdigit() and text.isascii()):
        if text[:1] == "-" and text[1:].isdigit():
            fail(source, row, "Expiry date", f"{text!r} is negative")
        fail(source, row, "Expiry date", f"{text!r} is not a time in epoch seconds")
    if len(text) > 12 or int(text) > _EXPIRY_MAX:
        _out_of_range(text, _EXPIRY_MAX, source, row, "Expiry date")
    seconds = int(text)
    day = EPOCH + dt.timedelta(days=(seconds + _IST) // 86_400)
    return day, f"{day.year % 100:02d}{day.month:02d}{day.day:02d}"
