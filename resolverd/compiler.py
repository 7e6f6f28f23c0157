"""Registry -> snapshot bytes: the perfect hashes, the reverse tables and the layout.

Pure: no files, no clock unless the caller leaves `build_time_ns` out. Everything that decides a
byte of the payload depends only on the registry's content, never on its row order: keys are
placed by their hashes, strings are sorted, brokers and feeds are sorted by name, and each
feed's tokens are taken in ordinal order. Compiling the same registry on two hosts therefore
gives the same payload checksum.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import xxhash
from numpy.typing import NDArray

from . import phf
from .errors import RegistryError
from .model import Categorical, Registry, TokenColumn, date_to_days
from .shm_layout import (
    BROKER_DTYPE,
    FEED_DTYPE,
    KIND_INT,
    KIND_STR,
    MASK64,
    NO_TOKEN,
    RECORD_DTYPE,
    Section,
    mix,
    write_snapshot,
)

MAX_SEED_ATTEMPTS = 8
MAX_NAME_BYTES = 32
MAX_STRING_WIDTH = 4096


def seed_for(attempt: int) -> int:
    """The seeds tried in order; a later one is used only if the earlier ones fail to build."""
    return mix((attempt + 0x5EED) & MASK64)


def fixed_width(length: int) -> int:
    """Bytes per entry of a fixed-width string section: a multiple of 8, at least 8."""
    return max(8, (length + 7) // 8 * 8)


@dataclass(frozen=True)
class _Hashed:
    seed: int
    hashes: NDArray[np.uint64]
    function: phf.PerfectHash


def _place(
    hash_with: Callable[[int], NDArray[np.uint64]], duplicate: Callable[[int, int], str | None]
) -> _Hashed:
    """Build a perfect hash, trying seeds in order until one works.

    Equal inputs hash equally under every seed, so the builder's duplicate check doubles as
    the registry's: `duplicate(i, j)` says why rows i and j may not share a hash (a
    RegistryError), or None when they are different inputs whose 64-bit hashes collide, in
    which case the next seed is tried.
    """
    for attempt in range(MAX_SEED_ATTEMPTS):
        seed = seed_for(attempt)
        hashes = hash_with(seed)
        try:
            return _Hashed(seed, hashes, phf.build(hashes))
        except phf.DuplicateHash as clash:
            first, second = (int(i) for i in np.flatnonzero(hashes == clash.value)[:2])
            message = duplicate(first, second)
            if message is not None:
                raise RegistryError(message) from None
        except phf.NoPilot:
            pass
    raise RegistryError(f"no perfect hash after {MAX_SEED_ATTEMPTS} seeds")


def _encode_strings(values: Sequence[str], what: str) -> tuple[list[bytes], int]:
    # One join, one encode and one split are a third of the time of encoding each value; a
    # value holding a NUL splits in two, which is how it is caught.
    encoded = "\0".join(values).encode("utf-8").split(b"\0") if values else []
    if len(encoded) != len(values):
        raise RegistryError(f"{what}: a value contains a NUL character")
    longest = max(map(len, encoded), default=0)
    if longest > MAX_STRING_WIDTH:
        raise RegistryError(
            f"{what}: a value is {longest} bytes long, the limit is {MAX_STRING_WIDTH}"
        )
    return encoded, fixed_width(longest)


def _name(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if not raw or len(raw) > MAX_NAME_BYTES or b"\0" in raw or not raw.isascii():
        raise RegistryError(f"{what} name {value!r} must be 1 to {MAX_NAME_BYTES} ASCII characters")
    return raw


def _string_table(columns: Sequence[Categorical]) -> tuple[list[str], list[NDArray[np.uint32]]]:
    """One sorted table of the strings the columns use, and each column's codes into it."""
    used = [np.flatnonzero(np.bincount(c.codes, minlength=len(c.categories))) for c in columns]
    table = sorted(
        {c.categories[int(i)] for c, codes in zip(columns, used, strict=True) for i in codes}
    )
    index = {s: i for i, s in enumerate(table)}
    recoded = []
    for column in columns:
        lookup = np.array([index.get(s, 0) for s in column.categories], dtype=np.uint32)
        recoded.append(lookup[column.codes] if len(lookup) else column.codes.astype(np.uint32))
    return table, recoded


def _check_length(registry: Registry) -> int:
    n = len(registry.keys)
    if n == 0:
        raise RegistryError("the registry has no instruments")
    columns: dict[str, Sized] = {
        "exchange": registry.exchange,
        "segment": registry.segment,
        "instrument_type": registry.instrument_type,
        "name": registry.name,
        "expiry_days": registry.expiry_days,
        "strike": registry.strike,
        "tick_size": registry.tick_size,
        "lot_size": registry.lot_size,
        "isin": registry.isin,
        "exchange_token": registry.exchange_token,
    }
    for field, column in columns.items():
        if len(column) != n:
            raise RegistryError(f"column {field} has {len(column)} rows, keys have {n}")
    for tokens in registry.tokens:
        if len(tokens.values) != n or len(tokens.feeds) != n:
            raise RegistryError(f"broker {tokens.broker}: token column is not {n} rows long")
    return n


