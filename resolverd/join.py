"""Several sources' records joined into one list: one instrument per exchange contract.

Rules, in the order they apply:

1. Rows join on the exchange's own identity of a contract, (exchange, segment, exchange
   token), never on the trading symbol: exchanges rename symbols and keep the token. A row
   without an exchange token (0) joins nothing.
2. The first source, in the order given, that lists an instrument names its key and supplies
   its metadata; a later source adds its broker token, and fills in a name or ISIN the first
   left empty. A later source that calls the instrument by another key is a rename: kept
   under the first key, counted and listed.
3. A later row that disagrees on lot size or expiry is an error naming both rows: two brokers
   describing one contract differently means one file is wrong or from another day, and an
   order sized from the wrong lot is a real loss. A tick size that differs is listed only.
4. Two rows of one source on one contract, or one broker's token given twice for one
   contract, is an error naming both rows.

Pure: records in, records out; `resolverd.validate` runs the gates on the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from .errors import SourceError
from .loaders._common import Loaded, SourceWarning
from .model import Instrument

__all__ = ["Joined", "Origin", "join"]


class Origin(NamedTuple):
    """Where a record came from: a source label and its row there."""

    source: str
    row: int

    def __str__(self) -> str:
        return f"{self.source} row {self.row}"


@dataclass
class Joined:
    """Joined instruments, each with the rows it was made from (the key's namer first)."""

    instruments: list[Instrument]
    origins: list[list[Origin]]
    warnings: list[SourceWarning]
    token_origins: list[list[Origin]] = field(default_factory=list)
    """Per instrument, the row each of its tokens came from (aligned with its tokens)."""
    merged_rows: int = 0
    renamed: int = 0

    def __len__(self) -> int:
        return len(self.instruments)


def join(sources: Sequence[Loaded]) -> Joined:
    """Join the sources' records by rules 1-4 above; raises `SourceError` on a conflict."""
    joined = Joined([], [], [w for s in sources for w in s.warnings])
    instruments, origins, token_origins = joined.instruments, joined.origins, joined.token_origins
    by_contract: dict[tuple[str, str, int], int] = {}
    for loaded in sources:
        source = loaded.source
        for instrument, row in zip(loaded.instruments, loaded.rows, strict=True):
            if instrument.exchange_token:
                contract = (instrument.exchange, instrument.segment, instrument.exchange_token)
                at = by_contract.setdefault(contract, len(instruments))
                if at < len(instruments):
                    origin = Origin(source, row)
                    instruments[at] = _merge(
                        joined, instruments[at], origins[at], instrument, origin
                    )
                    origins[at].append(origin)
                    token_origins[at].extend([origin] * len(instrument.tokens))
                    joined.merged_rows += 1
                    continue
            origin = Origin(source, row)
            instruments.append(instrument)
            origins.append([origin])
            token_origins.append([origin] * len(instrument.tokens))
    return joined


def _merge(
    joined: Joined,
    first: Instrument,
    first_origins: list[Origin],
    later: Instrument,
    origin: Origin,
) -> Instrument:
    # The common case, a clean merge, runs on every joined row: checks first, text only on
    # the way to an error or a warning.
    namer = first_origins[0]
    for seen in first_origins:
        if seen.source == origin.source:
            raise SourceError(
                origin.source,
                f"{_contract(first)} is listed twice in this source: as {first.key} at row"
                f" {seen.row} and as {later.key} here; two keys cannot claim one contract",
                row=origin.row,
                field="exchange_token",
            )
    if later.lot_size != first.lot_size or later.expiry != first.expiry:
        field = "lot_size" if later.lot_size != first.lot_size else "expiry"
        raise SourceError(
            origin.source,
            f"{_contract(first)} ({later.key}) has {field} {getattr(later, field)} here but"
            f" {getattr(first, field)} in {namer} ({first.key}); the sources disagree on the"
            " contract",
            row=origin.row,
            field=field,
        )
    for token in later.tokens:
        for held in first.tokens:
            if held.broker == token.broker:
                raise SourceError(
                    origin.source,
                    f"{_contract(first)} already has a {token.broker} token from"
                    f" {', '.join(map(str, first_origins))}",
                    row=origin.row,
                    field="exchange_token",
                )
    if later.key != first.key:
        joined.renamed += 1
        joined.warnings.append(
            SourceWarning(
                origin.source,
                f"renamed: calls {_contract(first)} {later.key}; kept {first.key} from {namer}",
                origin.row,
                "key",
            )
        )
    if later.tick_size != first.tick_size and later.tick_size and first.tick_size:
        joined.warnings.append(
            SourceWarning(
                origin.source,
                f"tick size: {first.key} has {later.tick_size} here, {first.tick_size} in"
                f" {namer}; kept {first.tick_size}",
                origin.row,
                "tick_size",
            )
        )
    return msgspec.structs.replace(
        first,
        name=first.name or later.name,
        isin=first.isin or later.isin,
        tick_size=first.tick_size or later.tick_size,
        tokens=first.tokens + later.tokens,
    )


def _contract(instrument: Instrument) -> str:
    return f"{instrument.exchange} {instrument.segment} exchange token {instrument.exchange_token}"
