"""The PostgreSQL instrument registry -> a columnar `Registry`, streamed.

The registry's tables and rules are `resolverd.db`'s (``resolverd/sql/registry.sql``). This
module reads them back in one transaction, REPEATABLE READ and READ ONLY, so that keys,
feeds and tokens come from one snapshot however long the read takes and whatever an ingest
commits meanwhile:

1. ``schema_version`` must be the version this resolverd knows.
2. ``broker_feeds``, in feed order (``COLLATE "C"``): each feed's broker and kind. A
   broker's feeds must share one kind, since a broker is one token column.
3. ``instrument_keys`` is counted, then copied out (``COPY ... TO STDOUT``, text format)
   in key order (``COLLATE "C"``: byte order, the same in every database); row i of the
   registry is the i-th key in that order.
4. ``broker_instrument_tokens`` is copied out as (row number, feed number, token), the row
   number taken with ``row_number()`` over the same order, so that no key -> row map is built,
   and the feed number the feed's position in step 2's list.

Columns are built chunk by chunk (`CHUNK_ROWS` COPY rows at a time) straight into numpy
arrays allocated for the counted rows: a million instruments never exist as a million row
tuples or records at once, only the keys (and string tokens) as a list of str.

Mapping to the `Registry`: exchange, segment, instrument_type and name become `Categorical`
columns; expiry becomes days since 1970-01-01 (0 for none); strike and tick_size float64;
lot_size uint32; isin 12 bytes; exchange_token uint64. Each broker is one `TokenColumn`, its
kind its feeds' kind: ``int`` tokens uint64 with `NO_TOKEN` where the broker does not list
the instrument, ``str`` tokens a list with None there; its ``feeds`` column holds each row's
feed (the broker's first feed where it lists none). Brokers come in name order, and a broker
registered in ``broker_feeds`` without a single token is left out, as
`Registry.from_instruments` would.

Errors: a server that cannot be reached or goes away mid-read is `UnavailableError`; a
database without a registry is `UnavailableError`; another schema version is `ConfigError`;
an empty registry, or a broker whose feeds disagree on kind, is `SourceError`. Messages show
the connection string with its password removed (`resolverd.db.redact_dsn`).

psycopg is imported when a registry is loaded, not with this module: `is_dsn` serves the
command line whether or not the ``postgres`` extra is installed.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from .._gc import cycle_collector_paused
from ..errors import ConfigError, SourceError
from ..model import Categorical, Registry, TokenColumn, TokenKind
from ..shm_layout import NO_TOKEN

if TYPE_CHECKING:
    import psycopg

__all__ = ["CHUNK_ROWS", "is_dsn", "load_registry"]

CHUNK_ROWS = 65_536
KEY_FIELDS = 11  # the columns _KEYS_COPY selects
_Int = TypeVar("_Int", bound=np.integer[Any])
_Number = TypeVar("_Number", bound=np.number[Any])

_URL = re.compile(r"(?i)\Apostgres(?:ql)?://")
_KEYWORD = re.compile(r"(?:\A|\s)(?:dbname|host)\s*=")

_FEEDS = """
SELECT feed, broker, token_kind FROM instrument_registry.broker_feeds ORDER BY feed COLLATE "C"
"""
_KEYS_COPY = """
COPY (
    SELECT instrument_key, exchange, segment, instrument_type, name, isin,
           COALESCE(expiry - DATE '1970-01-01', 0), strike, tick_size, lot_size, exchange_token
      FROM instrument_registry.instrument_keys
     ORDER BY instrument_key COLLATE "C"
) TO STDOUT
"""
# {feeds}: the feeds as `_FEEDS` listed them, a text[] literal; a token's feed number is its
# position there (one join fewer, and that join, of millions of tokens with a few feeds, would
# otherwise be a sort once hash joins are off).
_TOKENS_COPY = """
COPY (
    SELECT r.row, array_position({feeds}::text[], t.feed) - 1, t.token
      FROM instrument_registry.broker_instrument_tokens t
      JOIN (SELECT instrument_key,
                   row_number() OVER (ORDER BY instrument_key COLLATE "C") - 1 AS row
              FROM instrument_registry.instrument_keys) r USING (instrument_key)
) TO STDOUT
"""
# COPY's text format escapes these (and writes NULL as \N, which no column read here holds).
_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPED = re.compile(r"\\(.)")


def is_dsn(spec: str) -> bool:
    """Whether `spec` names a PostgreSQL database rather than a file: a ``postgresql://`` or
    ``postgres://`` URL, or a libpq key=value string with a ``dbname=`` or ``host=``."""
    return bool(_URL.match(spec) or _KEYWORD.search(spec))


