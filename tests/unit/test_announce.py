"""Announcements: the diff between two generations, and the frames the daemon publishes."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolverd import (
    BrokerToken,
    Instrument,
    Registry,
    Resolver,
    ResolverError,
    compile_snapshot,
    compiler,
)
from resolverd.daemon.announce import (
    AnnouncementError,
    Diff,
    Heartbeat,
    SizeChange,
    Stopping,
    Swap,
    TokenChange,
    decode,
    diff_snapshots,
    encode,
)

from .registries import instrument, sample_instruments

OLD_DAY = dt.date(2024, 4, 25)
NEW_DAY = dt.date(2024, 4, 26)


def snapshot(
    rows: list[Instrument], trade_date: dt.date | None = NEW_DAY, generation: int = 1
) -> Resolver:
    registry = Registry.from_instruments(rows, trade_date=trade_date)
    return Resolver(compile_snapshot(registry, generation=generation))


def contract(
    key: str,
    expiry: dt.date | None = None,
    *,
    lot: int = 1,
    tick: float = 0.05,
    **tokens: tuple[str, int | str],
) -> Instrument:
    """An instrument with an expiry, sizes and tokens (`broker=(feed, value)`)."""
    pairs = tuple(sorted(BrokerToken(b, feed, value) for b, (feed, value) in tokens.items()))
    return msgspec.structs.replace(
        instrument(key), expiry=expiry, lot_size=lot, tick_size=tick, tokens=pairs
    )


def empty_diff() -> Diff:
    return Diff(0, 0, 0, 0, 0, 0, [], [], [], [], [], [], truncated=False)


def test_identical_snapshots_have_an_empty_diff() -> None:
    old = snapshot(sample_instruments(), generation=1)
    new = snapshot(sample_instruments(), generation=2)
    assert diff_snapshots(old, new) == empty_diff()


def test_the_first_generation_has_no_diff() -> None:
    assert diff_snapshots(None, snapshot(sample_instruments())) is None


def test_gone_keys_before_the_new_trade_date_are_expired_the_rest_removed() -> None:
    old = snapshot(
        [
            contract("NFO:A24APRFUT", dt.date(2024, 4, 25)),
            contract("NFO:B24APRFUT", dt.date(2024, 4, 26)),  # expires on the new trade date
            contract("NFO:C24MAYFUT", dt.date(2024, 5, 30)),
            contract("NSE:DELISTED"),
            contract("NSE:KEPT"),
        ],
        trade_date=OLD_DAY,
    )
    new = snapshot([contract("NSE:KEPT"), contract("NSE:LISTED"), contract("NFO:D24JUNFUT")])

    diff = diff_snapshots(old, new)

    assert diff is not None
    assert (diff.added, diff.removed, diff.expired) == (2, 3, 1)
    assert diff.added_keys == ["NFO:D24JUNFUT", "NSE:LISTED"]
    assert diff.removed_keys == ["NFO:B24APRFUT", "NFO:C24MAYFUT", "NSE:DELISTED"]
    assert diff.expired_keys == ["NFO:A24APRFUT"]
    assert not diff.truncated


def test_nothing_expires_when_the_new_snapshot_has_no_trade_date() -> None:
    old = snapshot([contract("NFO:A24APRFUT", dt.date(2024, 4, 25)), contract("NSE:KEPT")])
    new = snapshot([contract("NSE:KEPT")], trade_date=None)

    diff = diff_snapshots(old, new)

    assert diff is not None
    assert (diff.removed, diff.expired, diff.removed_keys) == (1, 0, ["NFO:A24APRFUT"])


def test_token_changes_of_int_and_str_brokers_include_tokens_gained_and_lost() -> None:
    old = snapshot(
        [
            contract("NSE:A", kite=("kite", 1), upstox=("upstox", "U|A")),
            contract("NSE:B", kite=("kite", 2)),
            contract("NSE:C", kite=("kite", 3), upstox=("upstox", "U|C")),
            contract("NSE:D", kite=("kite", 4), upstox=("upstox", "U|D")),
        ]
    )
    new = snapshot(
        [
            contract("NSE:A", kite=("kite", 11), upstox=("upstox", "U|A")),
            contract("NSE:B", kite=("kite", 2), upstox=("upstox", "U|B")),
            contract("NSE:C", upstox=("upstox", "U|C2")),
            # angel is new in this snapshot: a broker only one side has is no token change
            contract("NSE:D", kite=("kite", 4), upstox=("upstox", "U|D"), angel=("angel", 9)),
        ]
    )

    diff = diff_snapshots(old, new)

    assert diff is not None
    assert diff.token_changes == [
        TokenChange("NSE:A", "kite", 1, 11),
        TokenChange("NSE:B", "upstox", None, "U|B"),
        TokenChange("NSE:C", "kite", 3, None),
        TokenChange("NSE:C", "upstox", "U|C", "U|C2"),
    ]
    assert diff.tokens_changed == 4
    assert (diff.added, diff.removed, diff.lots_changed, diff.ticks_changed) == (0, 0, 0, 0)


def test_a_broker_that_switches_token_kind_changes_every_token_it_lists() -> None:
    old = snapshot([contract("NSE:A", fyers=("fyers", 7)), contract("NSE:B", fyers=("fyers", 8))])
    new = snapshot([contract("NSE:A", fyers=("fyers", "NSE:A-EQ")), contract("NSE:B")])

    diff = diff_snapshots(old, new)

    assert diff is not None
    assert diff.token_changes == [
        TokenChange("NSE:A", "fyers", 7, "NSE:A-EQ"),
        TokenChange("NSE:B", "fyers", 8, None),
    ]


def test_lot_and_tick_changes_carry_the_old_and_new_sizes() -> None:
    old = snapshot(
        [
            contract("NFO:X", lot=50, tick=0.05),
            contract("NFO:Y", lot=25, tick=0.05),
            contract("NFO:Z", lot=15, tick=0.05),
        ]
    )
    new = snapshot(
        [
            contract("NFO:X", lot=75, tick=0.05),
            contract("NFO:Y", lot=25, tick=0.1),
            contract("NFO:Z", lot=30, tick=0.01),
        ]
    )

    diff = diff_snapshots(old, new)

    assert diff is not None
    assert diff.lot_changes == [SizeChange("NFO:X", 50, 75), SizeChange("NFO:Z", 15, 30)]
    assert diff.tick_changes == [SizeChange("NFO:Y", 0.05, 0.1), SizeChange("NFO:Z", 0.05, 0.01)]
    assert (diff.lots_changed, diff.ticks_changed, diff.tokens_changed) == (2, 2, 0)
    assert all(type(c.old) is int and type(c.new) is int for c in diff.lot_changes)
    assert all(type(c.old) is float and type(c.new) is float for c in diff.tick_changes)


def test_a_limit_cuts_the_lists_keeps_the_counts_and_says_so() -> None:
    strikes = range(20000, 21000, 50)
    old = snapshot(
        [
            contract(f"NFO:NIFTY24APR{s}CE", kite=("kite", s), upstox=("upstox", f"A{s}"), lot=50)
            for s in strikes
        ]
        + [contract(f"NFO:NIFTY24APR{s}PE", dt.date(2024, 4, 25)) for s in strikes],
        trade_date=OLD_DAY,
    )
    new = snapshot(
        [
            contract(
                f"NFO:NIFTY24APR{s}CE", kite=("kite", s + 1), upstox=("upstox", f"B{s}"), lot=25
            )
            for s in strikes
        ]
        + [contract(f"NFO:NIFTY24MAY{s}PE") for s in strikes]
    )
    everything = diff_snapshots(old, new)

    diff = diff_snapshots(old, new, limit=3)

    assert everything is not None and diff is not None
    assert not everything.truncated
    assert diff.truncated
    assert (diff.added, diff.expired, diff.tokens_changed, diff.lots_changed) == (20, 20, 40, 20)
    assert diff.added_keys == everything.added_keys[:3]
    assert diff.expired_keys == everything.expired_keys[:3]
    # Two brokers changed for each key: the cut falls between the second key's two changes.
    assert diff.token_changes == everything.token_changes[:3]
    assert [(c.key, c.broker) for c in diff.token_changes] == [
        ("NFO:NIFTY24APR20000CE", "kite"),
        ("NFO:NIFTY24APR20000CE", "upstox"),
        ("NFO:NIFTY24APR20050CE", "kite"),
    ]
    assert diff.lot_changes == everything.lot_changes[:3]
    nothing = diff_snapshots(old, new, limit=0)
    assert nothing is not None and nothing.truncated
    assert (nothing.added, nothing.added_keys, nothing.token_changes) == (20, [], [])


def test_a_limit_as_large_as_a_count_cuts_nothing() -> None:
    old = snapshot([contract("NSE:A"), contract("NSE:B")])
    new = snapshot([contract("NSE:A"), contract("NSE:C"), contract("NSE:D")])

    diff = diff_snapshots(old, new, limit=2)

    assert diff is not None
    assert (diff.added_keys, diff.removed_keys, diff.truncated) == (
        ["NSE:C", "NSE:D"],
        ["NSE:B"],
        False,
    )


def test_a_negative_limit_is_refused() -> None:
    resolver = snapshot(sample_instruments())
    with pytest.raises(ValueError, match="limit"):
        diff_snapshots(resolver, resolver, limit=-1)


# Keys that share long prefixes (so the order is decided past the first 8 bytes) and keys that
# are not ASCII (UTF-8 byte order is code point order, which is Python's str order).
POOL = [f"NFO:NIFTY24APR{s}{t}" for s in range(22000, 22400, 50) for t in ("CE", "PE")]
POOL += ["NSE:É", "NSE:ÉTOILE", "NSE:Z", "BSE:A", "NSE:ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", "A"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(POOL), min_size=1, unique=True),
    st.lists(st.sampled_from(POOL), min_size=1, unique=True),
    st.integers(0, 12),
)
def test_lists_hold_the_first_keys_in_key_order(old: list[str], new: list[str], limit: int) -> None:
    diff = diff_snapshots(
        snapshot([contract(k, lot=2) for k in old]),
        snapshot([contract(k, lot=3) for k in new]),
        limit=limit,
    )

    assert diff is not None
    added, removed, kept = (
        sorted(set(new) - set(old)),
        sorted(set(old) - set(new)),
        set(old) & set(new),
    )
    assert (diff.added, diff.removed, diff.lots_changed) == (len(added), len(removed), len(kept))
    assert diff.added_keys == added[:limit]
    assert diff.removed_keys == removed[:limit]
    assert [c.key for c in diff.lot_changes] == sorted(kept)[:limit]
    assert diff.truncated == (max(len(added), len(removed), len(kept)) > limit)


def test_snapshots_hashed_with_different_seeds_diff_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = sample_instruments()
    old = snapshot(rows[:2])
    first_seed = compiler.seed_for
    monkeypatch.setattr(compiler, "seed_for", lambda attempt: first_seed(attempt + 1))
    new = snapshot(rows[1:])
    assert old.header.key_seed != new.header.key_seed

    diff = diff_snapshots(old, new)

    assert diff is not None
    assert (diff.added_keys, diff.removed_keys, diff.token_changes) == (
        ["BSE:INFY"],
        ["NSE:INFY"],
        [],
    )


def a_swap(registry: str = "universe") -> Swap:
    diff = Diff(
        added=1,
        removed=0,
        expired=2,
        tokens_changed=3,
        lots_changed=1,
        ticks_changed=1,
        added_keys=["NSE:NEW"],
        removed_keys=[],
        expired_keys=["NFO:A24APRFUT"],
        token_changes=[
            TokenChange("NSE:A", "kite", 1, 2),
            TokenChange("NSE:A", "upstox", None, "NSE_EQ|A"),
            TokenChange("NSE:B", "kite", 3, None),
        ],
        lot_changes=[SizeChange("NFO:X", 50, 75)],
        tick_changes=[SizeChange("NFO:Y", 0.05, 0.1)],
        truncated=True,
    )
    return Swap(
        registry=registry,
        generation=8,
        previous_generation=7,
        checksum="00ab00cd00ef0012",
        trade_date="2024-04-26",
        instruments=3,
        feeds={"kite": 3, "upstox": 2},
        snapshot=f"resolverd.{registry}.8.snap",
        published_ns=1_714_000_000_123_456_789,
        reload_seconds=0.25,
        reason="inotify",
        diff=diff,
    )


MESSAGES = [
    a_swap(),
    msgspec.structs.replace(a_swap("nse.fo"), diff=None, trade_date=None),
    Heartbeat(pid=4242, sent_ns=1_714_000_000_000_000_000, interval=5.0, registries={"u": 8}),
    Stopping(pid=4242, sent_ns=1_714_000_000_000_000_001),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_encode_and_decode(message: Swap | Heartbeat | Stopping) -> None:
    frames = encode(message)

    assert len(frames) == 2
    assert decode(frames) == message
    assert decode([bytearray(frames[0]), memoryview(frames[1])]) == message


def test_topics_let_a_subscriber_pick_a_registry_by_prefix() -> None:
    assert encode(a_swap("universe"))[0] == b"swap.universe"
    assert encode(MESSAGES[2])[0] == b"heartbeat"
    assert encode(MESSAGES[3])[0] == b"stopping"


def test_a_decoded_value_keeps_its_type() -> None:
    swap = decode(encode(a_swap()))

    assert isinstance(swap, Swap) and swap.diff is not None
    changes = swap.diff.token_changes
    assert [type(c.old) for c in changes] == [int, type(None), int]
    assert [type(c.new) for c in changes] == [int, str, type(None)]
    assert type(swap.diff.tick_changes[0].new) is float


SWAP_FRAMES = encode(a_swap())
HEARTBEAT_FRAMES = encode(MESSAGES[2])


@pytest.mark.parametrize(
    ("frames", "complaint"),
    [
        ([], "expected 2 frames"),
        ([b"heartbeat"], "expected 2 frames"),
        ([*HEARTBEAT_FRAMES, b""], "expected 2 frames"),
        ([b"news", HEARTBEAT_FRAMES[1]], "unknown topic"),
        ([b"swap", SWAP_FRAMES[1]], "unknown topic"),
        ([b"heartbeat", b"\xc1 not msgpack"], "does not decode"),
        ([b"heartbeat", b""], "does not decode"),
        ([b"heartbeat", msgspec.msgpack.encode({"type": "heartbeat", "pid": "x"})], "pid"),
        ([b"swap.universe", msgspec.msgpack.encode({"type": "party"})], "does not decode"),
        (
            [b"swap.universe", encode(msgspec.structs.replace(a_swap(), checksum="XYZ"))[1]],
            "checksum",
        ),
        ([b"heartbeat", encode(MESSAGES[3])[1]], "Stopping"),
        ([b"swap.other", SWAP_FRAMES[1]], "swap.universe"),
        ([b"stopping", SWAP_FRAMES[1]], "Swap"),
        (["heartbeat", HEARTBEAT_FRAMES[1]], "must be bytes"),
    ],
)
def test_a_malformed_announcement_is_refused_with_the_reason(
    frames: list[bytes], complaint: str
) -> None:
    with pytest.raises(AnnouncementError, match=complaint):
        decode(frames)


def test_an_announcement_error_is_a_bad_data_value_error() -> None:
    error = AnnouncementError("x")
    assert isinstance(error, ResolverError) and isinstance(error, ValueError)
    assert error.exit_code == 65


@pytest.mark.integration
def test_a_swap_crosses_a_real_pub_sub_pair(tmp_path: Path) -> None:
    zmq = pytest.importorskip("zmq")
    address = f"ipc://{tmp_path / 'announce.sock'}"
    context = zmq.Context()
    publisher = context.socket(zmq.PUB)
    subscriber = context.socket(zmq.SUB)
    try:
        publisher.bind(address)
        subscriber.connect(address)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"swap.universe")
        swap = a_swap()
        received = None
        # A SUB socket drops what is published before its subscription reaches the PUB
        # socket (the slow joiner): publish until something arrives, for at most ~2 s.
        deadline = time.monotonic() + 2.0
        while received is None and time.monotonic() < deadline:
            publisher.send_multipart(encode(MESSAGES[2]))  # not subscribed: filtered out
            publisher.send_multipart(encode(swap))
            if subscriber.poll(50, zmq.POLLIN):
                received = subscriber.recv_multipart()
        assert received is not None, "no announcement arrived within 2 s"
        assert received[0] == b"swap.universe"
        assert decode(received) == swap
    finally:
        subscriber.close(linger=0)
        publisher.close(linger=0)
        context.term()