@dataclass(frozen=True)
class _Feed:
    name: str
    broker: int
    kind: int
    hashed: _Hashed
    tokens: NDArray[np.uint64]
    targets: NDArray[np.uint32]


def _feeds_of(
    broker_index: int,
    column: TokenColumn,
    values: NDArray[np.uint64] | list[bytes],
    present: NDArray[np.bool_],
    feed_codes: NDArray[np.uint32],
    keys: NDArray[np.bytes_],
) -> list[_Feed]:
    """The reverse tables of one broker's feeds, rows given in ordinal order."""
    feeds = []
    used = np.unique(feed_codes[present])
    for feed_name, code in sorted((column.feeds.categories[int(c)], int(c)) for c in used):
        _name(feed_name, "feed")
        targets = np.flatnonzero(present & (feed_codes == code)).astype(np.uint32)
        what = f"feed {feed_name}"
        if column.kind == "int":
            assert isinstance(values, np.ndarray)
            stored = values[targets]
            kind, hashed = KIND_INT, _hash_int_tokens(what, stored, targets, keys)
        else:
            assert isinstance(values, list)
            raw = [values[int(t)] for t in targets]
            kind, hashed = KIND_STR, _hash_str_tokens(what, raw, targets, keys)
            stored = hashed.hashes
        order = np.empty(len(targets), dtype=np.intp)
        order[hashed.function.ordinals] = np.arange(len(targets))
        feeds.append(_Feed(feed_name, broker_index, kind, hashed, stored[order], targets[order]))
    return feeds


def _hash_int_tokens(
    what: str, tokens: NDArray[np.uint64], targets: NDArray[np.uint32], keys: NDArray[np.bytes_]
) -> _Hashed:
    # mix() is a bijection, so two rows share a hash only when they share the token.
    return _place(
        lambda seed: phf.int_token_hash(tokens, seed),
        lambda i, j: _claimed_twice(what, tokens[i], targets[[i, j]], keys),
    )


def _hash_str_tokens(
    what: str, tokens: list[bytes], targets: NDArray[np.uint32], keys: NDArray[np.bytes_]
) -> _Hashed:
    xxh = xxhash.xxh3_64_intdigest
    return _place(
        lambda seed: np.fromiter(map(xxh, tokens, repeat(seed)), np.uint64, count=len(tokens)),
        lambda i, j: (
            None
            if tokens[i] != tokens[j]
            else _claimed_twice(what, tokens[i].decode(), targets[[i, j]], keys)
        ),
    )


def _claimed_twice(
    what: str, token: object, rows: NDArray[np.uint32], keys: NDArray[np.bytes_]
) -> str:
    shown = token.item() if isinstance(token, np.generic) else token
    first, second = sorted(keys[int(r)].decode() for r in rows)
    return f"{what}: token {shown!r} is claimed by both {first!r} and {second!r}"


