"""Angel One SmartAPI's scrip master, ``OpenAPIScripMaster.json`` -> `Instrument` records.

Angel One publishes every instrument it trades as one JSON document, refreshed each morning at
``https://margincalculator.angelbroking.com/OpenAPI_File/files/OpenAPIScripMaster.json``
(about 35 MB, on one line). It is an array of flat objects, one per instrument, and every value
in them is a JSON string, numbers included::

    [{"token":"2885","symbol":"RELIANCE-EQ","name":"RELIANCE","expiry":"","strike":"-1.000000",
      "lotsize":"1","instrumenttype":"","exch_seg":"NSE","tick_size":"5.000000"},
     {"token":"68114","symbol":"NIFTY25APR2422500CE","name":"NIFTY","expiry":"25APR2024",
      "strike":"2250000.000000","lotsize":"50","instrumenttype":"OPTIDX","exch_seg":"NFO",
      "tick_size":"5.000000"}, ...]

The nine keys read, all required in every object (others, such as the newer ``freeze_qty`` and
``is_cas_enabled``, are ignored whatever their type):

==================  ============================================================================
key                 contents
==================  ============================================================================
``token``           Angel's token: decimal digits, at most 4294967295. For an exchange-traded
                    instrument it is the exchange's own token (NSE's 2885 for RELIANCE); indices
                    get Angel's own (99926000 for Nifty 50). Unique only within an ``exch_seg``.
``symbol``          the trading symbol: ``RELIANCE-EQ`` (NSE cash ends in its series),
                    ``RELIANCE`` (BSE cash), ``Nifty 50`` (an index's display name),
                    ``NIFTY25APR24FUT``, ``NIFTY25APR2422500CE`` (an option ends in CE or PE).
``name``            the underlying or company (``NIFTY``, ``RELIANCE``); may be empty.
``expiry``          ``DDMMMYYYY`` (``25APR2024``, month in capitals); empty for cash and indices.
``strike``          for an option, the strike times 100 (``"2250000.000000"`` is 22500), except
                    currency options (``CDS``), whose strike is times 10,000,000
                    (``"832500000.000000"`` is 83.25); ``"-1.000000"`` (or ``"0.000000"`` for an
                    index) when there is no strike.
``lotsize``         units per lot (``"50"``; ``"1"`` for cash).
``instrumenttype``  empty for cash, ``AMXIDX`` for an index, ``FUT...`` for a future (``FUTIDX``,
                    ``FUTSTK``, ``FUTCUR``, ``FUTCOM``, ``FUTIRC``...), ``OPT...`` for an option
                    (``OPTIDX``, ``OPTSTK``, ``OPTCUR``, ``OPTFUT`` for an option on a commodity
                    future...), and kinds not modelled (``COMDTY``, ``UNDCUR``, ``UNDIRC``...).
``exch_seg``        ``NSE``, ``BSE``, ``NFO``, ``BFO``, ``CDS``, ``MCX``, ``NCO``, ``NCDEX``.
``tick_size``       in paise: ``"5.000000"`` is 0.05 rupees (``"0.250000"`` on CDS is 0.0025).
==================  ============================================================================

Mapping, one object to one `Instrument` in `_common`'s (Kite's) vocabulary:

- ``exchange`` is ``exch_seg`` (NSE, BSE, NFO, BFO, CDS, BCD, MCX and NCO mean what Kite means).
- ``segment`` and ``instrument_type``: an ``AMXIDX`` row is an index (``INDICES``, ``EQ``); an
  empty ``instrumenttype`` on NSE or BSE is cash (``NSE``/``BSE``, ``EQ``) whatever the security:
  shares in any series, ETFs, REITs and InvITs, warrants, preference shares, and the debt that
  trades in the cash segment (bonds and debentures, gold bonds, state loans, G-Secs, T-bills),
  because users resolve tokens for those too, as Kite lists them; ``FUT...`` is ``FUT``
  and ``OPT...`` is ``CE`` or ``PE`` from the symbol's last two letters, in ``<EXCHANGE>-FUT`` or
  ``<EXCHANGE>-OPT``. The ``IDX``/``STK``/``CUR``/``COM`` tail is not needed and not kept.
- ``key`` is ``EXCHANGE:SYMBOL`` with a trailing ``-EQ`` dropped (`_common.strip_eq`):
  ``NSE:RELIANCE``, ``NSE:STALLION-BE``, ``NSE:782GJ32-SG`` (an NSE symbol keeps any other
  series, as Kite's does, which also keeps a bond apart from a share of the same name),
  ``BSE:RELIANCE``, ``NSE:Nifty 50``,
  ``NFO:NIFTY25APR2422500CE``. The symbol is kept as Angel writes it, so derivative keys are
  Angel's (``NIFTY25APR2422500CE``, not Kite's ``NIFTY24APR22500CE``) and index keys keep
  Angel's display names: instruments join across brokers on the exchange token, not the key.
- ``strike`` and ``tick_size`` in rupees (divided as above; no strike is 0); ``lot_size`` is
  ``lotsize``; ``expiry`` a date or None.
- ``exchange_token`` is ``token``, and ``tokens`` holds ``BrokerToken("angel", "angel:<exch_seg>",
  token)``: Angel's tokens repeat across segments (NSE and BSE both have a 2885), so each
  segment is its own feed.

Skipped, each with a warning on `Loaded` (counted, not fatal), and not otherwise checked: the
rows that are not tradable contracts, or are on an exchange we do not model.

- ``exch_seg`` NCDEX, which has no Kite exchange to map to, and any segment not named above.
- every other ``instrumenttype`` (``COMDTY`` spot commodities, ``UNDCUR``/``UNDIRC``
  currency and interest-rate underlyings: reference rows, not contracts), and an empty one on a
  derivatives segment.

Refused with a `SourceError` naming the source, the row and the key: input that is empty, not
UTF-8 or not JSON (a syntax error gives its line and column; a file cut off gives the element it
ends in), a top level that is not an array, an element that is not an object, a missing key, a
value that is not a string, a token or lot size that is not plain digits or is out of range, an
expiry that is not ``DDMMMYYYY``, a strike or tick size that is not a plain non-negative decimal
(``-1`` as a strike excepted), an empty symbol, a future or option without an expiry, an option
whose symbol ends in neither CE nor PE, a future or option on a cash segment, and a file with no
instrument left once the skipped rows are gone. Rows are the array's elements counted from 1
(the file is one line, so a line number would say little). Duplicate keys and tokens, and
expired contracts, are the gates' business (`resolverd.validate`), not this module's.

`parse_angel_rows` is the pure core (text or bytes in, records out); `read_angel` reads a file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NoReturn

import msgspec

from ..errors import SourceError
from ..model import BrokerToken, Instrument
from ._common import (
    DERIVATIVE_EXCHANGES,
    Loaded,
    Warn,
    fail,
    json_key_at,
    kite_segment,
    parse_date,
    parse_number,
    parse_uint,
    read_source,
    shown,
    strip_eq,
)

__all__ = [
    "EXCHANGES",
    "FIELDS",
    "Warn",
    "load_angel",
    "parse_angel_rows",
    "read_angel",
    "sniff",
]

# exch_seg -> Kite exchange: the segments whose instruments we model.
EXCHANGES: Final = {seg: seg for seg in ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX", "NCO")}


_U32_MAX = 2**32 - 1
# Options on these segments write the strike times 10**7, not times 100.
_CURRENCY = frozenset({"CDS", "BCD"})
_MONTHS = frozenset(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
)
_SNIFF_KEYS = ("token", "symbol", "exch_seg", "instrumenttype", "lotsize", "tick_size")

# What a row is, by (exch_seg, instrumenttype); see _plan.
_SKIP, _CASH, _INDEX, _FUTURE, _OPTION = range(5)
_Plan = tuple[int, str, str, str, float, str]


class _Row(msgspec.Struct, gc=False):
    """One element of the array; msgspec ignores the keys not named here."""

    token: str
    symbol: str
    name: str
    expiry: str
    strike: str
    lotsize: str
    instrumenttype: str
    exch_seg: str
    tick_size: str


_DECODER = msgspec.json.Decoder(list[_Row])

# The keys every element must have, in Angel's order.
FIELDS: Final = _Row.__struct_fields__


def sniff(head: str) -> bool:
    """Whether text starting with `head` is an Angel scrip master: a JSON array whose first
    element is an object with Angel's own keys (``exch_seg``, ``instrumenttype``, ``lotsize``
    and ``tick_size`` among them, which no other broker's master uses together)."""
    text = head.lstrip()
    if text[:1] != "[":
        return False
    text = text[1:].lstrip()
    if text[:1] != "{":
        return False
    end = text.find("}")
    first = text if end < 0 else text[: end + 1]
    return all(f'"{key}"' in first for key in _SNIFF_KEYS)


