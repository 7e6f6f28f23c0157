"""The resolverd snapshot format, layout version 2: specification, writer and validating reader.

A snapshot is one immutable file (in ``/dev/shm`` or on disk) that a reader maps read-only and
views with numpy and memoryviews, without copying or parsing it. This docstring is the whole
specification; every constant a reader needs is defined below it, once. The key words MUST and
SHOULD are used as in RFC 2119.

General
-------
All integers and floats are little-endian. Offsets are byte offsets from the start of the file.
Every section starts at a multiple of 64 bytes (a cache line); the bytes between sections, and
all reserved and padding bytes, MUST be zero. Strings are UTF-8; fixed-width string fields are
padded with NUL bytes, so a string MUST NOT contain NUL, and are at most 4096 bytes wide. Dates
are days since 1970-01-01, 0 for none, and MUST lie between 0001-01-01 and 9999-12-31.

Header (128 bytes at offset 0)
------------------------------
======  ====  =======  ==================================================================
offset  size  type     field
======  ====  =======  ==================================================================
0       8     |S8      magic: the bytes ``RSLVSNAP``
8       2     <u2      version_major: 2. A reader MUST refuse any other major version.
10      2     <u2      version_minor: 0. Minor versions only add; a reader MAY ignore them.
12      4     <u4      header_size: 128 + 64 * section_count, rounded up to a multiple of 64
16      8     <u8      generation: set by the publisher; not part of the payload
24      8     <i8      build_time_ns: Unix time of the compile, in nanoseconds
32      4     <i4      trade_date: days since 1970-01-01 (0: none)
36      4     <u4      section_count
40      8     <u8      instrument_count: n, the number of keys
48      8     <u8      file_size: the exact size of the snapshot in bytes
56      8     <u8      payload_checksum: xxh3-64 (seed 0) of bytes [header_size, file_size)
64      8     <u8      key_seed: the seed of the key hash
72      4     <u4      key_bucket_bits: b, 1 <= b <= 32
76      4     <u4      key_width: W, bytes per entry of section ``keys``, a multiple of 8
80      8     <u8      key_slot_count: S, max(n, 1) <= S < 2**32; the writer makes S odd
88      4     <u4      broker_count
92      4     <u4      feed_count
96      24    -        reserved, zero
120     8     <u8      header_checksum: xxh3-64 (seed 0) of bytes [0, header_size) with these
                       eight bytes taken as zero
======  ====  =======  ==================================================================

The payload checksum covers everything after the header, and only the header says which
generation a snapshot is and when it was built: two hosts compiling the same registry produce
byte-identical payloads and the same payload_checksum, whatever the input's row order. The
header checksum is cheap enough to verify on every open; the payload checksum is a full pass
over the file, which a reader SHOULD offer as an option.

Section table (64 bytes per entry, at offset 128)
-------------------------------------------------
======  ====  =====  ================================================================
offset  size  type   field
======  ====  =====  ================================================================
0       32    |S32   name, ASCII
32      8     |S8    dtype: a numpy dtype string (``<u8``, ``|u1``, ``|S32``), or one of
                     the record names ``record``, ``broker``, ``feed`` below
40      8     <u8    offset: a multiple of 64, at least header_size
48      8     <u8    nbytes: count * the dtype's itemsize
56      8     <u8    count: number of items
======  ====  =====  ================================================================

A reader MUST check, before it makes a single view, that every section lies within file_size,
that its dtype is the one this specification gives for its name, and that its count agrees with
the header. Sections appear in the order below; names are unique.

Sections
--------
Instrument-indexed sections have n rows; row i describes the instrument of *ordinal* i, the
value of the key hash below. ``B`` is broker_count and ``F`` feed_count.

=====================  ==========  =====  ==================================================
name                   dtype       count  content
=====================  ==========  =====  ==================================================
``key.pilots``         ``|u1``     2**b   one pilot per bucket
``key.remap``          ``<u4``     S - n  ordinals of the slots n..S-1
``key.fingerprints``   ``<u8``     n      the key hash of each instrument's key
``keys``               ``|S{W}``   n      the keys, NUL-padded
``records``            ``record``  n      fixed-width metadata, below
``strings.offsets``    ``<u4``     m + 1  start of each of the m strings in strings.data
``strings.data``       ``|u1``            the string table: distinct values, sorted
``brokers``            ``broker``  B      one record per broker, sorted by name
``feeds``              ``feed``    F      one record per feed, by broker, then name
``tokens.{j}``         ``<u8`` or  kj*n   broker j's tokens. Integers: kj = 2, and items 2i
                       ``|S{w}``          and 2i + 1 are a copy of key.fingerprints[i] and
                                          instrument i's token (NO_TOKEN if none). Strings:
                                          kj = 1, NUL-padded (empty if none)
``feed.{f}.pilots``    ``|u1``     2**bf  pilots of feed f's token hash
``feed.{f}.remap``     ``<u4``     Sf-nf  ordinals of the feed's slots nf..Sf-1
``feed.{f}.tokens``    ``<u8``     nf     integer feeds: the token; string feeds: its hash
``feed.{f}.targets``   ``<u4``     nf     the instrument ordinal the token resolves to
=====================  ==========  =====  ==================================================

The ``tokens.{j}`` sections follow ``feeds`` in broker order, then the four sections of each feed
in feed order; ``{j}`` and ``{f}`` are decimal indexes into ``brokers`` and ``feeds``.

Broker names are unique, and so are feed names. A broker's kind and token_width MUST agree with
its ``tokens.{j}`` section (``<u8``; or ``|S{w}`` with w = token_width), a feed's kind MUST be
its broker's, and feeds first_feed .. first_feed + feed_count - 1 MUST be the broker's own.

An integer token sits beside a copy of its instrument's fingerprint so that a fingerprint-mode
lookup reads one 16-byte pair, in one cache line, for both its check and its answer: at a
million instruments a uniform random lookup then waits on one cache miss instead of two
(bench/results/core-*.md times each step of the lookup, the token's read included). The copy
costs 8 bytes per instrument per integer broker. A reader MAY check either copy of the
fingerprint; a verifying reader SHOULD check that they agree.

Record ``record`` (64 bytes)
    ======  ====  ====  ===============================================================
    offset  size  type  field
    ======  ====  ====  ===============================================================
    0       8     <f8   strike (0 when not an option)
    8       8     <f8   tick_size
    16      8     <u8   exchange_token (0 when unknown)
    24      4     <i4   expiry: days since 1970-01-01 (0: none)
    28      4     <u4   lot_size
    32      4     <u4   exchange: index into the string table
    36      4     <u4   segment: index into the string table
    40      4     <u4   instrument_type: index into the string table
    44      4     <u4   name: index into the string table
    48      12    |S12  isin, NUL-padded (empty when unknown)
    60      4     -     reserved, zero
    ======  ====  ====  ===============================================================

Record ``broker`` (48 bytes)
    ======  ====  ====  ===============================================================
    offset  size  type  field
    ======  ====  ====  ===============================================================
    0       32    |S32  name
    32      1     |u1   kind: 1 integer tokens, 2 string tokens
    33      3     -     reserved, zero
    36      4     <u4   token_width: 8 for integers, w for strings
    40      4     <u4   first_feed: index of the broker's first feed
    44      4     <u4   feed_count: its feeds are first_feed .. first_feed + feed_count - 1
    ======  ====  ====  ===============================================================

Record ``feed`` (80 bytes)
    ======  ====  ====  ===============================================================
    offset  size  type  field
    ======  ====  ====  ===============================================================
    0       32    |S32  name (``kite``, ``angel:NFO``)
    32      4     <u4   broker: index into ``brokers``
    36      1     |u1   kind: its broker's, 1 integer tokens, 2 string tokens
    37      3     -     reserved, zero
    40      8     <u8   seed of the token hash
    48      8     <u8   count: nf, the tokens in the feed
    56      8     <u8   slot_count: Sf, nf <= Sf and Sf >= 1
    64      4     <u4   bucket_bits: bf, 1 <= bf <= 32
    68      12    -     reserved, zero
    ======  ====  ====  ===============================================================

The hash functions
------------------
All arithmetic is on unsigned 64-bit integers, modulo 2**64. ``xxh3_64(data, seed)`` is XXH3's
64-bit hash (xxHash 0.8). ``>>`` is a logical shift.

Key hash of a key string k (UTF-8 bytes)::

    h = xxh3_64(k, key_seed)
    i = slot_to_ordinal(h, key.pilots, b, S, n, key.remap)
    hit when key.fingerprints[i] == h (fingerprint mode); strict mode also compares keys[i]
    broker j's token of a hit: tokens.{j}[2i + 1] (integers), tokens.{j}[i] (strings)

Token hash: an integer token t (0 <= t < 2**64 - 1) hashes as ``mix(t ^ seed)``; a string token
hashes as ``xxh3_64(utf8 bytes, seed)``::

    mix(x) = y ^ (y >> 32)   where y = x * 0x9E3779B97F4A7C15

    i = slot_to_ordinal(h, feed.{f}.pilots, bf, Sf, nf, feed.{f}.remap)
    integer feeds hit when feed.{f}.tokens[i] == t (exact); string feeds when the hash matches
    (strict mode: and tokens.{broker}[feed.{f}.targets[i]] is the token)
    the key is keys[feed.{f}.targets[i]]

The perfect hash (PtrHash-style: buckets, 8-bit pilots, load factor near 0.9, minimal through a
remap table)::

    slot_to_ordinal(h, pilots, b, S, n, remap):
        p = pilots[h >> (64 - b)]
        s = (h ^ PILOT_MIX[p]) % S
        return s if s < n else remap[s - n]

    PILOT_MIX[p] = mix(p * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB)     for p in 0..255

Slot counts are odd: with a power of two, ``(h ^ PILOT_MIX[p]) % S`` would depend only on the
low bits of h, and two keys of one bucket that share them would collide under every pilot.

Every key (or token) of the set lands in a distinct ordinal in [0, n). Any other input lands
somewhere in [0, n) too, which is why a lookup MUST check the fingerprint or token it finds.
In fingerprint mode an unknown key is taken for a known one only if its 64-bit hash equals that
key's: the compiler refuses a key set with two equal fingerprints, so this happens about once in
1.8e19 lookups of unknown keys; strict mode rules it out.

Control segment (named registries)
----------------------------------
A named registry ``NAME`` is published in a directory (``/dev/shm`` by default) as one file per
generation, ``resolverd.NAME.<generation>.snap``, and one control file ``resolverd.NAME.ctl`` of
128 bytes that says which generation is current:

======  ====  =====  ======================================================================
offset  size  type   field
======  ====  =====  ======================================================================
0       8     |S8    magic: the bytes ``RSLVCTRL``
8       2     <u2    version: 1
10      6     -      reserved, zero
16      8     <u8    sequence: even when stable, odd while the publisher writes
24      8     <u8    generation: the current generation (0: none published yet)
32      8     <u8    payload_checksum of the current generation
40      8     <i8    updated_ns: Unix time of the last swap, in nanoseconds
48      8     <u8    publisher_pid
56      8     -      reserved, zero
64      64    |S64   snapshot: file name of the current generation, in the same directory
======  ====  =====  ======================================================================

The control file is the only file the publisher writes in place; a snapshot file, once renamed
to its published name, is never written, truncated or resized again. A generation file is
complete and its checksums verified before it is renamed to its published name. The publisher
writes the control file with a seqlock: it sets ``sequence`` odd, writes the fields
(``generation`` last), then sets it to the next even value. A reader reads ``sequence``
(retrying while odd), the fields, and ``sequence`` again, and retries unless both reads agree.

A following reader notices a swap cheaply by comparing ``sequence`` with the value it last read
stable: a single 8-byte read on its lookup path. Comparing ``sequence`` rather than
``generation`` also catches a control file repaired by a restarted publisher (whose
predecessor died with ``sequence`` odd). A reader that finds ``sequence`` odd for longer than a
few retries SHOULD keep its current generation and look again once ``sequence`` changes.

``sequence`` stays at most ``CONTROL_SEQUENCE_LIMIT`` (256), so that a Python reader's read of it
is one of CPython's cached small ints and allocates nothing. A swap that would take it past the
limit is written to a new control file instead (``sequence`` 0, the new generation), which the
publisher renames over the control file's name; only then is the old file retired: its
``generation`` is set to 0 under the seqlock. A purge retires the control file the same way
before it unlinks it. A following reader that reads ``generation`` 0 in the control file it
follows opens the control file by name again, follows it if it names a generation, and else
keeps its current generation.

Version history
---------------
2.0  Integer ``tokens.{j}`` sections hold (fingerprint, token) pairs, 2n items, instead of n
     tokens. Nothing else changed; the control segment is the same.
1.0  First version. The control segment's bytes and ``version`` (1) are unchanged since; its
     protocol gained the renewal past ``CONTROL_SEQUENCE_LIMIT`` (readers turn to the name on
     ``generation`` 0) before any release, so every reader of this version follows it.
"""

