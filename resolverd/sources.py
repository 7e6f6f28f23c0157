"""Source specs to a validated registry: load every source, join them, run the gates.

The one path from sources to a `Registry` that ``resolverd compile``, ``resolverd validate``,
``resolverd db ingest`` and the daemon share, so a source is refused the same way everywhere.
A spec is ``FORMAT=PATH``, a bare path (format told from its content), a PostgreSQL DSN
(``postgresql://...``), or ``synthetic=N`` (the generated universe, alone).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._gc import cycle_collector_paused
from .errors import ConfigError
from .join import join
from .loaders import Loaded, load_source
from .loaders.postgres import is_dsn, load_registry  # psycopg is imported only on a load
from .model import Registry
from .validate import DEFAULT_MAX_DROP, Report, check, check_fall, drop_expired_columns

__all__ = ["INDIA", "build_registry", "load_sources", "previous_counts", "today_in_india"]

# The exchanges' time zone; India has kept UTC+05:30 without daylight saving since 1945.
INDIA = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")


def today_in_india() -> dt.date:
    """The default trade date: today on the exchanges' calendar."""
    return dt.datetime.now(INDIA).date()


def load_sources(specs: Sequence[str]) -> list[Loaded]:
    """Every spec's records, each source as `Loaded` (a DSN's registry read as records)."""
    loaded = []
    for spec in specs:
        if spec.startswith("synthetic="):
            raise ConfigError("synthetic=N is a whole universe and cannot be mixed with sources")
        if is_dsn(spec):
            label = _postgres_label(spec)
            registry = load_registry(spec, source=label)
            records = Loaded(label)
            for row, instrument in enumerate(registry.instruments(), 1):
                records.add(row, instrument)
            loaded.append(records)
        else:
            loaded.append(load_source(spec))
    return loaded


def build_registry(
    specs: Sequence[str],
    *,
    trade_date: dt.date | None,
    previous: Mapping[str, int] | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
) -> tuple[Registry, Report]:
    """The validated registry of `specs` for `trade_date`, and the gates' report.

    `previous` is the per-broker instrument count of the snapshot this one replaces (see
    `previous_counts`), for the fall-in-size gate. Raises `SourceError`, `RegistryError`,
    `SourceMissingError`, `UnavailableError` or `ConfigError`; nothing is returned unless
    every gate passed.
    """
    if not specs:
        raise ConfigError("no sources given")
    if len(specs) == 1 and specs[0].startswith("synthetic="):
        return _synthetic(specs[0], trade_date, previous, max_drop)
    if len(specs) == 1 and is_dsn(specs[0]):
        # A registry already joined and held to the gates by its constraints, read in columns.
        label = _postgres_label(specs[0])
        registry = load_registry(specs[0], trade_date=trade_date, source=label)
        return _gated_columns(registry, label, previous, max_drop)
    with cycle_collector_paused():
        joined = join(load_sources(specs))
        kept, report = check(joined, trade_date=trade_date, previous=previous, max_drop=max_drop)
        return Registry.from_instruments(kept, trade_date=trade_date), report


def _synthetic(
    spec: str, trade_date: dt.date | None, previous: Mapping[str, int] | None, max_drop: float
) -> tuple[Registry, Report]:
    from .synthetic import DEFAULT_TRADE_DATE, generate_universe

    size = spec.partition("=")[2]
    if not size.isdigit() or int(size) < 1:
        raise ConfigError(f"source {spec!r}: N must be a positive whole number")
    registry = generate_universe(int(size), trade_date=trade_date or DEFAULT_TRADE_DATE)
    return _gated_columns(registry, spec, previous, max_drop)


def _gated_columns(
    registry: Registry, label: str, previous: Mapping[str, int] | None, max_drop: float
) -> tuple[Registry, Report]:
    """The gates that apply to a registry that arrives in columns: expiry and fall in size."""
    report = Report(registry.trade_date)
    registry = drop_expired_columns(registry, label, report)
    check_fall(report, previous, max_drop, lambda _broker: [label])
    return registry, report


def _postgres_label(dsn: str) -> str:
    from .db import redact_dsn

    return f"postgres={redact_dsn(dsn)}"


def previous_counts(path: str | os.PathLike[str]) -> dict[str, int] | None:
    """Per-broker instrument counts of the snapshot at `path`, or None if there is none.

    A snapshot that cannot be read is no baseline: None, and the fall gate is skipped.
    """
    from .client import Resolver
    from .errors import ResolverError

    if not Path(path).is_file():
        return None
    try:
        with Resolver.open(path) as previous:
            counts: dict[str, int] = {}
            for feed in previous.feeds:
                broker = previous.feed_broker(feed)
                counts[broker] = counts.get(broker, 0) + previous.feed_size(feed)
            return counts
    except (ResolverError, OSError):
        return None
