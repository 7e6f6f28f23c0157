"""The read-only client: map a snapshot and resolve keys and tokens from it without copying.

    with Resolver.open("/dev/shm/universe.snap") as r:   # or Resolver.open("NAME")
        r.token("NSE:INFY", "kite")            # 408065
        r.key(408065, "kite")                  # 'NSE:INFY'
        r.keys(ticks["instrument_token"], "kite")

The single lookups (`token`, `get_token`, `key`, `get_key`) and the integer feeds' batch
reverse lookups are compiled (resolverd/_speedups.c, on the C reader include/resolverd.h)
wherever setup.py found a C compiler; `Resolver.compiled` says so. Elsewhere, or with
RESOLVERD_PURE_PYTHON=1, they are functions built once per snapshot from the templates in
`_hot` and stored on the instance, reading every element through a memoryview, because
attribute lookups and numpy scalars cost more than the lookup itself (`bench/bench_lookup.py`
measures it). Both give the same answers. The other batches use numpy over the same mapped
sections.
"""

from __future__ import annotations

import codecs
import datetime as dt
import errno
import mmap
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import numpy as np
import xxhash
from numpy.typing import ArrayLike, NDArray

from . import _hot, phf

try:
    from . import _speedups
except ImportError:  # built where a C compiler was found (setup.py); else pure Python
    _speedups = None  # type: ignore[assignment]
from ._trust import Owner, check_file, trusted_owners
from .errors import LayoutError, UnavailableError, UnknownNameError, UntrustedError
from .model import BrokerToken, Instrument, days_to_date
from .shm_layout import (
    FIRST_DAY,
    KIND_INT,
    LAST_DAY,
    MASK64,
    MIX_MULTIPLIER,
    NO_TOKEN,
    PILOT_MIX,
    Header,
    check_broker,
    check_feed,
    read_header,
    verify_payload,
)

# Where named registries are published when nothing names a directory: the systemd unit's
# runtime directory where it exists (its group and mode are the operator's), else /dev/shm.
SYSTEM_RUNTIME_DIR = Path("/run/resolverd")
DEFAULT_SHM_DIR = Path("/dev/shm")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MISSING: Final = object()
T = TypeVar("T")


