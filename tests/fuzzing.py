"""Damaged and lying snapshots, and the contract every reader keeps on them.

One small real snapshot (`base_snapshot`: two integer-token brokers and two string-token
brokers, six feeds), mutations that damage it the ways a disk, a copy or a forger would, and
`check_python_reader`, which opens any bytes every way the Python client can and makes every
lookup. The mutations come from `draw_mutations`, which takes its choices from a `Chooser`, so
hypothesis (tests/unit/test_layout_fuzz.py), atheris (tests/fuzz/atheris_layout.py) and a
seeded `random.Random` (tests/integration/test_c_fuzz.py, for include/resolverd.h) drive the
same generator.

Kinds of damage:

- `Flip`: a byte xor'ed anywhere, then optionally the header checksum or both checksums
  recomputed, so that a lie in the header or section table gets past the checksum;
- `Resize`: the file cut or extended, optionally with file_size (and the header checksum)
  updated to match;
- `HeaderLie` / `EntryLie`: one header or section-table field set to a chosen value, header
  checksum recomputed;
- `PayloadLie`: one field of one payload item (a pilot, remap entry, target, string offset,
  broker or feed record field, a name copied from another record...) set, both checksums
  recomputed: only the reader's own checks can object;
- `Forge`: the base laid out again by the writer with sections resized and header fields
  changed, so that the section table, counts and checksums all agree with the lie.

The contract (`check_python_reader`): reading the header and opening raise LayoutError or
succeed; a snapshot opened with verify=True answers every lookup with a value, a default or
KeyError; without verify the payload's stored indexes and strings are trusted (see
`Resolver.__init__`), so a snapshot that verify=True refuses may also make a lookup raise
LayoutError, IndexError or UnicodeDecodeError (never read outside the buffer), and nothing
else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import signal
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import xxhash

from resolverd import BrokerToken, Instrument, LayoutError, Registry, Resolver, compile_snapshot
from resolverd.shm_layout import (
    HEADER_DTYPE,
    HEADER_FIXED_SIZE,
    RECORD_DTYPES,
    SECTION_DTYPE,
    VERSION_MAJOR,
    Section,
    field_offset,
    header_checksum,
    header_size_for,
    read_header,
    section_dtype,
    write_snapshot,
)

T = TypeVar("T")

# -- the base snapshot -----------------------------------------------------------------------


def _row(
    key: str,
    exchange: str,
    *tokens: tuple[str, str, int | str],
    expiry: dt.date | None = None,
    isin: str = "",
) -> Instrument:
    return Instrument(
        key=key,
        exchange=exchange,
        segment=exchange,
        instrument_type="CE" if expiry else "EQ",
        name=key.partition(":")[2][:6],
        expiry=expiry,
        strike=22500.0 if expiry else 0.0,
        tick_size=0.05,
        lot_size=50 if expiry else 1,
        isin=isin,
        exchange_token=len(key),
        tokens=tuple(sorted(BrokerToken(b, f, v) for b, f, v in tokens)),
    )


def base_registry() -> Registry:
    return Registry.from_instruments(base_instruments(), trade_date=dt.date(2024, 4, 3))


def base_instruments() -> list[Instrument]:
    """Brokers angel (int, feeds angel:NFO and angel:NSE sharing a number), fyers (str, feeds
    fyers:BSE and fyers:NSE), kite (int, one feed) and upstox (str, one feed); non-ASCII keys
    and tokens; a broker missing from some rows."""
    april = dt.date(2024, 4, 25)
    return [
        _row(
            "NSE:INFY",
            "NSE",
            ("kite", "kite", 408065),
            ("angel", "angel:NSE", 1594),
            ("upstox", "upstox", "NSE_EQ|INE009A01021"),
            ("fyers", "fyers:NSE", "NSE:INFY-EQ"),
            isin="INE009A01021",
        ),
        _row(
            "NFO:NIFTY24APR22500CE",
            "NFO",
            ("kite", "kite", 17437186),
            ("angel", "angel:NFO", 1594),
            ("upstox", "upstox", "NSE_FO|68114"),
            expiry=april,
        ),
        _row(
            "BSE:INFY",
            "BSE",
            ("kite", "kite", 128053508),
            ("fyers", "fyers:BSE", "BSE:INFY-A"),
            isin="INE009A01021",
        ),
        _row("NSE:CAFÉ", "NSE", ("kite", "kite", 2**64 - 2), ("upstox", "upstox", "NSE_EQ|CAFÉ")),
        _row("BSE:日本株", "BSE", ("angel", "angel:NSE", 0), ("fyers", "fyers:BSE", "BSE:日本")),
        _row("MCX:🛢CRUDE", "MCX", ("kite", "kite", 0), ("upstox", "upstox", "MCX_FO|🛢")),
        _row("NSE:A", "NSE", ("kite", "kite", 1), ("angel", "angel:NSE", 2**32)),
        _row("NSE:SBIN", "NSE", ("angel", "angel:NSE", 3045), ("fyers", "fyers:NSE", "SBIN")),
    ]


@functools.cache
def base_snapshot() -> bytes:
    return bytes(compile_snapshot(base_registry(), generation=7, build_time_ns=1_712_102_400))


@functools.cache
def base_queries() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """Keys, integer tokens and string tokens to look up: every one the base holds, and misses."""
    registry = base_registry()
    keys = [*registry.keys, "NSE:NOPE", "", "nse:infy", "NSE:INFY ", "X" * 300]
    ints = [0, 1, 2, 2**64 - 1, 2**63]
    strs = ["", "nope", "NSE_EQ|INE009A01022", "é" * 40]
    for column in registry.tokens:
        values = [v for v in column.values if v is not None]
        if column.kind == "int":
            ints += [int(v) for v in values if int(v) != 2**64 - 1]
        else:
            strs += [str(v) for v in values]
    return tuple(keys), tuple(dict.fromkeys(ints)), tuple(dict.fromkeys(strs))


def raw_table(buf: bytes | bytearray) -> list[tuple[str, str, int, int, int]] | None:
    """The section table as written (name, dtype, offset, nbytes, count), unvalidated; None if
    the buffer cannot hold what its header says."""
    if len(buf) < HEADER_FIXED_SIZE:
        return None
    count = struct.unpack_from("<I", buf, 36)[0]
    if HEADER_FIXED_SIZE + 64 * count > len(buf):
        return None
    table = np.frombuffer(buf, SECTION_DTYPE, count, offset=HEADER_FIXED_SIZE).tolist()
    return [
        (n.decode("latin-1"), d.decode("latin-1"), int(o), int(b), int(c))
        for n, d, o, b, c in table
    ]


@functools.cache
def base_sections() -> tuple[Section, ...]:
    buf = base_snapshot()
    table = raw_table(buf)
    assert table is not None
    return tuple(
        Section(name, dtype, np.frombuffer(buf, section_dtype(dtype), count, offset).copy())
        for name, dtype, offset, _, count in table
    )


FORGE_FIELDS = (
    "generation",
    "build_time_ns",
    "trade_date",
    "instrument_count",
    "key_seed",
    "key_bucket_bits",
    "key_width",
    "key_slot_count",
    "broker_count",
    "feed_count",
)


def header_fields(buf: bytes | bytearray) -> dict[str, Any]:
    raw = np.frombuffer(buf, HEADER_DTYPE, 1)[0]
    return {name: raw[name].item() for name in HEADER_DTYPE.names or ()}


# -- resealing -------------------------------------------------------------------------------


def reseal_header(buf: bytearray) -> None:
    """Recompute the header checksum over the header size the buffer claims, if it can."""
    if len(buf) < HEADER_FIXED_SIZE:
        return
    size = struct.unpack_from("<I", buf, 12)[0]
    if HEADER_FIXED_SIZE <= size <= len(buf):
        struct.pack_into("<Q", buf, 120, header_checksum(buf, size))


def reseal_payload(buf: bytearray) -> None:
    """Recompute the payload checksum over everything past the claimed header, then the header's."""
    if len(buf) < HEADER_FIXED_SIZE:
        return
    size = struct.unpack_from("<I", buf, 12)[0]
    if size <= len(buf):
        struct.pack_into("<Q", buf, 56, xxhash.xxh3_64_intdigest(bytes(buf[size:])))
    reseal_header(buf)