from __future__ import annotations

import datetime as dt
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import xxhash

from .errors import LayoutError

MAGIC: Final = b"RSLVSNAP"
VERSION_MAJOR: Final = 2
VERSION_MINOR: Final = 0
ALIGN: Final = 64
HEADER_FIXED_SIZE: Final = 128
SECTION_ENTRY_SIZE: Final = 64
MAX_SECTIONS: Final = 1 << 16
MAX_BUCKET_BITS: Final = 32
MAX_STRING_WIDTH: Final = 4096
FIRST_DAY: Final = (dt.date.min - dt.date(1970, 1, 1)).days
LAST_DAY: Final = (dt.date.max - dt.date(1970, 1, 1)).days

NO_TOKEN: Final = 2**64 - 1
"""The integer token that marks "this broker does not list this instrument"."""

KIND_INT: Final = 1
KIND_STR: Final = 2

MASK64: Final = 2**64 - 1
MIX_MULTIPLIER: Final = 0x9E3779B97F4A7C15
PILOT_MULTIPLIER: Final = 0xBF58476D1CE4E5B9
PILOT_INCREMENT: Final = 0x94D049BB133111EB


def mix(x: int) -> int:
    """The integer mixer of the token hash: a bijection of 64-bit integers."""
    y = (x * MIX_MULTIPLIER) & MASK64
    return y ^ (y >> 32)