def parse_angel_rows(
    text: str | bytes, source: str, warn: Warn | None = None
) -> Iterator[tuple[int, Instrument]]:
    """Yield (row, `Instrument`) for each element of an Angel scrip master that we model.

    `text` is the whole document, as text or as UTF-8 bytes (a leading byte-order mark is
    dropped). `source` labels it in error messages (``angel=OpenAPIScripMaster.json``). A
    skipped row is reported to `warn`, if given, and not yielded. Performs no I/O.

    Raises `SourceError` for input that is not a scrip master, for the first bad row, and, at
    the end, if no row was kept. The whole document is decoded before the first record is
    yielded, so a syntax error anywhere comes first.
    """
    rows = _decode(text, source)
    del text  # the decoded rows are all we need; let a large document go
    if not rows:
        raise SourceError(source, "no instruments: the array is empty")
    plans: dict[str, dict[str, _Plan]] = {}
    dates: dict[str, dt.date | None] = {"": None}
    numbers: dict[str, float] = {}
    ticks: dict[str, float] = {}
    lots: dict[str, int] = {}
    angel = "angel"
    kept = 0
    # Hot loop: what a row is depends on (exch_seg, instrumenttype) alone and is worked out
    # once per pair, in nested dicts so that no key tuple is built per row; each distinct
    # expiry, strike, tick and lot text is parsed once, as they repeat across thousands of rows.
    for row, r in enumerate(rows, 1):
        by_type = plans.get(r.exch_seg)
        if by_type is None:
            by_type = plans[r.exch_seg] = {}
        plan = by_type.get(r.instrumenttype)
        if plan is None:
            plan = by_type[r.instrumenttype] = _plan(r.exch_seg, r.instrumenttype, source, row)
        kind, exchange, segment, itype, scale, feed = plan
        if kind == _SKIP:
            if warn is not None:
                warn(segment, row, itype)
            continue
        symbol = r.symbol
        if not symbol:
            fail(source, row, "symbol", "is empty")
        if kind == _CASH:
            key = f"{exchange}:{strip_eq(symbol)}"
        else:
            key = f"{exchange}:{symbol}"
            if kind == _OPTION:
                itype = symbol[-2:]
                if itype != "CE" and itype != "PE":
                    fail(
                        source,
                        row,
                        "symbol",
                        f"{shown(symbol, 60)} is an option but ends in neither CE nor PE",
                    )

        token_s = r.token
        if token_s.isdigit() and token_s.isascii() and len(token_s) <= 10:
            token = int(token_s)
            if token > _U32_MAX:
                fail(source, row, "token", f"{token_s!r} is out of range 0..{_U32_MAX}")
        else:
            token = _uint(token_s, source, row, "token")
        try:
            expiry = dates[r.expiry]
        except KeyError:
            expiry = dates[r.expiry] = _date(r.expiry, source, row)
        if expiry is None and kind >= _FUTURE:
            what = "a future" if kind == _FUTURE else "an option"
            fail(source, row, "expiry", f"is empty, but {what} needs one")
        strike = numbers.get(r.strike)
        if strike is None:
            strike = numbers[r.strike] = _strike(r.strike, source, row)
        tick = ticks.get(r.tick_size)
        if tick is None:
            tick = ticks[r.tick_size] = parse_number(r.tick_size, source, row, "tick_size") / 100
        lot = lots.get(r.lotsize)
        if lot is None:
            lot = lots[r.lotsize] = _uint(r.lotsize, source, row, "lotsize")

        kept += 1
        yield (
            row,
            Instrument(
                key=key,
                exchange=exchange,
                segment=segment,
                instrument_type=itype,
                name=r.name,
                expiry=expiry,
                strike=strike / scale,
                tick_size=tick,
                lot_size=lot,
                exchange_token=token,
                tokens=(BrokerToken(broker=angel, feed=feed, value=token),),
            ),
        )
    if not kept:
        raise SourceError(
            source, f"no instruments: all {len(rows):,} rows were of kinds not modelled"
        )


