"""What every loader shares: reading a source's bytes, splitting CSV rows, strict field parsers,
Kite's vocabulary for normalized records, and `Loaded`, the one shape a loader returns.

Every loader emits records in one vocabulary, Kite's, whatever the broker calls things, so that
records from different brokers compare and join (`resolverd.join`):

- ``exchange``: ``NSE``, ``BSE`` (cash and indices), ``NFO``, ``BFO`` (equity derivatives),
  ``CDS``, ``BCD`` (currency derivatives), ``MCX``, ``NCO`` (commodities).
- ``segment``: ``NSE``/``BSE`` for cash, ``INDICES`` for an index, ``<EXCHANGE>-FUT`` and
  ``<EXCHANGE>-OPT`` for derivatives (``NFO-OPT``); see `kite_segment`.
- ``instrument_type``: ``EQ`` (cash and indices), ``FUT``, ``CE``, ``PE``.
- ``strike`` and ``tick_size`` in rupees (brokers that write paise are divided by 100),
  ``lot_size`` in units, ``expiry`` a date.
- ``key``: ``EXCHANGE:SYMBOL``, the symbol as the broker writes it less a trailing ``-EQ``
  series tag (``NSE:SBIN-EQ`` is ``NSE:SBIN``, as Kite names it). When several brokers list one
  instrument the first source given names it (`resolverd.join`).

Errors are `SourceError` with the source label, the row and the field; rows are numbered from 1
as the source counts them (a CSV's header is row 1; a JSON array's first element is row 1).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from ..errors import SourceError, SourceMissingError
from ..model import Instrument

__all__ = [
    "CASH_EXCHANGES",
    "DERIVATIVE_EXCHANGES",
    "FieldAt",
    "Loaded",
    "SourceWarning",
    "Warn",
    "csv_field_at",
    "csv_rows",
    "decode_utf8",
    "fail",
    "header_indexes",
    "json_key_at",
    "kite_segment",
    "missing_field",
    "parse_date",
    "parse_number",
    "parse_uint",
    "read_source",
    "shown",
    "strip_eq",
    "wrong_width",
]

CASH_EXCHANGES = frozenset({"NSE", "BSE"})
DERIVATIVE_EXCHANGES = frozenset({"NFO", "BFO", "CDS", "BCD", "MCX", "NCO"})

_BOM = "\ufeff"
_GZIP_MAGIC = b"\x1f\x8b"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class SourceWarning:
    """Something in a source that was accepted or skipped, but that a person should see."""

    source: str
    detail: str
    row: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.row is not None:
            where += f": row {self.row}"
        if self.field is not None:
            where += f"{',' if self.row is not None else ':'} field {self.field}"
        return f"{where}: {self.detail}"


Warn = Callable[[str, int | None, str | None], None]
"""Told of each skipped row by a parser: (detail, row, field), the signature of `Loaded.warn`."""


@dataclass
class Loaded:
    """One source's records, each with the row it came from, and its non-fatal warnings."""

    source: str
    instruments: list[Instrument] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    warnings: list[SourceWarning] = field(default_factory=list)

    def add(self, row: int, instrument: Instrument) -> None:
        self.instruments.append(instrument)
        self.rows.append(row)

    def warn(self, detail: str, row: int | None = None, field: str | None = None) -> None:
        self.warnings.append(SourceWarning(self.source, detail, row, field))

    def __len__(self) -> int:
        return len(self.instruments)


def fail(source: str, row: int | None, field: str | None, detail: str) -> NoReturn:
    raise SourceError(source, detail, row=row, field=field)


def shown(text: str, limit: int = 40) -> str:
    """`text` quoted for a message, cut short if long: a bad field can be megabytes."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


# -- bytes and text ----------------------------------------------------------------------------


def read_source(path: Path, source: str) -> bytes:
    """The file's bytes, gunzipped if they are gzip (by magic number, not by name).

    Raises `SourceMissingError` if the file cannot be read, and `SourceError` if it is empty,
    or is gzip that is cut off or corrupt.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceMissingError(source, f"cannot read {path}: {exc.strerror or exc}") from exc
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            fail(source, None, None, f"the gzip stream is cut off or corrupt ({exc})")
    if not data.strip():
        fail(source, None, None, "no instruments: the file is empty")
    return data


