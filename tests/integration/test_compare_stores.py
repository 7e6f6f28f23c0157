"""The peer comparison's contenders (`bench.stores`) and its lookups section
(`bench.compare_lookups`) on a small synthetic dataset: every contender answers every key both
ways, singly, inline and in batches, with ints for tokens and str for keys, and leaves nothing
behind; one that cannot run here skips with its own reason; the section names every contender
that could run and refuses to time one that answers wrong. Nothing here is timed."""

from __future__ import annotations

import importlib.util
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import compare_lookups, stores
from bench.compare_lookups import FIGURES, Single, as_keys, as_tokens
from bench.data import fresh
from bench.datasets import Dataset, synthetic
from bench.stores import (
    STORES,
    DictStore,
    Opened,
    PostgresStore,
    RedisStore,
    ResolverdStore,
    Spec,
    Store,
)

pytestmark = pytest.mark.integration

INSTRUMENTS = 3_000
LATENCY = re.compile(r"^[\d,.]+ / [\d,.]+ / [\d,.]+ ns$")
RATE = re.compile(r"^[\d,.]+ [kM] keys/s$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """A Kite-only synthetic universe as the comparison's datasets are made: a Kite CSV and a
    snapshot compiled from the same registry."""
    return synthetic("small", tmp_path_factory.mktemp("compare"), INSTRUMENTS)


def _available(store: Store) -> Store:
    why = store.missing()
    if why:
        pytest.skip(f"{store.name}: {why}")
    return store


def _is_miss(lookup: Callable[[], Any]) -> bool:
    """A miss raises KeyError or gives None (the `Opened` contract)."""
    try:
        return lookup() is None
    except KeyError:
        return True


def _leftovers(store: Store, spec: Spec) -> list[str]:
    """What a network peer's cleanup left: a Redis hash, a PostgreSQL table."""
    left: list[str] = []
    if store.name == "redis HGET":
        import redis

        client = redis.Redis(host=spec["host"], port=spec["port"])
        try:
            left += [name for name in (spec["forward"], spec["reverse"]) if client.exists(name)]
        finally:
            client.close()
    if store.name == "PostgreSQL SELECT":
        import psycopg

        with psycopg.connect(spec["dsn"], autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (spec["table"],)).fetchone()
            if row is not None and row[0] is not None:
                left.append(spec["table"])
    return left


@pytest.mark.parametrize("store", STORES, ids=lambda s: s.name)
def test_every_store_answers_every_key_both_ways_and_leaves_nothing(
    store: Store, dataset: Dataset, tmp_path: Path
) -> None:
    _available(store)
    keys, tokens = dataset.keys, dataset.tokens.tolist()
    spec = store.prepare(dataset, tmp_path)
    try:
        opened = store.open(spec)
        try:
            forward = [opened.forward(k) for k in fresh(keys)]
            reverse = [opened.reverse(t) for t in tokens]
            assert forward == tokens
            assert reverse == keys
            assert {type(t) for t in forward} == {int}
            assert {type(k) for k in reverse} == {str}
            # The form the section times (a dict subscripted, resolverd's two-argument call).
            assert [Single.of(opened, "forward").answer(k) for k in fresh(keys)] == tokens
            assert [Single.of(opened, "reverse").answer(t) for t in tokens] == keys
            assert as_tokens(opened.forward_batch(fresh(keys))) == tokens
            assert as_keys(opened.reverse_batch(tokens)) == keys
            # A batch answers in the order asked, repeats included.
            twice = [keys[2], keys[0], keys[2]]
            assert as_tokens(opened.forward_batch(twice)) == [tokens[2], tokens[0], tokens[2]]
            assert _is_miss(lambda: opened.forward("NSE:NOT-A-KEY"))
            assert _is_miss(lambda: opened.reverse(max(tokens) + 1))
        finally:
            opened.close()
    finally:
        store.cleanup(spec)
    assert [p.name for p in tmp_path.iterdir()] == []
    assert _leftovers(store, spec) == []


class _Recorded:
    """A store that keeps the specs it prepared, to look for leftovers afterwards."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name, self.shared = store.name, store.shared
        self.remote = bool(getattr(store, "remote", False))
        self.specs: list[Spec] = []

    def missing(self) -> str | None:
        return self.store.missing()

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        spec = self.store.prepare(dataset, workdir)
        self.specs.append(spec)
        return spec

    def open(self, spec: Spec) -> Opened:
        return self.store.open(spec)

    def cleanup(self, spec: Spec) -> None:
        self.store.cleanup(spec)


def test_the_section_names_every_contender_that_could_run(dataset: Dataset) -> None:
    lines: list[str] = []
    before = sorted(p.name for p in dataset.directory.iterdir())
    recorded = [_Recorded(s) for s in STORES]
    section = compare_lookups.run(dataset, recorded, log=lines.append, quick=True)
    ran = [s.name for s in STORES if s.missing() is None]
    assert section.data["failures"] == []
    assert section.skipped == [f"{s.name}: {s.missing()}" for s in STORES if s.missing()]
    assert section.data["contenders"] == ran
    assert [row["figure"] for row in section.rows[: len(FIGURES)]] == list(FIGURES.values())
    for row in section.rows:
        assert list(row) == ["figure", *ran]
    for row in section.rows[: len(FIGURES)]:
        assert all(LATENCY.match(row[name]) for name in ran), row
    for row in section.rows[len(FIGURES) : len(FIGURES) + 2]:
        assert all(RATE.match(row[name]) for name in ran), row
    for name in ran:
        figures = section.data["single"][name]
        assert set(figures) == set(FIGURES)
        for t in figures.values():
            assert t["calls"] > 0
            assert t["p50"] <= t["p99"] <= t["p999"]
        assert section.data["batch"][name]["batch_keys"] == len(dataset)
    if ResolverdStore.name in ran:
        ratios = section.notes[: len(FIGURES) + 2]
        for name in ran[1:]:
            assert all(name in note for note in ratios), name
    assert sorted(p.name for p in dataset.directory.iterdir()) == before
    assert [len(r.specs) for r in recorded if r.name in ran] == [1] * len(ran)
    assert [left for r in recorded for spec in r.specs for left in _leftovers(r, spec)] == []


class _LyingDict(DictStore):
    """The dict store, one token off for one key."""

    name = "lying dict"

    def __init__(self, liar: str) -> None:
        self.liar = liar
        self.closed = 0
        self.cleaned: list[Spec] = []

    def open(self, spec: Spec) -> Opened:
        opened = super().open(spec)
        by_key = dict(opened.keep[0])
        by_key[self.liar] += 1
        opened.forward = by_key.__getitem__
        opened.inline = {**opened.inline, "forward": by_key}
        opened.close = self._close
        return opened

    def _close(self) -> None:
        self.closed += 1

    def cleanup(self, spec: Spec) -> None:
        self.cleaned.append(spec)
        super().cleanup(spec)


class _Unopenable(DictStore):
    name = "unopenable"

    def __init__(self) -> None:
        self.cleaned: list[Spec] = []

    def open(self, spec: Spec) -> Opened:
        raise OSError("the file went away")

    def cleanup(self, spec: Spec) -> None:
        self.cleaned.append(spec)
        super().cleanup(spec)


def test_a_contender_that_answers_wrong_is_a_failure_and_not_timed(dataset: Dataset) -> None:
    liar, unopenable = _LyingDict(dataset.keys[5]), _Unopenable()
    section = compare_lookups.run(
        dataset, [ResolverdStore(), liar, unopenable], log=lambda _: None, quick=True
    )
    failures = section.data["failures"]
    assert len(failures) == 2
    assert failures[0].startswith(f"lying dict: forward({dataset.keys[5]!r}) gave ")
    assert failures[0].endswith(f"expected {int(dataset.tokens[5])}")
    assert failures[1].startswith("unopenable: open failed: OSError('the file went away')")
    assert section.data["contenders"] == [ResolverdStore.name]
    assert all(list(row) == ["figure", ResolverdStore.name] for row in section.rows)
    assert liar.closed == 1
    assert len(liar.cleaned) == 1
    assert len(unopenable.cleaned) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_network_peer_without_its_server_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setattr(stores, "REDIS_PORT", port)
    monkeypatch.setenv("RESOLVERD_BENCH_DSN", f"host=127.0.0.1 port={port} dbname=test")
    if importlib.util.find_spec("redis") is not None:
        assert (RedisStore().missing() or "").startswith(f"no Redis server at 127.0.0.1:{port} (")
    if importlib.util.find_spec("psycopg") is not None:
        assert (PostgresStore().missing() or "").startswith(
            f"no PostgreSQL server at 'host=127.0.0.1 port={port} dbname=test' ("
        )
