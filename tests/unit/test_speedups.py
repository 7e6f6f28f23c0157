"""The compiled lookups (resolverd/_speedups.c) against the pure-Python ones: the same answers,
the same misses and errors, and a lifetime that never leaves a read outside the mapping."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from resolverd import Registry, Resolver, UnknownNameError, compile_snapshot
from resolverd import client as client_module
from resolverd.synthetic import generate_universe

from .registries import sample_instruments

pytestmark = pytest.mark.skipif(
    client_module._speedups is None,
    reason="resolverd._speedups was not built (no C compiler at install time)",
)

STRANGERS = ["NSE:NOPE", "", "NFO:NIFTY99JAN1CE", "é:ü", "NSE:RELIANCE\0"]
ODD_TOKENS: list[Any] = [0, 1, 2**63, 2**64 - 1, 2**64, -1, -(2**70), 2**80, "408065", "NSE_FO|0"]


def opened(snapshot: bytes | bytearray, *, pure: bool, **options: Any) -> Resolver:
    previous = os.environ.get("RESOLVERD_PURE_PYTHON")
    os.environ["RESOLVERD_PURE_PYTHON"] = "1" if pure else "0"
    try:
        resolver = Resolver(snapshot, **options)
    finally:
        if previous is None:
            del os.environ["RESOLVERD_PURE_PYTHON"]
        else:
            os.environ["RESOLVERD_PURE_PYTHON"] = previous
    assert resolver.compiled is not pure
    return resolver


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What a lookup did: its answer, or the type and text of what it raised."""
    try:
        return "answer", call(*args, **kwargs)
    except Exception as exc:  # compared, not swallowed
        return type(exc).__name__, str(exc)


@pytest.fixture(scope="module")
def universe() -> bytearray:
    return compile_snapshot(generate_universe(3_000, seed=7))


@pytest.fixture(scope="module")
def sample() -> bytearray:
    return compile_snapshot(Registry.from_instruments(sample_instruments()))


@pytest.fixture(params=[False, True], ids=["fingerprint", "strict"])
def pair(
    request: pytest.FixtureRequest, universe: bytearray
) -> Iterator[tuple[Resolver, Resolver]]:
    compiled = opened(universe, pure=False, strict=request.param)
    pure = opened(universe, pure=True, strict=request.param)
    yield compiled, pure
    compiled.close()
    pure.close()


def test_every_key_and_token_gives_the_same_answer_on_both(
    pair: tuple[Resolver, Resolver],
) -> None:
    compiled, pure = pair
    keys = list(pure)
    for broker in pure.brokers:
        for key in keys + STRANGERS:
            assert outcome(compiled.token, key, broker) == outcome(pure.token, key, broker)
            assert compiled.get_token(key, broker, "-") == pure.get_token(key, broker, "-")
    for feed in pure.feeds:
        ordinals = range(len(keys))
        broker = pure.feed_broker(feed)
        tokens = [
            t
            for i, t in zip(ordinals, (pure.get_token(k, broker) for k in keys), strict=True)
            if t is not None and pure.get_key(t, feed) == keys[i]
        ]
        assert tokens, f"feed {feed} resolves some token"
        for token in tokens[:500] + ODD_TOKENS:
            assert outcome(compiled.key, token, feed) == outcome(pure.key, token, feed)
            assert outcome(compiled.get_key, token, feed, default=0) == outcome(
                pure.get_key, token, feed, 0
            )


def test_a_hit_is_the_registry_answer_and_a_miss_a_key_error(sample: bytearray) -> None:
    r = opened(sample, pure=False)
    assert r.token("NSE:INFY", "kite") == 408065
    assert r.key(408065, "kite") == "NSE:INFY"
    assert r.key(np.uint64(408065), "kite") == "NSE:INFY"
    with pytest.raises(KeyError) as raised:
        r.token("NSE:NOPE", "kite")
    assert raised.value.args == ("NSE:NOPE",)
    assert r.get_token("NSE:NOPE", "kite") is None
    assert r.get_key(1, "kite", default="none") == "none"


