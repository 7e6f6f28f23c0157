"""The gates between loading and compiling: nothing reaches a snapshot without passing them.

Each loader already refuses a malformed row (bad numbers, dates, encodings, a broker's token
rule), and `resolverd.join` refuses sources that disagree. The gates here need every source at
once, or the trade date, or the previous snapshot:

1. **Expired contracts** (expiry before the trade date) are dropped and counted per source. A
   source with any is *stale*: brokers drop expired contracts from each morning's master, so a
   file that still lists them predates the trade date, and the report says so plainly.
2. **Duplicate keys**: an error naming both rows.
3. **A token used twice within one feed**: an error naming both rows.
4. **A fall in size**: a broker with more than `max_drop` (default 20%) fewer instruments than
   the previous snapshot had is an error: a half-downloaded master must not replace a whole one.

`check(joined, ...)` runs them in that order and returns the kept instruments with a `Report`.
The columnar twins `drop_expired_columns` and `check_fall` serve a registry that arrives in
columns (the PostgreSQL registry), whose database constraints already hold gates 2 and 3.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import RegistryError, SourceError
from .join import Joined, Origin
from .loaders._common import SourceWarning
from .model import Instrument, Registry, date_to_days
from .shm_layout import NO_TOKEN

__all__ = ["DEFAULT_MAX_DROP", "Report", "check", "check_fall", "drop_expired_columns"]

DEFAULT_MAX_DROP = 0.2

# How many warnings of one kind a report prints in full; the rest are counted.
_SHOWN_PER_KIND = 5


@dataclass
class SourceCount:
    source: str
    rows: int = 0
    expired: int = 0
    latest_expired: dt.date | None = None


@dataclass
class Report:
    """What the gates saw: per-source counts, what was dropped, and the warnings."""

    trade_date: dt.date | None
    sources: dict[str, SourceCount] = field(default_factory=dict)
    instruments: int = 0
    merged_rows: int = 0
    renamed: int = 0
    expired: int = 0
    brokers: dict[str, int] = field(default_factory=dict)
    previous: dict[str, int] | None = None
    warnings: list[SourceWarning] = field(default_factory=list)

    @property
    def stale(self) -> list[str]:
        """A sentence per source that still lists contracts expired before the trade date."""
        return [self._stale(c) for c in self.sources.values() if c.expired]

    def _stale(self, c: SourceCount) -> str:
        return (
            f"{c.source} is stale: {c.expired:,} of its {c.rows:,} contracts expired before"
            f" the trade date {self.trade_date} (the latest on {c.latest_expired}), so it"
            f" predates {self.trade_date}; they were dropped"
        )

    def lines(self) -> list[str]:
        """The report as text, warnings grouped by kind with a few shown in full."""
        # No trade date (db ingest keeps every row): nothing was checked for expiry.
        when = f"trade date {self.trade_date}" if self.trade_date else "no trade date"
        expired = (
            f"{self.expired:,} expired contracts dropped"
            if self.trade_date
            else "expiries not checked"
        )
        out = [
            f"{when}: {self.instruments:,} instruments from"
            f" {sum(c.rows for c in self.sources.values()):,} rows of"
            f" {len(self.sources)} source(s); {self.merged_rows:,} rows joined an instrument"
            f" another source listed ({self.renamed:,} under another key); {expired}"
        ]
        for broker, count in sorted(self.brokers.items()):
            before = (self.previous or {}).get(broker)
            was = f" (previous snapshot: {before:,})" if before is not None else ""
            out.append(f"  {broker}: {count:,} instruments{was}")
        out.extend(f"  stale: {line}" for line in self.stale)
        by_kind: dict[str, list[SourceWarning]] = {}
        for warning in self.warnings:
            by_kind.setdefault(warning.detail.partition(":")[0], []).append(warning)
        if self.warnings:
            out.append(f"{len(self.warnings):,} warnings")
        for kind, items in by_kind.items():
            out.append(f"  {kind}: {len(items):,}")
            out.extend(f"    {w}" for w in items[:_SHOWN_PER_KIND])
            if len(items) > _SHOWN_PER_KIND:
                out.append(f"    ... and {len(items) - _SHOWN_PER_KIND:,} more")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "trade_date": None if self.trade_date is None else str(self.trade_date),
            "instruments": self.instruments,
            "sources": {
                c.source: {"rows": c.rows, "expired": c.expired} for c in self.sources.values()
            },
            "merged_rows": self.merged_rows,
            "renamed": self.renamed,
            "expired": self.expired,
            "brokers": self.brokers,
            "previous": self.previous,
            "stale": self.stale,
            "warnings": [str(w) for w in self.warnings],
        }


def check(
    joined: Joined,
    *,
    trade_date: dt.date | None,
    previous: Mapping[str, int] | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
) -> tuple[list[Instrument], Report]:
    """Run the gates; returns the instruments to compile and the report.

    Raises `SourceError` for a duplicate key or token (naming both rows) and `RegistryError`
    for a fall in size beyond `max_drop`.
    """
    report = Report(
        trade_date,
        merged_rows=joined.merged_rows,
        renamed=joined.renamed,
        warnings=list(joined.warnings),
    )
    counts = report.sources
    kept: list[Instrument] = []
    kept_origins: list[list[Origin]] = []
    kept_token_origins: list[list[Origin]] = []
    for instrument, origins, token_origins in zip(
        joined.instruments, joined.origins, joined.token_origins, strict=True
    ):
        for origin in origins:
            count = counts.get(origin.source) or counts.setdefault(
                origin.source, SourceCount(origin.source)
            )
            count.rows += 1
        expiry = instrument.expiry
        if trade_date is not None and expiry is not None and expiry < trade_date:
            report.expired += 1
            for origin in origins:
                count = counts[origin.source]
                count.expired += 1
                if count.latest_expired is None or expiry > count.latest_expired:
                    count.latest_expired = expiry
            continue
        kept.append(instrument)
        kept_origins.append(origins)
        kept_token_origins.append(token_origins)

    _no_duplicate_keys(kept, kept_origins)
    _no_duplicate_tokens(kept, kept_token_origins)
    report.instruments = len(kept)
    brokers: dict[str, int] = {}
    for instrument in kept:
        for token in instrument.tokens:
            brokers[token.broker] = brokers.get(token.broker, 0) + 1
    report.brokers = brokers
    check_fall(report, previous, max_drop, lambda broker: _sources_of(joined, broker))
    return kept, report


def _no_duplicate_keys(kept: list[Instrument], origins: list[list[Origin]]) -> None:
    seen: dict[str, int] = {}
    for i, instrument in enumerate(kept):
        first = seen.setdefault(instrument.key, i)
        if first != i:
            here = origins[i][0]
            raise SourceError(
                here.source,
                f"key {instrument.key} is listed twice: here and at {origins[first][0]}"
                " (a different contract: its exchange token or segment differs)",
                row=here.row,
                field="key",
            )


def _no_duplicate_tokens(kept: list[Instrument], token_origins: list[list[Origin]]) -> None:
    seen: dict[tuple[str, int | str], tuple[int, int]] = {}
    for i, instrument in enumerate(kept):
        for k, token in enumerate(instrument.tokens):
            first, slot = seen.setdefault((token.feed, token.value), (i, k))
            if first != i:
                here = token_origins[i][k]
                raise SourceError(
                    here.source,
                    f"token {token.value!r} of feed {token.feed} is used twice: by"
                    f" {kept[first].key} ({token_origins[first][slot]}) and by"
                    f" {instrument.key} here",
                    row=here.row,
                    field="token",
                )


def _sources_of(joined: Joined, broker: str) -> list[str]:
    """The sources that brought tokens of `broker`, expired rows included (for a message)."""
    sources: dict[str, None] = {}
    for instrument, origins in zip(joined.instruments, joined.token_origins, strict=True):
        for token, origin in zip(instrument.tokens, origins, strict=True):
            if token.broker == broker:
                sources[origin.source] = None
    return list(sources)


def check_fall(
    report: Report,
    previous: Mapping[str, int] | None,
    max_drop: float = DEFAULT_MAX_DROP,
    sources_of: Callable[[str], Sequence[str]] | None = None,
) -> None:
    """Gate 4: refuse a broker that fell by more than `max_drop` against `previous`.

    `sources_of(broker)` names the sources that brought the broker's instruments, so that the
    error says which file to look at; it is called only for the error.
    """
    if previous is None:
        return
    report.previous = dict(previous)
    for broker, before in sorted(previous.items()):
        now = report.brokers.get(broker, 0)
        if before and (before - now) / before > max_drop:
            sources = list(sources_of(broker)) if sources_of is not None else []
            of = f" of {', '.join(sources)}" if sources else ""
            # A stale file falls too (its expired contracts are dropped): say so, it is the
            # likelier cause than a partial download.
            stale = [
                report._stale(c) for s in sources if (c := report.sources.get(s)) and c.expired
            ]
            raise RegistryError(
                f"broker {broker}: {now:,} instruments against {before:,} in the previous"
                f" snapshot, a fall of {(before - now) / before:.1%}, more than the"
                f" {max_drop:.0%} allowed (a partial download{of}?); raise --max-drop if the"
                " fall is real" + "".join(f"; {line}" for line in stale)
            )


def drop_expired_columns(registry: Registry, source: str, report: Report) -> Registry:
    """Gate 1 for a columnar registry: the rows not expired on `report.trade_date`."""
    count = report.sources.setdefault(source, SourceCount(source))
    count.rows += len(registry)
    if report.trade_date is not None:
        expiry = registry.expiry_days
        expired = (expiry != 0) & (expiry < date_to_days(report.trade_date))
        dropped = int(expired.sum())
        if dropped:
            count.expired += dropped
            report.expired += dropped
            latest = int(expiry[expired].max())
            count.latest_expired = dt.date(1970, 1, 1) + dt.timedelta(days=latest)
            registry = registry.select(~expired)
    report.instruments = len(registry)
    report.brokers = {
        column.broker: int(
            (column.values != NO_TOKEN).sum()
            if isinstance(column.values, np.ndarray)
            else sum(v is not None for v in column.values)
        )
        for column in registry.tokens
    }
    return registry