def _reseal(buf: bytearray, how: str) -> None:
    if how == "both":
        reseal_payload(buf)
    elif how == "header":
        reseal_header(buf)


def _write(buf: bytearray, position: int, width: int, value: int | bytes) -> None:
    """`value` (an int, masked to `width` bytes, or bytes padded or cut to it) at `position`,
    clipped to the buffer."""
    raw = (
        (value % (1 << (8 * width))).to_bytes(width, "little")
        if isinstance(value, int)
        else value[:width].ljust(width, b"\0")
    )
    end = min(position + width, len(buf))
    if position < end:
        buf[position:end] = raw[: end - position]


# -- mutations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flip:
    position: int
    mask: int
    reseal: str  # "none", "header" or "both"

    def apply(self, buf: bytearray) -> bytearray:
        if self.position < len(buf):
            buf[self.position] ^= self.mask
        _reseal(buf, self.reseal)
        return buf


@dataclass(frozen=True)
class Resize:
    length: int
    fill: bytes
    fix_size: bool  # write the new length into file_size and reseal the header

    def apply(self, buf: bytearray) -> bytearray:
        extra = max(self.length - len(buf), 0)
        out = buf[: self.length] + ((self.fill or b"\0") * extra)[:extra]
        if self.fix_size and len(out) >= HEADER_FIXED_SIZE:
            struct.pack_into("<Q", out, 48, len(out))
            reseal_header(out)
        return out