PILOT_MIX: Final = tuple(mix((p * PILOT_MULTIPLIER + PILOT_INCREMENT) & MASK64) for p in range(256))

HEADER_DTYPE: Final = np.dtype(
    {
        "names": [
            "magic",
            "version_major",
            "version_minor",
            "header_size",
            "generation",
            "build_time_ns",
            "trade_date",
            "section_count",
            "instrument_count",
            "file_size",
            "payload_checksum",
            "key_seed",
            "key_bucket_bits",
            "key_width",
            "key_slot_count",
            "broker_count",
            "feed_count",
            "header_checksum",
        ],
        "formats": [
            "S8",
            "<u2",
            "<u2",
            "<u4",
            "<u8",
            "<i8",
            "<i4",
            "<u4",
            "<u8",
            "<u8",
            "<u8",
            "<u8",
            "<u4",
            "<u4",
            "<u8",
            "<u4",
            "<u4",
            "<u8",
        ],
        "offsets": [0, 8, 10, 12, 16, 24, 32, 36, 40, 48, 56, 64, 72, 76, 80, 88, 92, 120],
        "itemsize": HEADER_FIXED_SIZE,
    }
)


def field_offset(dtype: np.dtype[np.void], field: str) -> int:
    """The byte offset of a field of one of the record dtypes above."""
    assert dtype.fields is not None
    return int(dtype.fields[field][1])


