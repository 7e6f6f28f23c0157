"""The compiler: what compiles, what is refused, and determinism."""

from __future__ import annotations

import random
import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolverd import Instrument, Registry, RegistryError, Resolver, compile_snapshot
from resolverd.shm_layout import read_header

from .registries import instrument, instrument_sets, sample_instruments


def payload(snapshot: bytes | bytearray) -> bytes:
    return bytes(snapshot[read_header(snapshot).header_size :])


@settings(max_examples=60, deadline=None)
@given(instrument_sets(), st.randoms(use_true_random=False))
def test_row_order_never_changes_the_payload(rows: list[Instrument], rng: random.Random) -> None:
    shuffled = rows[:]
    rng.shuffle(shuffled)
    first = compile_snapshot(Registry.from_instruments(rows), build_time_ns=1)
    second = compile_snapshot(Registry.from_instruments(shuffled), build_time_ns=2, generation=9)
    assert payload(first) == payload(second)
    assert read_header(first).payload_checksum == read_header(second).payload_checksum


def test_only_header_fields_differ_between_two_compiles_of_one_registry() -> None:
    registry = Registry.from_instruments(sample_instruments())
    a = compile_snapshot(registry, generation=1, build_time_ns=10)
    b = compile_snapshot(registry, generation=2, build_time_ns=20)
    assert payload(a) == payload(b)
    assert a != b
    assert (read_header(a).generation, read_header(b).generation) == (1, 2)


def test_a_key_listed_twice_is_refused_with_its_name() -> None:
    rows = [instrument("NSE:INFY", 1), instrument("NSE:TCS", 2), instrument("NSE:INFY", 3)]
    with pytest.raises(RegistryError, match=r"'NSE:INFY' appears twice \(rows 0 and 2\)"):
        compile_snapshot(Registry.from_instruments(rows))


def test_one_token_claimed_by_two_keys_in_a_feed_is_refused_naming_both() -> None:
    rows = [instrument("NSE:INFY", 408065), instrument("NSE:TCS", 408065)]
    with pytest.raises(
        RegistryError,
        match=re.escape("feed kite: token 408065 is claimed by both 'NSE:INFY' and 'NSE:TCS'"),
    ):
        compile_snapshot(Registry.from_instruments(rows))


def test_string_tokens_claimed_twice_are_refused_too() -> None:
    rows = [
        instrument("NSE:A", upstox=("upstox", "NSE_EQ|X")),
        instrument("NSE:B", upstox=("upstox", "NSE_EQ|X")),
    ]
    with pytest.raises(
        RegistryError,
        match=re.escape("feed upstox: token 'NSE_EQ|X' is claimed by both 'NSE:A' and 'NSE:B'"),
    ):
        compile_snapshot(Registry.from_instruments(rows))


def test_the_same_number_in_two_feeds_of_one_broker_is_two_tokens() -> None:
    rows = [
        instrument("NSE:A", angel=("angel:NSE", 7)),
        instrument("NFO:B", angel=("angel:NFO", 7)),
    ]
    with Resolver(compile_snapshot(Registry.from_instruments(rows))) as resolver:
        assert resolver.key(7, "angel:NSE") == "NSE:A"
        assert resolver.key(7, "angel:NFO") == "NFO:B"


def test_an_empty_registry_is_refused() -> None:
    with pytest.raises(RegistryError, match="no instruments"):
        compile_snapshot(Registry.from_instruments([]))


def test_keys_with_nul_or_empty_keys_are_refused() -> None:
    with pytest.raises(RegistryError, match="NUL"):
        compile_snapshot(Registry.from_instruments([instrument("NSE:A\0B", 1)]))
    with pytest.raises(RegistryError, match="empty key"):
        compile_snapshot(Registry.from_instruments([instrument("", 1)]))


def test_a_broker_name_longer_than_the_layout_holds_is_refused() -> None:
    rows = [instrument("NSE:A", **{"b" * 33: ("feed", 1)})]
    with pytest.raises(RegistryError, match="broker name"):
        compile_snapshot(Registry.from_instruments(rows))


def test_every_field_of_a_record_survives_the_round_trip() -> None:
    rows = sample_instruments()
    with Resolver(compile_snapshot(Registry.from_instruments(rows))) as resolver:
        for row in rows:
            assert resolver.record(row.key) == row
            assert msgspec.to_builtins(resolver.record(row.key)) == msgspec.to_builtins(row)