def load_angel(path: str | os.PathLike[str], source: str | None = None) -> list[Instrument]:
    """Read an Angel scrip master into a list of records (`read_angel`'s records)."""
    return read_angel(path, source).instruments


def read_angel(path: str | os.PathLike[str], source: str | None = None) -> Loaded:
    """Read an Angel scrip master (plain or gzip) with each record's row and the skipped rows'
    warnings. `source` labels the file in error messages and defaults to ``angel=<file name>``.

    Raises `SourceMissingError` if the file cannot be read, and `SourceError` if it is empty,
    not UTF-8 (naming the row of the first bad byte) or bad in any way `parse_angel_rows` names.
    """
    path = Path(path)
    if source is None:
        source = f"angel={path.name}"
    loaded = Loaded(source)
    add = loaded.add
    for row, instrument in parse_angel_rows(read_source(path, source), source, loaded.warn):
        add(row, instrument)
    return loaded


# -- what a row is -------------------------------------------------------------------------------


def _plan(seg: str, itype: str, source: str, row: int) -> _Plan:
    """(kind, exchange, segment, instrument type, strike divisor, feed) for a pair of
    ``exch_seg`` and ``instrumenttype``; a skip carries its warning and field in the middle."""
    exchange = EXCHANGES.get(seg)
    if exchange is None:
        why = (
            "NCDEX has no Kite exchange to map to"
            if seg == "NCDEX"
            else f"{seg!r} is not one of {', '.join(EXCHANGES)}"
        )
        return _SKIP, "", f"skipped exchange segment: {why}", "exch_seg", 1.0, ""
    feed = f"angel:{seg}"
    if itype == "AMXIDX":
        return _INDEX, exchange, "INDICES", "EQ", 100.0, feed
    derivatives = exchange in DERIVATIVE_EXCHANGES
    for prefix, kind, normal in (("FUT", _FUTURE, "FUT"), ("OPT", _OPTION, "CE")):
        if itype.startswith(prefix):
            if not derivatives:
                fail(source, row, "instrumenttype", f"{itype!r} on {seg}, a cash segment")
            scale = 10_000_000.0 if kind == _OPTION and exchange in _CURRENCY else 100.0
            return kind, exchange, kite_segment(exchange, normal), normal, scale, feed
    if not itype and not derivatives:
        return _CASH, exchange, exchange, "EQ", 100.0, feed
    what = f"{itype!r}" if itype else "an empty instrumenttype"
    return (
        _SKIP,
        "",
        f"skipped instrument type: {what} on {seg} is not a cash security, an index, a"
        " future or an option",
        "instrumenttype",
        1.0,
        "",
    )


