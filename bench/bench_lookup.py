"""pytest-benchmark suite: single and batch lookups, with the dict and lmdb peers beside them.

Every benchmark also checks its answers, so ``pytest bench --benchmark-disable`` runs each once
as a correctness test. The universe has ``$RESOLVERD_BENCH_SIZE`` instruments (100,000 by
default). pytest-benchmark repeats one call many times, so the random-key batches reuse their
1,000 query strings and, after the first round, the dict peer finds their hashes cached; the
``python -m bench core`` harness uses fresh strings for the published random-key figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from resolverd import Resolver

from .data import BROKER, FEED, Universe, build, fresh, pure_python, shuffled
from .peers import LmdbPeer, dict_batch, dict_get_batch, lmdb_missing

SIZE = int(os.environ.get("RESOLVERD_BENCH_SIZE", "100000"))
RANDOM_BATCH = 1_000
MODES = {"fingerprint": {}, "strict": {"strict": True}, "cache": {"cache": True}, "pure": {}}
"""Resolver options per mode; "pure" is the fingerprint mode on the pure-Python lookups."""

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def universe() -> Universe:
    return build(SIZE)


@pytest.fixture(scope="module")
def resolvers(universe: Universe) -> Iterator[dict[str, Resolver]]:
    opened = {
        mode: Resolver(universe.snapshot, **options)
        for mode, options in MODES.items()
        if mode != "pure"
    }
    with pure_python():
        opened["pure"] = Resolver(universe.snapshot, **MODES["pure"])
    yield opened
    for r in opened.values():
        r.close()


@pytest.fixture(scope="module")
def by_key(universe: Universe) -> dict[str, int]:
    return universe.token_by_key()


@pytest.fixture(scope="module")
def lmdb_peer(universe: Universe, by_key: dict[str, int]) -> Iterator[LmdbPeer]:
    reason = lmdb_missing()
    if reason:
        pytest.skip(reason)
    width = max(len(k.encode()) for k in universe.keys)
    with LmdbPeer(by_key.items(), len(by_key), key_bytes=width) as peer:
        yield peer


@pytest.fixture(scope="module")
def hot(universe: Universe) -> tuple[str, int]:
    i = len(universe.keys) // 2
    return universe.keys[i].encode().decode(), int(universe.tokens[i])


@pytest.fixture(scope="module")
def random_queries(universe: Universe) -> tuple[list[str], list[int]]:
    """1,000 keys drawn uniformly from the whole universe, as fresh str objects."""
    picks = np.random.default_rng(7).integers(0, len(universe.keys), RANDOM_BATCH)
    return fresh(universe.keys[i] for i in picks.tolist()), universe.tokens[picks].tolist()


@pytest.fixture(scope="module")
def shuffled_tokens(universe: Universe) -> tuple[np.ndarray[Any, Any], list[str]]:
    order = shuffled(len(universe.keys), seed=3)
    return universe.tokens[order].copy(), [universe.keys[i] for i in order.tolist()]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.benchmark(group="token, hot key")
def test_token_hot(
    benchmark: Any, resolvers: dict[str, Resolver], hot: tuple[str, int], mode: str
) -> None:
    key, expected = hot
    assert benchmark(resolvers[mode].token, key, BROKER) == expected


@pytest.mark.benchmark(group="token, hot key")
def test_dict_hot(benchmark: Any, by_key: dict[str, int], hot: tuple[str, int]) -> None:
    key, expected = hot
    assert benchmark(by_key.__getitem__, key) == expected


@pytest.mark.benchmark(group="token, hot key")
def test_lmdb_hot(benchmark: Any, lmdb_peer: LmdbPeer, hot: tuple[str, int]) -> None:
    key, expected = hot
    assert benchmark(lmdb_peer.token, key) == expected


@pytest.mark.parametrize("mode", ["fingerprint", "strict", "pure"])
@pytest.mark.benchmark(group="token, 1,000 random keys")
def test_token_random_batch(
    benchmark: Any,
    resolvers: dict[str, Resolver],
    random_queries: tuple[list[str], list[int]],
    mode: str,
) -> None:
    queries, expected = random_queries
    token = resolvers[mode].token

    def run() -> list[int | str]:
        return [token(q, BROKER) for q in queries]

    assert benchmark(run) == expected


@pytest.mark.benchmark(group="token, 1,000 random keys")
def test_dict_random_batch(
    benchmark: Any, by_key: dict[str, int], random_queries: tuple[list[str], list[int]]
) -> None:
    queries, expected = random_queries
    assert benchmark(dict_batch, by_key, queries) == expected


@pytest.mark.benchmark(group="token, 1,000 random keys")
def test_lmdb_random_batch(
    benchmark: Any, lmdb_peer: LmdbPeer, random_queries: tuple[list[str], list[int]]
) -> None:
    queries, expected = random_queries
    assert benchmark(lmdb_peer.batch, queries) == expected


@pytest.mark.benchmark(group="batch")
def test_tokens_batch(benchmark: Any, resolvers: dict[str, Resolver], universe: Universe) -> None:
    keys = fresh(universe.keys)
    got = benchmark(resolvers["fingerprint"].tokens, keys, BROKER)
    assert np.array_equal(got, universe.tokens)


@pytest.mark.benchmark(group="batch")
def test_keys_batch(
    benchmark: Any,
    resolvers: dict[str, Resolver],
    shuffled_tokens: tuple[np.ndarray[Any, Any], list[str]],
) -> None:
    tokens, expected = shuffled_tokens
    got = benchmark(resolvers["fingerprint"].keys, tokens, FEED)
    assert got.astype(str).tolist() == expected


@pytest.mark.benchmark(group="batch")
def test_feed_ordinals_batch(
    benchmark: Any,
    resolvers: dict[str, Resolver],
    shuffled_tokens: tuple[np.ndarray[Any, Any], list[str]],
) -> None:
    r = resolvers["fingerprint"]
    tokens, expected = shuffled_tokens
    got = benchmark(r.feed_ordinals, tokens, FEED)
    assert [r.record_at(i).key for i in got[:100].tolist()] == expected[:100]
    assert (got >= 0).all()


@pytest.mark.benchmark(group="batch")
def test_dict_keys_batch(
    benchmark: Any, universe: Universe, shuffled_tokens: tuple[np.ndarray[Any, Any], list[str]]
) -> None:
    tokens, expected = shuffled_tokens
    by_token = universe.key_by_token()
    assert benchmark(dict_get_batch, by_token, tokens.tolist()) == expected