FieldAt = Callable[[bytes, int], str | None]
"""The name of the field that byte `position` of a source's `data` falls in, if it can tell."""


def decode_utf8(data: bytes, source: str, *, field_at: FieldAt | None = None) -> str:
    """`data` as strict UTF-8 without a leading byte-order mark, or a `SourceError` that names
    the row (line) of the first bad byte and, where `field_at` tells it, its field."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start) + 1
        fail(
            source,
            row,
            None if field_at is None else field_at(data, exc.start),
            f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8 ({exc.reason})",
        )
    return text.removeprefix(_BOM)


def csv_field_at(
    data: bytes, position: int, columns: Sequence[str] = (), delimiter: str = ","
) -> str | None:
    """The name of the CSV column that byte `position` of `data` falls in, found by splitting
    its line up to there; `columns` ``()`` takes the names from the first line. None in that
    header line itself, or past the last column."""
    start = data.rfind(b"\n", 0, position) + 1
    if not columns:
        if start == 0:
            return None
        header = data[: data.find(b"\n")].decode("utf-8", "replace").removeprefix(_BOM)
        columns = next(csv.reader([header.rstrip("\r")], delimiter=delimiter), [])
    before = data[start:position].decode("utf-8", "replace")
    index = max(len(next(csv.reader([before], delimiter=delimiter), [])) - 1, 0)
    return columns[index] if index < len(columns) else None


# A JSON string value still open at the end of the text, and the key it belongs to.
_OPEN_JSON_VALUE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"(?:[^"\\]|\\.)*\Z')


def json_key_at(data: bytes, position: int) -> str | None:
    """The key whose string value byte `position` of a JSON document falls in (None if it is
    not inside a string value, as far as the 4 KiB before it tell)."""
    before = data[max(0, position - 4096) : position].decode("utf-8", "replace")
    found = _OPEN_JSON_VALUE.search(before)
    return found[1] if found else None


def missing_field(columns: Sequence[str], fields: Sequence[str]) -> str | None:
    """The first column a row that is `fields` long lacks; None if it is not short."""
    return columns[len(fields)] if len(fields) < len(columns) else None


def wrong_width(source: str, row: int, header: Sequence[str], fields: Sequence[str]) -> NoReturn:
    """Refuse a CSV row that has not as many fields as the header, naming the first column a
    short row lacks (a file cut off mid-row)."""
    fail(
        source,
        row,
        missing_field(header, fields),
        f"{len(fields)} fields, but the header has {len(header)}",
    )


def csv_rows(lines: Iterable[str], source: str) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) per CSV record; a record `csv` cannot parse is a `SourceError`.

    `lines` splits as a file opened with ``newline=""`` does (``io.StringIO(text, newline="")``);
    CRLF line ends are fine. Blank lines come out as empty field lists, counted as rows.
    """
    reader = csv.reader(lines)
    row = 0
    try:
        for row, fields in enumerate(reader, 1):
            yield row, fields
    except csv.Error as exc:
        fail(source, row + 1, None, f"not valid CSV: {exc}")


def header_indexes(
    header: Sequence[str], wanted: Sequence[str], source: str, *, row: int = 1
) -> list[int]:
    """Where each name of `wanted` sits in `header`: a missing or doubled column is an error."""
    names = [name.strip() for name in header]
    if names:
        names[0] = names[0].removeprefix(_BOM)
    indexes = []
    for column in wanted:
        count = names.count(column)
        if count == 0:
            hint = " (is the header row missing?)" if names and names[0].isdigit() else ""
            fail(source, row, column, f"the header has no column {column!r}{hint}")
        if count > 1:
            fail(source, row, column, f"the header names column {column!r} twice")
        indexes.append(names.index(column))
    return indexes


# -- fields ------------------------------------------------------------------------------------