def _header_field(name: str) -> tuple[int, int]:
    """(offset, size) of a header field."""
    assert HEADER_DTYPE.fields is not None
    dtype, offset = HEADER_DTYPE.fields[name][:2]
    return int(offset), int(dtype.itemsize)


@dataclass(frozen=True)
class HeaderLie:
    field: str
    value: int | bytes

    def apply(self, buf: bytearray) -> bytearray:
        offset, size = _header_field(self.field)
        _write(buf, offset, size, self.value)
        reseal_header(buf)
        return buf


ENTRY_FIELDS = {"name": (0, 32), "dtype": (32, 8), "offset": (40, 8), "nbytes": (48, 8)}
ENTRY_FIELDS["count"] = (56, 8)


@dataclass(frozen=True)
class EntryLie:
    index: int
    field: str
    value: int | bytes

    def apply(self, buf: bytearray) -> bytearray:
        offset, size = ENTRY_FIELDS[self.field]
        _write(buf, HEADER_FIXED_SIZE + 64 * self.index + offset, size, self.value)
        reseal_header(buf)
        return buf


@dataclass(frozen=True)
class PayloadLie:
    """Item `item` of section `section` (field `field` of a record), found through the
    buffer's own section table, set to `value`; both checksums recomputed."""

    section: str
    item: int
    field: str | None
    value: int | bytes

    def apply(self, buf: bytearray) -> bytearray:
        table = raw_table(buf) or []
        entry = next((e for e in table if e[0] == self.section), None)
        if entry is None:
            return buf
        _, dtype_name, offset, _, _ = entry
        try:
            dtype = section_dtype(dtype_name)
        except LayoutError:
            return buf
        start, width = 0, dtype.itemsize
        if self.field is not None:
            if dtype.fields is None or self.field not in dtype.fields:
                return buf  # the table says this section holds something else now
            start = int(dtype.fields[self.field][1])
            width = int(dtype.fields[self.field][0].itemsize)
        _write(buf, offset + self.item * dtype.itemsize + start, width, self.value)
        reseal_payload(buf)
        return buf


