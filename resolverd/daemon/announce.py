"""What `resolverd serve` announces over ZeroMQ, and the diff between two generations.

Sans-I/O: this module turns messages into frames and frames back into messages. The daemon owns
the PUB socket; a subscriber owns its SUB socket and hands what it receives to `decode`.

Wire format
-----------
Every announcement is one ZeroMQ multipart message of two frames, ``[topic, payload]``. The
payload is a msgpack map (msgspec) whose ``type`` field names the message; topic and ``type``
MUST agree, and `decode` refuses a message where they do not.

=====================  ==============  =========================================================
topic                  ``type``        sent
=====================  ==============  =========================================================
``swap.<registry>``    ``swap``        once for every generation published, after the swap
``heartbeat``          ``heartbeat``   every ``interval`` seconds while the daemon runs
``stopping``           ``stopping``    once, when the daemon shuts down cleanly
=====================  ==============  =========================================================

ZeroMQ subscriptions match topic prefixes: ``swap.`` receives every registry's swaps, and
``swap.universe`` receives ``swap.universe`` but also ``swap.universe2``; a subscriber that wants
exactly one registry also checks `Swap.registry`.

A swap carries a `Diff` from the previous generation: exact counts, and the first ``limit``
entries of each list in key order, so that a message stays small when a reload replaces half
the universe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final, TypeAlias

import msgspec
import numpy as np
from numpy.typing import NDArray

from .. import phf
from ..client import Resolver
from ..errors import EX_DATAERR, ResolverError
from ..model import date_to_days
from ..shm_layout import NO_TOKEN

SWAP_PREFIX: Final = b"swap."
HEARTBEAT_TOPIC: Final = b"heartbeat"
STOPPING_TOPIC: Final = b"stopping"
DEFAULT_LIMIT: Final = 1000


class AnnouncementError(ResolverError, ValueError):
    """A received announcement that is not one: not two frames, an unknown topic, a payload
    that does not decode, or a topic that disagrees with its payload. The sender (or whatever
    else publishes on that socket) is at fault."""

    exit_code = EX_DATAERR


class TokenChange(msgspec.Struct, frozen=True):
    """A key both generations hold whose token for `broker` differs; None stands for "the
    broker did not list the key" (so a token gained or lost is a change too)."""

    key: str
    broker: str
    old: int | str | None
    new: int | str | None


class SizeChange(msgspec.Struct, frozen=True):
    """A key both generations hold whose lot size (int) or tick size (float) differs."""

    key: str
    old: float | int
    new: float | int


class Diff(msgspec.Struct, frozen=True):
    """What changed from one generation to the next.

    The counts are totals. Each list holds at most ``limit`` entries, the first in key order
    (`token_changes` by key, then broker), and `truncated` says whether any list was cut.
    `expired` counts the keys that are gone because their expiry (as the old generation had it)
    is before the new trade date; `removed` counts the keys gone for any other reason.
    `tokens_changed` counts (key, broker) pairs, one per `TokenChange`.
    """

    added: int
    removed: int
    expired: int
    tokens_changed: int
    lots_changed: int
    ticks_changed: int
    added_keys: list[str]
    removed_keys: list[str]
    expired_keys: list[str]
    token_changes: list[TokenChange]
    lot_changes: list[SizeChange]
    tick_changes: list[SizeChange]
    truncated: bool


Checksum = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]


class Swap(msgspec.Struct, frozen=True, tag="swap"):
    """A new generation of `registry` is published and current.

    `checksum` is the payload checksum in 16 hex digits, `trade_date` ISO 8601, `feeds` the
    number of tokens in each feed, `snapshot` the file name in the publishing directory,
    `published_ns` the Unix time of the swap. `diff` is None for the first generation.
    """

    registry: str
    generation: int
    previous_generation: int
    checksum: Checksum
    trade_date: str | None
    instruments: int
    feeds: dict[str, int]
    snapshot: str
    published_ns: int
    reload_seconds: float
    reason: str
    diff: Diff | None


class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat"):
    """The daemon is alive; `registries` maps each registry to its current generation. The next
    heartbeat is due `interval` seconds after `sent_ns`."""

    pid: int
    sent_ns: int
    interval: float
    registries: dict[str, int]


class Stopping(msgspec.Struct, frozen=True, tag="stopping"):
    """The daemon `pid` is shutting down cleanly: it sends no further announcements."""

    pid: int
    sent_ns: int


Message: TypeAlias = Swap | Heartbeat | Stopping

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def topic_of(message: Message) -> bytes:
    """The topic a message is published under."""
    if isinstance(message, Swap):
        return SWAP_PREFIX + message.registry.encode()
    return HEARTBEAT_TOPIC if isinstance(message, Heartbeat) else STOPPING_TOPIC