def parse_uint(text: str, source: str, row: int, field: str, maximum: int = 2**64 - 1) -> int:
    """A non-negative integer written as plain ASCII digits, at most `maximum`."""
    # The length test first: int() refuses digit strings over 4,300 characters with a plain
    # ValueError, and no token has more than 20 digits.
    if text.isdigit() and text.isascii() and len(text) <= 20:
        value = int(text)
        if value > maximum:
            fail(source, row, field, f"{text!r} is out of range 0..{maximum}")
        return value
    if not text:
        fail(source, row, field, "is empty")
    if text.isdigit() and text.isascii():
        fail(source, row, field, f"{shown(text, 24)} is out of range")
    digits = text[1:]
    if text[:1] == "-" and digits.isdigit() and digits.isascii():
        fail(source, row, field, f"{shown(text)} is negative")
    fail(source, row, field, f"{shown(text)} is not an integer")


def parse_number(text: str, source: str, row: int, field: str, *, scale: float = 1.0) -> float:
    """A finite, non-negative decimal (``0.05``, ``22500``, ``1e-05``), times `scale`.

    Plain ASCII only: `float` would also take blanks, underscores and other scripts' digits.
    """
    try:
        value = float(text)
    except ValueError:
        if not text:
            fail(source, row, field, "is empty")
        fail(source, row, field, f"{shown(text)} is not a number")
    if not math.isfinite(value):
        fail(source, row, field, f"{shown(text)} is not a finite number")
    if not _NUMBER.fullmatch(text):
        fail(source, row, field, f"{shown(text)} is not a plain decimal number")
    if value < 0 or text.startswith("-"):
        fail(source, row, field, f"{shown(text)} is negative")
    return value * scale


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}


def parse_date(text: str, source: str, row: int, field: str) -> dt.date:
    """A date in any of the forms brokers write: ``YYYY-MM-DD`` (optionally followed by a time,
    as Dhan writes), ``DD-MM-YYYY``, ``DDMMMYYYY`` (Angel: ``25APR2024``) or ``DD-Mon-YYYY``.

    The empty string is the caller's to handle (it usually means "no expiry").
    """
    t = text.strip()
    day = month = year = ""
    if len(t) >= 10 and t[4:5] == "-" == t[7:8] and (len(t) == 10 or t[10] in " T"):
        year, month, day = t[0:4], t[5:7], t[8:10]
    elif len(t) == 10 and t[2] == "-" == t[5]:
        day, month, year = t[0:2], t[3:5], t[6:10]
    elif len(t) == 9 and t[2:5].upper() in _MONTHS:
        day, month, year = t[0:2], str(_MONTHS[t[2:5].upper()]), t[5:9]
    elif len(t) == 11 and t[2] == "-" == t[6] and t[3:6].upper() in _MONTHS:
        day, month, year = t[0:2], str(_MONTHS[t[3:6].upper()]), t[7:11]
    if day.isdigit() and month.isdigit() and year.isdigit() and t.isascii():
        try:
            return dt.date(int(year), int(month), int(day))
        except ValueError as exc:
            fail(source, row, field, f"{text!r} is not a date: {exc}")
    fail(
        source,
        row,
        field,
        f"{text!r} is not a date (expected YYYY-MM-DD, DD-MM-YYYY or DDMMMYYYY)",
    )


# -- vocabulary --------------------------------------------------------------------------------


def kite_segment(exchange: str, instrument_type: str) -> str:
    """Kite's segment for an instrument of `exchange` and normalized `instrument_type`:
    ``NSE`` for NSE cash, ``NFO-OPT`` for an NFO option, ``NFO-FUT`` for a future."""
    if instrument_type == "FUT":
        return f"{exchange}-FUT"
    if instrument_type in ("CE", "PE"):
        return f"{exchange}-OPT"
    return exchange


def strip_eq(symbol: str) -> str:
    """A cash symbol without the ``-EQ`` series tag brokers other than Kite append."""
    return symbol[:-3] if symbol.endswith("-EQ") else symbol
