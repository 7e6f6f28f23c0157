"""The read-only client: lookups both ways, misses, modes, batches and lifetime."""

from __future__ import annotations

import datetime as dt
import mmap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolverd import (
    NO_TOKEN,
    Instrument,
    LayoutError,
    Registry,
    Resolver,
    UnavailableError,
    UnknownNameError,
    compile_snapshot,
)
from resolverd.shm_layout import (
    ControlState,
    control_file_name,
    encode_control,
    read_header,
    set_generation,
    snapshot_file_name,
)

from .registries import KEY_ALPHABET, instrument, instrument_sets, sample_instruments


@pytest.fixture
def sample() -> Resolver:
    registry = Registry.from_instruments(sample_instruments(), trade_date=dt.date(2024, 4, 3))
    return Resolver(compile_snapshot(registry, generation=5))


def tokens_of(row: Instrument) -> dict[str, tuple[str, int | str]]:
    return {t.broker: (t.feed, t.value) for t in row.tokens}


@settings(max_examples=80, deadline=None)
@given(instrument_sets(), st.lists(st.text(KEY_ALPHABET, min_size=1, max_size=40), max_size=20))
def test_every_key_resolves_both_ways_and_unknown_keys_miss(
    rows: list[Instrument], strangers: list[str]
) -> None:
    resolver = Resolver(compile_snapshot(Registry.from_instruments(rows)))
    known = {row.key for row in rows}
    assert len(resolver) == len(rows)
    assert set(resolver) == known
    for row in rows:
        assert row.key in resolver
        assert resolver.record(row.key) == row
        for broker in resolver.brokers:
            if broker not in tokens_of(row):
                assert resolver.get_token(row.key, broker, "none") == "none"
                with pytest.raises(KeyError):
                    resolver.token(row.key, broker)
        for broker, (feed, value) in tokens_of(row).items():
            assert resolver.token(row.key, broker) == value
            assert resolver.key(value, feed) == row.key
    for key in strangers:
        if key not in known:
            assert key not in resolver
            for broker in resolver.brokers:
                assert resolver.get_token(key, broker) is None
                with pytest.raises(KeyError):
                    resolver.token(key, broker)


@settings(max_examples=40, deadline=None)
@given(instrument_sets())
def test_batch_lookups_agree_with_single_lookups(rows: list[Instrument]) -> None:
    resolver = Resolver(compile_snapshot(Registry.from_instruments(rows)))
    keys = [row.key for row in rows] + ["NOT:A:KEY:" + rows[0].key]
    for broker in resolver.brokers:
        batch = resolver.tokens(keys, broker)
        for key, got in zip(keys, batch.tolist(), strict=True):
            single = resolver.get_token(key, broker)
            if single is None:
                assert got in (NO_TOKEN, b"")
            else:
                assert got == (single.encode() if isinstance(single, str) else single)
    for feed in resolver.feeds:
        values = [v for row in rows for t in row.tokens if t.feed == feed for v in [t.value]]
        keys_back = resolver.keys(
            np.array(values, dtype=np.uint64) if resolver.feed_kind(feed) == "int" else values, feed
        )
        assert [k.decode() for k in keys_back.tolist()] == [resolver.key(v, feed) for v in values]


def test_reverse_batch_marks_misses_and_never_answers_another_key(sample: Resolver) -> None:
    keys = sample.keys(np.array([408065, 1, 17437186, 2**64 - 2], dtype=np.uint64), "kite")
    assert keys.tolist() == [b"NSE:INFY", b"", b"NFO:NIFTY24APR22500CE", b""]
    ordinals = sample.feed_ordinals(np.array([-1, 408065], dtype=np.int64), "kite")
    assert ordinals[0] == -1
    assert ordinals[1] >= 0


