"""The benchmark's inputs: a synthetic universe, its snapshot, and the Kite column of both."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter_ns

import numpy as np
from numpy.typing import NDArray

from resolverd import NO_TOKEN, Registry, compile_snapshot
from resolverd.synthetic import generate_universe

BROKER = "kite"
FEED = "kite"


@dataclass(frozen=True)
class Universe:
    """A compiled synthetic universe and the instruments Kite lists in it, in registry order."""

    registry: Registry
    snapshot: bytearray
    compile_seconds: float
    keys: list[str]
    tokens: NDArray[np.uint64]

    def token_by_key(self) -> dict[str, int]:
        return dict(zip(self.keys, self.tokens.tolist(), strict=True))

    def key_by_token(self) -> dict[int, str]:
        return dict(zip(self.tokens.tolist(), self.keys, strict=True))


def kite_column(registry: Registry) -> tuple[list[str], NDArray[np.uint64]]:
    """The keys Kite lists and their Kite tokens."""
    column = next(c for c in registry.tokens if c.broker == BROKER)
    values = np.asarray(column.values, dtype=np.uint64)
    listed = np.flatnonzero(values != NO_TOKEN)
    keys = registry.keys
    return [keys[i] for i in listed.tolist()], values[listed]


def build(size: int, *, seed: int = 0) -> Universe:
    """generate_universe(size) with every broker, compiled (the compile is timed once)."""
    registry = generate_universe(size, seed=seed)
    start = perf_counter_ns()
    snapshot = compile_snapshot(registry, build_time_ns=0)
    elapsed = (perf_counter_ns() - start) / 1e9
    keys, tokens = kite_column(registry)
    return Universe(registry, snapshot, elapsed, keys, tokens)


def fresh(strings: Iterable[str]) -> list[str]:
    """Equal but distinct str objects with no cached hash, as keys arriving from elsewhere."""
    return [s.encode().decode() for s in strings]


def shuffled(count: int, *, seed: int) -> NDArray[np.intp]:
    return np.random.default_rng(seed).permutation(count)


@contextmanager
def pure_python() -> Iterator[None]:
    """Resolvers opened inside get the pure-Python lookups, as where resolverd._speedups was
    not built (RESOLVERD_PURE_PYTHON=1, read when a resolver binds its lookups)."""
    previous = os.environ.get("RESOLVERD_PURE_PYTHON")
    os.environ["RESOLVERD_PURE_PYTHON"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["RESOLVERD_PURE_PYTHON"]
        else:
            os.environ["RESOLVERD_PURE_PYTHON"] = previous
