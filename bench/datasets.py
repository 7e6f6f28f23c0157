"""The peer comparison's datasets: one Kite column (key -> Kite token) and the files behind it.

``kite``: the real Kite dump in ``../shared/data`` (skipped with its reason where absent).
``1m`` and ``5m``: the synthetic universe of `resolverd.synthetic` at 1M and 5M instruments,
Kite's instruments written as a Kite CSV. Every contender is loaded with exactly these keys and
tokens: resolverd from a snapshot of the same registry, the peers from the same pairs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns

import numpy as np
from numpy.typing import NDArray

from resolverd import Registry, compile_snapshot
from resolverd.loaders.kite import load_kite
from resolverd.synthetic import generate_universe

from .core import KITE_FILE
from .data import BROKER, kite_column
from .masters.kite import write_kite

SIZES = {"1m": 1_000_000, "5m": 5_000_000}
KITE_TRADE_DATE = dt.date(2024, 4, 3)  # the real file's own date (its contracts expire after it)


@dataclass(frozen=True)
class Dataset:
    """One dataset, materialised in `directory`: `csv` (a Kite instruments CSV, what a trading
    process parses at start-up today) and `snapshot` (resolverd's file compiled from it)."""

    name: str
    directory: Path
    csv: Path
    snapshot: Path
    keys: list[str]
    tokens: NDArray[np.uint64]
    instruments: int
    compile_seconds: float

    def __len__(self) -> int:
        return len(self.keys)

    def pairs(self) -> list[tuple[str, int]]:
        return list(zip(self.keys, self.tokens.tolist(), strict=True))


def missing(name: str) -> str | None:
    """Why dataset `name` cannot be built here, or None."""
    if name == "kite" and not KITE_FILE.exists():
        return f"the real Kite file is not present at {KITE_FILE} (set RESOLVERD_SHARED_DATA)"
    if name not in ("kite", *SIZES):
        return f"unknown dataset {name!r}; known: kite, {', '.join(SIZES)}"
    return None


def build(name: str, directory: Path) -> Dataset:
    """Materialise dataset `name` in `directory` (which must exist)."""
    why = missing(name)
    if why:
        raise ValueError(why)
    if name != "kite":
        return synthetic(name, directory, SIZES[name])
    csv = directory / f"{name}-instruments.csv"
    csv.write_bytes(KITE_FILE.read_bytes())
    registry = Registry.from_instruments(load_kite(csv), trade_date=KITE_TRADE_DATE)
    return _compiled(name, directory, csv, registry)


def synthetic(name: str, directory: Path, size: int) -> Dataset:
    """The Kite-only synthetic universe of `size` instruments as dataset `name`."""
    # Compiled from the generated registry (the CSV holds the same rows): reading 5M rows
    # back as Python records would cost minutes and measure nothing this suite reports.
    registry = generate_universe(size, brokers=(BROKER,))
    csv = directory / f"{name}-instruments.csv"
    write_kite(registry.instruments(), csv)
    return _compiled(name, directory, csv, registry)


def _compiled(name: str, directory: Path, csv: Path, registry: Registry) -> Dataset:
    start = perf_counter_ns()
    snapshot_bytes = compile_snapshot(registry)
    seconds = (perf_counter_ns() - start) / 1e9
    snapshot = directory / f"{name}.snap"
    snapshot.write_bytes(snapshot_bytes)
    snapshot.chmod(0o644)
    keys, tokens = kite_column(registry)
    return Dataset(name, directory, csv, snapshot, keys, tokens, len(registry), seconds)
