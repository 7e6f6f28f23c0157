"""pytest-benchmark suite: every contender of the peer comparison (`bench.stores`) on one
dataset, forward and reverse, 1,000 random lookups per call.

The dataset is the real Kite file where it is present, else a 30,000-instrument synthetic
universe. Every benchmark checks its answers, so ``pytest bench --benchmark-disable`` runs each
once as a correctness test; a contender that cannot run here skips with its reason. The
published figures come from ``python -m bench compare``, which times single calls in batches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .datasets import Dataset, build, missing, synthetic
from .stores import STORES, Opened, Store

pytestmark = pytest.mark.bench
QUERIES = 1_000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    directory = tmp_path_factory.mktemp("peers")
    if missing("kite") is None:
        return build("kite", directory)
    return synthetic("small", directory, 30_000)


@pytest.fixture(scope="module", params=STORES, ids=[s.name for s in STORES])
def opened(request: pytest.FixtureRequest, dataset: Dataset) -> Iterator[Opened]:
    store: Store = request.param
    why = store.missing()
    if why:
        pytest.skip(why)
    spec = store.prepare(dataset, Path(dataset.directory))
    try:
        lookups = store.open(spec)
        try:
            yield lookups
        finally:
            lookups.close()
    finally:
        store.cleanup(spec)


@pytest.fixture(scope="module")
def sample(dataset: Dataset) -> list[tuple[str, int]]:
    return random.Random(7).sample(dataset.pairs(), QUERIES)


def bench_forward_random(benchmark: Any, opened: Opened, sample: list[tuple[str, int]]) -> None:
    keys = [k for k, _ in sample]
    forward = opened.forward
    got = benchmark(lambda: [forward(k) for k in keys])
    assert [int(t) for t in got] == [t for _, t in sample]


def bench_reverse_random(benchmark: Any, opened: Opened, sample: list[tuple[str, int]]) -> None:
    tokens = [t for _, t in sample]
    reverse = opened.reverse
    got = benchmark(lambda: [reverse(t) for t in tokens])
    assert got == [k for k, _ in sample]