HEADER_CHECKSUM_OFFSET: Final = field_offset(HEADER_DTYPE, "header_checksum")

SECTION_DTYPE: Final = np.dtype(
    {
        "names": ["name", "dtype", "offset", "nbytes", "count"],
        "formats": ["S32", "S8", "<u8", "<u8", "<u8"],
        "offsets": [0, 32, 40, 48, 56],
        "itemsize": SECTION_ENTRY_SIZE,
    }
)

RECORD_DTYPE: Final = np.dtype(
    {
        "names": [
            "strike",
            "tick_size",
            "exchange_token",
            "expiry",
            "lot_size",
            "exchange",
            "segment",
            "instrument_type",
            "name",
            "isin",
        ],
        "formats": ["<f8", "<f8", "<u8", "<i4", "<u4", "<u4", "<u4", "<u4", "<u4", "S12"],
        "offsets": [0, 8, 16, 24, 28, 32, 36, 40, 44, 48],
        "itemsize": 64,
    }
)

BROKER_DTYPE: Final = np.dtype(
    {
        "names": ["name", "kind", "token_width", "first_feed", "feed_count"],
        "formats": ["S32", "u1", "<u4", "<u4", "<u4"],
        "offsets": [0, 32, 36, 40, 44],
        "itemsize": 48,
    }
)

FEED_DTYPE: Final = np.dtype(
    {
        "names": ["name", "broker", "kind", "seed", "count", "slot_count", "bucket_bits"],
        "formats": ["S32", "<u4", "u1", "<u8", "<u8", "<u8", "<u4"],
        "offsets": [0, 32, 36, 40, 48, 56, 64],
        "itemsize": 80,
    }
)

RECORD_DTYPES: Final[Mapping[str, np.dtype[np.void]]] = {
    "record": RECORD_DTYPE,
    "broker": BROKER_DTYPE,
    "feed": FEED_DTYPE,
}

CONTROL_MAGIC: Final = b"RSLVCTRL"
CONTROL_VERSION: Final = 1
CONTROL_SIZE: Final = 128
CONTROL_DTYPE: Final = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "sequence",
            "generation",
            "payload_checksum",
            "updated_ns",
            "publisher_pid",
            "snapshot",
        ],
        "formats": ["S8", "<u2", "<u8", "<u8", "<u8", "<i8", "<u8", "S64"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 64],
        "itemsize": CONTROL_SIZE,
    }
)
CONTROL_SEQUENCE_OFFSET: Final = field_offset(CONTROL_DTYPE, "sequence")
CONTROL_SEQUENCE_LIMIT: Final = 256
"""The largest ``sequence`` a publisher writes: CPython caches the ints up to 256."""
CONTROL_GENERATION_OFFSET: Final = field_offset(CONTROL_DTYPE, "generation")