def test_string_tokens_resolve_both_ways(sample: Resolver) -> None:
    assert sample.token("NFO:NIFTY24APR22500CE", "upstox") == "NSE_FO|68114"
    assert sample.key("NSE_FO|68114", "upstox") == "NFO:NIFTY24APR22500CE"
    assert sample.get_key("NSE_FO|68115", "upstox") is None
    assert sample.keys(["NSE_EQ|INE009A01021", "nope"], "upstox").tolist() == [b"NSE:INFY", b""]
    assert sample.tokens(["NSE:INFY", "BSE:INFY"], "upstox").tolist() == [
        b"NSE_EQ|INE009A01021",
        b"",
    ]


def test_a_broker_missing_from_a_row_is_a_miss_for_that_broker_only(sample: Resolver) -> None:
    assert sample.token("BSE:INFY", "kite") == 128053508
    assert sample.get_token("BSE:INFY", "angel") is None
    with pytest.raises(KeyError):
        sample.token("BSE:INFY", "upstox")


def test_an_unknown_broker_or_feed_is_an_error_not_a_miss(sample: Resolver) -> None:
    with pytest.raises(UnknownNameError, match="unknown broker 'kitee'; this snapshot has angel"):
        sample.get_token("NSE:INFY", "kitee")
    with pytest.raises(UnknownNameError):
        sample.get_token("NOT:THERE", "kitee")
    with pytest.raises(UnknownNameError, match="unknown feed 'angel'"):
        sample.get_key(1594, "angel")
    with pytest.raises(UnknownNameError):
        sample.tokens(["NSE:INFY"], "kitee")


def test_header_facts_are_exposed(sample: Resolver) -> None:
    assert sample.generation == 5
    assert sample.trade_date == dt.date(2024, 4, 3)
    assert sample.brokers == ("angel", "kite", "upstox")
    assert sample.feeds == ("angel:NFO", "angel:NSE", "kite", "upstox")
    assert sample.checksum == sample.header.payload_checksum != 0


def tamper_key(snapshot: bytearray, old: bytes, new: bytes) -> bytearray:
    """Overwrite a key's stored bytes, keeping its fingerprint: what only strict mode sees."""
    start = snapshot.find(old.ljust(8, b"\0"))
    assert start > 0
    snapshot[start : start + len(new)] = new
    return snapshot


def test_strict_mode_compares_the_stored_key_bytes() -> None:
    snapshot = compile_snapshot(Registry.from_instruments(sample_instruments()))
    tampered = tamper_key(snapshot, b"BSE:INFY", b"BSE:INFZ")
    fingerprint = Resolver(tampered)
    strict = Resolver(tampered, strict=True)
    assert fingerprint.token("BSE:INFY", "kite") == 128053508
    assert strict.get_token("BSE:INFY", "kite") is None
    assert "BSE:INFY" not in strict
    assert strict.tokens(["BSE:INFY", "NSE:INFY"], "kite").tolist() == [NO_TOKEN, 408065]
    assert strict.token("NSE:INFY", "kite") == 408065


def test_the_hot_key_cache_answers_like_the_table(sample: Resolver) -> None:
    cached = Resolver(
        compile_snapshot(Registry.from_instruments(sample_instruments())), cache=True, cache_limit=1
    )
    for _ in range(2):
        assert cached.token("NSE:INFY", "kite") == 408065
        assert cached.token("BSE:INFY", "kite") == 128053508
        assert cached.get_token("NSE:NOPE", "kite", -1) == -1
        assert cached.get_token("BSE:INFY", "angel") is None
    with pytest.raises(KeyError):
        cached.token("NSE:NOPE", "kite")


def test_the_cache_answers_reverse_lookups_like_the_table(sample: Resolver) -> None:
    snapshot = compile_snapshot(Registry.from_instruments(sample_instruments()))
    cached = Resolver(snapshot, cache=True, cache_limit=2)
    pairs = [(t.feed, t.value, i.key) for i in sample_instruments() for t in i.tokens]
    assert {feed for feed, _, _ in pairs} >= {"kite", "angel:NSE", "upstox"}  # both kinds
    for _ in range(2):  # the second round answers from the cache, up to its limit
        for feed, value, key in pairs:
            assert cached.key(value, feed) == key == sample.key(value, feed)
            assert cached.get_key(value, feed) == key
        assert cached.get_key(1, "kite", "none") == "none"
        assert cached.get_key("NSE_EQ|NOPE", "upstox") is None
        with pytest.raises(KeyError):
            cached.key(1, "kite")
    with pytest.raises(UnknownNameError, match="unknown feed 'nope'"):
        cached.key(1, "nope")


