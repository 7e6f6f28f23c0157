"""The normalized registry every loader produces and the compiler consumes.

Two shapes of the same data:

- `Instrument` (a frozen msgspec Struct) is one instrument with its broker tokens. Loaders emit
  it row by row, and `Resolver.record(key)` returns it, so a record read back from a snapshot
  compares equal to the one that went in.
- `Registry` is the columnar form the compiler reads: numpy arrays and categorical string
  columns. A million-instrument universe is built in this form directly (see `synthetic`),
  because a million Python objects cost more than the whole compile.

A *broker* names a forward token column (key -> token). A *feed* names the namespace in which a
token is unique (token -> key): Kite is one feed; Angel One or Dhan tokens are unique only within
an exchange segment, so each of their segments is its own feed (``angel:NFO``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np
from numpy.typing import NDArray

from .shm_layout import NO_TOKEN

TokenKind = Literal["int", "str"]

EPOCH = dt.date(1970, 1, 1)


# gc=False: records hold only scalars, dates and a tuple of tokens, so they cannot form
# cycles; leaving them out of the cycle collector makes building 1M of them about 3x cheaper.
class BrokerToken(msgspec.Struct, frozen=True, order=True, gc=False):
    """One broker's token for one instrument, and the feed in which it is unique."""

    broker: str
    feed: str
    value: int | str


class Instrument(msgspec.Struct, frozen=True, gc=False):
    """One instrument: its canonical key, its metadata and its broker tokens."""

    key: str
    exchange: str
    segment: str
    instrument_type: str
    name: str = ""
    expiry: dt.date | None = None
    strike: float = 0.0
    tick_size: float = 0.0
    lot_size: int = 1
    isin: str = ""
    exchange_token: int = 0
    tokens: tuple[BrokerToken, ...] = ()


def date_to_days(day: dt.date | None) -> int:
    """Days since 1970-01-01, the layout's date encoding; 0 stands for "no date"."""
    return 0 if day is None else (day - EPOCH).days


def days_to_date(days: int) -> dt.date | None:
    return None if days == 0 else EPOCH + dt.timedelta(days=days)


@dataclass(frozen=True)
class Categorical:
    """A string column stored as codes into a small table of distinct values."""

    codes: NDArray[np.uint32]
    categories: tuple[str, ...]

    @classmethod
    def from_values(cls, values: Sequence[str]) -> Categorical:
        table: dict[str, int] = {}
        codes = np.fromiter(
            (table.setdefault(v, len(table)) for v in values), dtype=np.uint32, count=len(values)
        )
        return cls(codes, tuple(table))

    @classmethod
    def constant(cls, value: str, length: int) -> Categorical:
        return cls(np.zeros(length, dtype=np.uint32), (value,))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, row: int) -> str:
        return self.categories[int(self.codes[row])]


@dataclass(frozen=True)
class TokenColumn:
    """One broker's tokens, row-aligned with `Registry.keys`.

    Integer tokens are a uint64 array with `NO_TOKEN` where the broker does not list the
    instrument; string tokens are a sequence with None there. `feeds` gives each row's feed.
    """

    broker: str
    kind: TokenKind
    values: NDArray[np.uint64] | Sequence[str | None]
    feeds: Categorical