def control_file_name(name: str) -> str:
    return f"resolverd.{name}.ctl"


def snapshot_file_name(name: str, generation: int) -> str:
    return f"resolverd.{name}.{generation}.snap"


def align(offset: int) -> int:
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def header_size_for(section_count: int) -> int:
    return align(HEADER_FIXED_SIZE + SECTION_ENTRY_SIZE * section_count)


def section_dtype(dtype_name: str) -> np.dtype[np.generic]:
    """The numpy dtype of a section-table dtype string; LayoutError for anything else."""
    if dtype_name in RECORD_DTYPES:
        return RECORD_DTYPES[dtype_name]
    if dtype_name in ("<u8", "<u4", "|u1"):
        return np.dtype(dtype_name)
    if dtype_name.startswith("|S") and dtype_name[2:].isdigit():
        width = int(dtype_name[2:])
        if 0 < width <= MAX_STRING_WIDTH and width % 8 == 0:
            return np.dtype(dtype_name)
    raise LayoutError(f"section dtype {dtype_name!r} is not one this layout uses")


@dataclass(frozen=True)
class Section:
    name: str
    dtype: str
    data: np.ndarray[Any, Any]  # any of the section dtypes


def write_snapshot(
    sections: list[Section],
    *,
    generation: int,
    build_time_ns: int,
    trade_date: int,
    instrument_count: int,
    key_seed: int,
    key_bucket_bits: int,
    key_width: int,
    key_slot_count: int,
    broker_count: int,
    feed_count: int,
) -> bytearray:
    """Lay the sections out after a header and return the complete snapshot bytes."""
    header_size = header_size_for(len(sections))
    table = np.zeros(len(sections), dtype=SECTION_DTYPE)
    offset = header_size
    arrays = [np.ascontiguousarray(section.data) for section in sections]
    for i, (section, data) in enumerate(zip(sections, arrays, strict=True)):
        expected = section_dtype(section.dtype)
        if data.dtype != expected:
            raise ValueError(f"section {section.name}: dtype {data.dtype} is not {expected}")
        table[i] = (
            section.name.encode("ascii"),
            section.dtype.encode(),
            offset,
            data.nbytes,
            len(data),
        )
        offset = align(offset + data.nbytes)
    file_size = offset

    out = bytearray(file_size)
    for data, entry in zip(arrays, table, strict=True):
        start = int(entry["offset"])
        out[start : start + data.nbytes] = data.data.cast("B")
    table_bytes = table.tobytes()
    out[HEADER_FIXED_SIZE : HEADER_FIXED_SIZE + len(table_bytes)] = table_bytes

    header = np.zeros((), dtype=HEADER_DTYPE)
    header["magic"] = MAGIC
    header["version_major"] = VERSION_MAJOR
    header["version_minor"] = VERSION_MINOR
    header["header_size"] = header_size
    header["generation"] = generation
    header["build_time_ns"] = build_time_ns
    header["trade_date"] = trade_date
    header["section_count"] = len(sections)
    header["instrument_count"] = instrument_count
    header["file_size"] = file_size
    header["payload_checksum"] = xxhash.xxh3_64_intdigest(memoryview(out)[header_size:])
    header["key_seed"] = key_seed
    header["key_bucket_bits"] = key_bucket_bits
    header["key_width"] = key_width
    header["key_slot_count"] = key_slot_count
    header["broker_count"] = broker_count
    header["feed_count"] = feed_count
    out[:HEADER_FIXED_SIZE] = header.tobytes()
    set_generation(out, generation)
    return out


def header_checksum(buf: bytes | bytearray | memoryview, header_size: int) -> int:
    view = memoryview(buf)
    digest = xxhash.xxh3_64()
    digest.update(view[:HEADER_CHECKSUM_OFFSET])
    digest.update(b"\0" * 8)
    digest.update(view[HEADER_CHECKSUM_OFFSET + 8 : header_size])
    return digest.intdigest()


def set_generation(buf: bytearray, generation: int) -> None:
    """Stamp a (not yet published) snapshot with its generation and reseal its header."""
    struct.pack_into("<Q", buf, field_offset(HEADER_DTYPE, "generation"), generation)
    header_size = struct.unpack_from("<I", buf, field_offset(HEADER_DTYPE, "header_size"))[0]
    struct.pack_into("<Q", buf, HEADER_CHECKSUM_OFFSET, header_checksum(buf, header_size))


