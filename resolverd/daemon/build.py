"""One generation built away from the event loop: load, gate, compile, write, diff.

`build_generation` runs in the daemon's worker process: compiling is CPU-bound, and in the
daemon's own process it would hold the GIL for seconds and stall heartbeats, the systemd
watchdog and control replies. Everything crosses the process boundary as plain data: the job
in, a `Built` or a `Failed` out (exceptions are not sent back, because our error types do not
all survive pickling and a worker crash must not be confused with a bad source).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EX_SOFTWARE, EX_UNAVAILABLE, ResolverError
from .announce import Diff

if TYPE_CHECKING:
    from ..client import Resolver

__all__ = ["Built", "Failed", "Job", "build_generation", "failed", "failure_reason"]


@dataclass(frozen=True)
class Job:
    registry: str
    sources: tuple[str, ...]
    mappings: tuple[str, ...]
    trade_date: dt.date | None  # None: today in India
    max_drop: float
    generation: int
    out: str  # the publisher's temporary path for this generation
    previous: str | None  # the current generation's file, the baseline for gates and diff
    previous_checksum: int | None


@dataclass(frozen=True)
class Built:
    generation: int
    checksum: int
    unchanged: bool  # same payload as the current generation: nothing was written
    instruments: int
    feeds: dict[str, int]
    trade_date: str | None
    report: list[str]
    diff: Diff | None
    load_seconds: float
    compile_seconds: float


@dataclass(frozen=True)
class Failed:
    reason: str  # "source", "gate", "layout", "unavailable", "config" or "internal"
    error: str
    exit_code: int


def failure_reason(exc: BaseException) -> str:
    from ..errors import (
        ConfigError,
        LayoutError,
        RegistryError,
        SourceError,
        UnavailableError,
    )

    if isinstance(exc, SourceError):
        return "source"
    if isinstance(exc, RegistryError):
        return "gate"
    if isinstance(exc, LayoutError):
        return "layout"
    if isinstance(exc, UnavailableError | OSError):
        return "unavailable"
    if isinstance(exc, ConfigError):
        return "config"
    return "internal"


def failed(exc: ResolverError | OSError, context: str = "") -> Failed:
    """The Failed for an expected error: its reason, message and exit code (69 for OSError)."""
    code = exc.exit_code if isinstance(exc, ResolverError) else EX_UNAVAILABLE
    return Failed(failure_reason(exc), f"{context}{exc}", code)


def build_generation(job: Job) -> Built | Failed:
    """Build `job`'s generation into `job.out` (unless its payload equals the current one)."""
    try:
        return _build(job)
    except (ResolverError, OSError) as exc:
        return failed(exc)
    except Exception as exc:  # a bug: reported, never fatal to the daemon
        return Failed("internal", f"{type(exc).__name__}: {exc}", EX_SOFTWARE)


def _build(job: Job) -> Built:
    from ..client import Resolver
    from ..compiler import compile_snapshot
    from ..loaders import register_mapping
    from ..shm_layout import read_header
    from ..sources import build_registry, previous_counts, today_in_india

    started = time.perf_counter()
    for mapping in job.mappings:
        register_mapping(mapping)
    registry, report = build_registry(
        job.sources,
        trade_date=job.trade_date or today_in_india(),
        previous=previous_counts(job.previous) if job.previous else None,
        max_drop=job.max_drop,
    )
    loaded = time.perf_counter()
    snapshot = compile_snapshot(registry, generation=job.generation)
    compiled = time.perf_counter()
    header = read_header(snapshot)
    unchanged = header.payload_checksum == job.previous_checksum
    with Resolver(snapshot) as new:
        feeds = {feed: new.feed_size(feed) for feed in new.feeds}
        trade_date = new.trade_date.isoformat() if new.trade_date else None
        diff = None
        if not unchanged:
            diff = _diff(job.previous, new)
    if not unchanged:
        _write(Path(job.out), snapshot)
    return Built(
        generation=job.generation,
        checksum=header.payload_checksum,
        unchanged=unchanged,
        instruments=header.instrument_count,
        feeds=feeds,
        trade_date=trade_date,
        report=report.lines(),
        diff=diff,
        load_seconds=loaded - started,
        compile_seconds=compiled - loaded,
    )


def _diff(previous: str | None, new: Resolver) -> Diff | None:
    from ..client import Resolver
    from .announce import diff_snapshots

    if previous is None:
        return None
    try:
        old = Resolver.open(previous)
    except (ResolverError, OSError):
        return None  # no readable baseline: announce the swap without a diff
    with old:
        return diff_snapshots(old, new)


def _write(path: Path, snapshot: bytearray) -> None:
    """Create the temporary file (owner-only until the publisher sets mode and group)."""
    from .publish import create_file

    path.unlink(missing_ok=True)
    create_file(path, snapshot, 0o600)