def encode(message: Message) -> list[bytes]:
    """The two frames ``[topic, payload]`` to send with ``socket.send_multipart``."""
    return [topic_of(message), _encoder.encode(message)]


def decode(frames: Sequence[bytes]) -> Message:
    """The message of a received multipart message; raises AnnouncementError if it is not one."""
    if len(frames) != 2:
        raise AnnouncementError(f"expected 2 frames [topic, payload], got {len(frames)}")
    try:
        topic, payload = (memoryview(frame).tobytes() for frame in frames)
    except TypeError:
        kinds = ", ".join(type(frame).__name__ for frame in frames)
        raise AnnouncementError(f"frames must be bytes, got {kinds}") from None
    if not topic.startswith(SWAP_PREFIX) and topic not in (HEARTBEAT_TOPIC, STOPPING_TOPIC):
        raise AnnouncementError(
            f"unknown topic {topic!r}; expected b'swap.<registry>', b'heartbeat' or b'stopping'"
        )
    try:
        message = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise AnnouncementError(f"topic {topic!r}: payload does not decode: {exc}") from None
    if topic_of(message) != topic:
        raise AnnouncementError(
            f"topic {topic!r} carries a {type(message).__name__} message"
            f" for topic {topic_of(message)!r}"
        )
    return message


def diff_snapshots(
    old: Resolver | None, new: Resolver, *, limit: int = DEFAULT_LIMIT
) -> Diff | None:
    """What changed from `old` to `new` (None when there is no old generation).

    Whole-column numpy work; only the entries that make it into the lists become Python
    objects, so a diff of two 1M-key snapshots costs a fraction of a second. Raises ValueError
    for a negative `limit`.
    """
    if old is None:
        return None
    if limit < 0:
        raise ValueError(f"limit must be at least 0, not {limit}")
    was, now = _match(old, new)
    gone = np.ones(len(old), dtype=bool)
    gone[was] = False
    added = np.ones(len(new), dtype=bool)
    added[now] = False
    expired = np.zeros(len(old), dtype=bool)
    if new.trade_date is not None:
        expiry = old.records["expiry"]
        expired = gone & (expiry != 0) & (expiry < date_to_days(new.trade_date))
    removed = gone & ~expired

    added_count, added_keys = _keys_of(new, added, limit)
    removed_count, removed_keys = _keys_of(old, removed, limit)
    expired_count, expired_keys = _keys_of(old, expired, limit)
    tokens_changed, token_changes = _token_changes(old, new, was, now, limit)
    lots_changed, lot_changes = _size_changes(old, new, was, now, "lot_size", limit)
    ticks_changed, tick_changes = _size_changes(old, new, was, now, "tick_size", limit)
    return Diff(
        added=added_count,
        removed=removed_count,
        expired=expired_count,
        tokens_changed=tokens_changed,
        lots_changed=lots_changed,
        ticks_changed=ticks_changed,
        added_keys=added_keys,
        removed_keys=removed_keys,
        expired_keys=expired_keys,
        token_changes=token_changes,
        lot_changes=lot_changes,
        tick_changes=tick_changes,
        truncated=any(
            count > len(listed)
            for count, listed in (
                (added_count, added_keys),
                (removed_count, removed_keys),
                (expired_count, expired_keys),
                (tokens_changed, token_changes),
                (lots_changed, lot_changes),
                (ticks_changed, tick_changes),
            )
        ),
    )