def test_close_works_while_a_view_is_alive_and_the_view_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    path.write_bytes(compile_snapshot(Registry.from_instruments(sample_instruments())))
    resolver = Resolver.open(path)
    records = resolver.records
    lots = sorted(records["lot_size"].tolist())
    resolver.close()
    resolver.close()
    assert sorted(records["lot_size"].tolist()) == lots
    with pytest.raises(ValueError, match="closed"):
        resolver.token("NSE:INFY", "kite")


def test_the_mapping_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    path.write_bytes(compile_snapshot(Registry.from_instruments(sample_instruments())))
    with Resolver.open(path) as resolver:
        with pytest.raises(ValueError, match="read-only"):
            resolver.records["lot_size"][0] = 7
        assert isinstance(resolver._buffer, mmap.mmap)
        with pytest.raises(TypeError):
            resolver._buffer[0] = 0
    assert path.read_bytes()[:8] == b"RSLVSNAP"


def test_a_missing_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="no such snapshot file"):
        Resolver.open(tmp_path / "absent.snap")


def test_a_bare_file_name_ending_in_snap_is_a_file_not_a_registry_name() -> None:
    with pytest.raises(UnavailableError, match=r"absent\.snap: no such snapshot file"):
        Resolver.open("absent.snap")


def test_an_empty_or_foreign_file_is_a_layout_error_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.snap"
    empty.touch()
    with pytest.raises(LayoutError, match=r"empty\.snap: truncated"):
        Resolver.open(empty)
    foreign = tmp_path / "foreign.snap"
    foreign.write_bytes(b"PK\x03\x04" + bytes(400))
    with pytest.raises(LayoutError, match=r"foreign\.snap: bad magic"):
        Resolver.open(foreign)


def publish(directory: Path, name: str, generation: int) -> bytearray:
    snapshot = compile_snapshot(Registry.from_instruments(sample_instruments()))
    set_generation(snapshot, generation)
    (directory / snapshot_file_name(name, generation)).write_bytes(snapshot)
    state = ControlState(
        2,
        generation,
        read_header(snapshot).payload_checksum,
        0,
        0,
        snapshot_file_name(name, generation),
    )
    (directory / control_file_name(name)).write_bytes(encode_control(state))
    return snapshot


def test_a_named_registry_opens_its_current_generation(tmp_path: Path) -> None:
    publish(tmp_path, "universe", 3)
    with Resolver.open("universe", directory=tmp_path) as resolver:
        assert resolver.generation == 3
        assert resolver.token("NSE:INFY", "kite") == 408065


def test_an_unpublished_name_says_the_daemon_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="'universe' is not published"):
        Resolver.open("universe", directory=tmp_path)


def test_a_control_segment_that_disagrees_with_its_snapshot_is_refused(tmp_path: Path) -> None:
    publish(tmp_path, "universe", 3)
    control = tmp_path / control_file_name("universe")
    state = ControlState(4, 4, 0, 0, 0, snapshot_file_name("universe", 3))
    control.write_bytes(encode_control(state))
    with pytest.raises(LayoutError, match="generation 3 in the snapshot, 4 in the control"):
        Resolver.open("universe", directory=tmp_path)


def test_strict_batch_lookups_take_non_ascii_keys() -> None:
    registry = Registry.from_instruments([instrument("NSE:ÄBC", 11), instrument("NSE:AB", 12)])
    with Resolver(compile_snapshot(registry), strict=True) as resolver:
        assert resolver.ordinals(["NSE:ÄBC", "NSE:ÄB", "NSE:AB"]).tolist()[1] == -1
        assert resolver.tokens(["NSE:ÄBC", "NSE:AB"], "kite").tolist() == [11, 12]
