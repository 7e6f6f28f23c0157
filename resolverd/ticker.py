"""Broker tick frames -> numpy arrays: Zerodha Kite's binary WebSocket frames.

Wire format (Kite Connect v3 "WebSocket streaming", as Zerodha's pykiteconnect and gokiteconnect
read it and as Zerodha's kiteconnect-mocks packets confirm). Every integer is big-endian.

A frame is a ``uint16`` packet count, then for each packet a ``uint16`` length and that many
bytes. A 1-byte frame is a heartbeat and carries no packet. The length tells the packet's kind;
fields are 4-byte integers at the byte offsets given:

- 8, LTP: 0 instrument_token, 4 last_price.
- 28, index quote: 0 instrument_token, 4 last_price, 8 high, 12 low, 16 open, 20 close,
  24 net change (not decoded: Zerodha's libraries recompute ``change`` instead).
- 32, index full: the index quote, then 28 exchange_timestamp.
- 44, quote: 0 instrument_token, 4 last_price, 8 last_traded_quantity, 12 average_traded_price,
  16 volume_traded, 20 total_buy_quantity, 24 total_sell_quantity, 28 open, 32 high, 36 low,
  40 close.
- 184, full: the quote, then 44 last_trade_time, 48 oi, 52 oi_day_high, 56 oi_day_low,
  60 exchange_timestamp, then from 64 ten 12-byte depth entries (int32 quantity, int32 price,
  uint16 orders, 2 bytes padding): five bids, then five asks, best first.

Prices are signed integers (a price can go negative, as MCX crude did in April 2020); a price is
the integer divided by its segment's divisor, the segment being ``instrument_token & 0xFF``:
3 (CDS) divides by 10,000,000, 6 (BCD) by 10,000, every other segment by 100. Segment 9 holds
the indices, which are not tradable. Quantities, open interest and timestamps are unsigned, as
Zerodha's libraries read them. Timestamps are Unix epoch seconds.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["KITE_TICK_DTYPE", "MODE_FULL", "MODE_LTP", "MODE_QUOTE", "decode_kite"]

MODE_LTP: Final = 1
MODE_QUOTE: Final = 2
MODE_FULL: Final = 3

DEPTH = 5
SEGMENT_CDS: Final = 3
SEGMENT_BCD: Final = 6
SEGMENT_INDICES: Final = 9

#: One row per packet, in frame order. ``mode`` is MODE_LTP, MODE_QUOTE or MODE_FULL; an index
#: packet has ``is_index`` set and mode MODE_QUOTE (28 bytes) or MODE_FULL (32 bytes), the labels
#: pykiteconnect gives it. ``change`` is the percent change from the previous close,
#: ``(last_price - close) * 100 / close``, or 0 without a close, as pykiteconnect computes it
#: (gokiteconnect's NetChange and the "change" in Zerodha's mock JSON are ``last_price - close``).
#: A field the packet does not carry is 0, timestamps included.
KITE_TICK_DTYPE: Final = np.dtype(
    [
        ("instrument_token", np.uint32),
        ("mode", np.uint8),
        ("is_index", np.bool_),
        ("tradable", np.bool_),
        ("last_price", np.float64),
        ("last_traded_quantity", np.int64),
        ("average_traded_price", np.float64),
        ("volume_traded", np.int64),
        ("total_buy_quantity", np.int64),
        ("total_sell_quantity", np.int64),
        ("open", np.float64),
        ("high", np.float64),
        ("low", np.float64),
        ("close", np.float64),
        ("change", np.float64),
        ("last_trade_time", np.int64),
        ("exchange_timestamp", np.int64),
        ("oi", np.int64),
        ("oi_day_high", np.int64),
        ("oi_day_low", np.int64),
        ("bid_quantity", np.int64, (DEPTH,)),
        ("bid_price", np.float64, (DEPTH,)),
        ("bid_orders", np.int64, (DEPTH,)),
        ("ask_quantity", np.int64, (DEPTH,)),
        ("ask_price", np.float64, (DEPTH,)),
        ("ask_orders", np.int64, (DEPTH,)),
    ]
)

_TICK_NAMES = frozenset(KITE_TICK_DTYPE.names or ())
_PRICE_FIELDS = ("last_price", "average_traded_price", "open", "high", "low", "close")

# Packet layouts, named like KITE_TICK_DTYPE so that decoding is a copy by field name.
_LTP = [("instrument_token", ">u4"), ("last_price", ">i4")]
_INDEX_QUOTE = [
    *_LTP,
    *[(name, ">i4") for name in ("high", "low", "open", "close", "net_change")],
]
_QUOTE = [
    *_LTP,
    ("last_traded_quantity", ">u4"),
    ("average_traded_price", ">i4"),
    *[(name, ">u4") for name in ("volume_traded", "total_buy_quantity", "total_sell_quantity")],
    *[(name, ">i4") for name in ("open", "high", "low", "close")],
]
_DEPTH_ENTRY = [("quantity", ">u4"), ("price", ">i4"), ("orders", ">u2"), ("padding", "V2")]
_FULL = [
    *_QUOTE,
    *[
        (name, ">u4")
        for name in ("last_trade_time", "oi", "oi_day_high", "oi_day_low", "exchange_timestamp")
    ],
    ("depth", _DEPTH_ENTRY, (2 * DEPTH,)),
]

# length -> (layout, mode, is_index)
_PACKETS: Final[dict[int, tuple[np.dtype[np.void], int, bool]]] = {
    8: (np.dtype(_LTP), MODE_LTP, False),
    28: (np.dtype(_INDEX_QUOTE), MODE_QUOTE, True),
    32: (np.dtype([*_INDEX_QUOTE, ("exchange_timestamp", ">u4")]), MODE_FULL, True),
    44: (np.dtype(_QUOTE), MODE_QUOTE, False),
    184: (np.dtype(_FULL), MODE_FULL, False),
}
assert all(layout.itemsize == length for length, (layout, _, _) in _PACKETS.items())

_KNOWN = ", ".join(map(str, _PACKETS))
_U16 = struct.Struct(">H")


def decode_kite(frame: bytes | bytearray | memoryview) -> NDArray[np.void]:
    """Decode one Kite binary WebSocket frame.

    Returns a new array of KITE_TICK_DTYPE with one row per packet, in frame order; a heartbeat
    (a 1-byte frame) or a frame of zero packets gives an empty array. Raises ValueError, naming
    the packet (counted from 0) and the fault, when the frame is truncated, declares a packet
    length Kite does not send, or has bytes after its last packet.
    """
    data = np.frombuffer(frame, dtype=np.uint8)
    if data.size == 1:
        return np.zeros(0, KITE_TICK_DTYPE)
    starts, lengths = _split(data)
    if lengths.size and np.all(lengths == lengths[0]):  # one subscription mode, the usual frame
        return _decode_kind(data, starts, int(lengths[0]))
    ticks = np.zeros(starts.size, KITE_TICK_DTYPE)
    # Scattering whole rows as opaque bytes is a memcpy each; field by field costs ten times more.
    row = np.dtype((np.void, KITE_TICK_DTYPE.itemsize))
    for length in _PACKETS:
        rows = np.flatnonzero(lengths == length)
        if rows.size:
            ticks.view(row)[rows] = _decode_kind(data, starts[rows], length).view(row)
    return ticks


def _decode_kind(
    data: NDArray[np.uint8], starts: NDArray[np.intp], length: int
) -> NDArray[np.void]:
    """Decode the `length`-byte packets whose bodies begin at `starts`, in that order."""
    layout, mode, is_index = _PACKETS[length]
    # Indexing the frame's overlapping `length`-byte windows (a strided view, built directly
    # because sliding_window_view costs more than a small frame's whole decode) with the packets'
    # offsets gathers them into one contiguous block; each field is then a big-endian view.
    windows = np.ndarray((data.size - length + 1, length), np.uint8, data, 0, (1, 1))
    packets = windows[starts].view(layout)[:, 0]
    ticks = np.zeros(starts.size, KITE_TICK_DTYPE)
    names = layout.names or ()
    for name in names:
        if name in _TICK_NAMES:
            ticks[name] = packets[name]
    if "depth" in names:
        depth = packets["depth"]
        for part in ("quantity", "price", "orders"):
            ticks[f"bid_{part}"] = depth[part][:, :DEPTH]
            ticks[f"ask_{part}"] = depth[part][:, DEPTH:]
    ticks["mode"] = mode
    ticks["is_index"] = is_index

    segment = ticks["instrument_token"] & 0xFF
    ticks["tradable"] = segment != SEGMENT_INDICES
    divisor = np.where(segment == SEGMENT_CDS, 1e7, np.where(segment == SEGMENT_BCD, 1e4, 100.0))
    for name in _PRICE_FIELDS:
        ticks[name] /= divisor
    if "depth" in names:
        ticks["bid_price"] /= divisor[:, None]
        ticks["ask_price"] /= divisor[:, None]
    # The same operations in the same order as pykiteconnect, so the floats agree bit for bit.
    close = ticks["close"]
    np.divide((ticks["last_price"] - close) * 100, close, out=ticks["change"], where=close != 0)
    return ticks


def _split(data: NDArray[np.uint8]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Return the byte offset of each packet's body and its length, checking the framing."""
    size = data.size
    if size < 2:
        raise ValueError(f"kite frame of {size} bytes has no 2-byte packet count")
    count = int(data[0]) << 8 | int(data[1])

    # Fast path: a frame of one packet kind (one subscription mode) is a strided array, so all
    # its length prefixes are checked in one numpy comparison instead of a Python loop.
    first = int(data[2]) << 8 | int(data[3]) if size >= 4 else -1
    stride = first + 2
    if first in _PACKETS and size == 2 + count * stride:
        heads = data[2:].reshape(count, stride)
        if np.all(heads[:, 0] == first >> 8) and np.all(heads[:, 1] == first & 0xFF):
            return 4 + stride * np.arange(count), np.full(count, first, np.intp)

    unpack = _U16.unpack_from
    buffer = data.data
    starts = []
    at = 2
    for i in range(count):
        if at + 2 > size:
            raise ValueError(
                f"kite frame packet {i} of {count}: truncated, the frame ends at byte {size} "
                "before this packet's length prefix"
            )
        (length,) = unpack(buffer, at)
        at += 2
        if length not in _PACKETS:
            raise ValueError(
                f"kite frame packet {i} of {count}: unknown packet length {length} "
                f"(Kite sends {_KNOWN})"
            )
        if at + length > size:
            raise ValueError(
                f"kite frame packet {i} of {count}: truncated, {length}-byte packet at byte {at} "
                f"but the frame ends at byte {size}"
            )
        starts.append(at)
        at += length
    if at != size:
        raise ValueError(
            f"kite frame has {size - at} bytes after its last packet (its count says {count})"
        )
    offsets = np.array(starts, np.intp)
    return offsets, (data[offsets - 2].astype(np.intp) << 8) | data[offsets - 1]