def shm_dir(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """Where named registries are published: the argument, else $RESOLVERD_SHM_DIR (from
    `environ`, default os.environ), else /run/resolverd where it exists (the systemd unit's
    runtime directory), else /dev/shm. The daemon and every reader use this one rule."""
    env = os.environ if environ is None else environ
    chosen = explicit or env.get("RESOLVERD_SHM_DIR")
    if chosen:
        return Path(chosen)
    return SYSTEM_RUNTIME_DIR if SYSTEM_RUNTIME_DIR.is_dir() else DEFAULT_SHM_DIR


def _map_file(
    path: Path, *, populate: bool, trusted: frozenset[int], owner: int | None = None
) -> tuple[mmap.mmap, int]:
    """Map a whole file read-only, with its owner's uid, if `_trust.check_file` accepts it.
    PROT_READ makes every write through the mapping impossible; O_NOFOLLOW refuses a symlink
    planted in the file's place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UntrustedError(f"{path}: a symbolic link, not a snapshot file") from None
        raise UnavailableError(f"{path}: cannot open: {exc.strerror}") from exc
    try:
        status = os.fstat(fd)
        check_file(path, status, trusted, owner)
        if status.st_size == 0:
            raise LayoutError(f"{path}: truncated: the file is empty")
        flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
        return mmap.mmap(fd, status.st_size, flags=flags, prot=mmap.PROT_READ), status.st_uid
    finally:
        os.close(fd)


def _unknown(what: str, name: str, names: Any) -> UnknownNameError:
    return UnknownNameError(
        f"unknown {what} {name!r}; this snapshot has {', '.join(sorted(names)) or 'none'}"
    )


def _named(what: str, table: dict[str, T], name: str) -> T:
    """table[name]; an unknown broker or feed name is the caller's error, not a miss."""
    try:
        return table[name]
    except KeyError:
        raise _unknown(what, name, table) from None


def _name(record: np.void, what: str) -> str:
    """A broker or feed record's name: ASCII, as the compiler writes it."""
    try:
        return record["name"].decode("ascii")  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        raise LayoutError(f"{what}: field name {record['name']!r} is not ASCII") from None


def _check_utf8(what: str, column: NDArray[np.bytes_]) -> None:
    """LayoutError unless every NUL-padded row of a fixed-width string column is UTF-8."""
    raw = np.ascontiguousarray(column).view(np.uint8)
    try:
        codecs.utf_8_decode(raw, "strict", True)  # type: ignore[arg-type]  # a buffer
    except UnicodeDecodeError:
        raise LayoutError(f"{what}: a string is not UTF-8") from None
    # Valid as a whole, the rows are valid one by one unless a character runs across the
    # boundary of two rows: then the second row starts with a continuation byte.
    if ((raw[:: column.dtype.itemsize] & 0xC0) == 0x80).any():
        raise LayoutError(f"{what}: a string is not UTF-8")


def _day(days: int, ordinal: int) -> int:
    """A record's date field, checked where `verify` may not have checked it."""
    if not FIRST_DAY <= days <= LAST_DAY:
        raise LayoutError(f"section 'records': row {ordinal}: field expiry {days} is not a date")
    return days


class _Lookups(NamedTuple):
    """One generation's single lookups, as a follower calls them by name."""

    token: Callable[..., Any]
    get_token: Callable[..., Any]
    key: Callable[..., Any]
    get_key: Callable[..., Any]


class _StrColumn:
    """A string token column, indexed like the integer ones; NO_TOKEN marks "none"."""

    __slots__ = ("view", "width")

    def __init__(self, view: memoryview, width: int) -> None:
        self.view, self.width = view, width

    def __getitem__(self, ordinal: int) -> str | int:
        start = ordinal * self.width
        raw = self.view[start : start + self.width].tobytes().rstrip(b"\0")
        return raw.decode() if raw else NO_TOKEN


class _Feed:
    """One feed's reverse tables, as memoryviews (single lookups) and arrays (batches)."""

    def __init__(self, resolver: Resolver, index: int, record: np.void, broker: str) -> None:
        self.name = _name(record, f"feed {index}")
        self.kind = int(record["kind"])
        self.broker = broker
        self.seed = int(record["seed"])
        self.count = int(record["count"])
        self.slot_count = int(record["slot_count"])
        self.bucket_bits = int(record["bucket_bits"])
        prefix = f"feed.{index}."
        self.pilots = resolver._array(prefix + "pilots")
        self.remap = resolver._array(prefix + "remap")
        self.tokens = resolver._array(prefix + "tokens")
        self.targets = resolver._array(prefix + "targets")
        self.pilots_view = resolver._view(prefix + "pilots")
        self.remap_view = resolver._view(prefix + "remap", "I")
        self.tokens_view = resolver._view(prefix + "tokens", "Q")
        self.targets_view = resolver._view(prefix + "targets", "I")


class Resolver:
    """A read-only view of one snapshot.

    Single lookups, all O(1) with no allocation but the result:

    - ``token(key, broker)``: the broker's token for a key (int, or str for string brokers);
      KeyError if the key is unknown or the broker does not list it.
    - ``get_token(key, broker, default=None)``: the same, with a default instead of KeyError.
    - ``key(token, feed)``: the key a feed's token stands for; KeyError if none.
    - ``get_key(token, feed, default=None)``.

    With ``cache=True`` all four keep the answers they found (up to `cache_limit` per broker or
    feed) in dicts of this resolver's own, so a hot key or tick token costs a dict lookup; a
    new generation starts with empty ones.

    An unknown broker or feed name raises UnknownNameError, never KeyError. Bind
    ``token = resolver.token`` only for as long as the resolver is open. A resolver that
    follows a registry keeps a bound lookup correct across swaps, but a lookup bound to an
    older generation takes a slower path on every call: bind again in an `on_swap` callback.
    """

    token: Callable[[str, str], int | str]
    get_token: Callable[..., Any]
    key: Callable[[int | str, str], str]
    get_key: Callable[..., Any]

    def __init__(
        self,
        buffer: bytes | bytearray | memoryview | mmap.mmap,
        *,
        strict: bool = False,
        cache: bool = False,
        verify: bool = False,
        cache_limit: int = 1 << 16,
        _owned: bool = False,
        _follow: dict[str, Any] | None = None,
    ) -> None:
        """View a snapshot held in any buffer; raises LayoutError for one that is not valid.

        Always validated, at O(sections): the header, the section table and the broker and
        feed records. With `verify`, also the payload checksum and every stored index and
        string, at O(n). Without it the payload's content is trusted, which keeps the lookups
        free of range checks: a payload damaged or forged after its checksum was computed can
        then give wrong answers, or make a lookup raise IndexError (a stored ordinal out of
        range), UnicodeDecodeError (a key or token that is not UTF-8) or LayoutError (a
        record's date out of range), though no read ever leaves the buffer. `verify=True`
        refuses every such snapshot: use it for files from anywhere but a trusted publisher."""
        self._buffer: Any = buffer
        self._owns_buffer = _owned
        self._memory: memoryview | None = memoryview(buffer).toreadonly().cast("B")
        self._exports: list[memoryview] = []
        self.strict = strict
        try:
            self.header: Header = read_header(self._memory)
            if verify:
                verify_payload(self._memory, self.header)
            self._load()
            if verify:
                self._verify_indexes()
            self._bind(cache=cache, cache_limit=cache_limit, follow=_follow)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        source: str | os.PathLike[str],
        *,
        strict: bool = False,
        cache: bool = False,
        verify: bool = False,
        populate: bool = False,
        directory: str | os.PathLike[str] | None = None,
        owner: Owner | Sequence[Owner] = (),
        wait: float = 0.0,
    ) -> Resolver:
        """Map a snapshot file, or follow a registry published by name.

        A string without a path separator that matches ``[A-Za-z0-9_][A-Za-z0-9_.-]*``, does
        not end in ``.snap`` and is not an existing file is a registry name, looked up in
        `directory` (see `shm_dir`). A resolver opened by name follows the registry: each
        lookup first compares the control segment's sequence with the one it last saw (one
        8-byte read) and, when a new generation was published, switches to it before it
        resolves; see `refresh` and `on_swap`. `populate` pre-faults each mapping on open.

        Only files of trusted users are mapped (UntrustedError otherwise): this process's
        user, root, the owner of a directory no one else may write, and `owner` (a user name
        or uid, or several) or ``$RESOLVERD_OWNER``; see `resolverd._trust`.

        `wait` is how many seconds to keep trying while a registry is not published yet (a
        process that starts before the daemon, or before its first generation); the default 0
        raises UnavailableError at once. An untrusted file is refused at once whatever `wait`.
        """
        text = os.fspath(source)
        is_name = (
            isinstance(source, str)
            and os.sep not in text
            and _NAME.fullmatch(text)
            and not text.endswith(".snap")
            and not Path(text).is_file()
        )
        owners = [owner] if isinstance(owner, int | str) else list(owner)
        if not is_name:
            path = Path(text)
            trusted = trusted_owners(path.parent, owners)
            try:
                mapped, _ = _map_file(path, populate=populate, trusted=trusted)
            except FileNotFoundError:
                raise UnavailableError(f"{path}: no such snapshot file") from None
            return cls._from_map(mapped, str(path), strict=strict, cache=cache, verify=verify)
        from ._follow import Following

        deadline = time.monotonic() + wait
        pause = 0.01
        while True:
            # Looked up again each time: a daemon starting now may create /run/resolverd.
            folder = shm_dir(directory)
            try:
                return Following(
                    text,
                    folder,
                    trusted_owners(folder, owners),
                    strict=strict,
                    cache=cache,
                    verify=verify,
                    populate=populate,
                )
            except UntrustedError:
                raise
            except UnavailableError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.5)

    @classmethod
    def _from_map(cls, mapped: mmap.mmap, where: str, **options: Any) -> Resolver:
        try:
            return cls(mapped, _owned=True, **options)
        except LayoutError as exc:
            raise LayoutError(f"{where}: {exc}") from None

    # -- tables -------------------------------------------------------------------------------

    def _view(self, name: str, fmt: str = "B") -> memoryview:
        entry = self.header.sections[name]
        assert self._memory is not None
        view = self._memory[entry.offset : entry.offset + entry.nbytes]
        if fmt != "B":
            view = view.cast(fmt)  # type: ignore[call-overload]  # fmt is one of "B", "I", "Q"
        self._exports.append(view)
        return view

    def _array(self, name: str) -> NDArray[Any]:
        entry = self.header.sections[name]
        assert self._memory is not None
        array = np.frombuffer(
            self._memory, dtype=entry.dtype, count=entry.count, offset=entry.offset
        )
        return array

    def _load(self) -> None:
        h = self.header
        self._n = h.instrument_count
        self._pilots = self._array("key.pilots")
        self._remap = self._array("key.remap")
        self._fingerprints = self._array("key.fingerprints")
        self._keys = self._array("keys")
        self._records = self._array("records")
        offsets = self._array("strings.offsets")
        data = self._view("strings.data")
        if int(offsets[-1]) > len(data):
            raise LayoutError("section 'strings.offsets' points past 'strings.data'")
        # Decoded on demand: a universe can have a hundred thousand names, and open is O(1).
        self._string_offsets, self._string_data = offsets, data
        self._string_count = len(offsets) - 1
        brokers = self._array("brokers")
        broker_names = [_name(record, f"broker {j}") for j, record in enumerate(brokers)]
        broker_kinds = [int(record["kind"]) for record in brokers]
        seen: set[str] = set()
        for j, record in enumerate(brokers):
            if broker_names[j] in seen:
                raise LayoutError(f"broker {j}: name {broker_names[j]!r} appears twice")
            seen.add(broker_names[j])
            check_broker(h, j, record)
        self._feeds: dict[str, _Feed] = {}
        for f, record in enumerate(self._array("feeds")):
            check_feed(h, f, record)
            broker, kind = int(record["broker"]), int(record["kind"])
            if kind != broker_kinds[broker]:
                raise LayoutError(
                    f"feed {f}: field kind {kind} is not the kind of broker {broker_names[broker]}"
                )
            feed = _Feed(self, f, record, broker_names[broker])
            if feed.name in self._feeds:
                raise LayoutError(f"feed {f}: name {feed.name!r} appears twice")
            self._feeds[feed.name] = feed
        self._broker_kinds: dict[str, int] = {}
        self._broker_arrays: dict[str, NDArray[Any]] = {}
        self._broker_columns: dict[str, Any] = {}
        # Each broker's (fingerprints, tokens) for the fingerprint-mode single lookup: an
        # integer broker's own copy of the fingerprints, beside its tokens (see shm_layout).
        self._broker_pairs: dict[str, tuple[memoryview, Any]] = {}
        fingerprints = self._view("key.fingerprints", "Q")
        self._broker_feeds: dict[str, tuple[_Feed, ...]] = {}
        feed_list = list(self._feeds.values())
        for j, (name, record) in enumerate(zip(broker_names, brokers, strict=True)):
            kind = int(record["kind"])
            self._broker_kinds[name] = kind
            array = self._array(f"tokens.{j}")
            self._broker_arrays[name] = array[1::2] if kind == KIND_INT else array
            first, count = int(record["first_feed"]), int(record["feed_count"])
            if first + count > len(feed_list):
                raise LayoutError(f"broker {name}: fields first_feed/feed_count point past feeds")
            own = tuple(feed_list[first : first + count])
            if any(feed.broker != name for feed in own):
                raise LayoutError(
                    f"broker {name}: fields first_feed/feed_count take in another broker's feed"
                )
            self._broker_feeds[name] = own
            if kind == KIND_INT:
                pairs = self._view(f"tokens.{j}", "Q")
                copies, tokens = pairs[0::2], pairs[1::2]
                self._exports += (copies, tokens)
                self._broker_pairs[name] = (copies, tokens)
                self._broker_columns[name] = tokens
            else:
                strings = _StrColumn(self._view(f"tokens.{j}"), int(record["token_width"]))
                self._broker_pairs[name] = (fingerprints, strings)
                self._broker_columns[name] = strings

    def _verify_indexes(self) -> None:
        """O(n) checks that the stored indexes stay in range and the stored strings and dates
        decode (part of `verify`): what the lookups trust without it."""
        if (np.diff(self._string_offsets.astype(np.int64)) < 0).any():
            raise LayoutError("section 'strings.offsets' is not in ascending order")
        if self._remap.size and int(self._remap.max()) >= self._n:
            raise LayoutError("section 'key.remap' holds an ordinal out of range")
        records = self._records
        for field in ("exchange", "segment", "instrument_type", "name"):
            if records.size and int(records[field].max()) >= self._string_count:
                raise LayoutError(
                    f"section 'records': field {field} holds a string index out of range"
                )
        expiry = records["expiry"]
        if expiry.size and not FIRST_DAY <= int(expiry.min()) <= int(expiry.max()) <= LAST_DAY:
            raise LayoutError("section 'records': field expiry holds a day that is not a date")
        _check_utf8("section 'keys'", self._keys)
        _check_utf8("section 'records': field isin", records["isin"])
        for j, (name, column) in enumerate(self._broker_arrays.items()):
            if column.dtype.kind == "S":
                _check_utf8(f"section 'tokens.{j}'", column)
            elif not np.array_equal(self._broker_pairs[name][0], self._fingerprints):
                raise LayoutError(
                    f"section 'tokens.{j}': its fingerprints differ from 'key.fingerprints'"
                )
        for feed in self._feeds.values():
            if feed.remap.size and int(feed.remap.max()) >= feed.count:
                raise LayoutError(f"feed {feed.name}: remap holds an ordinal out of range")
            if feed.targets.size and int(feed.targets.max()) >= self._n:
                raise LayoutError(f"feed {feed.name}: targets hold an ordinal out of range")

    def _check_against(self, sequence: int) -> None:
        """Make a following resolver's checks compare with `sequence` (-1: never equal)."""
        self._checked_sequence = sequence
        for namespace in self._follow_namespaces:
            namespace["sequence"] = sequence
        if self._checked is not None:
            self._checked.sequence = sequence & MASK64

    # -- single lookups -----------------------------------------------------------------------

    def _bind(self, *, cache: bool, cache_limit: int, follow: dict[str, Any] | None) -> None:
        h = self.header
        keys = self._view("keys")
        width = h.key_width
        columns = dict(self._broker_columns)
        tables = {
            "xxh": xxhash.xxh3_64_intdigest,
            "seed": h.key_seed,
            "mixes": PILOT_MIX,
            "pilots": self._view("key.pilots"),
            "shift": 64 - h.key_bucket_bits,
            "slots": h.key_slot_count,
            "n": self._n,
            "remap": self._view("key.remap", "I"),
            "fingerprints": self._view("key.fingerprints", "Q"),
            "columns": columns,
            "pairs": dict(self._broker_pairs),
            "absent": NO_TOKEN,
            "keys": keys,
            "width": width,
            "unknown": _unknown,
        }
        key_array = self._keys
        feeds = {
            name: _reverse_lookup(feed, key_array, self._broker_columns[feed.broker], self.strict)
            for name, feed in self._feeds.items()
        }
        reverse = {"feeds": feeds, "missing": _MISSING, "unknown": _unknown}
        if self.strict:
            ordinal = _hot.bind(_hot.strict_ordinal, **tables)
            token = _hot.bind(_hot.strict_token, ordinal=ordinal, **tables)
            get_token = _hot.bind(_hot.strict_get_token, ordinal=ordinal, **tables)
        else:
            ordinal = _hot.bind(_hot.fingerprint_ordinal, **tables)
            token = _hot.bind(_hot.token, **tables)
            get_token = _hot.bind(_hot.get_token, **tables)
        key = _hot.bind(_hot.key, **reverse)
        get_key = _hot.bind(_hot.get_key, **reverse)
        memory = self._memory
        assert memory is not None  # bound while open
        self._compiled = _compiled_lookups(memory, self.strict)
        if self._compiled is not None:
            token, get_token = self._compiled.token, self._compiled.get_token
            key, get_key = self._compiled.key, self._compiled.get_key
        if cache:
            token, get_token = _cached(token, get_token, columns, cache_limit, "broker")
            key, get_key = _cached(key, get_key, feeds, cache_limit, "feed")
        self._follow_namespaces: list[dict[str, Any]] = []
        self._checked: Any = None
        self._checked_sequence = 0
        if follow is not None:
            # What a follower whose control file is retired resolves with: no check to fail.
            self._unchecked = _Lookups(token, get_token, key, get_key)
            self._checked_sequence = follow["sequence"]
            if self._compiled is not None and not cache:
                # The compiled lookups again, each behind the one-load check.
                self._checked = _compiled_lookups(
                    memory,
                    self.strict,
                    control=follow["control"],
                    sequence=follow["sequence"],
                    follow=follow["follow"],
                )
            if self._checked is not None:
                token, get_token = self._checked.token, self._checked.get_token
                key, get_key = self._checked.key, self._checked.get_key
            # The checked twins: inlined where the lookup is cheap enough for a wrapper's
            # call to matter, else the lookup behind `_hot.followed`.
            else:
                wrapped = cache or self._compiled is not None
                if self.strict or wrapped:
                    token = _hot.bind(_hot.followed, inner=token, attribute="token", **follow)
                    get_token = _hot.bind(
                        _hot.followed, inner=get_token, attribute="get_token", **follow
                    )
                else:
                    token = _hot.bind(_hot.followed_token, **follow, **tables)
                    get_token = _hot.bind(_hot.followed_get_token, **follow, **tables)
                if wrapped:
                    key = _hot.bind(_hot.followed, inner=key, attribute="key", **follow)
                    get_key = _hot.bind(_hot.followed, inner=get_key, attribute="get_key", **follow)
                else:
                    key = _hot.bind(_hot.followed_key, **follow, **reverse)
                    get_key = _hot.bind(_hot.followed_get_key, **follow, **reverse)
            if self._checked is None:
                # Where a following resolver's checks keep the sequence they compare with.
                self._follow_namespaces = [f.__globals__ for f in (token, get_token, key, get_key)]

        def key_of(s: int) -> str:
            return key_array[s].decode()  # type: ignore[no-any-return]

        self._ordinal = ordinal
        self._key_of = key_of
        self.token, self.get_token, self.key, self.get_key = token, get_token, key, get_key

    # -- batch lookups ------------------------------------------------------------------------

    def _hash_keys(self, keys: Sequence[str] | NDArray[Any], seed: int) -> NDArray[np.uint64]:
        xxh = xxhash.xxh3_64_intdigest
        if isinstance(keys, np.ndarray) and keys.dtype.kind == "S":
            return np.fromiter((xxh(k, seed) for k in keys.tolist()), np.uint64, len(keys))
        return np.fromiter(map(xxh, map(str.encode, keys), repeat(seed)), np.uint64, len(keys))

    def ordinals(self, keys: Sequence[str] | NDArray[Any]) -> NDArray[np.intp]:
        """Each key's ordinal in this snapshot (the row of `records`), -1 for unknown keys."""
        if self._compiled is not None and isinstance(keys, list | tuple):
            found = np.empty(len(keys), np.intp)
            self._compiled.ordinals_into(keys, found)
            return found
        hashes = self._hash_keys(keys, self.header.key_seed)
        found = phf.query(
            hashes,
            self._pilots,
            self.header.key_bucket_bits,
            self.header.key_slot_count,
            self._remap,
        )
        miss = self._fingerprints[found] != hashes
        if self.strict:
            width = self.header.key_width
            raw = (
                keys.tolist()
                if isinstance(keys, np.ndarray) and keys.dtype.kind == "S"
                else [k.encode() for k in keys]
            )
            # numpy cuts a longer key to the width: never let such a cut key compare equal.
            too_long = np.fromiter(map(len, raw), np.intp, len(raw)) > width
            miss |= (self._keys[found] != np.array(raw, dtype=f"S{width}")) | too_long
        found[miss] = -1
        return found

    def tokens(self, keys: Sequence[str] | NDArray[Any], broker: str) -> NDArray[Any]:
        """Every key's token for a broker, as one array: uint64 with NO_TOKEN for a miss, or
        fixed-width bytes with b'' for a miss when the broker's tokens are strings."""
        column = _named("broker", self._broker_arrays, broker)
        found = self.ordinals(keys)
        out: NDArray[Any] = column[found]
        out[found < 0] = NO_TOKEN if column.dtype.kind == "u" else b""
        return out

    def feed_ordinals(self, tokens: ArrayLike, feed: str) -> NDArray[np.intp]:
        """Each token's instrument ordinal, -1 where the feed does not have the token."""
        table = _named("feed", self._feeds, feed)
        if table.kind == KIND_INT:
            values = np.asarray(tokens)
            if values.dtype.kind not in "ui":
                raise TypeError(f"feed {feed} has integer tokens; got an array of {values.dtype}")
            compiled_found = self._compiled_reverse(values, feed)
            if compiled_found is not None:
                return compiled_found
            wanted = values.astype(np.uint64, copy=False)
            hashes = phf.int_token_hash(wanted, table.seed)
        else:
            objects = np.asarray(tokens, dtype=object)
            text = [
                t if isinstance(t, bytes) else str(t).encode() for t in objects.ravel().tolist()
            ]
            hashes = np.array(
                [xxhash.xxh3_64_intdigest(t, table.seed) for t in text], dtype=np.uint64
            ).reshape(objects.shape)
            wanted = hashes
        slot = phf.query(hashes, table.pilots, table.bucket_bits, table.slot_count, table.remap)
        hit = table.tokens.take(slot) == wanted
        if table.kind == KIND_INT and values.dtype.kind == "i":
            hit &= values >= 0
        found = table.targets.take(slot).astype(np.intp)
        if self.strict and table.kind != KIND_INT:
            column = self._broker_arrays[table.broker]
            hit &= column[found] == np.array(text, dtype=column.dtype).reshape(found.shape)
        found[~hit] = -1
        return found

    def _compiled_reverse(
        self, values: NDArray[Any], feed: str, rows: NDArray[np.bytes_] | None = None
    ) -> NDArray[np.intp] | None:
        """An integer feed's batch of integer tokens in C: their ordinals, and with `rows`
        their key rows written there; None where the numpy path answers instead (no compiled
        lookups, or a negative token, which uint64 would wrap into a real one)."""
        compiled = self._compiled
        if compiled is None or (values.dtype.kind == "i" and (values < 0).any()):
            return None
        found = np.empty(values.shape, np.intp)
        compiled.feed_ordinals_into(np.ascontiguousarray(values, np.uint64), feed, found, rows)
        return found

    def keys(self, tokens: ArrayLike, feed: str) -> NDArray[np.bytes_]:
        """The key of every token of a feed, as fixed-width UTF-8 bytes (numpy ``S``), b''
        where the feed does not have the token. ``.astype(str)`` makes them str."""
        if self._compiled is not None and _named("feed", self._feeds, feed).kind == KIND_INT:
            values = np.asarray(tokens)
            if values.dtype.kind in "ui":
                rows = np.empty(values.shape, self._keys.dtype)
                if self._compiled_reverse(values, feed, rows) is not None:
                    return rows
        found = self.feed_ordinals(tokens, feed)
        out = self._keys.take(found)  # take() gathers wide rows about 2x faster than [found]
        out[found < 0] = b""
        return out

    # -- records and the mapping protocol -----------------------------------------------------

    def record(self, key: str) -> Instrument:
        """The instrument's metadata and all its broker tokens; KeyError if unknown."""
        s = self._ordinal(key)
        if s < 0:
            raise KeyError(key)
        return self.record_at(s)

    def record_at(self, ordinal: int) -> Instrument:
        if not 0 <= ordinal < self._n:
            raise IndexError(f"ordinal {ordinal} is out of range 0..{self._n - 1}")
        row = self._records[ordinal]
        string = self.string
        key = self._key_of(ordinal)
        tokens = []
        for broker, column in self._broker_columns.items():
            value = column[ordinal]
            if value == NO_TOKEN:
                continue
            # The layout keeps no per-instrument feed: the feed is the one whose reverse
            # table sends this token back to this key.
            feed = next(
                (f for f in self._broker_feeds[broker] if self.get_key(value, f.name) == key),
                None,
            )
            tokens.append(BrokerToken(broker, feed.name if feed else broker, value))
        return Instrument(
            key=key,
            exchange=string(int(row["exchange"])),
            segment=string(int(row["segment"])),
            instrument_type=string(int(row["instrument_type"])),
            name=string(int(row["name"])),
            expiry=days_to_date(_day(int(row["expiry"]), ordinal)),
            strike=float(row["strike"]),
            tick_size=float(row["tick_size"]),
            lot_size=int(row["lot_size"]),
            isin=row["isin"].decode(),
            exchange_token=int(row["exchange_token"]),
            tokens=tuple(tokens),
        )

    def __len__(self) -> int:
        return self._n

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ordinal(key) >= 0

    def __iter__(self) -> Iterator[str]:
        """Keys in ordinal order."""
        for raw in self._keys.tolist():
            yield raw.decode()

    @property
    def records(self) -> NDArray[np.void]:
        """The metadata records as a read-only numpy view, row i for ordinal i (see
        `ordinals`); string fields are indexes for `string(index)`."""
        return self._records

    def string(self, index: int) -> str:
        """Entry `index` of the string table (what the records' string fields point at)."""
        if not 0 <= index < self._string_count:
            raise IndexError(f"string {index} is out of range 0..{self._string_count - 1}")
        start, end = self._string_offsets[index : index + 2].tolist()
        return self._string_data[start:end].tobytes().decode("utf-8", "replace")

    @property
    def generation(self) -> int:
        return self.header.generation

    @property
    def compiled(self) -> bool:
        """Whether the single lookups and the integer feeds' batch reverse lookups are the
        compiled ones (resolverd/_speedups.c) rather than the pure-Python ones."""
        return self._compiled is not None

    @property
    def checksum(self) -> int:
        """The payload checksum: equal on every host that compiled the same registry."""
        return self.header.payload_checksum

    @property
    def trade_date(self) -> dt.date | None:
        return days_to_date(self.header.trade_date)

    @property
    def brokers(self) -> tuple[str, ...]:
        return tuple(self._broker_kinds)

    @property
    def feeds(self) -> tuple[str, ...]:
        return tuple(self._feeds)

    def feed_size(self, feed: str) -> int:
        """How many tokens the feed has."""
        return _named("feed", self._feeds, feed).count

    def feed_broker(self, feed: str) -> str:
        """The broker whose tokens the feed holds."""
        return _named("feed", self._feeds, feed).broker

    def feed_kind(self, feed: str) -> str:
        """ "int" or "str": the kind of token the feed holds."""
        return "int" if _named("feed", self._feeds, feed).kind == KIND_INT else "str"

    def broker_kind(self, broker: str) -> str:
        return "int" if _named("broker", self._broker_kinds, broker) == KIND_INT else "str"

    # -- following ----------------------------------------------------------------------------

    @property
    def following(self) -> bool:
        """True for a resolver opened by registry name, which follows new generations."""
        return False

    def refresh(self) -> bool:
        """Switch to the registry's current generation now if it changed; True if it did.
        Lookups do this by themselves; call it to switch while no lookups are made."""
        return False

    def on_swap(self, callback: Callable[[int, int], object]) -> None:
        """Call ``callback(old_generation, new_generation)`` after each switch (in the thread
        whose lookup noticed it). Only a resolver opened by registry name switches."""
        raise UnavailableError("only a resolver opened by registry name follows swaps")

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Drop this resolver's views of the snapshot. Never raises BufferError: the mapping
        is unmapped now if nothing else views it, or when the last outside view is dropped."""
        memory, self._memory = self._memory, None
        if memory is None:
            return

        def closed(*_: Any, **__: Any) -> Any:
            raise ValueError("the resolver is closed")

        self.token = self.get_token = self.key = self.get_key = closed
        for compiled in (self.__dict__.get("_compiled"), self.__dict__.get("_checked")):
            if compiled is not None:
                compiled.release()
        self._ordinal = self._key_of = closed
        for name in ("_pilots", "_remap", "_fingerprints", "_keys", "_records"):
            setattr(self, name, None)
        self._feeds, self._broker_arrays, self._broker_columns = {}, {}, {}
        for view in reversed(self._exports):
            view.release()
        self._exports.clear()
        buffer, self._buffer = self._buffer, None
        _unmap(memory, buffer if self._owns_buffer and isinstance(buffer, mmap.mmap) else None)

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _unmap(view: memoryview | None, mapping: mmap.mmap | None) -> None:
    """Release a view of a mapping and unmap it, unless something else still views it (a
    numpy array handed out, the compiled lookups of a generation still alive): reference
    counting then unmaps it with the last view."""
    try:
        if view is not None:
            view.release()
        if mapping is not None:
            mapping.close()
    except BufferError:
        pass


def _compiled_lookups(memory: memoryview, strict: bool, **follow: Any) -> Any:
    """The compiled lookups over a snapshot (resolverd/_speedups.c), or None where they were
    not built, or RESOLVERD_PURE_PYTHON=1 asks for the pure-Python ones, or the buffer is not
    8-byte aligned (a slice of a larger one)."""
    if _speedups is None or os.environ.get("RESOLVERD_PURE_PYTHON") == "1":
        return None
    address = np.frombuffer(memory, np.uint8, count=0).ctypes.data if len(memory) else 1
    if address % 8:
        return None
    try:
        return _speedups.Lookups(memory, strict, _unknown, **follow)
    except ValueError as exc:
        raise LayoutError(str(exc)) from None


def _cached(
    lookup: Callable[[Any, str], Any],
    get_lookup: Callable[..., Any],
    names: dict[str, Any],
    limit: int,
    kind: str,
) -> tuple[Callable[[Any, str], Any], Callable[..., Any]]:
    """Wrap a pair of lookups (`token`/`get_token` by broker, or `key`/`get_key` by feed) with
    a per-process dict of hot arguments, at most `limit` per broker or feed; misses are not
    kept. A snapshot never changes, so the cache lives and dies with the resolver (and
    therefore with the generation)."""
    caches: dict[str, dict[Any, Any]] = {name: {} for name in names}
    # Its own sentinel: `_MISSING` passed as a default means "raise" to the reverse lookups.
    none = object()

    def cached(wanted: Any, name: str) -> Any:
        try:
            hot = caches[name]
        except KeyError:
            raise _unknown(kind, name, caches) from None
        found = hot.get(wanted)
        if found is None:
            found = lookup(wanted, name)
            if len(hot) < limit:
                hot[wanted] = found
        return found

    def cached_get(wanted: Any, name: str, default: Any = None) -> Any:
        try:
            hot = caches[name]
        except KeyError:
            raise _unknown(kind, name, caches) from None
        found = hot.get(wanted)
        if found is None:
            found = get_lookup(wanted, name, none)
            if found is none:
                return default
            if len(hot) < limit:
                hot[wanted] = found
        return found

    return cached, cached_get


def _reverse_lookup(
    feed: _Feed, key_array: NDArray[np.bytes_], column: Any, strict: bool
) -> Callable[[int | str, Any], Any]:
    """One feed's single reverse lookup: token -> key, or the default (KeyError if _MISSING)."""
    tables = {
        "seed": feed.seed,
        "mixes": PILOT_MIX,
        "pilots": feed.pilots_view,
        "shift": 64 - feed.bucket_bits,
        "slots": feed.slot_count,
        "n": feed.count,
        "remap": feed.remap_view,
        "stored": feed.tokens_view,
        "targets": feed.targets_view,
        "key_array": key_array,
        "missing": _MISSING,
    }
    if feed.kind == KIND_INT:
        return _hot.bind(_hot.int_feed_key, multiplier=MIX_MULTIPLIER, mask=MASK64, **tables)
    return _hot.bind(
        _hot.str_feed_key, xxh=xxhash.xxh3_64_intdigest, column=column, strict=strict, **tables
    )