def load_registry(
    dsn: str,
    *,
    trade_date: dt.date | None = None,
    source: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[str, int], None] | None = None,
) -> Registry:
    """The registry at `dsn` as a columnar `Registry` (see the module docstring).

    `source` labels the registry in messages (default ``postgres=<redacted dsn>``);
    `trade_date` is passed on to the `Registry`. `progress`, if given, is called after each
    chunk of `chunk_rows` COPY rows with the table being read and the rows read from it so far.

    Raises `UnavailableError` if the server cannot be reached, holds no registry, or goes away
    during the read; `ConfigError` for a registry of another schema version; `SourceError`
    for an empty registry or a broker whose feeds disagree on their kind.
    """
    from .. import db  # noqa: I001  (first: without psycopg, db raises the ConfigError)
    from psycopg import sql

    label = source if source is not None else f"postgres={db.redact_dsn(dsn)}"
    report = progress or _ignore
    # Errors start with the redacted connection string already: a label that is just that
    # (the command line's ``postgres=<dsn>``) would say it twice.
    named = source is not None and db.redact_dsn(dsn) not in source
    doing = "loading the registry" + (f" {source}" if named else "")
    with cycle_collector_paused(), db.connect(dsn, doing=doing) as conn:
        conn.isolation_level = _repeatable_read()
        conn.read_only = True
        cur = conn.cursor()
        # Shortest-exact float text on every server version (the default from PostgreSQL 12),
        # and room to sort a million keys in memory. No JIT: compiling the two COPY queries
        # cost more than it saved (1.8 s of a 7 s load of 1M instruments). No hash join: the
        # tokens and the keys both come off their primary keys in key order, and merging them
        # took half the time of hashing the keys (0.7 s against 1.4 s for 1M tokens, 2.0 s
        # against 2.6 s for 4M).
        cur.execute(
            f"SET LOCAL extra_float_digits = 3; SET LOCAL work_mem = '{db.WORK_MEM}';"
            " SET LOCAL jit = off; SET LOCAL enable_hashjoin = off"
        )
        version = _scalar(cur, f"SELECT version FROM {db.SCHEMA}.schema_version")
        if version != db.SCHEMA_VERSION:
            raise ConfigError(
                f"{label}: the registry has schema version {version};"
                f" this resolverd knows version {db.SCHEMA_VERSION}"
            )
        n = int(_scalar(cur, f"SELECT count(*) FROM {db.SCHEMA}.instrument_keys"))
        if n == 0:
            raise SourceError(label, "no instruments: the registry is empty")
        cur.execute(_FEEDS)
        feeds = _Feeds(cur.fetchall(), label)

        columns = _Columns(n)
        with cur.copy(_KEYS_COPY) as copy:
            for fields in _chunks(copy, chunk_rows, KEY_FIELDS):
                columns.add(fields)
                report("instrument_keys", columns.filled)
        if columns.filled != n:
            raise SourceError(label, f"counted {n} instruments but read {columns.filled}")

        tokens = _Tokens(feeds, n)
        read = 0
        tokens_copy = sql.SQL(_TOKENS_COPY).format(feeds=sql.Literal(feeds.order))
        with cur.copy(tokens_copy) as copy:
            for fields in _chunks(copy, chunk_rows, 3):
                tokens.add(fields)
                read += len(fields) // 3
                report("broker_instrument_tokens", read)
    return columns.registry(tokens.columns(), trade_date)


def _ignore(table: str, rows: int) -> None:
    pass


def _repeatable_read() -> Any:
    from psycopg import IsolationLevel

    return IsolationLevel.REPEATABLE_READ


def _scalar(cur: psycopg.Cursor[Any], query: str) -> Any:
    cur.execute(query)
    row = cur.fetchone()
    return None if row is None else row[0]


def _chunks(copy: psycopg.Copy, size: int, width: int) -> Iterable[list[str]]:
    """The COPY text's fields, unescaped, in one flat list per `size` rows of `width` fields.

    libpq hands over one row per read. Joining a chunk's rows and splitting the whole text at
    once, tabs and newlines alike, leaves column j of the chunk as ``fields[j::width]``: no
    list per row, and no Python loop over rows.
    """
    pending: list[bytes | bytearray | memoryview] = []
    for data in copy:
        pending.append(data)
        if len(pending) >= size:
            yield _split(pending, width)
            pending = []
    if pending:
        yield _split(pending, width)