def test_unknown_names_and_bad_calls_raise_as_the_pure_lookups_do(sample: bytearray) -> None:
    compiled, pure = opened(sample, pure=False), opened(sample, pure=True)
    for lookup in ("token", "get_token"):
        got = outcome(getattr(compiled, lookup), "NSE:INFY", "nobroker")
        assert got == outcome(getattr(pure, lookup), "NSE:INFY", "nobroker")
        assert got[0] == UnknownNameError.__name__
    for lookup in ("key", "get_key"):
        got = outcome(getattr(compiled, lookup), 408065, "nofeed")
        assert got == outcome(getattr(pure, lookup), 408065, "nofeed")
    assert outcome(compiled.key, "abc", "kite")[0] == outcome(pure.key, "abc", "kite")[0]
    with pytest.raises(TypeError):
        compiled.token("NSE:INFY")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        compiled.get_token("NSE:INFY", "kite", None, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        compiled.get_token("NSE:INFY", "kite", fallback=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("dtype", [np.uint64, np.int64, np.uint32, np.int32])
def test_batch_reverse_lookups_match_the_pure_ones(
    pair: tuple[Resolver, Resolver], dtype: Any
) -> None:
    compiled, pure = pair
    keys = list(pure)
    resolved = 0
    for feed in pure.feeds:
        if pure.feed_kind(feed) != "int":
            continue
        broker = pure.feed_broker(feed)
        tokens = pure.tokens(keys, broker)
        tokens = tokens[pure.feed_ordinals(tokens, feed) >= 0]
        if dtype in (np.uint32, np.int32):
            tokens = tokens[tokens <= np.iinfo(dtype).max]
        shuffled = np.random.default_rng(3).permutation(tokens).astype(dtype)
        queries = np.concatenate([shuffled, np.array([0, 1, 7], dtype=dtype)])
        # 2-D too: the pure-Python batch once remapped whole rows of one (phf.query).
        for batch in (queries, queries[:0], queries[: len(queries) // 2 * 2].reshape(2, -1)):
            assert np.array_equal(compiled.keys(batch, feed), pure.keys(batch, feed))
            assert np.array_equal(
                compiled.feed_ordinals(batch, feed), pure.feed_ordinals(batch, feed)
            )
        if np.dtype(dtype).kind == "i":
            negative = queries.copy()
            negative[::3] = -5
            assert np.array_equal(compiled.keys(negative, feed), pure.keys(negative, feed))
        assert (compiled.keys(shuffled, feed) != b"").all()
        resolved += len(shuffled)
    assert resolved > 1_000


def test_a_closed_resolver_s_bound_lookups_raise_and_its_mapping_is_dropped(
    sample: bytearray,
) -> None:
    r = opened(sample, pure=False)
    token, key = r.token, r.key
    lookups = r._compiled
    r.close()
    with pytest.raises(ValueError, match="closed"):
        token("NSE:INFY", "kite")
    with pytest.raises(ValueError, match="closed"):
        key(408065, "kite")
    with pytest.raises(ValueError, match="closed"):
        lookups.feed_ordinals_into(np.zeros(1, np.uint64), "kite", np.zeros(1, np.intp))
    assert r._buffer is None and r._memory is None


def test_a_batch_that_another_thread_closes_under_finishes_on_a_mapping_it_holds(
    universe: bytearray,
) -> None:
    r = opened(universe, pure=False)
    lookups = r._compiled
    tokens = np.tile(r.tokens(list(r), "kite"), 200)
    ordinals = np.empty(tokens.shape, np.intp)
    started = threading.Event()

    def close_soon() -> None:
        started.wait()
        r.close()

    closer = threading.Thread(target=close_soon)
    closer.start()
    started.set()
    lookups.feed_ordinals_into(tokens, "kite", ordinals)  # the GIL is released inside
    closer.join()
    assert (ordinals >= 0).all()
    with pytest.raises(ValueError, match="closed"):
        r.token("NSE:INFY", "kite")


def test_a_buffer_not_8_byte_aligned_gets_the_pure_lookups(sample: bytearray) -> None:
    shifted = memoryview(bytearray(b"\0") + sample)[1:]
    os.environ.pop("RESOLVERD_PURE_PYTHON", None)
    r = Resolver(shifted)
    assert not r.compiled
    assert r.token("NSE:INFY", "kite") == 408065


def test_the_environment_chooses_the_pure_lookups(
    sample: bytearray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESOLVERD_PURE_PYTHON", "1")
    assert not Resolver(sample).compiled
    monkeypatch.delenv("RESOLVERD_PURE_PYTHON")
    assert Resolver(sample).compiled


@pytest.mark.parametrize("strict", [False, True])
def test_a_2d_batch_of_string_tokens_resolves_row_by_row(universe: bytearray, strict: bool) -> None:
    # The pure-Python batch once hashed a 2-D array's rows as whole lists.
    r = opened(universe, pure=True, strict=strict)
    feed = next(f for f in r.feeds if r.feed_kind(f) == "str")
    tokens = [r.token(k, r.feed_broker(feed)) for k in list(r)[:6]]
    grid = np.array(tokens, dtype=object).reshape(2, 3)
    assert r.keys(grid, feed).tolist() == [
        [k.encode() for k in list(r)[:3]],
        [k.encode() for k in list(r)[3:6]],
    ]


def test_batch_forward_lookups_match_the_pure_ones(pair: tuple[Resolver, Resolver]) -> None:
    compiled, pure = pair
    keys = list(pure)
    queries = [*np.random.default_rng(5).permutation(keys).tolist(), *STRANGERS]
    for batch in (queries, tuple(queries), [], np.array(queries)):
        assert np.array_equal(compiled.ordinals(batch), pure.ordinals(batch))
        for broker in pure.brokers:
            assert np.array_equal(compiled.tokens(batch, broker), pure.tokens(batch, broker))
    assert (compiled.ordinals(queries)[: len(keys)] >= 0).all()
    assert (compiled.ordinals(STRANGERS) == -1).all()
    for bad in ([b"NSE:INFY"], ["NSE:INFY", 5]):
        assert outcome(compiled.ordinals, bad)[0] == outcome(pure.ordinals, bad)[0] == "TypeError"