# -- fields --------------------------------------------------------------------------------------


def _uint(text: str, source: str, row: int, field: str) -> int:
    return parse_uint(text, source, row, field, _U32_MAX)


def _date(text: str, source: str, row: int) -> dt.date:
    """``DDMMMYYYY`` only: `parse_date` would also take other brokers' forms."""
    if len(text) == 9 and text[2:5] in _MONTHS and text.isascii():
        return parse_date(text, source, row, "expiry")
    fail(source, row, "expiry", f"{shown(text, 60)} is not a date in Angel's DDMMMYYYY (25APR2024)")


def _strike(text: str, source: str, row: int) -> float:
    """The strike as written, or 0 for Angel's "no strike", ``-1``."""
    if text[:1] == "-":
        try:
            if parse_number(text[1:], source, row, "strike") == 1.0:
                return 0.0
        except SourceError:
            pass
    return parse_number(text, source, row, "strike")


# -- the document --------------------------------------------------------------------------------

_BOM = "\ufeff"
_PATH = re.compile(r" - at `\$(?:\[(\d+)\])?(?:\.(\w+))?[^`]*`$")
_MISSING = re.compile(r"Object missing required field `(\w+)`")
_EXPECTED = re.compile(r"Expected `\w+`, got `(\w+)`")
_BYTE = re.compile(r"\s*\(byte (\d+)\)$")
_JSON_TYPES = {
    "int": "a number",
    "float": "a number",
    "null": "null",
    "bool": "a boolean",
    "array": "an array",
    "object": "an object",
}


