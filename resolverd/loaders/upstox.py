"""Upstox's BOD instrument master (``complete.json.gz``, ``NSE.json.gz``, ``BSE.json.gz``,
``MCX.json.gz``) -> `Instrument` records.

Upstox publishes its masters at ``assets.upstox.com/market-quote/instruments/exchange/`` as
gzipped JSON: one array, one flat object per instrument (upstox.com/developer/api-documentation/
instruments, "JSON files" and "Sample JSON Object"). The file may be read plain or gzipped.
Object keys are found by name, so their order does not matter; keys this loader does not read
(``exchange``, ``short_name``, ``security_type``, ``freeze_quantity``, ``minimum_lot``,
``weekly``, ``underlying_key``, ``underlying_type``, ``mtf_enabled``, ...) are ignored, as are
any Upstox adds later. The keys read, with their JSON types (a value of another type is
refused; ``null`` counts as absent)::

    key                JSON type  needed by     meaning
    segment            string     every row     NSE_EQ, BSE_EQ, NSE_INDEX, BSE_INDEX, NSE_FO,
                                                BSE_FO, NCD_FO, BCD_FO, MCX_FO, NSE_COM
    instrument_key     string     every row     <segment>|<reference>: NSE_EQ|INE002A01018,
                                                NSE_FO|68114 (see "The key rule")
    trading_symbol     string     every row     RELIANCE; NIFTY 22500 CE 25 APR 24
    instrument_type    string     every row     the NSE series or BSE group for cash (EQ, BE;
                                                A, T), INDEX, FUT, CE, PE
    exchange_token     string     cash and      the exchange's token in decimal ("68114"); a
                                  derivatives   JSON integer is taken too, as the docs' index
                                                table calls it a number
    lot_size           integer    cash and      units per lot
                                  derivatives
    tick_size          number     cash and      in PAISE: 5.0 is 0.05 rupees, 0.25 is 0.0025
                                  derivatives
    expiry             integer    derivatives   epoch MILLISECONDS of the expiry instant;
                                                Upstox writes 23:59:59 in India
                                                (1714069799000 is 2024-04-25)
    strike_price       number     options       rupees (22500.0, 83.25)
    name               string     -             the company's name; the underlying's
    underlying_symbol  string     -             a derivative's underlying (NIFTY, IDEA)
    isin               string     -             a cash instrument's ISIN

Segments, the Kite exchange each maps to, and what is read from them:

==========  =============  ===================================================
segment     Kite exchange  kept instrument types
==========  =============  ===================================================
NSE_EQ      ``NSE``        every series of NSE's "Legend of series" (one to three
                           letters and digits): EQ, BE, BZ (shares and ETFs), SM,
                           ST, SZ (SME), REITs, InvITs, warrants, preference
                           shares, and the debt of the cash segment: bonds and
                           debentures (N1, YL...), gold bonds (GB), state loans
                           (SG), G-Secs (GS), T-bills (TB)
BSE_EQ      ``BSE``        every group (A, B, T, X, Z, ..., F debt, G government
                           securities)
NSE_INDEX   ``NSE``        INDEX (segment ``INDICES``, type ``EQ``)
BSE_INDEX   ``BSE``        INDEX
NSE_FO      ``NFO``        FUT, CE, PE
BSE_FO      ``BFO``        FUT, CE, PE
NCD_FO      ``CDS``        FUT, CE, PE (NSE currency derivatives)
BCD_FO      ``BCD``        FUT, CE, PE (BSE currency derivatives)
MCX_FO      ``MCX``        FUT, CE, PE
NSE_COM     ``NCO``        FUT, CE, PE (NSE commodity derivatives)
==========  =============  ===================================================

Every cash row loads as ``EQ``, debt included, because users resolve tokens for bonds, gold
bonds and government securities too (Kite lists them the same way). What is skipped is what is
not a tradable contract, or is not one resolverd models: any other segment (``MCX_INDEX``, a
reference index; a segment Upstox adds later), another instrument type on an index or
derivatives segment, and an NSE cash row whose ``instrument_type`` is not a series (empty, or
not one to three ASCII letters and digits), which could not name its key. Such a row is
reported through the ``warn`` callback (one call per row, with its row number and the field that
decided) and yields nothing. Only the kept kinds are checked beyond their JSON types.

Mapping, one kept object to one `Instrument`:

- ``key`` is the Kite exchange, a colon, and ``trading_symbol`` less a trailing ``-EQ``
  (`strip_eq`): ``NSE:RELIANCE``, ``NFO:NIFTY 22500 CE 25 APR 24``. On NSE cash a series other than
  EQ is appended as Kite names it (``JOCIL`` in series BE is ``NSE:JOCIL-BE``, the gold bond
  ``SGBAUG28V`` in series GB is ``NSE:SGBAUG28V-GB``), since Upstox keeps the series in
  ``instrument_type`` only, and two series of one symbol are two instruments; BSE groups are not
  (Kite's ``BSE:SBIN`` whatever its group: a share's group changes, the share does not). Upstox's
  derivative symbols are its own (``NIFTY 22500 CE 25 APR 24``, not Kite's ``NIFTY24APR22500CE``):
  instruments of several brokers join on the exchange token, never on the symbol (`resolverd.join`),
  and the first source given names the key.
- ``segment`` is `kite_segment` of exchange and type (``NFO-OPT``), ``INDICES`` for an index;
  ``instrument_type`` is ``EQ`` for cash and indices, else ``FUT``, ``CE`` or ``PE``.
- ``name`` is ``underlying_symbol`` for derivatives (Kite's name for them: ``IDEA``, not
  ``VODAFONE IDEA LIMITED``), or ``name`` when that is missing; ``name`` for the rest.
- ``expiry`` is the date in India (UTC+05:30) of the ``expiry`` instant, for derivatives only
  (the field is type-checked, then dropped, elsewhere). An instant before 2000-01-01 is refused:
  it is epoch seconds, or no date at all.
- ``strike`` is ``strike_price`` for options (0 for futures and cash); ``tick_size`` is
  ``tick_size`` / 100; both are non-negative. ``lot_size`` is an integer 0..2**32 - 1.
  Indices carry neither lot nor tick in Upstox's sample; they get 0 and 0, as in Kite's dump.
- ``isin`` is ``isin`` on cash rows when it is 12 ASCII letters and digits; any other non-empty
  value is dropped with a warning (Upstox lists test securities with made-up ISINs).
- ``exchange_token`` is ``exchange_token`` (at most 2**32 - 1, as exchanges' tokens are 32
  bits); an index without one gets 0, which joins nothing.
- ``tokens`` holds one `BrokerToken` for broker and feed ``upstox`` whose value is the
  ``instrument_key`` string: the key carries its segment, so it is unique across all of Upstox
  and Upstox is a single feed.

The key rule (a gate, refused with field ``instrument_key``): an ``instrument_key`` is the row's
own ``segment``, ``|``, and a non-empty reference. For a derivative the reference is the
``exchange_token`` (``NSE_FO|68114``); for cash it is the ``isin`` when the row has one
(``NSE_EQ|INE002A01018``); an index's reference is its name (``NSE_INDEX|Nifty 50``) and is not
checked further. Upstox's field-pattern appendix allows only word characters and blanks after
the bar; that is a rule for API input and is not enforced here, so that an index named with a
hyphen cannot stop a whole master.

Rows are the array's elements, numbered from 1. Every refusal is a `SourceError` with the row
and the key as Upstox names it, e.g. ``upstox=complete.json: row 1235, field lot_size: Expected
`int | null`, got `str```. A JSON syntax error or a file cut off names the row it falls in, the
line and the byte offset; a byte that is not UTF-8 names its row the same way. A top level that
is not an array, an element that is not an object, a missing key and a value of the wrong type
are refused by the typed decode, which names the element and the key. Duplicate keys or tokens
and expired contracts are not this module's business (`resolverd.validate`).

`parse_upstox_rows` is the pure core (text in, records out); `read_upstox` reads a file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn

import msgspec

from ..errors import SourceError
from ..model import EPOCH, BrokerToken, Instrument
from ._common import (
    Loaded,
    Warn,
    decode_utf8,
    fail,
    json_key_at,
    kite_segment,
    parse_uint,
    read_source,
    strip_eq,
)

__all__ = [
    "SEGMENTS",
    "Warn",
    "load_upstox",
    "parse_upstox",
    "parse_upstox_rows",
    "read_upstox",
    "sniff",
]


# The families of segments; the hot loop compares them by identity.
_CASH, _INDEX, _DERIVATIVE = "cash", "index", "derivative"

# Upstox segment -> (Kite exchange, family).
SEGMENTS: dict[str, tuple[str, str]] = {
    "NSE_EQ": ("NSE", _CASH),
    "BSE_EQ": ("BSE", _CASH),
    "NSE_INDEX": ("NSE", _INDEX),
    "BSE_INDEX": ("BSE", _INDEX),
    "NSE_FO": ("NFO", _DERIVATIVE),
    "BSE_FO": ("BFO", _DERIVATIVE),
    "NCD_FO": ("CDS", _DERIVATIVE),
    "BCD_FO": ("BCD", _DERIVATIVE),
    "MCX_FO": ("MCX", _DERIVATIVE),
    "NSE_COM": ("NCO", _DERIVATIVE),
}

# An NSE series as NSE's "Legend of series" writes them (EQ, BE, N1, GB, W1...): it becomes part
# of the key, so anything else (an empty type, say) cannot name the instrument.
_NSE_SERIES = re.compile(r"[A-Z0-9]{1,3}")
_DERIVATIVE_TYPES = frozenset({"FUT", "CE", "PE"})
# Upstox segment -> (Kite exchange, family, the instrument_key's prefix, Kite segment of each
# derivative type), all the hot loop needs to know of a segment in one lookup.
_PLANS = {
    segment: (
        exchange,
        family,
        f"{segment}|",
        {itype: kite_segment(exchange, itype) for itype in _DERIVATIVE_TYPES},
    )
    for segment, (exchange, family) in SEGMENTS.items()
}

_U32_MAX = 2**32 - 1
_U32_DIGITS = len(str(_U32_MAX))
_SHOWN = 60  # the longest value a message quotes whole
_IST_SECONDS = 5 * 3600 + 30 * 60
_DAY_SECONDS = 86_400
# Expiries before this (2000-01-01, in epoch ms) are taken for seconds or garbage, not dates.
_EARLIEST_EXPIRY_MS = 946_684_800_000
_LATEST_DAYS = (dt.date.max - EPOCH).days
_ISIN = re.compile(r"[A-Z0-9]{12}")

# How an Upstox master starts: an array whose first object has an instrument_key of a known
# Upstox segment (Angel One's JSON master has ``token`` and ``exch_seg`` instead).
_SNIFF = re.compile(
    r'\s*\[\s*\{[^{}]*"instrument_key"\s*:\s*"(?:' + "|".join([*SEGMENTS, "MCX_INDEX"]) + r")\|"
)
_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")
_ERROR_PATH = re.compile(r"^(?P<detail>.*) - at `\$(?:\[(?P<index>\d+)\])?(?P<rest>[^`]*)`$")
_MISSING_KEY = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_BOM = b"\xef\xbb\xbf"


class _Row(msgspec.Struct, gc=False):
    """The keys of one instrument object the loader reads, in the order the hot loop unpacks
    them; msgspec ignores the others. Untracked by the garbage collector: it holds only
    strings and numbers."""

    segment: str
    instrument_key: str
    trading_symbol: str
    instrument_type: str
    exchange_token: str | int | None = None
    lot_size: int | None = None
    tick_size: float | None = None
    expiry: int | None = None
    strike_price: float | None = None
    name: str | None = None
    underlying_symbol: str | None = None
    isin: str | None = None


_DECODER = msgspec.json.Decoder(list[_Row])
_RAW_DECODER = msgspec.json.Decoder(list[msgspec.Raw])


def sniff(head: str) -> bool:
    """Whether text starting with `head` is an Upstox master: a JSON array whose first object
    has an ``instrument_key`` starting with an Upstox segment and a bar (``"NSE_EQ|``). CSV
    masters (Kite's, Fyers', Dhan's) and Angel One's JSON, which has no such key, are not."""
    return _SNIFF.match(head) is not None


def parse_upstox(
    text_or_lines: str | bytes | Iterable[str], source: str, warn: Warn | None = None
) -> Iterator[Instrument]:
    """Yield one `Instrument` per kept object (`parse_upstox_rows` without the row numbers)."""
    for _, instrument in parse_upstox_rows(text_or_lines, source, warn):
        yield instrument


def parse_upstox_rows(
    text_or_lines: str | bytes | Iterable[str], source: str, warn: Warn | None = None
) -> Iterator[tuple[int, Instrument]]:
    """Yield (row number, `Instrument`) per kept object of an Upstox JSON master.

    `text_or_lines` is the JSON text (a leading byte-order mark is tolerated), its UTF-8 bytes,
    or its lines. `source` labels the input in error messages (``upstox=complete.json``). A
    row of a kind resolverd does not model yields nothing; `warn`, if given, is told of it.
    Performs no I/O.

    Raises `SourceError` for input that is not a JSON array of objects, for the first bad row,
    and if the input holds no instrument that is kept. Nothing is yielded before the whole text
    has been decoded, so a syntax error anywhere means no records at all.
    """
    text = _text(text_or_lines, source)
    rows = _decode(text, source)
    if not rows:
        raise SourceError(source, "no instruments: the JSON array is empty")

    upstox = "upstox"
    astuple = msgspec.structs.astuple
    # Hot loop: a row is unpacked from its struct in one call, the common cases are tested
    # first with str methods, and each distinct expiry, tick and strike is converted and
    # checked once (a master has a few hundred of each in a million rows). Instrument and
    # BrokerToken are built positionally, which is faster than by keyword. A million-row file
    # from bench.masters.upstox reads in about 4 s, 1 s of it msgspec's decode; bench.loaders
    # measures it.
    dates: dict[int, dt.date] = {}
    ticks: dict[float, float] = {}
    strikes: dict[float, float] = {}
    kept = 0
    for row, fields in enumerate(map(astuple, rows), 1):
        (
            segment,
            ikey,
            symbol,
            itype,
            xtoken_value,
            lot,
            paise,
            ms,
            strike_value,
            name,
            underlying,
            isin,
        ) = fields
        plan = _PLANS.get(segment)
        if plan is None:
            _warn(warn, f"segment {_shown(segment)} is not one resolverd models", row, "segment")
            continue
        exchange, kind, bar, out_segments = plan
        # The kind decides first: a row that is skipped is not checked any further.
        if kind is _DERIVATIVE:
            if itype not in _DERIVATIVE_TYPES:
                _skip_type(warn, f"{segment} type", itype, "is not modelled", row)
                continue
        elif kind is _INDEX:
            if itype != "INDEX":
                _skip_type(warn, f"{segment} type", itype, "is not an index", row)
                continue
        elif exchange == "NSE" and itype != "EQ" and not _NSE_SERIES.fullmatch(itype):
            _skip_type(warn, "NSE series", itype, "is not a series that can name the key", row)
            continue

        cut = len(bar)
        if not ikey.startswith(bar) or len(ikey) == cut:
            _bad_key(ikey, segment, source, row)
        if not symbol:
            fail(source, row, "trading_symbol", "is empty")
        reference = ikey[cut:]

        if kind is _DERIVATIVE:
            if (
                reference == xtoken_value
                and len(reference) <= _U32_DIGITS
                and reference.isdigit()
                and reference.isascii()
            ):
                xtoken = int(reference)
                if xtoken > _U32_MAX:
                    _bad_range(xtoken, source, row, "exchange_token")
            else:
                xtoken = _derivative_token(ikey, reference, xtoken_value, segment, source, row)
            if ms is None:
                fail(source, row, "expiry", "is missing: a derivative needs one")
            expiry = dates.get(ms)
            if expiry is None:
                expiry = dates[ms] = _date(ms, source, row)
            if itype == "FUT":
                strike = 0.0
            else:
                if strike_value is None:
                    fail(source, row, "strike_price", "is missing: an option needs one")
                strike = strikes.get(strike_value, -1.0)
                if strike < 0:
                    strike = strikes[strike_value] = _rupees(
                        strike_value, source, row, "strike_price", 1
                    )
            name = underlying or name or ""
            isin = ""
            out_type = itype
            out_segment = out_segments[itype]
        elif kind is _CASH:
            xtoken = _token(xtoken_value, source, row)
            if isin is None:
                isin = ""
            elif isin:
                if reference != isin:
                    fail(
                        source,
                        row,
                        "instrument_key",
                        f"{_shown(ikey)} does not end with the isin {_shown(isin)}: a share's"
                        " key is"
                        f" {bar}<isin>",
                    )
                if not _ISIN.fullmatch(isin):
                    _warn(warn, f"{_shown(isin)} is not an ISIN; dropped", row, "isin")
                    isin = ""
            symbol = strip_eq(symbol)
            # Kite names NSE cash outside the EQ series with its series: NSE:JOCIL-BE, and a
            # gold bond NSE:SGBAUG28V-GB.
            if itype != "EQ" and exchange == "NSE" and not symbol.endswith("-" + itype):
                symbol = f"{symbol}-{itype}"
            expiry = None
            strike = 0.0
            name = name or ""
            out_type = "EQ"
            out_segment = exchange
        else:
            xtoken = 0 if xtoken_value is None else _token(xtoken_value, source, row)
            expiry = None
            strike = 0.0
            name = name or ""
            isin = ""
            out_type = "EQ"
            out_segment = "INDICES"

        if lot is None:
            lot = 0 if kind is _INDEX else _missing(source, row, "lot_size")
        elif not 0 <= lot <= _U32_MAX:
            _bad_range(lot, source, row, "lot_size")
        if paise is None:
            tick = 0.0 if kind is _INDEX else _missing(source, row, "tick_size")
        else:
            tick = ticks.get(paise, -1.0)
            if tick < 0:
                tick = ticks[paise] = _rupees(paise, source, row, "tick_size", 100)

        kept += 1
        yield (
            row,
            Instrument(
                f"{exchange}:{symbol}",
                exchange,
                out_segment,
                out_type,
                name,
                expiry,
                strike,
                tick,
                lot,
                isin,
                xtoken,
                (BrokerToken(upstox, upstox, ikey),),
            ),
        )
    if not kept:
        raise SourceError(
            source, f"no instruments: none of the {len(rows)} rows is of a kind resolverd models"
        )


def load_upstox(path: str | os.PathLike[str], source: str | None = None) -> list[Instrument]:
    """Read an Upstox JSON master into a list of records (`read_upstox`'s records)."""
    return read_upstox(path, source).instruments


def read_upstox(path: str | os.PathLike[str], source: str | None = None) -> Loaded:
    """Read an Upstox JSON master (plain or gzip) with each record's row number; each row of a
    kind resolverd does not model is a warning of the result.

    The file must be UTF-8 (a leading byte-order mark is tolerated). `source` labels the file in
    error messages and defaults to ``upstox=<file name>``.

    Raises `SourceMissingError` if the file does not exist or cannot be read, and `SourceError`
    for a byte that is not UTF-8 (naming its row), bad JSON or any bad row (see the module
    docstring).
    """
    path = Path(path)
    if source is None:
        source = f"upstox={path.name}"
    text = _decode_utf8(read_source(path, source), source)
    loaded = Loaded(source)
    add_row, add_instrument = loaded.rows.append, loaded.instruments.append
    for row, instrument in parse_upstox_rows(text, source, loaded.warn):
        add_row(row)
        add_instrument(instrument)
    return loaded


# -- text and JSON -----------------------------------------------------------------------------


def _text(text_or_lines: str | bytes | Iterable[str], source: str) -> str:
    if isinstance(text_or_lines, bytes):
        text = _decode_utf8(text_or_lines, source)
    elif isinstance(text_or_lines, str):
        text = text_or_lines
    else:
        text = "".join(text_or_lines)
    text = text.removeprefix("\ufeff")
    # isspace() stops at the first other character; strip() would copy a 300 MB text.
    if not text or text.isspace():
        raise SourceError(source, "no instruments: the input is empty")
    return text


def _decode_utf8(data: bytes, source: str) -> str:
    """`decode_utf8`, with the row of a bad byte counted in array elements rather than lines
    (Upstox writes its whole master on one line)."""
    try:
        return decode_utf8(data, source)
    except SourceError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            offset, reason = bad.start, bad.reason
        else:  # pragma: no cover - decode_utf8 refused what Python's codec accepts
            raise
        where = _where(data, offset)
        raise SourceError(
            source,
            f"byte 0x{data[offset]:02x} at {where} is not UTF-8 ({reason})",
            row=_element_row(data, offset),
            field=json_key_at(data, offset),
        ) from exc


def _decode(text: str, source: str) -> list[_Row]:
    """The typed array, or a `SourceError` naming the element, the key, or the line and byte."""
    try:
        return _DECODER.decode(text)
    except msgspec.ValidationError as exc:
        _invalid(str(exc), source)
    except msgspec.DecodeError as exc:
        data = text.encode("utf-8")
        message = str(exc)
        found = _BYTE_OFFSET.search(message)
        offset = int(found.group(1)) if found else len(data)
        if "truncated" in message:
            detail = f"the JSON is cut off: it ends at {_where(data, offset)}"
        else:
            detail = f"not valid JSON at {_where(data, offset)}: {_plain_json_error(message)}"
        row = None if "trailing characters" in message else _element_row(data, offset)
        raise SourceError(source, detail, row=row) from exc


def _invalid(message: str, source: str) -> NoReturn:
    """Turn msgspec's ``Expected `int`, got `str` - at `$[12].lot_size``` into row 13, field
    lot_size."""
    found = _ERROR_PATH.match(message)
    if found is None:
        if message.startswith("Expected `array`"):
            fail(source, None, None, f"the top level is not a JSON array ({message})")
        fail(source, None, None, message)
    detail, index, rest = found.group("detail", "index", "rest")
    row = None if index is None else int(index) + 1
    field = rest.lstrip(".").split(".", 1)[0].split("[", 1)[0] or None
    missing = _MISSING_KEY.match(detail)
    if missing is not None:
        fail(source, row, missing.group("field"), "is missing: the object has no such key")
    if field is None and detail.startswith("Expected `object`"):
        fail(source, row, None, f"the element is not a JSON object ({detail})")
    fail(source, row, field, detail)


def _plain_json_error(message: str) -> str:
    return _BYTE_OFFSET.sub("", message.removeprefix("JSON is malformed: ")).strip()


def _where(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    return f"line {line}, byte offset {offset}"


def _element_row(data: bytes, offset: int) -> int | None:
    """The row (element number) in which byte `offset` of the array `data` falls.

    Error path only. Instrument objects are flat, so the last ``}`` before `offset` that closes
    a valid prefix of the array ends the previous element: the prefix is decoded (as raw
    elements, which msgspec does at hundreds of MB/s) and counted. A ``}`` inside a string or a
    nested value fails to decode and the one before it is tried, a few times at most.
    """
    start = len(_BOM) if data.startswith(_BOM) else 0
    end = offset
    for _ in range(8):
        close = data.rfind(b"}", start, end)
        if close < 0:
            opened = data[start:offset].lstrip()
            return 1 if opened.startswith(b"[") and opened[1:].lstrip()[:1] == b"{" else None
        try:
            done = _RAW_DECODER.decode(data[start : close + 1] + b"]")
        except msgspec.DecodeError:
            end = close
            continue
        return len(done) + 1
    return None


# -- fields ------------------------------------------------------------------------------------


def _warn(warn: Warn | None, detail: str, row: int, field: str) -> None:
    if warn is not None:
        warn(detail, row, field)


def _skip_type(warn: Warn | None, what: str, itype: str, why: str, row: int) -> None:
    _warn(warn, f"{what} {_shown(itype)} {why}", row, "instrument_type")


def _missing(source: str, row: int, field: str) -> NoReturn:
    fail(source, row, field, "is missing: the object has no such key")


def _bad_range(value: int, source: str, row: int, field: str) -> NoReturn:
    if value < 0:
        fail(source, row, field, f"{value} is negative")
    fail(source, row, field, f"{value} is out of range 0..{_U32_MAX}")


def _bad_key(ikey: str, segment: str, source: str, row: int) -> NoReturn:
    fail(
        source,
        row,
        "instrument_key",
        f"{_shown(ikey)} is not {segment}|<reference>: Upstox keys start with the row's own"
        " segment",
    )


def _token(value: str | int | None, source: str, row: int) -> int:
    """An exchange token: decimal digits in a string (or a JSON integer), at most 2**32 - 1."""
    if isinstance(value, str):
        if value.isdigit() and value.isascii():
            # Length first: int() refuses more than 4,300 digits with a ValueError.
            token = int(value) if len(value) <= _U32_DIGITS else _U32_MAX + 1
            if token > _U32_MAX:
                fail(
                    source, row, "exchange_token", f"{_shown(value)} is out of range 0..{_U32_MAX}"
                )
            return token
        if len(value) > _SHOWN:
            fail(source, row, "exchange_token", f"{_shown(value)} is not an integer")
        parse_uint(value, source, row, "exchange_token", _U32_MAX)
        raise AssertionError("unreachable: parse_uint accepted what isdigit() refused")
    if value is None:
        _missing(source, row, "exchange_token")
    if not 0 <= value <= _U32_MAX:
        _bad_range(value, source, row, "exchange_token")
    return value


def _shown(value: object) -> str:
    """`value` for a message: its repr, cut short if it is long (a field may be megabytes)."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 20]}... ({len(text):,} characters)"


def _derivative_token(
    ikey: str, reference: str, value: str | int | None, segment: str, source: str, row: int
) -> int:
    """The exchange token of a derivative whose key the hot loop could not match at a glance:
    a valid token that is a JSON number, or a `SourceError` saying what is wrong."""
    token = _token(value, source, row)
    if reference != str(value):
        fail(
            source,
            row,
            "instrument_key",
            f"{_shown(ikey)} does not end with the exchange_token {_shown(value)}: a derivative's"
            f" key is"
            f" {segment}|<exchange_token>",
        )
    return token


def _rupees(value: float, source: str, row: int, field: str, per_rupee: int) -> float:
    """A non-negative price in rupees, `value` being in units of 1/`per_rupee` rupee; msgspec
    has already refused NaN and infinities. Dividing (not multiplying by 0.01) gives exactly the
    float a rupee figure is written as: 5.0 / 100 == 0.05, 0.25 / 100 == 0.0025."""
    if value < 0:
        fail(source, row, field, f"{value!r} is negative")
    return value / per_rupee + 0.0  # + 0.0 turns -0.0 into 0.0


def _date(ms: int, source: str, row: int) -> dt.date:
    """The date in India of an instant in epoch milliseconds."""
    if ms < _EARLIEST_EXPIRY_MS:
        hint = " (epoch seconds?)" if ms >= _EARLIEST_EXPIRY_MS // 1000 else ""
        fail(
            source,
            row,
            "expiry",
            f"{ms} is before 2000-01-01 in epoch milliseconds{hint}",
        )
    days = (ms // 1000 + _IST_SECONDS) // _DAY_SECONDS
    if days > _LATEST_DAYS:
        fail(source, row, "expiry", f"{ms} is beyond the last date Python can hold")
    return EPOCH + dt.timedelta(days=days)