@dataclass(frozen=True)
class Forge:
    """The base snapshot laid out again by the writer, with sections resized (repeating their
    items, or zeros) and header fields replaced: table, counts and checksums all consistent.
    Replaces whatever it is applied to, so it comes first."""

    resize: tuple[tuple[str, int], ...] = ()
    header: tuple[tuple[str, int], ...] = ()

    def apply(self, buf: bytearray) -> bytearray:
        sizes = dict(self.resize)
        sections = []
        for section in base_sections():
            data = section.data
            if section.name in sizes:
                length = sizes[section.name]
                data = (
                    data.take(np.arange(length) % len(data))
                    if len(data)
                    else np.zeros(length, data.dtype)
                )
            sections.append(Section(section.name, section.dtype, data))
        fields = header_fields(base_snapshot())
        fields = {name: fields[name] for name in FORGE_FIELDS} | dict(self.header)
        return write_snapshot(sections, **fields)


Mutation = Flip | Resize | HeaderLie | EntryLie | PayloadLie | Forge


def mutate(mutations: Sequence[Mutation], base: bytes | None = None) -> bytes:
    buf = bytearray(base_snapshot() if base is None else base)
    for mutation in mutations:
        buf = mutation.apply(buf)
    return bytes(buf)


# -- drawing mutations -----------------------------------------------------------------------


