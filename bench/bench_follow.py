"""pytest-benchmark suite: what following a registry by name adds to a hot lookup.

A small synthetic registry is published in a temporary directory by the daemon's own
`Publisher` (no daemon process, no ZeroMQ), and the same hot ``token()`` is timed through a
resolver opened by file path, one opened by registry name (which checks the control segment's
sequence on every lookup), one that has followed a swap (which should cost the same), and one
following a registry swapped 130 times (whose control file the publisher has renewed). Every
benchmark checks its answer. ``python -m bench daemon`` measures the same difference
interleaved, against the real daemon, for the published figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resolverd import Registry, Resolver, compile_snapshot
from resolverd.daemon.publish import Publisher
from resolverd.synthetic import generate_universe

from .data import BROKER, kite_column

SIZE = 10_000
"""A hot key touches the same few cache lines whatever the size."""
NAME = "bench"
LONG_LIVED = 130
"""Generations published before `test_token_hot_following_a_long_lived_registry`: the control
segment's sequence (2 per swap) would then be past 256, where CPython's cache of small ints
ends, and the publisher has moved to a new control file instead (see shm_layout)."""

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def registry() -> Registry:
    return generate_universe(SIZE, brokers=(BROKER,))


@pytest.fixture(scope="module")
def hot(registry: Registry) -> tuple[str, int]:
    keys, tokens = kite_column(registry)
    i = len(keys) // 2
    return keys[i].encode().decode(), int(tokens[i])


@pytest.fixture(scope="module")
def published(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[tuple[Publisher, Path]]:
    """A publisher of `registry` under `NAME`, at generation 1, and that generation's file."""
    publisher = Publisher(tmp_path_factory.mktemp("shm"), NAME)
    publisher.adopt()
    first = publisher.publish(compile_snapshot(registry, generation=1))
    yield publisher, first.path
    publisher.close()


@pytest.fixture(scope="module")
def by_path(published: tuple[Publisher, Path]) -> Iterator[Resolver]:
    with Resolver.open(published[1]) as r:
        yield r


@pytest.fixture(scope="module")
def following(published: tuple[Publisher, Path]) -> Iterator[Resolver]:
    with Resolver.open(NAME, directory=published[0].directory) as r:
        yield r


@pytest.fixture
def swapped(tmp_path: Path, registry: Registry, hot: tuple[str, int]) -> Iterator[Resolver]:
    """A following resolver that has switched from generation 1 to generation 2."""
    publisher = Publisher(tmp_path, NAME)
    publisher.adopt()
    publisher.publish(compile_snapshot(registry, generation=1))
    with Resolver.open(NAME, directory=tmp_path) as r:
        publisher.publish(compile_snapshot(registry, generation=2))
        assert r.token(hot[0], BROKER) == hot[1]  # the lookup that switches
        assert r.generation == 2
        yield r
    publisher.close()


@pytest.fixture(scope="module")
def long_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Resolver, str, int]]:
    """A following resolver on a registry published `LONG_LIVED` times (a small one, to keep
    the compiles short), with a hot key and its token."""
    registry = generate_universe(1_000, brokers=(BROKER,))
    keys, tokens = kite_column(registry)
    directory = tmp_path_factory.mktemp("long-lived")
    publisher = Publisher(directory, NAME, grace=0.0)
    publisher.adopt()
    for generation in range(1, LONG_LIVED + 1):
        publisher.publish(compile_snapshot(registry, generation=generation))
        publisher.expire()
    with Resolver.open(NAME, directory=directory) as r:
        assert r.generation == LONG_LIVED
        yield r, keys[len(keys) // 2], int(tokens[len(keys) // 2])
    publisher.close()


@pytest.mark.benchmark(group="token, hot key: by path vs following a registry")
def test_token_hot_opened_by_path(benchmark: Any, by_path: Resolver, hot: tuple[str, int]) -> None:
    key, expected = hot
    assert benchmark(by_path.token, key, BROKER) == expected


@pytest.mark.benchmark(group="token, hot key: by path vs following a registry")
def test_token_hot_following_checks_the_generation(
    benchmark: Any, following: Resolver, hot: tuple[str, int]
) -> None:
    key, expected = hot
    assert following.following
    assert benchmark(following.token, key, BROKER) == expected


@pytest.mark.benchmark(group="token, hot key: by path vs following a registry")
def test_token_hot_following_after_a_swap(
    benchmark: Any, swapped: Resolver, hot: tuple[str, int]
) -> None:
    key, expected = hot
    assert benchmark(swapped.token, key, BROKER) == expected
    assert swapped.generation == 2


@pytest.mark.benchmark(group="token, hot key: by path vs following a registry")
def test_token_hot_following_a_long_lived_registry(
    benchmark: Any, long_lived: tuple[Resolver, str, int]
) -> None:
    r, key, expected = long_lived
    assert benchmark(r.token, key, BROKER) == expected