def _decode(text: str | bytes, source: str) -> list[_Row]:
    """The array's elements, or a `SourceError` that says where the document is broken."""
    text = _utf8(text, source) if isinstance(text, bytes) else text.removeprefix(_BOM)
    if not text or text.isspace():
        raise SourceError(source, "no instruments: the input is empty")
    try:
        rows: list[_Row] = _DECODER.decode(text)
    except msgspec.ValidationError as exc:
        _shape_error(str(exc), source)
    except msgspec.DecodeError as exc:
        _syntax_error(str(exc), text.encode(), source)
    return rows


def _utf8(data: bytes, source: str) -> str:
    """`data` as text, less a byte-order mark. Like `_common.decode_utf8`, but a bad byte is
    placed by array element, not by line: the master is a single line. msgspec alone would not
    do: it never looks at the values of keys it ignores."""
    try:
        return data.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        fail(
            source,
            _element_at(data, exc.start),
            json_key_at(data, exc.start),
            f"byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) is not UTF-8"
            f" ({exc.reason})",
        )


def _shape_error(message: str, source: str) -> NoReturn:
    """Turn msgspec's ``Expected `str`, got `int` - at `$[12].token``` into row 13, key token."""
    where = _PATH.search(message)
    what = message[: where.start()] if where else message
    row = int(where[1]) + 1 if where and where[1] else None
    field = where[2] if where else None
    if missing := _MISSING.match(what):
        fail(source, row, missing[1], "is missing")
    if expected := _EXPECTED.match(what):
        got = _JSON_TYPES.get(expected[1], expected[1])
        if row is None:
            fail(source, None, None, f"the top level is {got}, not an array of objects")
        if field is None:
            fail(source, row, None, f"the element is {got}, not an object")
        fail(source, row, field, f"is {got}, not a string (Angel quotes every value)")
    fail(source, row, field, what)


def _syntax_error(message: str, data: bytes, source: str) -> NoReturn:
    if message == "Input data was truncated":
        end = len(data)
        row = _element_at(data, end)
        where = f" inside element {row}" if row is not None else ""
        fail(source, row, None, f"the file is cut off: it ends{where} (byte {end})")
    reason = message.removeprefix("JSON is malformed: ")
    if (at := _BYTE.search(reason)) is None:
        fail(source, None, None, f"not valid JSON: {reason}")
    offset = int(at[1])
    reason = reason[: at.start()]
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    fail(
        source,
        _element_at(data, offset),
        None,
        f"not valid JSON at line {line}, column {column} (byte {offset}): {reason}",
    )


_LEADING = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*")
_CHUNK = 1 << 22


def _element_at(data: bytes, offset: int) -> int | None:
    """Which element of the top-level array (from 1) byte `offset` falls in, or None if it is
    not inside the array (before it, or after its end).

    Counts the commas outside strings at depth 1 before `offset`, in numpy over the bytes that
    matter (quotes, brackets, braces, commas; a regex over a whole master took ten seconds). A
    quote opens or closes a string unless an odd run of backslashes precedes it, which is rare
    enough to check one by one. Error path only.
    """
    import numpy as np

    leading = _LEADING.match(data)
    start = leading.end() if leading else 0
    if start >= offset or data[start] != ord("["):
        return None
    whole = np.frombuffer(data, np.uint8)
    marks = np.zeros(256, np.bool_)
    marks[list(b'"[]{},')] = True
    step = np.zeros(256, np.int8)
    step[list(b"[{")] = 1
    step[list(b"]}")] = -1
    depth = inside = commas = 0
    for begin in range(start, offset, _CHUNK):
        at = np.flatnonzero(marks[whole[begin : min(begin + _CHUNK, offset)]]) + begin
        codes = whole[at]
        quote = codes == ord('"')
        for i in np.flatnonzero(quote & (whole[at - 1] == ord("\\"))).tolist():
            run = 1
            while data[at[i] - 1 - run] == ord("\\"):
                run += 1
            quote[i] = run % 2 == 0
        # Odd from an opening quote up to its closing quote (exclusive): inside a string.
        parity = (np.cumsum(quote, dtype=np.int32) + inside) & 1
        outside = parity == 0
        levels = np.cumsum(step[codes] * outside, dtype=np.int32) + depth
        if not levels.all():
            return None  # the array closed before the offset
        commas += int(np.count_nonzero(outside & (codes == ord(",")) & (levels == 1)))
        if len(codes):
            depth, inside = int(levels[-1]), int(parity[-1])
    return commas + 1