def _match(old: Resolver, new: Resolver) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The keys both snapshots hold, as two aligned arrays of ordinals: old ordinal was[i] and
    new ordinal now[i] are one key; `was` is ascending."""
    if old.header.key_seed == new.header.key_seed:
        # Same seed (the rule: both compiles took the first seed): the old fingerprints are the
        # old keys' hashes under the new key hash, and no key is hashed again. Rehashing 1M
        # keys is a Python loop that costs more than the whole rest of the diff.
        hashes = old._fingerprints
        found = phf.query(
            hashes,
            new._pilots,
            new.header.key_bucket_bits,
            new.header.key_slot_count,
            new._remap,
        )
        was = np.flatnonzero(new._fingerprints.take(found) == hashes)
    else:
        found = new.ordinals(old._keys)
        was = np.flatnonzero(found >= 0)
    # A fingerprint match is a key match but for a 64-bit collision between a key that left and
    # one that arrived; comparing the matched keys rules that out.
    now = found.take(was)
    same = new._keys.take(now) == old._keys.take(was)
    return was[same], now[same]


def _keys_of(resolver: Resolver, where: NDArray[np.bool_], limit: int) -> tuple[int, list[str]]:
    """How many ordinals `where` selects, and the first `limit` of their keys in key order."""
    ordinals = np.flatnonzero(where)
    return len(ordinals), _head(resolver._keys, ordinals, limit)[0]


def _head(
    keys: NDArray[np.bytes_], ordinals: NDArray[np.intp], limit: int
) -> tuple[list[str], list[int]]:
    """The first `limit` of `ordinals` in the order of their keys: those keys as str, and their
    positions in `ordinals`."""
    first = _smallest(keys.take(ordinals), limit)
    return [key.decode() for key in keys.take(ordinals.take(first)).tolist()], first.tolist()


def _smallest(keys: NDArray[np.bytes_], k: int) -> NDArray[np.intp]:
    """Indexes of the `k` smallest keys, in key order, without sorting them all.

    Keys are NUL-padded UTF-8, so their order is the order of their big-endian 64-bit words
    taken left to right. Each round partitions one word of the candidates: keys below the k-th
    value are in, keys above it are out, and only the ties go on to the next word. Sorting 1M
    keys of 32 bytes costs 0.4 s; this costs a few partitions of at most 1M integers.
    """
    if len(keys) <= k:
        return np.argsort(keys, kind="stable")
    width = -(-keys.dtype.itemsize // 8) * 8
    words = np.ascontiguousarray(keys, dtype=f"S{width}").view(">u8").reshape(len(keys), -1)
    chosen = []
    candidates = np.arange(len(keys))
    left = k
    for column in range(words.shape[1]):
        if not 0 < left < len(candidates):
            break
        word = words[candidates, column].astype(np.uint64)
        kth = np.partition(word, left - 1)[left - 1]
        below = candidates[word < kth]
        chosen.append(below)
        left -= len(below)
        candidates = candidates[word == kth]
    # Fewer ties than places left, or (only for equal keys) no word left to tell them apart.
    chosen.append(candidates[:left])
    picked = np.concatenate(chosen)
    return picked.take(np.argsort(keys.take(picked), kind="stable"))


def _token_changes(
    old: Resolver, new: Resolver, was: NDArray[np.intp], now: NDArray[np.intp], limit: int
) -> tuple[int, list[TokenChange]]:
    """How many (key, broker) pairs changed token, for the brokers of both snapshots, and the
    first `limit` of them by key, then broker."""
    columns = []
    changed_any = np.zeros(len(was), dtype=bool)
    total = 0
    for broker in sorted(set(old.brokers) & set(new.brokers)):
        before = old._broker_arrays[broker].take(was)
        after = new._broker_arrays[broker].take(now)
        if before.dtype.kind == after.dtype.kind:
            changed = before != after
        else:
            # The broker switched between integer and string tokens: every token it lists,
            # in either generation, is a different token.
            changed = _has_token(before) | _has_token(after)
        total += int(changed.sum())
        changed_any |= changed
        columns.append((broker, before, after, changed))
    rows = np.flatnonzero(changed_any)
    keys, first = _head(new._keys, now.take(rows), limit)
    listed: list[TokenChange] = []
    for key, row in zip(keys, rows.take(first).tolist(), strict=True):
        for broker, before, after, changed in columns:
            if changed[row] and len(listed) < limit:
                listed.append(
                    TokenChange(key, broker, _token_value(before[row]), _token_value(after[row]))
                )
    return total, listed


def _size_changes(
    old: Resolver,
    new: Resolver,
    was: NDArray[np.intp],
    now: NDArray[np.intp],
    field: str,
    limit: int,
) -> tuple[int, list[SizeChange]]:
    """How many keys changed `field` (lot_size or tick_size), and the first `limit` of them."""
    before, after = old.records[field].take(was), new.records[field].take(now)
    rows = np.flatnonzero(before != after)
    keys, first = _head(new._keys, now.take(rows), limit)
    return len(rows), [
        SizeChange(key, before[row].item(), after[row].item())
        for key, row in zip(keys, rows.take(first).tolist(), strict=True)
    ]


def _has_token(column: NDArray[Any]) -> NDArray[np.bool_]:
    """Where a token column holds a token (not NO_TOKEN, not empty)."""
    return column != (NO_TOKEN if column.dtype.kind == "u" else b"")  # type: ignore[no-any-return]


def _token_value(value: Any) -> int | str | None:
    """One element of a token column as a TokenChange value: int, str, or None for none."""
    if isinstance(value, np.bytes_):
        return value.decode() if value else None
    return None if value == NO_TOKEN else int(value)