class Chooser(Protocol):
    """Where the choices come from: hypothesis, atheris or a seeded random.Random."""

    def integer(self, low: int, high: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def blob(self, max_size: int) -> bytes: ...


class RandomChooser:
    def __init__(self, rng: Any) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.randint(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def blob(self, max_size: int) -> bytes:
        return bytes(self.rng.randbytes(self.rng.randint(0, max_size)))


def lie_int(chooser: Chooser, width: int, near: Sequence[int] = ()) -> int:
    """A value for a `width`-byte unsigned field: a boundary, a neighbour of a value that
    matters (`near`), or anything at all."""
    top = 1 << (8 * width)
    kind = chooser.integer(0, 3)
    if kind == 0 and near:
        return (chooser.choice(near) + chooser.choice((-65, -64, -8, -1, 1, 8, 64, 65))) % top
    if kind == 1:
        bound = chooser.choice((0, 1, 2, 3, 7, 8, 32, 33, 63, 64, 65, 255, 256, 4096, 1 << 16))
        return min(bound, top - 1)
    if kind == 2:
        edges = (top - 1, top - 2, top >> 1, (top >> 1) - 1, top - 64, top >> 8, 1 << 31)
        return chooser.choice(edges) % top
    return chooser.integer(0, top - 1)


def lie_bytes(chooser: Chooser, width: int) -> bytes:
    """A value for a `width`-byte string field: a name this snapshot uses (a duplicate), bad
    UTF-8, a NUL inside, empty, or anything."""
    names = base_names()
    options = (b"", b"\xff", b"\xc3", b"\x80abc", b"a\0b", b"\xed\xa0\x80", b"x" * width, *names)
    if chooser.integer(0, 2):
        return bytes(chooser.choice(options))
    return chooser.blob(width)


@functools.cache
def base_names() -> tuple[bytes, ...]:
    """Every broker, feed and section name and a few keys of the base: duplicates to copy."""
    out: list[bytes] = []
    for section in base_sections():
        out.append(section.name.encode())
        if section.name in ("brokers", "feeds"):
            out += [bytes(name) for name in section.data["name"]]
    out += [k.encode() for k in base_queries()[0][:4]]
    return tuple(out)


DTYPE_NAMES = (b"<u8", b"<u4", b"|u1", b"|S8", b"|S16", b"|S4096", b"|S0", b"|S7", b"|S8192")
DTYPE_NAMES += (b"record", b"broker", b"feed", b"<f8", b"|S", b"S8", b"|S08", b"|S99999")


def draw_flip(chooser: Chooser, size: int, header_size: int) -> Flip:
    region = chooser.integer(0, 2)
    low, high = ((0, HEADER_FIXED_SIZE - 1), (HEADER_FIXED_SIZE, header_size - 1))[region % 2]
    if region == 2:
        low, high = header_size, size - 1
    position = chooser.integer(low, max(low, high))
    return Flip(position, chooser.integer(1, 255), chooser.choice(("none", "header", "both")))


def draw_resize(chooser: Chooser, size: int, header_size: int) -> Resize:
    near = (0, HEADER_FIXED_SIZE, header_size, size)
    length = min(lie_int(chooser, 4, near), size + 4096)
    fill = chooser.choice((b"", b"\xff", b"\0" * 64)) if chooser.integer(0, 1) else b""
    return Resize(length, fill, bool(chooser.integer(0, 1)))


def draw_header_lie(chooser: Chooser, size: int, header_size: int) -> HeaderLie:
    names = [name for name in HEADER_DTYPE.names or () if name != "header_checksum"]
    field = chooser.choice(names)
    if field == "magic":
        return HeaderLie(field, lie_bytes(chooser, 8))
    _, width = _header_field(field)
    current = header_fields(base_snapshot())[field]
    near = (int(current), size, header_size, header_size_for(1), 0)
    return HeaderLie(field, lie_int(chooser, width, near))


def draw_entry_lie(chooser: Chooser, size: int, header_size: int) -> EntryLie:
    table = raw_table(base_snapshot())
    assert table is not None
    index = chooser.integer(0, len(table) - 1)
    field = chooser.choice(tuple(ENTRY_FIELDS))
    if field == "name":
        return EntryLie(index, field, lie_bytes(chooser, 32))
    if field == "dtype":
        value = chooser.choice(DTYPE_NAMES) if chooser.integer(0, 3) else chooser.blob(8)
        return EntryLie(index, field, value)
    _, _, offset, nbytes, count = table[index]
    near = (offset, nbytes, count, size, header_size, size - nbytes, offset + nbytes)
    return EntryLie(index, field, lie_int(chooser, 8, near))


@functools.cache
def payload_targets() -> tuple[tuple[str, str | None, int, int, bool], ...]:
    """Every (section, field, items, width, is_bytes) of the base a PayloadLie can aim at."""
    targets = []
    for section in base_sections():
        dtype = section.data.dtype
        if not len(section.data):
            continue
        if section.dtype in RECORD_DTYPES:
            assert dtype.fields is not None
            for field, (field_dtype, *_) in dtype.fields.items():
                targets.append(
                    (
                        section.name,
                        field,
                        len(section.data),
                        field_dtype.itemsize,
                        field_dtype.kind == "S",
                    )
                )
        else:
            is_bytes = dtype.kind == "S"
            targets.append((section.name, None, len(section.data), dtype.itemsize, is_bytes))
    return tuple(targets)


def draw_payload_lie(chooser: Chooser, size: int, header_size: int) -> PayloadLie:
    section, field, items, width, is_bytes = chooser.choice(payload_targets())
    item = chooser.integer(0, items - 1)
    if is_bytes:
        return PayloadLie(section, item, field, lie_bytes(chooser, width))
    return PayloadLie(section, item, field, lie_int(chooser, width, near_values(section, field)))


@functools.cache
def near_values(section: str, field: str | None) -> tuple[int, ...]:
    """The values the same field holds elsewhere in the base (another broker's first feed,
    another feed's broker...) and the header's counts: the lies most likely to pass a check."""
    header = header_fields(base_snapshot())
    out = {header["instrument_count"], header["key_slot_count"], 1, 2}
    out |= {header["broker_count"], header["feed_count"]}
    data = next(s.data for s in base_sections() if s.name == section)
    column = data if field is None else data[field]
    if column.dtype.kind in "iu":
        out |= {int(v) for v in column[:64].tolist()}
    return tuple(sorted(out))


def draw_forge(chooser: Chooser) -> Forge:
    sections = base_sections()
    resize = []
    for _ in range(chooser.integer(0, 2)):
        section = chooser.choice(sections)
        near = (len(section.data), 0, 1)
        resize.append((section.name, min(lie_int(chooser, 2, near), 4096)))
    header = []
    fields = header_fields(base_snapshot())
    for _ in range(chooser.integer(0 if resize else 1, 2)):
        name = chooser.choice(FORGE_FIELDS)
        _, width = _header_field(name)
        value = lie_int(chooser, width, (int(fields[name]), 0, 1))
        if name in ("trade_date",):
            value = value - (1 << 32) if value >= 1 << 31 else value
        if name == "build_time_ns":
            value = value - (1 << 64) if value >= 1 << 63 else value
        header.append((name, value))
    return Forge(tuple(resize), tuple(header))


def empty_feed(feed: int, slots: int) -> list[Mutation]:
    """Feed `feed` with no tokens and `slots` slots, every section and count consistent."""
    resize = tuple((f"feed.{feed}.{part}", 0) for part in ("tokens", "targets"))
    return [
        Forge((*resize, (f"feed.{feed}.remap", slots))),
        PayloadLie("feeds", feed, "count", 0),
        PayloadLie("feeds", feed, "slot_count", slots),
    ]


def empty_registry(slots: int) -> list[Mutation]:
    """No instruments and `slots` key slots, every section and count consistent."""
    header = header_fields(base_snapshot())
    per_instrument = ["key.fingerprints", "keys", "records"]
    per_instrument += [f"tokens.{j}" for j in range(header["broker_count"])]
    resize = (*((name, 0) for name in per_instrument), ("key.remap", slots))
    return [Forge(resize, (("instrument_count", 0), ("key_slot_count", slots)))]


def recipes() -> list[list[Mutation]]:
    """Lies that need several coordinated changes, too rare to come up by chance."""
    feeds = header_fields(base_snapshot())["feed_count"]
    out = [empty_feed(f, slots) for f in range(feeds) for slots in (0, 1, 2)]
    return out + [empty_registry(slots) for slots in (0, 1, 3)]


DRAWS: tuple[Callable[[Chooser, int, int], Mutation], ...] = (
    draw_flip,
    draw_resize,
    draw_header_lie,
    draw_entry_lie,
    draw_payload_lie,
)


def draw_mutations(chooser: Chooser, most: int = 3) -> list[Mutation]:
    """A forge (sometimes) or a recipe (rarely), then 0 to `most` other mutations."""
    base = base_snapshot()
    header_size = header_fields(base)["header_size"]
    start = chooser.integer(0, 9)
    mutations: list[Mutation] = []
    if start == 0:
        mutations += chooser.choice(recipes())
    elif start <= 2:
        mutations.append(draw_forge(chooser))
    for _ in range(chooser.integer(0 if mutations else 1, most)):
        draw = chooser.choice(DRAWS)
        mutations.append(draw(chooser, len(base), header_size))
    return mutations


# -- the contract ----------------------------------------------------------------------------

TRUSTED = (LayoutError, IndexError, UnicodeDecodeError)
"""What a lookup may raise without verify when the payload lies (see Resolver.__init__)."""

TIME_LIMIT_S = 20.0
ITEM_LIMIT = 64  # keys, brokers and feeds read back per snapshot, whatever its header says


class Hang(BaseException):
    """A reader call that did not return in TIME_LIMIT_S (a BaseException, so that no
    `except Exception` on the way can swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S) -> Iterator[None]:
    """Raise Hang in the main thread if the block runs longer than `seconds`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_: object) -> None:
        raise Hang(f"a reader call ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _open(buf: bytes, **options: bool) -> Resolver | None:
    """The resolver, or None for a LayoutError; any other exception is a bug."""
    try:
        return Resolver(buf, **options)
    except LayoutError:
        return None


def _exercise(resolver: Resolver, tolerate: tuple[type[BaseException], ...]) -> None:
    """Every lookup on the query set. A miss (KeyError) is an answer; `tolerate` adds the
    exceptions allowed here; anything else propagates."""
    allowed = (KeyError, *tolerate)

    def call(function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except allowed:
            return None

    keys, ints, strs = base_queries()
    r = resolver
    assert len(set(r.brokers)) == len(r.brokers) and len(set(r.feeds)) == len(r.feeds)
    brokers, feeds = r.brokers[:ITEM_LIMIT], r.feeds[:ITEM_LIMIT]
    for broker in brokers:
        r.broker_kind(broker)
    (r.generation, r.checksum, len(r))
    call(lambda: r.trade_date)
    for key in keys:
        call(r.__contains__, key)
        call(r.record, key)
        for broker in brokers:
            call(r.token, key, broker)
            call(r.get_token, key, broker)
            call(r.get_token, key, broker, -1)
    call(r.ordinals, list(keys))
    for broker in brokers:
        call(r.tokens, list(keys), broker)
    for feed in feeds:
        (r.feed_size(feed), r.feed_broker(feed))
        integer = r.feed_kind(feed) == "int"
        tokens: Sequence[int | str] = ints if integer else strs
        for token in tokens:
            call(r.key, token, feed)
            call(r.get_key, token, feed)
        call(r.keys, np.array(tokens, dtype=np.uint64) if integer else list(tokens), feed)
        call(r.feed_ordinals, np.array(tokens, dtype=np.uint64) if integer else list(tokens), feed)
    stored = call(lambda: list(islice(r, ITEM_LIMIT))) or []
    for key in stored:
        call(r.record, key)
    for ordinal in range(min(len(r), ITEM_LIMIT)):
        call(r.record_at, ordinal)


def check_python_reader(
    buf: bytes, directory: Path | None = None, *, limit_s: float | None = TIME_LIMIT_S
) -> str:
    """Open `buf` with read_header and Resolver (verify and not, strict and not; from a file
    in `directory` too, if given) and make every lookup; AssertionError (or the offending
    exception, or Hang after `limit_s`) on a breach of the contract above. Returns "refused",
    "verified" or "trusted" (opens only without verify)."""
    guard = time_limit(limit_s) if limit_s is not None else contextlib.nullcontext()
    with guard:
        try:
            read_header(buf)
            header_ok = True
        except LayoutError:
            header_ok = False
        outcome = "refused"
        for strict in (False, True):
            verified = _open(buf, verify=True, strict=strict)
            trusting = _open(buf, verify=False, strict=strict)
            if verified is not None or trusting is not None:
                assert header_ok, "the client opened a snapshot whose header read_header refused"
            assert trusting is not None or verified is None, "verify=True opened, verify=False not"
            if verified is not None:
                outcome = "verified"
                with verified:
                    _exercise(verified, ())
            if trusting is not None:
                outcome = "verified" if verified is not None else "trusted"
                with trusting:
                    _exercise(trusting, () if verified is not None else TRUSTED)
        if directory is not None:
            _check_file(buf, directory, outcome)
    return outcome


def _check_file(buf: bytes, directory: Path, outcome: str) -> None:
    """Resolver.open of the same bytes in a file agrees with Resolver(bytes)."""
    path = directory / "fuzzed.snap"
    path.write_bytes(buf)
    try:
        for verify in (True, False):
            try:
                resolver = Resolver.open(path, verify=verify)
            except LayoutError:
                expected = ("refused", "trusted") if verify else ("refused",)
                assert outcome in expected, f"Resolver.open(verify={verify}) refused, bytes did not"
                continue
            with resolver:
                assert outcome == "verified" or (outcome == "trusted" and not verify)
                _exercise(resolver, () if outcome == "verified" else TRUSTED)
    finally:
        path.unlink()


def of_the_previous_major_version(path: Path) -> None:
    """Rewrite the snapshot at `path` as the previous layout major version would have stamped
    it, its header checksum made good: what a release before an upgrade leaves behind."""
    written = bytearray(path.read_bytes())
    struct.pack_into("<H", written, field_offset(HEADER_DTYPE, "version_major"), VERSION_MAJOR - 1)
    reseal_header(written)
    path.write_bytes(written)
