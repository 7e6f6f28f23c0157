"""decode_kite against Zerodha's own mock packets, hand-built frames and a struct-based reader."""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolverd.ticker import KITE_TICK_DTYPE, MODE_FULL, MODE_LTP, MODE_QUOTE, decode_kite

INFY = 408065  # NSE:INFY, exchange token 1594, segment 1
NIFTY_50 = 256265  # exchange token 1001, segment 9 (indices)
USDINR_CDS = 1_412_611  # any token whose low byte is 3 (CDS)
USDINR_BCD = 1_412_614  # any token whose low byte is 6 (BCD)
CRUDE_MCX = 1_412_615  # any token whose low byte is 7 (MCX)
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
MODES = {"ltp": MODE_LTP, "quote": MODE_QUOTE, "full": MODE_FULL}
KINDS = (8, 28, 32, 44, 184)


def frame(*packets: bytes) -> bytes:
    return struct.pack(">H", len(packets)) + b"".join(
        struct.pack(">H", len(packet)) + packet for packet in packets
    )


def ltp_packet(token: int, price: int) -> bytes:
    return struct.pack(">Ii", token, price)


def index_packet(token: int, ltp: int, high: int, low: int, open_: int, close: int) -> bytes:
    return struct.pack(">I6i", token, ltp, high, low, open_, close, ltp - close)


def quote_packet(token: int, ltp: int, *, close: int, volume: int = 1000) -> bytes:
    # last traded quantity, average price, volume, total buy, total sell, open, high, low, close
    return struct.pack(">IiIiIII4i", token, ltp, 3, ltp, volume, 700, 800, ltp, ltp, ltp, close)


def full_packet(quote: bytes, depth_price: int) -> bytes:
    stamps_and_oi = struct.pack(">5I", 1_700_000_000, 11, 12, 10, 1_700_000_001)
    depth = b"".join(struct.pack(">IiH2x", 100 + i, depth_price + i, i + 1) for i in range(10))
    return quote + stamps_and_oi + depth