def _split(lines: list[bytes | bytearray | memoryview], width: int) -> list[str]:
    text = b"".join(lines).decode("utf-8")
    fields = text.replace("\n", "\t").split("\t")
    fields.pop()  # after the last row's newline
    if len(fields) != width * len(lines):
        raise RuntimeError(f"COPY sent rows of other than {width} fields")
    if "\\" in text:
        fields = [_unescape(f) if "\\" in f else f for f in fields]
    return fields


def _unescape(field: str) -> str:
    return _ESCAPED.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), field)


class _Codes:
    """A categorical column built chunk by chunk."""

    def __init__(self, n: int) -> None:
        self.codes = np.zeros(n, dtype=np.uint32)
        self.table: dict[str, int] = {}

    def fill(self, start: int, values: Sequence[str]) -> None:
        table = self.table
        # New values are few (a registry has a few thousand names) and coded first, so that
        # the map over the chunk is a C loop of dict lookups. Sorted, so that the table's
        # order does not depend on the hash seed.
        for value in sorted(set(values).difference(table)):
            table[value] = len(table)
        self.codes[start : start + len(values)] = np.fromiter(
            map(table.__getitem__, values), np.uint32, count=len(values)
        )

    def categorical(self) -> Categorical:
        return Categorical(self.codes, tuple(self.table))