@dataclass(frozen=True)
class SectionEntry:
    name: str
    dtype: np.dtype[np.generic]
    offset: int
    nbytes: int
    count: int


@dataclass(frozen=True)
class Header:
    version_major: int
    version_minor: int
    header_size: int
    generation: int
    build_time_ns: int
    trade_date: int
    instrument_count: int
    file_size: int
    payload_checksum: int
    key_seed: int
    key_bucket_bits: int
    key_width: int
    key_slot_count: int
    broker_count: int
    feed_count: int
    sections: Mapping[str, SectionEntry]


def read_header(buf: bytes | bytearray | memoryview | object) -> Header:
    """Validate a snapshot's header and section table against the buffer's size.

    Checks everything that costs O(sections), not O(n): after it returns, every section lies
    inside the buffer with the dtype and count the specification gives, so views built from it
    cannot reach outside the mapping. Raises LayoutError naming the bad field.
    """
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]
    size = len(view)
    if size < HEADER_FIXED_SIZE:
        raise LayoutError(
            f"truncated: {size} bytes is smaller than the {HEADER_FIXED_SIZE}-byte header"
        )
    if bytes(view[:8]) != MAGIC:
        raise LayoutError(f"bad magic {bytes(view[:8])!r}: not a resolverd snapshot")
    raw = np.frombuffer(view, dtype=HEADER_DTYPE, count=1)[0]
    major, minor = int(raw["version_major"]), int(raw["version_minor"])
    if major != VERSION_MAJOR:
        raise LayoutError(
            f"layout version {major}.{minor} is not supported (this reader: {VERSION_MAJOR}.x)"
        )
    return _read_header_v1(view, raw)


def _read_header_v1(view: memoryview, raw: np.void) -> Header:
    size = len(view)
    section_count = int(raw["section_count"])
    header_size = int(raw["header_size"])
    if not 0 < section_count <= MAX_SECTIONS:
        raise LayoutError(f"header field section_count: {section_count} is out of range")
    if header_size != header_size_for(section_count):
        raise LayoutError(
            f"header field header_size: {header_size} does not fit {section_count} sections"
        )
    file_size = int(raw["file_size"])
    if file_size != size:
        raise LayoutError(
            f"truncated or padded: header field file_size says {file_size} bytes, "
            f"the mapping has {size}"
        )
    if header_size > size:
        raise LayoutError(f"truncated: the section table ends at {header_size}, past {size}")
    stored = int(raw["header_checksum"])
    if stored != header_checksum(view, header_size):
        raise LayoutError("header checksum mismatch: the header or section table is damaged")

    n = int(raw["instrument_count"])
    bucket_bits = int(raw["key_bucket_bits"])
    width = int(raw["key_width"])
    slots = int(raw["key_slot_count"])
    if not 1 <= bucket_bits <= MAX_BUCKET_BITS:
        raise LayoutError(f"header field key_bucket_bits: {bucket_bits} is out of range")
    # S >= 1 even for n == 0: every lookup takes its hash modulo S.
    if not max(n, 1) <= slots < 2**32:
        raise LayoutError(f"header field key_slot_count: {slots} is out of range for n={n}")
    if width == 0 or width % 8 or width > MAX_STRING_WIDTH:
        raise LayoutError(
            f"header field key_width: {width} is not a multiple of 8 in 8..{MAX_STRING_WIDTH}"
        )
    trade_date = int(raw["trade_date"])
    if not FIRST_DAY <= trade_date <= LAST_DAY:
        raise LayoutError(f"header field trade_date: {trade_date} days is not a date")

    table = np.frombuffer(view, dtype=SECTION_DTYPE, count=section_count, offset=HEADER_FIXED_SIZE)
    sections: dict[str, SectionEntry] = {}
    # One tolist() converts the whole table; reading numpy fields entry by entry cost more
    # than the rest of opening a snapshot.
    for i, (raw_name, raw_dtype, offset, nbytes, count) in enumerate(table.tolist()):
        try:
            name = raw_name.decode("ascii")
            dtype_name = raw_dtype.decode("ascii")
        except UnicodeDecodeError:
            raise LayoutError(f"section table entry {i}: name or dtype is not ASCII") from None
        try:
            dtype = section_dtype(dtype_name)
        except LayoutError as exc:
            raise LayoutError(f"section {name!r}: {exc}") from None
        if name in sections:
            raise LayoutError(f"section {name!r} appears twice")
        if offset % ALIGN or offset < header_size:
            raise LayoutError(
                f"section {name!r}: offset {offset} is misaligned or inside the header"
            )
        if nbytes != count * dtype.itemsize:
            raise LayoutError(
                f"section {name!r}: nbytes {nbytes} is not count {count} * {dtype.itemsize}"
            )
        if offset + nbytes > size:
            raise LayoutError(
                f"section {name!r}: bytes [{offset}, {offset + nbytes}) run past "
                f"the end of the snapshot ({size} bytes)"
            )
        sections[name] = SectionEntry(name, dtype, offset, nbytes, count)

    header = Header(
        version_major=int(raw["version_major"]),
        version_minor=int(raw["version_minor"]),
        header_size=header_size,
        generation=int(raw["generation"]),
        build_time_ns=int(raw["build_time_ns"]),
        trade_date=trade_date,
        instrument_count=n,
        file_size=file_size,
        payload_checksum=int(raw["payload_checksum"]),
        key_seed=int(raw["key_seed"]),
        key_bucket_bits=bucket_bits,
        key_width=width,
        key_slot_count=slots,
        broker_count=int(raw["broker_count"]),
        feed_count=int(raw["feed_count"]),
        sections=sections,
    )
    _check_sections_v1(header)
    return header