@dataclass(frozen=True)
class Registry:
    """The columnar registry: row i of every column describes the instrument `keys[i]`."""

    keys: Sequence[str]
    exchange: Categorical
    segment: Categorical
    instrument_type: Categorical
    name: Categorical
    expiry_days: NDArray[np.int32]
    strike: NDArray[np.float64]
    tick_size: NDArray[np.float64]
    lot_size: NDArray[np.uint32]
    isin: NDArray[np.bytes_]
    exchange_token: NDArray[np.uint64]
    tokens: tuple[TokenColumn, ...] = ()
    trade_date: dt.date | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, rows: NDArray[np.bool_]) -> Registry:
        """The registry of the rows where `rows` is true, in the same order."""
        where = np.flatnonzero(rows)
        picked = where.tolist()

        def strings(column: Categorical) -> Categorical:
            # Only the categories still used, so the string table holds nothing dropped.
            used, codes = np.unique(column.codes[where], return_inverse=True)
            categories = tuple(column.categories[i] for i in used.tolist())
            return Categorical(codes.astype(np.uint32).reshape(-1), categories)

        tokens = tuple(
            TokenColumn(
                c.broker,
                c.kind,
                c.values[where]
                if isinstance(c.values, np.ndarray)
                else [c.values[i] for i in picked],
                strings(c.feeds),
            )
            for c in self.tokens
        )
        return Registry(
            keys=[self.keys[i] for i in picked],
            exchange=strings(self.exchange),
            segment=strings(self.segment),
            instrument_type=strings(self.instrument_type),
            name=strings(self.name),
            expiry_days=self.expiry_days[where],
            strike=self.strike[where],
            tick_size=self.tick_size[where],
            lot_size=self.lot_size[where],
            isin=self.isin[where],
            exchange_token=self.exchange_token[where],
            tokens=tokens,
            trade_date=self.trade_date,
        )

    def instruments(self) -> Iterator[Instrument]:
        """Each row as an `Instrument` (the inverse of `from_instruments`, up to token order)."""
        columns: list[tuple[str, Categorical, Sequence[int | str | None]]] = [
            (c.broker, c.feeds, c.values.tolist() if isinstance(c.values, np.ndarray) else c.values)
            for c in self.tokens
        ]
        expiry = self.expiry_days.tolist()
        strike, tick = self.strike.tolist(), self.tick_size.tolist()
        lot, xtoken = self.lot_size.tolist(), self.exchange_token.tolist()
        for i, key in enumerate(self.keys):
            tokens = tuple(
                BrokerToken(broker, feeds[i], value)
                for broker, feeds, values in columns
                if (value := values[i]) is not None and value != NO_TOKEN
            )
            yield Instrument(
                key=key,
                exchange=self.exchange[i],
                segment=self.segment[i],
                instrument_type=self.instrument_type[i],
                name=self.name[i],
                expiry=days_to_date(expiry[i]),
                strike=strike[i],
                tick_size=tick[i],
                lot_size=lot[i],
                isin=self.isin[i].decode(),
                exchange_token=xtoken[i],
                tokens=tokens,
            )

    @classmethod
    def from_instruments(
        cls, instruments: Iterable[Instrument], trade_date: dt.date | None = None
    ) -> Registry:
        """Columns from records; each broker's kind (int or str) is taken from its values."""
        rows = list(instruments)
        n = len(rows)
        brokers = sorted({t.broker for r in rows for t in r.tokens})
        columns = []
        for broker in brokers:
            by_row = [next((t for t in r.tokens if t.broker == broker), None) for r in rows]
            is_int = all(isinstance(t.value, int) for t in by_row if t is not None)
            feeds = Categorical.from_values([t.feed if t else broker for t in by_row])
            values: NDArray[np.uint64] | list[str | None]
            if is_int:
                values = np.fromiter(
                    (NO_TOKEN if t is None else t.value for t in by_row), np.uint64, count=n
                )
            else:
                values = [None if t is None else str(t.value) for t in by_row]
            columns.append(TokenColumn(broker, "int" if is_int else "str", values, feeds))
        return cls(
            keys=[r.key for r in rows],
            exchange=Categorical.from_values([r.exchange for r in rows]),
            segment=Categorical.from_values([r.segment for r in rows]),
            instrument_type=Categorical.from_values([r.instrument_type for r in rows]),
            name=Categorical.from_values([r.name for r in rows]),
            expiry_days=np.fromiter((date_to_days(r.expiry) for r in rows), np.int32, count=n),
            strike=np.fromiter((r.strike for r in rows), np.float64, count=n),
            tick_size=np.fromiter((r.tick_size for r in rows), np.float64, count=n),
            lot_size=np.fromiter((r.lot_size for r in rows), np.uint32, count=n),
            isin=np.array([r.isin.encode() for r in rows], dtype="S12").reshape(n),
            exchange_token=np.fromiter((r.exchange_token for r in rows), np.uint64, count=n),
            tokens=tuple(columns),
            trade_date=trade_date,
        )