def mock(kite_mocks: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((kite_mocks / f"{name}.json").read_text())
    return result


def mock_packet(kite_mocks: Path, name: str) -> bytes:
    return base64.b64decode((kite_mocks / f"{name}.packet").read_text())


def epoch(text: str) -> int:
    """Unix seconds of a mock's datetime string.

    Zerodha's mocks print the wire's Unix seconds as IST wall-clock time with an explicit
    +05:30 (pykiteconnect's naive local datetime, rendered on an IST host), so the string is
    unambiguous; the assertion stops a future mock without the offset from being read as UTC.
    """
    stamp = dt.datetime.fromisoformat(text)
    assert stamp.utcoffset() == IST.utcoffset(None), text
    return int(stamp.timestamp())


def assert_tick_is_mock(tick: np.void, expected: dict[str, Any]) -> None:
    """Every value of a mock JSON (renamed to our fields) equals the tick's; absent ones are 0.

    The mock's "change" is left out: it is gokiteconnect's absolute change (see
    test_change_is_percent_from_close_as_pykiteconnect_computes_it).
    """
    assert tick["instrument_token"] == expected["instrument_token"]
    assert tick["mode"] == MODES[expected["mode"]]
    assert bool(tick["tradable"]) is expected["tradable"]
    assert not tick["is_index"]
    assert tick["last_price"] == pytest.approx(expected["last_price"])
    assert tick["average_traded_price"] == pytest.approx(expected.get("average_price", 0))
    for theirs, ours in [
        ("last_quantity", "last_traded_quantity"),
        ("volume", "volume_traded"),
        ("buy_quantity", "total_buy_quantity"),
        ("sell_quantity", "total_sell_quantity"),
        ("oi", "oi"),
        ("oi_day_high", "oi_day_high"),
        ("oi_day_low", "oi_day_low"),
    ]:
        assert tick[ours] == expected.get(theirs, 0), ours
    ohlc = expected.get("ohlc", {})
    for name in ("open", "high", "low", "close"):
        assert tick[name] == pytest.approx(ohlc.get(name, 0)), name
    for theirs, ours in [
        ("last_trade_time", "last_trade_time"),
        ("timestamp", "exchange_timestamp"),
    ]:
        assert tick[ours] == (epoch(expected[theirs]) if theirs in expected else 0), ours
    empty_side = [{"quantity": 0, "price": 0, "orders": 0}] * 5
    for theirs, ours in [("buy", "bid"), ("sell", "ask")]:
        levels = expected.get("depth", {}).get(theirs, empty_side)
        assert tick[f"{ours}_price"].tolist() == pytest.approx([x["price"] for x in levels])
        assert tick[f"{ours}_quantity"].tolist() == [x["quantity"] for x in levels]
        assert tick[f"{ours}_orders"].tolist() == [x["orders"] for x in levels]


def test_full_mode_mock_packet_decodes_to_zerodhas_values(kite_mocks: Path) -> None:
    ticks = decode_kite(frame(mock_packet(kite_mocks, "ticker_full")))
    assert ticks.dtype == KITE_TICK_DTYPE
    assert ticks.shape == (1,)
    assert_tick_is_mock(ticks[0], mock(kite_mocks, "ticker_full"))


def test_quote_mode_mock_packet_decodes_to_zerodhas_values(kite_mocks: Path) -> None:
    ticks = decode_kite(frame(mock_packet(kite_mocks, "ticker_quote")))
    assert ticks.shape == (1,)
    assert_tick_is_mock(ticks[0], mock(kite_mocks, "ticker_quote"))


def test_ltp_packet_built_from_the_ltp_mock_decodes_to_its_values(kite_mocks: Path) -> None:
    expected = mock(kite_mocks, "ticker_ltp")
    packet = ltp_packet(expected["instrument_token"], round(expected["last_price"] * 100))
    (tick,) = decode_kite(frame(packet))
    assert_tick_is_mock(tick, expected)
    assert tick["change"] == 0  # no close, no change


def test_timestamps_are_unix_seconds_that_the_mocks_print_in_ist(kite_mocks: Path) -> None:
    (tick,) = decode_kite(frame(mock_packet(kite_mocks, "ticker_full")))
    assert tick["exchange_timestamp"] == 1_625_461_887
    shown = dt.datetime.fromtimestamp(int(tick["exchange_timestamp"]), IST).isoformat()
    assert shown == mock(kite_mocks, "ticker_full")["timestamp"] == "2021-07-05T10:41:27+05:30"


def test_change_is_percent_from_close_as_pykiteconnect_computes_it(kite_mocks: Path) -> None:
    (tick,) = decode_kite(frame(mock_packet(kite_mocks, "ticker_full")))
    assert tick["change"] == (1573.7 - 1567.8) * 100 / 1567.8
    # The mock's 5.9 is gokiteconnect's NetChange, last_price - close. (ticker_quote.json
    # repeats 5.9 although its own prices give 5.35: it was copied, so it pins nothing.)
    assert mock(kite_mocks, "ticker_full")["change"] == pytest.approx(
        tick["last_price"] - tick["close"]
    )


def test_frame_of_mixed_modes_decodes_every_packet_in_frame_order(kite_mocks: Path) -> None:
    full = mock_packet(kite_mocks, "ticker_full")
    packets = [
        ltp_packet(INFY + 256, 12_345),
        full,
        quote_packet(INFY + 512, 50_000, close=40_000),
        index_packet(NIFTY_50, 2_235_065, 2_240_000, 2_230_000, 2_231_000, 2_230_065),
        ltp_packet(INFY + 768, 99),
    ]
    ticks = decode_kite(frame(*packets))
    assert ticks["instrument_token"].tolist() == [
        INFY + 256,
        INFY,
        INFY + 512,
        NIFTY_50,
        INFY + 768,
    ]
    assert ticks["mode"].tolist() == [MODE_LTP, MODE_FULL, MODE_QUOTE, MODE_QUOTE, MODE_LTP]
    assert ticks["is_index"].tolist() == [False, False, False, True, False]
    assert ticks["last_price"].tolist() == [123.45, 1573.7, 500.0, 22350.65, 0.99]
    assert ticks["change"][2] == 25.0
    assert ticks[1].tobytes() == decode_kite(frame(full))[0].tobytes()


def test_frame_whose_size_fits_one_packet_kind_still_reads_each_length() -> None:
    # 28 + 8 + 44 + 32 bytes average 28, so the frame is exactly as long as four index quotes.
    packets = [
        index_packet(NIFTY_50, 100, 100, 100, 100, 100),
        ltp_packet(INFY, 200),
        quote_packet(INFY, 300, close=300),
        index_packet(NIFTY_50, 400, 400, 400, 400, 400) + struct.pack(">I", 1_700_000_000),
    ]
    ticks = decode_kite(frame(*packets))
    assert ticks["last_price"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert ticks["mode"].tolist() == [MODE_QUOTE, MODE_LTP, MODE_QUOTE, MODE_FULL]
    assert ticks["exchange_timestamp"].tolist() == [0, 0, 0, 1_700_000_000]


@pytest.mark.parametrize(
    ("token", "raw", "price"),
    [
        (USDINR_CDS, 835_025_000, 83.5025),  # CDS: divisor 10,000,000
        (USDINR_BCD, 835_025, 83.5025),  # BCD: divisor 10,000
        (INFY, 835_025, 8350.25),  # every other segment: divisor 100
    ],
)
def test_prices_divide_by_the_segment_divisor(token: int, raw: int, price: float) -> None:
    quote = quote_packet(token, raw, close=raw * 2)
    ticks = decode_kite(frame(ltp_packet(token, raw), quote, full_packet(quote, raw)))
    assert ticks["last_price"].tolist() == pytest.approx([price] * 3)
    assert ticks["close"].tolist() == pytest.approx([0, 2 * price, 2 * price])
    assert ticks["average_traded_price"][1:].tolist() == pytest.approx([price] * 2)
    assert ticks["bid_price"][2][0] == pytest.approx(price)
    divisor = raw / price
    assert ticks["ask_price"][2].tolist() == pytest.approx(
        [(raw + level) / divisor for level in range(5, 10)]
    )
    assert ticks["change"][1:].tolist() == pytest.approx([-50.0, -50.0])


def test_index_quote_packet_decodes_as_an_untradable_index() -> None:
    packet = index_packet(NIFTY_50, 2_235_065, 2_240_000, 2_230_000, 2_231_000, 2_230_065)
    assert len(packet) == 28
    (tick,) = decode_kite(frame(packet))
    assert (tick["mode"], bool(tick["is_index"]), bool(tick["tradable"])) == (
        MODE_QUOTE,
        True,
        False,
    )
    assert tick[["last_price", "high", "low", "open", "close"]].tolist() == (
        22350.65,
        22400.0,
        22300.0,
        22310.0,
        22300.65,
    )
    assert tick["change"] == (22350.65 - 22300.65) * 100 / 22300.65
    assert tick[["volume_traded", "exchange_timestamp"]].tolist() == (0, 0)


def test_index_full_packet_adds_the_exchange_timestamp() -> None:
    packet = index_packet(NIFTY_50, 2_235_065, 2_240_000, 2_230_000, 2_231_000, 2_230_065)
    (tick,) = decode_kite(frame(packet + struct.pack(">I", 1_625_461_887)))
    assert (tick["mode"], bool(tick["is_index"]), bool(tick["tradable"])) == (
        MODE_FULL,
        True,
        False,
    )
    assert tick["exchange_timestamp"] == 1_625_461_887
    assert tick["last_price"] == 22350.65


def test_prices_are_signed_and_quantities_unsigned() -> None:
    # MCX crude settled at -37.63 in April 2020; a day's volume may pass 2**31.
    packet = quote_packet(CRUDE_MCX, -3763, close=1500, volume=3_000_000_000)
    (tick,) = decode_kite(frame(packet))
    assert tick["last_price"] == -37.63
    assert tick["volume_traded"] == 3_000_000_000


def test_one_byte_heartbeat_decodes_to_no_ticks() -> None:
    ticks = decode_kite(b"\x00")
    assert ticks.dtype == KITE_TICK_DTYPE
    assert ticks.shape == (0,)


def test_frame_of_zero_packets_decodes_to_no_ticks() -> None:
    assert decode_kite(b"\x00\x00").shape == (0,)


def test_decodes_a_memoryview_into_a_receive_buffer_without_aliasing_it() -> None:
    packets = frame(quote_packet(INFY, 157_315, close=156_780), ltp_packet(INFY, 1))
    buffer = bytearray(b"\xff" * 3 + packets + b"\xff" * 5)
    ticks = decode_kite(memoryview(buffer)[3 : 3 + len(packets)])
    buffer[:] = bytes(len(buffer))
    assert ticks["last_price"].tolist() == [1573.15, 0.01]
    assert ticks.tobytes() == decode_kite(packets).tobytes()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no 2-byte packet count"),
        (frame(ltp_packet(INFY, 1))[:-1], "packet 0 of 1: truncated, 8-byte packet"),
        (b"\x00\x02" + frame(ltp_packet(INFY, 1))[2:], "packet 1 of 2: truncated"),
        (b"\x00\x02" + frame(ltp_packet(INFY, 1))[2:] + b"\x00", "before this packet's length"),
        (frame(ltp_packet(INFY, 1), bytes(10)), "packet 1 of 2: unknown packet length 10"),
        (frame(bytes(0)), "packet 0 of 1: unknown packet length 0"),
        (b"\x00\x01" + frame(ltp_packet(INFY, 1), ltp_packet(INFY, 2))[2:], "10 bytes after"),
        (b"\x00\x00\x00", "1 bytes after its last packet"),
    ],
    ids=[
        "empty",
        "packet cut short",
        "count says one more packet",
        "length prefix cut short",
        "unknown length",
        "zero length",
        "count says one fewer packet",
        "zero packets and a stray byte",
    ],
)
def test_malformed_frame_is_refused_naming_the_packet(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_kite(data)


def reference_tick(packet: bytes) -> np.ndarray[Any, np.dtype[np.void]]:
    """pykiteconnect's _parse_binary restated with struct, one packet at a time, as a row."""
    row = np.zeros((), KITE_TICK_DTYPE)
    (token,) = struct.unpack_from(">I", packet)
    segment = token & 0xFF
    divisor = 10_000_000.0 if segment == 3 else 10_000.0 if segment == 6 else 100.0
    row["instrument_token"] = token
    row["tradable"] = segment != 9
    row["is_index"] = len(packet) in (28, 32)
    row["mode"] = {8: MODE_LTP, 28: MODE_QUOTE, 32: MODE_FULL, 44: MODE_QUOTE, 184: MODE_FULL}[
        len(packet)
    ]
    if len(packet) == 8:
        prices = dict(zip(["last_price"], struct.unpack_from(">i", packet, 4), strict=True))
    elif len(packet) in (28, 32):
        names = ["last_price", "high", "low", "open", "close"]
        prices = dict(zip(names, struct.unpack_from(">5i", packet, 4), strict=True))
        if len(packet) == 32:
            (row["exchange_timestamp"],) = struct.unpack_from(">I", packet, 28)
    else:
        ltp, qty, avg, volume, buy, sell, *ohlc = struct.unpack_from(">iIiIII4i", packet, 4)
        prices = {"last_price": ltp, "average_traded_price": avg}
        prices.update(zip(["open", "high", "low", "close"], ohlc, strict=True))
        row["last_traded_quantity"] = qty
        row["volume_traded"] = volume
        row["total_buy_quantity"] = buy
        row["total_sell_quantity"] = sell
        if len(packet) == 184:
            names = ["last_trade_time", "oi", "oi_day_high", "oi_day_low", "exchange_timestamp"]
            for name, value in zip(names, struct.unpack_from(">5I", packet, 44), strict=True):
                row[name] = value
            for level in range(10):
                quantity, price, orders = struct.unpack_from(">IiH", packet, 64 + 12 * level)
                side = "bid" if level < 5 else "ask"
                row[f"{side}_quantity"][level % 5] = quantity
                row[f"{side}_price"][level % 5] = price / divisor
                row[f"{side}_orders"][level % 5] = orders
    for name, raw in prices.items():
        row[name] = raw / divisor
    last, close = float(row["last_price"]), float(row["close"])
    if close != 0:
        row["change"] = (last - close) * 100 / close
    return row


packets_of_one_kind = st.sampled_from(KINDS).flatmap(
    lambda n: st.lists(st.binary(min_size=n, max_size=n), max_size=12)
)
packets_of_any_kind = st.lists(
    st.sampled_from(KINDS).flatmap(lambda n: st.binary(min_size=n, max_size=n)), max_size=12
)


@given(st.one_of(packets_of_one_kind, packets_of_any_kind))
def test_any_frame_decodes_as_a_per_packet_struct_reader_does(packets: list[bytes]) -> None:
    ticks = decode_kite(frame(*packets))
    expected = np.array([reference_tick(packet) for packet in packets], KITE_TICK_DTYPE)
    assert ticks.shape == expected.shape
    for name in KITE_TICK_DTYPE.names or ():
        np.testing.assert_array_equal(ticks[name], expected[name], err_msg=name)


@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6), st.data())
def test_any_frame_cut_short_is_refused_as_truncated(kinds: list[int], data: st.DataObject) -> None:
    whole = frame(*(bytes([7]) * n for n in kinds))
    cut = data.draw(st.integers(min_value=2, max_value=len(whole) - 1))
    with pytest.raises(ValueError, match=r"packet \d+ of \d+: truncated"):
        decode_kite(whole[:cut])