def _expect(header: Header, name: str, dtype: np.dtype[np.generic] | str, count: int) -> None:
    entry = header.sections.get(name)
    if entry is None:
        raise LayoutError(f"section {name!r} is missing")
    if entry.dtype != np.dtype(dtype):
        raise LayoutError(f"section {name!r}: dtype {entry.dtype.str} is not {np.dtype(dtype).str}")
    if entry.count != count:
        raise LayoutError(f"section {name!r}: {entry.count} items, expected {count}")


def _check_sections_v1(header: Header) -> None:
    n, slots = header.instrument_count, header.key_slot_count
    _expect(header, "key.pilots", "|u1", 1 << header.key_bucket_bits)
    _expect(header, "key.remap", "<u4", slots - n)
    _expect(header, "key.fingerprints", "<u8", n)
    _expect(header, "keys", f"|S{header.key_width}", n)
    _expect(header, "records", RECORD_DTYPE, n)
    strings = header.sections.get("strings.offsets")
    if strings is None or strings.count < 1:
        raise LayoutError("section 'strings.offsets' is missing or empty")
    _expect(header, "strings.offsets", "<u4", strings.count)
    data = header.sections.get("strings.data")
    if data is None or data.dtype != np.dtype("|u1"):
        raise LayoutError("section 'strings.data' is missing or has a bad dtype")
    _expect(header, "brokers", BROKER_DTYPE, header.broker_count)
    _expect(header, "feeds", FEED_DTYPE, header.feed_count)
    for j in range(header.broker_count):
        entry = header.sections.get(f"tokens.{j}")
        if entry is None or not (entry.dtype == np.dtype("<u8") or entry.dtype.kind == "S"):
            raise LayoutError(f"section 'tokens.{j}' is missing or has a bad dtype")
        _expect(header, f"tokens.{j}", entry.dtype, 2 * n if entry.dtype.kind == "u" else n)
    expected = {
        "key.pilots",
        "key.remap",
        "key.fingerprints",
        "keys",
        "records",
        "strings.offsets",
        "strings.data",
        "brokers",
        "feeds",
    }
    expected.update(f"tokens.{j}" for j in range(header.broker_count))
    for f in range(header.feed_count):
        for part in ("pilots", "remap", "tokens", "targets"):
            if f"feed.{f}.{part}" not in header.sections:
                raise LayoutError(f"section 'feed.{f}.{part}' is missing")
            expected.add(f"feed.{f}.{part}")
    extra = set(header.sections) - expected
    if extra:
        raise LayoutError(f"unknown sections {sorted(extra)}")


def check_feed(header: Header, index: int, record: np.void) -> None:
    """Validate one feed record against its sections (called once per feed on open)."""
    count, slots, bits = int(record["count"]), int(record["slot_count"]), int(record["bucket_bits"])
    name = f"feed {index}"
    if not 1 <= bits <= MAX_BUCKET_BITS:
        raise LayoutError(f"{name}: field bucket_bits {bits} is out of range")
    if not max(count, 1) <= slots < 2**32:
        raise LayoutError(f"{name}: field slot_count {slots} is out of range for count {count}")
    if int(record["broker"]) >= header.broker_count:
        raise LayoutError(f"{name}: field broker {int(record['broker'])} is out of range")
    if int(record["kind"]) not in (KIND_INT, KIND_STR):
        raise LayoutError(f"{name}: field kind {int(record['kind'])} is unknown")
    _expect(header, f"feed.{index}.pilots", "|u1", 1 << bits)
    _expect(header, f"feed.{index}.remap", "<u4", slots - count)
    _expect(header, f"feed.{index}.tokens", "<u8", count)
    _expect(header, f"feed.{index}.targets", "<u4", count)


