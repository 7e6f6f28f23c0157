"""Fuzzing the snapshot reader: any damaged or lying snapshot is refused with LayoutError, or
answers every lookup cleanly; never another exception, a hang or a read outside the buffer.

The mutations and the contract live in tests/fuzzing.py (shared with the atheris harness and
the C reader's fuzz test); hypothesis draws them here. The regression tests below pin each bug
the fuzzer found, with the exception it used to raise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import xxhash
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from resolverd import LayoutError, Resolver
from resolverd.shm_layout import FIRST_DAY, LAST_DAY, PILOT_MIX, read_header
from tests import fuzzing
from tests.fuzzing import (
    Flip,
    Hang,
    HeaderLie,
    Mutation,
    PayloadLie,
    base_instruments,
    base_registry,
    base_snapshot,
    check_python_reader,
    mutate,
)

T = TypeVar("T")

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class HypothesisChooser:
    """tests.fuzzing.Chooser over hypothesis draws, so that failures shrink."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(options))

    def blob(self, max_size: int) -> bytes:
        return self.data.draw(st.binary(max_size=max_size))


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz")


def draw_some(
    data: st.DataObject, draws: Sequence[Callable[..., Mutation]], most: int = 3
) -> list[Mutation]:
    chooser = HypothesisChooser(data)
    base = base_snapshot()
    header_size = read_header(base).header_size
    count = chooser.integer(1, most)
    return [chooser.choice(draws)(chooser, len(base), header_size) for _ in range(count)]


def check(mutations: list[Mutation], directory: Path | None = None) -> str:
    note(repr(mutations))
    outcome = check_python_reader(mutate(mutations), directory)
    event(outcome)
    return outcome


# -- the contract on the undamaged snapshot ----------------------------------------------------


def test_the_base_snapshot_is_verified_and_resolves_every_token_both_ways() -> None:
    assert check_python_reader(base_snapshot()) == "verified"
    with Resolver(base_snapshot(), verify=True, strict=True) as r:
        assert len(r.feeds) >= 6 and {r.broker_kind(b) for b in r.brokers} == {"int", "str"}
        for instrument in base_instruments():
            assert r.record(instrument.key) == instrument
            for token in instrument.tokens:
                assert r.token(instrument.key, token.broker) == token.value
                assert r.key(token.value, token.feed) == instrument.key


def test_a_lookup_that_never_returns_fails_as_a_hang() -> None:
    with pytest.raises(Hang), fuzzing.time_limit(0.2):
        while True:
            pass


# -- fuzzing -----------------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_flipped_truncated_or_extended_snapshots_are_refused_or_answer_cleanly(
    data: st.DataObject,
) -> None:
    check(draw_some(data, [fuzzing.draw_flip, fuzzing.draw_resize]))


@FUZZ
@given(st.data())
def test_lying_header_and_section_table_fields_are_refused_or_stay_in_bounds(
    data: st.DataObject,
) -> None:
    check(draw_some(data, [fuzzing.draw_header_lie, fuzzing.draw_entry_lie]))


@FUZZ
@given(st.data())
def test_lying_payload_content_under_recomputed_checksums_is_refused_or_answers_cleanly(
    data: st.DataObject,
) -> None:
    check(draw_some(data, [fuzzing.draw_payload_lie]))


@settings(FUZZ, max_examples=120)
@given(st.data())
def test_forged_layouts_whose_table_and_checksums_agree_are_refused_or_answer_cleanly(
    data: st.DataObject,
) -> None:
    chooser = HypothesisChooser(data)
    mutations: list[Mutation] = [fuzzing.draw_forge(chooser)]
    if chooser.integer(0, 1):
        mutations += draw_some(data, [fuzzing.draw_payload_lie, fuzzing.draw_header_lie], 2)
    check(mutations)


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_any_mix_of_damage_is_refused_or_answers_cleanly_from_bytes_and_from_a_file(
    data: st.DataObject, directory: Path
) -> None:
    check(fuzzing.draw_mutations(HypothesisChooser(data)), directory)


@pytest.mark.parametrize("recipe", fuzzing.recipes(), ids=repr)
def test_coordinated_lies_are_refused_or_answer_cleanly(
    recipe: list[Mutation], directory: Path
) -> None:
    check_python_reader(mutate(recipe), directory)


# -- regressions: one per bug the fuzzer found ---------------------------------------------------


def section(name: str) -> Any:
    return read_header(base_snapshot()).sections[name]


def base_column(name: str, field: str | None = None) -> list[Any]:
    data = next(s.data for s in fuzzing.base_sections() if s.name == name)
    return list((data if field is None else data[field]).tolist())


BROKERS = [name.decode() for name in base_column("brokers", "name")]
FEEDS = [name.decode() for name in base_column("feeds", "name")]
KITE, UPSTOX = BROKERS.index("kite"), BROKERS.index("upstox")
KITE_FEED, UPSTOX_FEED = FEEDS.index("kite"), FEEDS.index("upstox")


def refused(mutations: list[Mutation], match: str, *, verify: bool = False) -> None:
    """Refused at open with a LayoutError saying `match`, and nothing else on the way."""
    buf = mutate(mutations)
    with pytest.raises(LayoutError, match=match):
        Resolver(buf, verify=verify)
    check_python_reader(buf)