def compile_snapshot(
    registry: Registry, *, generation: int = 0, build_time_ns: int | None = None
) -> bytearray:
    """Compile a registry into the bytes of one snapshot (see `shm_layout` for the format).

    Raises RegistryError for a registry that cannot be compiled: no instruments, a key twice,
    a token claimed by two keys within one feed, a name or string the layout cannot hold.
    """
    n = _check_length(registry)
    key_bytes, key_width = _encode_strings(registry.keys, "keys")
    if min(map(len, key_bytes)) == 0:
        raise RegistryError("keys: an instrument has an empty key")
    xxh = xxhash.xxh3_64_intdigest
    forward = _place(
        lambda seed: np.fromiter(map(xxh, key_bytes, repeat(seed)), np.uint64, count=n),
        lambda i, j: (
            None
            if key_bytes[i] != key_bytes[j]
            else (f"key {registry.keys[i]!r} appears twice (rows {i} and {j})")
        ),
    )
    at_ordinal = np.empty(n, dtype=np.intp)
    at_ordinal[forward.function.ordinals] = np.arange(n)
    keys = np.array(key_bytes, dtype=f"S{key_width}")[at_ordinal]
    fingerprints = forward.hashes[at_ordinal]

    table, (exchange, segment, itype, name) = _string_table(
        [registry.exchange, registry.segment, registry.instrument_type, registry.name]
    )
    encoded_table = [s.encode("utf-8") for s in table]
    offsets = np.zeros(len(table) + 1, dtype="<u4")
    np.cumsum([len(s) for s in encoded_table], out=offsets[1:])
    string_data = np.frombuffer(b"".join(encoded_table), dtype="|u1")

    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["strike"] = np.asarray(registry.strike, dtype=np.float64)[at_ordinal]
    records["tick_size"] = np.asarray(registry.tick_size, dtype=np.float64)[at_ordinal]
    records["exchange_token"] = np.asarray(registry.exchange_token, dtype=np.uint64)[at_ordinal]
    records["expiry"] = np.asarray(registry.expiry_days, dtype=np.int32)[at_ordinal]
    records["lot_size"] = np.asarray(registry.lot_size, dtype=np.uint32)[at_ordinal]
    records["exchange"] = exchange[at_ordinal]
    records["segment"] = segment[at_ordinal]
    records["instrument_type"] = itype[at_ordinal]
    records["name"] = name[at_ordinal]
    isin = np.asarray(registry.isin)
    if isin.dtype.kind != "S" or isin.dtype.itemsize > 12:
        raise RegistryError(f"column isin must be bytes of at most 12 characters, not {isin.dtype}")
    records["isin"] = isin[at_ordinal]

    columns = sorted(registry.tokens, key=lambda c: c.broker)
    brokers = np.zeros(len(columns), dtype=BROKER_DTYPE)
    token_sections: list[Section] = []
    feeds: list[_Feed] = []
    for j, column in enumerate(columns):
        if j and columns[j - 1].broker == column.broker:
            raise RegistryError(f"broker {column.broker} has two token columns")
        values: NDArray[np.uint64] | list[bytes]
        if column.kind == "int":
            values = np.asarray(column.values, dtype=np.uint64)[at_ordinal]
            present = values != NO_TOKEN
            pairs = np.empty((n, 2), dtype=np.uint64)  # (fingerprint, token): see shm_layout
            pairs[:, 0] = fingerprints
            pairs[:, 1] = values
            token_sections.append(Section(f"tokens.{j}", "<u8", pairs.reshape(-1)))
            width = 8
        elif column.kind == "str":
            raw = [column.values[int(i)] for i in at_ordinal]
            present = np.fromiter((v is not None for v in raw), dtype=bool, count=n)
            values, width = _encode_strings([v or "" for v in raw], f"broker {column.broker}")
            if (present & np.fromiter((not v for v in values), bool, count=n)).any():
                raise RegistryError(f"broker {column.broker}: an instrument has an empty token")
            token_sections.append(
                Section(f"tokens.{j}", f"|S{width}", np.array(values, dtype=f"S{width}"))
            )
        else:
            raise RegistryError(f"broker {column.broker}: token kind {column.kind!r} is unknown")
        broker_feeds = _feeds_of(j, column, values, present, column.feeds.codes[at_ordinal], keys)
        brokers[j] = (
            _name(column.broker, "broker"),
            KIND_INT if column.kind == "int" else KIND_STR,
            width,
            len(feeds),
            len(broker_feeds),
        )
        feeds.extend(broker_feeds)

    feed_records = np.zeros(len(feeds), dtype=FEED_DTYPE)
    feed_sections: list[Section] = []
    for f, feed in enumerate(feeds):
        function = feed.hashed.function
        feed_records[f] = (
            feed.name.encode(),
            feed.broker,
            feed.kind,
            feed.hashed.seed,
            len(feed.tokens),
            function.slot_count,
            function.bucket_bits,
        )
        feed_sections += [
            Section(f"feed.{f}.pilots", "|u1", function.pilots),
            Section(f"feed.{f}.remap", "<u4", function.remap),
            Section(f"feed.{f}.tokens", "<u8", feed.tokens),
            Section(f"feed.{f}.targets", "<u4", feed.targets),
        ]

    function = forward.function
    sections = [
        Section("key.pilots", "|u1", function.pilots),
        Section("key.remap", "<u4", function.remap),
        Section("key.fingerprints", "<u8", fingerprints),
        Section("keys", f"|S{key_width}", keys),
        Section("records", "record", records),
        Section("strings.offsets", "<u4", offsets),
        Section("strings.data", "|u1", string_data),
        Section("brokers", "broker", brokers),
        Section("feeds", "feed", feed_records),
        *token_sections,
        *feed_sections,
    ]
    return write_snapshot(
        sections,
        generation=generation,
        build_time_ns=time.time_ns() if build_time_ns is None else build_time_ns,
        trade_date=date_to_days(registry.trade_date),
        instrument_count=n,
        key_seed=forward.seed,
        key_bucket_bits=function.bucket_bits,
        key_width=key_width,
        key_slot_count=function.slot_count,
        broker_count=len(columns),
        feed_count=len(feeds),
    )