class _Columns:
    """The instrument columns, preallocated for the counted rows and filled chunk by chunk."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.filled = 0
        self.keys: list[str] = []
        self.exchange = _Codes(n)
        self.segment = _Codes(n)
        self.instrument_type = _Codes(n)
        self.name = _Codes(n)
        self.isin = np.zeros(n, dtype="S12")
        self.expiry_days = np.zeros(n, dtype=np.int32)
        self.strike = np.zeros(n, dtype=np.float64)
        self.tick_size = np.zeros(n, dtype=np.float64)
        self.lot_size = np.zeros(n, dtype=np.uint32)
        self.exchange_token = np.zeros(n, dtype=np.uint64)
        # Strikes and tick sizes repeat (a chain shares its strikes across expiries): a dict
        # hit is cheaper than parsing the text again.
        self._floats: dict[str, float] = {}

    def add(self, fields: list[str]) -> None:
        count = len(fields) // KEY_FIELDS
        start, stop = self.filled, self.filled + count
        if stop > self.n:
            # The count and the COPY share a snapshot; this would mean they do not.
            raise RuntimeError(f"the registry yielded more than its {self.n} counted rows")
        self.keys.extend(fields[0::KEY_FIELDS])
        self.exchange.fill(start, fields[1::KEY_FIELDS])
        self.segment.fill(start, fields[2::KEY_FIELDS])
        self.instrument_type.fill(start, fields[3::KEY_FIELDS])
        self.name.fill(start, fields[4::KEY_FIELDS])
        # ASCII by the table's CHECK, so numpy's own encoding to bytes is safe.
        self.isin[start:stop] = np.array(fields[5::KEY_FIELDS], dtype="S12")
        floats = self._floats
        self.expiry_days[start:stop] = _integers(fields[6::KEY_FIELDS], np.int32)
        self.strike[start:stop] = _repeated(fields[7::KEY_FIELDS], floats, float, np.float64)
        self.tick_size[start:stop] = _repeated(fields[8::KEY_FIELDS], floats, float, np.float64)
        self.lot_size[start:stop] = _integers(fields[9::KEY_FIELDS], np.uint32)
        self.exchange_token[start:stop] = _integers(fields[10::KEY_FIELDS], np.uint64)
        self.filled = stop

    def registry(self, tokens: tuple[TokenColumn, ...], trade_date: dt.date | None) -> Registry:
        return Registry(
            keys=self.keys,
            exchange=self.exchange.categorical(),
            segment=self.segment.categorical(),
            instrument_type=self.instrument_type.categorical(),
            name=self.name.categorical(),
            expiry_days=self.expiry_days,
            strike=self.strike,
            tick_size=self.tick_size,
            lot_size=self.lot_size,
            isin=self.isin,
            exchange_token=self.exchange_token,
            tokens=tokens,
            trade_date=trade_date,
        )


def _repeated(
    texts: Sequence[str],
    cache: dict[str, float],
    parse: Callable[[str], float],
    dtype: type[_Number],
) -> NDArray[_Number]:
    """`texts` parsed as numbers, each distinct text once (`cache` keeps them across chunks)."""
    for text in set(texts).difference(cache):
        cache[text] = parse(text)
    return np.fromiter(map(cache.__getitem__, texts), dtype, count=len(texts))


def _integers(texts: Sequence[str], dtype: type[_Int]) -> NDArray[_Int]:
    """Decimal texts as an integer array: numpy's own text parser over the texts joined, a
    quarter of the time of int() per text (uint64 included), else int(), which raises."""
    parsed = _parsed(texts, dtype)
    if parsed is not None:
        return parsed
    return np.fromiter(map(int, texts), dtype, count=len(texts))


def _parsed(texts: Sequence[str], dtype: type[_Int]) -> NDArray[_Int] | None:
    """numpy's parse of `texts`, or None if it may be wrong: numpy stops at a text it cannot
    read, and saturates one too large for `dtype` (the database's constraints rule both out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy's "could not be read"
        try:
            parsed: NDArray[_Int] = np.fromstring(" ".join(texts), dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    if len(parsed) != len(texts) or (len(parsed) and parsed.max() == np.iinfo(dtype).max):
        return None
    return parsed


class _Feeds:
    """The registered feeds in feed order (the tokens COPY numbers them so), by broker."""

    def __init__(self, rows: Sequence[tuple[Any, ...]], label: str) -> None:
        self.brokers: list[str] = sorted({broker for _, broker, _ in rows})
        index = {broker: b for b, broker in enumerate(self.brokers)}
        self.kinds: dict[str, TokenKind] = {}
        self.names: list[list[str]] = [[] for _ in self.brokers]
        broker_of, code_of = [], []
        self.order: list[str] = [feed for feed, _, _ in rows]
        """Every feed, in feed number order."""
        for feed, broker, kind in rows:
            if self.kinds.setdefault(broker, kind) != kind:
                raise SourceError(
                    label,
                    f"broker {broker} has feeds of both kinds (feed {feed} is {kind});"
                    " a broker's tokens must all be int or all str",
                )
            b = index[broker]
            broker_of.append(b)
            code_of.append(len(self.names[b]))
            self.names[b].append(feed)
        self.broker_of = np.array(broker_of, dtype=np.intp)
        """Each feed number's broker number."""
        self.code_of = np.array(code_of, dtype=np.uint32)
        """Each feed number's code in its broker's feed column."""


class _Tokens:
    """One token column per broker, preallocated and filled chunk by chunk."""

    def __init__(self, feeds: _Feeds, n: int) -> None:
        self.feeds = feeds
        self.present = np.zeros(len(feeds.brokers), dtype=bool)
        self.feed_codes = [np.zeros(n, dtype=np.uint32) for _ in feeds.brokers]
        self.values: list[NDArray[np.uint64] | list[str | None]] = [
            np.full(n, NO_TOKEN, dtype=np.uint64) if feeds.kinds[b] == "int" else [None] * n
            for b in feeds.brokers
        ]

    def add(self, fields: list[str]) -> None:
        row = _integers(fields[0::3], np.intp)
        feed = _integers(fields[1::3], np.intp)
        tokens = fields[2::3]
        broker = self.feeds.broker_of[feed]
        for b in np.flatnonzero(np.bincount(broker, minlength=len(self.present))).tolist():
            self.present[b] = True
            mine = np.flatnonzero(broker == b)
            at = row[mine]
            self.feed_codes[b][at] = self.feeds.code_of[feed[mine]]
            column = self.values[b]
            if len(mine) == len(tokens):
                theirs: Sequence[str] = tokens
            elif len(mine) == 1:
                theirs = [tokens[int(mine[0])]]
            else:
                theirs = itemgetter(*mine.tolist())(tokens)
            if isinstance(column, np.ndarray):
                column[at] = _integers(theirs, np.uint64)
            else:
                for r, token in zip(at.tolist(), theirs, strict=True):
                    column[r] = token

    def columns(self) -> tuple[TokenColumn, ...]:
        feeds = self.feeds
        return tuple(
            TokenColumn(
                broker,
                feeds.kinds[broker],
                self.values[b],
                Categorical(self.feed_codes[b], tuple(feeds.names[b])),
            )
            for b, broker in enumerate(feeds.brokers)
            if self.present[b]
        )