@pytest.mark.parametrize(
    ("mutations", "match"),
    [
        # TypeError from numpy: the keys dtype |S4294967232 is not one numpy knows
        ([HeaderLie("key_width", 2**32 - 64)], "header field key_width"),
        # OverflowError from Resolver.trade_date
        ([HeaderLie("trade_date", LAST_DAY + 1)], "header field trade_date"),
        ([HeaderLie("trade_date", (FIRST_DAY - 1) % 2**32)], "header field trade_date"),
        # ZeroDivisionError from every key lookup: (h ^ pilot) % 0
        (fuzzing.empty_registry(0), "header field key_slot_count: 0"),
        # ZeroDivisionError from the feed's reverse lookups
        (fuzzing.empty_feed(KITE_FEED, 0), f"feed {KITE_FEED}: field slot_count 0"),
        (fuzzing.empty_feed(UPSTOX_FEED, 0), f"feed {UPSTOX_FEED}: field slot_count 0"),
        # UnicodeDecodeError from token(): an int column read as UTF-8 strings of width 8
        ([PayloadLie("brokers", KITE, "kind", 2)], f"broker {KITE}: fields kind 2"),
        # silently wrong tokens: a string column read with the wrong width
        ([PayloadLie("brokers", UPSTOX, "token_width", 8)], f"broker {UPSTOX}: fields kind"),
        # ValueError from record(): a string token passed to an integer feed
        ([PayloadLie("brokers", UPSTOX, "kind", 0)], f"broker {UPSTOX}: field kind 0"),
        ([PayloadLie("feeds", UPSTOX_FEED, "kind", 1)], "is not the kind of broker upstox"),
        (
            [PayloadLie("brokers", UPSTOX, "first_feed", KITE_FEED)],
            "broker upstox: fields first_feed/feed_count take in another broker's feed",
        ),
        # one broker's or feed's tables silently hidden behind another of the same name
        ([PayloadLie("brokers", UPSTOX, "name", b"kite")], "name 'kite' appears twice"),
        ([PayloadLie("feeds", UPSTOX_FEED, "name", b"kite")], "name 'kite' appears twice"),
    ],
    ids=repr,
)
def test_a_lie_the_fuzzer_found_is_refused_at_open(mutations: list[Mutation], match: str) -> None:
    refused(mutations, match)


def key_row(ordinal: int) -> int:
    return section("keys").offset + ordinal * section("keys").dtype.itemsize


def split_character() -> list[Mutation]:
    """'é' cut across two key rows: valid UTF-8 as a whole, neither row on its own."""
    width = section("keys").dtype.itemsize
    return [
        Flip(key_row(0) + width - 1, 0xC3, "none"),
        Flip(key_row(1), 0xA9 ^ base_snapshot()[key_row(1)], "both"),
    ]


@pytest.mark.parametrize(
    ("mutations", "match"),
    [
        # UnicodeDecodeError from key(), iter and record()
        ([PayloadLie("keys", 0, None, b"\xff\xfe")], "'keys': a string is not UTF-8"),
        (split_character(), "'keys': a string is not UTF-8"),
        ([PayloadLie(f"tokens.{UPSTOX}", 0, None, b"\xc3")], f"'tokens.{UPSTOX}': a string"),
        ([PayloadLie("records", 0, "isin", b"IN\xff")], "'records': field isin: a string is not"),
        # OverflowError from record(): a date past 9999-12-31
        ([PayloadLie("records", 0, "expiry", LAST_DAY + 1)], "field expiry"),
        # ValueError from the index checks themselves: max() of no records
        (fuzzing.empty_registry(1), "'key.remap' holds an ordinal out of range"),
    ],
    ids=repr,
)
def test_a_lying_payload_the_fuzzer_found_is_refused_by_verify(
    mutations: list[Mutation], match: str
) -> None:
    refused(mutations, match, verify=True)


def test_without_verify_a_lying_payload_raises_only_what_the_reader_documents(
    lookups: str,
) -> None:
    string_count = section("strings.offsets").count - 1
    # was ValueError (an empty slice unpacked into start, end)
    bad_string = mutate([PayloadLie("records", 0, "segment", string_count)])
    with Resolver(bad_string) as r, pytest.raises(IndexError, match=f"string {string_count} is"):
        r.record(next(iter(r)))
    # was OverflowError
    bad_date = mutate([PayloadLie("records", 0, "expiry", -(2**31))])
    with Resolver(bad_date) as r, pytest.raises(LayoutError, match="field expiry -2147483648 is"):
        r.record(next(iter(r)))
    n = read_header(base_snapshot()).instrument_count
    remapped = [key for key in base_registry().keys if slot_of(key) >= n]
    assert remapped, "some key of the base must sit on a remapped slot for this test"
    lies: list[Mutation] = [
        PayloadLie("key.remap", i, None, 2**32 - 1) for i in range(section("key.remap").count)
    ]
    # Python indexes past the end of its memoryview; the compiled lookups check the ordinal.
    with Resolver(mutate(lies)) as r, pytest.raises(IndexError if lookups == "pure" else KeyError):
        r.token(remapped[0], "kite")
    with pytest.raises(LayoutError, match=r"'key\.remap' holds an ordinal out of range"):
        Resolver(mutate(lies), verify=True)


def slot_of(key: str) -> int:
    """The key's slot in the base snapshot, before the remap (slot_to_ordinal's first step)."""
    header, buf = read_header(base_snapshot()), base_snapshot()
    h = xxhash.xxh3_64_intdigest(key.encode(), header.key_seed)
    pilot = buf[section("key.pilots").offset + (h >> (64 - header.key_bucket_bits))]
    return int((h ^ PILOT_MIX[pilot]) % header.key_slot_count)