def check_broker(header: Header, index: int, record: np.void) -> None:
    """Validate one broker record against its token section (called once per broker on open):
    a string column's width bounds every read of it, so the record and the section agree."""
    kind, width = int(record["kind"]), int(record["token_width"])
    tokens = header.sections[f"tokens.{index}"].dtype
    if kind == KIND_INT:
        fits = tokens == np.dtype("<u8")
    elif kind == KIND_STR:
        fits = tokens.kind == "S" and tokens.itemsize == width
    else:
        raise LayoutError(f"broker {index}: field kind {kind} is unknown")
    if not fits:
        raise LayoutError(
            f"broker {index}: fields kind {kind} and token_width {width} do not fit "
            f"section 'tokens.{index}' of dtype {tokens.str}"
        )


def verify_payload(buf: bytes | bytearray | memoryview | object, header: Header) -> None:
    """The full checksum pass over the payload; LayoutError on a mismatch."""
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]
    actual = xxhash.xxh3_64_intdigest(view[header.header_size : header.file_size])
    if actual != header.payload_checksum:
        raise LayoutError(
            f"payload checksum mismatch: header says {header.payload_checksum:#018x}, "
            f"payload hashes to {actual:#018x}"
        )


@dataclass(frozen=True)
class ControlState:
    sequence: int
    generation: int
    payload_checksum: int
    updated_ns: int
    publisher_pid: int
    snapshot: str


def encode_control(state: ControlState) -> bytes:
    record = np.zeros((), dtype=CONTROL_DTYPE)
    record["magic"] = CONTROL_MAGIC
    record["version"] = CONTROL_VERSION
    record["sequence"] = state.sequence
    record["generation"] = state.generation
    record["payload_checksum"] = state.payload_checksum
    record["updated_ns"] = state.updated_ns
    record["publisher_pid"] = state.publisher_pid
    record["snapshot"] = state.snapshot.encode("ascii")
    return record.tobytes()


CONTROL_READ_SPINS: Final = 8
"""Odd ``sequence`` reads before a reader starts sleeping between its retries."""
CONTROL_READ_BACKOFF_S: Final = 50e-6
"""A writer preempted in the middle of its write needs a CPU, and a reader spinning on one of
two cores may be what it waits for."""


def read_control(
    buf: bytes | bytearray | memoryview | object, *, retries: int = 200
) -> ControlState:
    """Read the control segment with the seqlock protocol; LayoutError if it is not one.

    `retries` reads of ``sequence``, the first `CONTROL_READ_SPINS` back to back, then
    `CONTROL_READ_BACKOFF_S` apart while it is odd. A `bytes` copy cannot change: one read."""
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]
    if len(view) < CONTROL_SIZE:
        raise LayoutError(f"control segment truncated: {len(view)} bytes, expected {CONTROL_SIZE}")
    if bytes(view[:8]) != CONTROL_MAGIC:
        raise LayoutError(f"bad control magic {bytes(view[:8])!r}")
    for attempt in range(1 if isinstance(buf, bytes) else retries):
        before = struct.unpack_from("<Q", view, CONTROL_SEQUENCE_OFFSET)[0]
        if before & 1:
            if attempt >= CONTROL_READ_SPINS:
                time.sleep(CONTROL_READ_BACKOFF_S)
            continue
        raw = np.frombuffer(bytes(view[:CONTROL_SIZE]), dtype=CONTROL_DTYPE)[0]
        after = struct.unpack_from("<Q", view, CONTROL_SEQUENCE_OFFSET)[0]
        if before == after:
            if int(raw["version"]) != CONTROL_VERSION:
                raise LayoutError(f"control segment version {int(raw['version'])} is not supported")
            try:
                snapshot = raw["snapshot"].decode("ascii")
            except UnicodeDecodeError:
                raise LayoutError("control segment field snapshot is not ASCII") from None
            return ControlState(
                int(raw["sequence"]),
                int(raw["generation"]),
                int(raw["payload_checksum"]),
                int(raw["updated_ns"]),
                int(raw["publisher_pid"]),
                snapshot,
            )
    raise LayoutError("control segment never became stable (publisher died mid-swap?)")
