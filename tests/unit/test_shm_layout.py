"""The snapshot format: the spec docstring against the code, the writer, and a reader that refuses
every damaged, truncated or lying snapshot with a LayoutError that says what is wrong."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import xxhash
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resolverd import BrokerToken, Instrument, LayoutError, Registry, Resolver, compile_snapshot
from resolverd import shm_layout as layout
from resolverd.shm_layout import (
    BROKER_DTYPE,
    CONTROL_DTYPE,
    CONTROL_SIZE,
    FEED_DTYPE,
    HEADER_DTYPE,
    HEADER_FIXED_SIZE,
    KIND_INT,
    KIND_STR,
    NO_TOKEN,
    RECORD_DTYPE,
    SECTION_DTYPE,
    ControlState,
    Header,
    encode_control,
    header_checksum,
    read_control,
    read_header,
    set_generation,
)

FUZZ = settings(max_examples=200, deadline=None)
GENERATION = 41
BUILD_TIME_NS = 1_712_100_000_123_456_789
TRADE_DATE = dt.date(2024, 4, 3)

INSTRUMENTS = [
    Instrument(
        "NSE:INFY",
        "NSE",
        "EQ",
        "EQ",
        "INFOSYS",
        isin="INE009A01021",
        tick_size=0.05,
        tokens=(
            BrokerToken("angel", "angel:NSE", 1594),
            BrokerToken("upstox", "upstox", "NSE_EQ|INE009A01021"),
        ),
    ),
    Instrument(
        "NSE:TCS",
        "NSE",
        "EQ",
        "EQ",
        "TCS",
        isin="INE467B01029",
        tokens=(
            BrokerToken("angel", "angel:NSE", 11536),
            BrokerToken("upstox", "upstox", "NSE_EQ|INE467B01029"),
        ),
    ),
    Instrument(
        "NFO:NIFTY24APR22000CE",
        "NFO",
        "NFO-OPT",
        "CE",
        "NIFTY",
        expiry=dt.date(2024, 4, 25),
        strike=22000.0,
        lot_size=50,
        tokens=(
            BrokerToken("angel", "angel:NFO", 43210),
            BrokerToken("upstox", "upstox", "NSE_FO|43210"),
        ),
    ),
    Instrument(
        "NFO:NIFTY24APR22000PE",
        "NFO",
        "NFO-OPT",
        "PE",
        "NIFTY",
        expiry=dt.date(2024, 4, 25),
        strike=22000.0,
        lot_size=50,
        tokens=(BrokerToken("angel", "angel:NFO", 43211),),
    ),
    Instrument("BSE:SENSEX", "BSE", "INDICES", "INDEX", "SENSEX"),
]
FEEDS = {"angel:NFO": 2, "angel:NSE": 2, "upstox": 3}  # by broker, then name


@functools.cache
def snapshot() -> bytes:
    registry = Registry.from_instruments(INSTRUMENTS, trade_date=TRADE_DATE)
    return bytes(compile_snapshot(registry, generation=GENERATION, build_time_ns=BUILD_TIME_NS))


@functools.cache
def header() -> Header:
    return read_header(snapshot())


def section_index(name: str) -> int:
    return list(header().sections).index(name)


def raw_table(buf: bytes | bytearray) -> np.ndarray[Any, Any]:
    count = int(np.frombuffer(buf, HEADER_DTYPE, 1)["section_count"][0])
    return np.frombuffer(buf, SECTION_DTYPE, count, offset=HEADER_FIXED_SIZE)


def section_array(buf: bytearray, name: str) -> np.ndarray[Any, Any]:
    """A writable view of one section of `buf`."""
    entry = header().sections[name]
    return np.frombuffer(buf, entry.dtype, entry.count, offset=entry.offset)


def reseal_header(buf: bytearray) -> None:
    """Recompute the header checksum, so that only the reader's other checks can object."""
    fields = np.frombuffer(buf, HEADER_DTYPE, 1)
    fields["header_checksum"] = header_checksum(buf, int(fields["header_size"][0]))


def reseal_payload(buf: bytearray) -> None:
    """Recompute both checksums, so that only the reader's index checks can object."""
    fields = np.frombuffer(buf, HEADER_DTYPE, 1)
    size = int(fields["header_size"][0])
    fields["payload_checksum"] = xxhash.xxh3_64_intdigest(bytes(buf[size:]))
    reseal_header(buf)


def with_header(**values: Any) -> bytearray:
    buf = bytearray(snapshot())
    fields = np.frombuffer(buf, HEADER_DTYPE, 1)
    for name, value in values.items():
        fields[name] = value
    reseal_header(buf)
    return buf


def with_entry(section: str, **values: Any) -> bytearray:
    buf = bytearray(snapshot())
    entry = np.frombuffer(
        buf, SECTION_DTYPE, 1, offset=HEADER_FIXED_SIZE + 64 * section_index(section)
    )
    for name, value in values.items():
        entry[name] = value
    reseal_header(buf)
    return buf


def assert_refused(buf: bytes | bytearray, match: str | None = None) -> None:
    """Both the header reader and the client refuse it, for the reason `match` names."""
    with pytest.raises(LayoutError, match=match):
        read_header(bytes(buf))
    with pytest.raises(LayoutError, match=match):
        Resolver(bytes(buf))


def assert_resolver_refuses(
    buf: bytes | bytearray, match: str | None = None, **options: bool
) -> None:
    with pytest.raises(LayoutError, match=match):
        Resolver(bytes(buf), **options)


# -- the docstring is the specification ------------------------------------------------------

BORDER = re.compile(r"\s*=+( +=+)+\s*")


@dataclass(frozen=True)
class Table:
    line: int  # index in the docstring's lines of the table's top border
    head: list[str]
    rows: list[list[str]]


def simple_tables(text: str) -> list[Table]:
    """Every reST simple table in `text`. Cells are cut at the starts of the border's columns;
    a line whose first cell is blank continues the row above it."""
    lines = text.splitlines()
    tables = []
    i = 0
    while i < len(lines):
        if not BORDER.fullmatch(lines[i]):
            i += 1
            continue
        border = lines[i]
        starts = [m.start() for m in re.finditer("=+", border)]
        ends = [j for j in range(i + 1, len(lines)) if lines[j] == border][:2]
        assert len(ends) == 2, f"table at docstring line {i} has no closing border"

        def cells(line: str, starts: list[int] = starts) -> list[str]:
            bounds = [*starts[1:], None]
            return [line[a:b].strip() for a, b in zip(starts, bounds, strict=True)]

        head = cells(lines[i + 1])
        rows: list[list[str]] = []
        for line in lines[ends[0] + 1 : ends[1]]:
            row = cells(line)
            if row[0] or not rows:
                rows.append(row)
            else:
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row, strict=True)]
        tables.append(Table(i, head, rows))
        i = ends[1] + 1
    return tables


DOC = layout.__doc__ or ""
DOC_LINES = DOC.splitlines()
TABLES = simple_tables(DOC)
FIELD_TABLE_HEAD = ["offset", "size", "type", "field"]
FIELD_TABLES = {
    "Header (": HEADER_DTYPE,
    "Section table (": SECTION_DTYPE,
    "Record ``record``": RECORD_DTYPE,
    "Record ``broker``": BROKER_DTYPE,
    "Record ``feed``": FEED_DTYPE,
    "Control segment (": CONTROL_DTYPE,
}


def table_after(title: str) -> tuple[str, Table]:
    """The title line that starts with `title`, and the first table below it."""
    line = next(i for i, text in enumerate(DOC_LINES) if text.strip().startswith(title))
    return DOC_LINES[line].strip(), next(t for t in TABLES if t.line > line)


def test_every_field_table_of_the_docstring_is_compared_with_a_dtype() -> None:
    documented = [t.line for t in TABLES if t.head == FIELD_TABLE_HEAD]
    compared = sorted(table_after(title)[1].line for title in FIELD_TABLES)
    assert documented == compared


@pytest.mark.parametrize("title", list(FIELD_TABLES))
def test_field_table_in_the_docstring_is_the_numpy_dtype(title: str) -> None:
    dtype = FIELD_TABLES[title]
    heading, table = table_after(title)
    assert table.head == FIELD_TABLE_HEAD
    documented = []
    end = 0
    for offset_text, size_text, type_text, field in table.rows:
        offset, size = int(offset_text), int(size_text)
        assert offset == end, f"{heading}: row at {offset} leaves a gap or overlaps at {end}"
        end = offset + size
        if type_text == "-":
            assert field.startswith("reserved"), f"{heading}: padding at {offset} is not reserved"
            continue
        assert np.dtype(type_text).itemsize == size, f"{heading}: {field!r} size vs type"
        name = re.match(r"[a-z_]+", field)
        assert name, f"{heading}: no field name in {field!r}"
        documented.append((name.group(), offset, size, np.dtype(type_text).str))

    actual = [
        (name, dtype.fields[name][1], dtype.fields[name][0].itemsize, dtype.fields[name][0].str)
        for name in dtype.names
    ]
    assert documented == actual
    assert dtype.itemsize == end
    stated = re.search(r"\((\d+) bytes", heading)
    if stated:
        assert int(stated.group(1)) == dtype.itemsize, heading


def test_the_section_table_starts_where_the_docstring_says() -> None:
    heading, _ = table_after("Section table (")
    assert f"at offset {HEADER_FIXED_SIZE})" in heading
    assert f"{SECTION_DTYPE.itemsize} bytes per entry" in heading
    assert f"Header ({HEADER_FIXED_SIZE} bytes at offset 0)" in DOC


def documented_sections(h: Header, buf: bytes) -> list[tuple[str, list[str], str]]:
    """The docstring's sections table expanded for one snapshot: (name, dtypes, count)."""
    _, table = table_after("Sections")
    assert table.head == ["name", "dtype", "count", "content"]
    brokers = np.frombuffer(buf, BROKER_DTYPE, h.broker_count, h.sections["brokers"].offset)
    plain, per_feed = [], []
    for name_cell, dtype_cell, count, _ in table.rows:
        name = name_cell.strip("`")
        dtypes = re.findall(r"``([^`]+)``", dtype_cell)
        assert dtypes, f"no dtype for {name}"
        dtypes = [d.replace("{W}", str(h.key_width)) for d in dtypes]
        if "{j}" in name:
            for j, broker in enumerate(brokers):
                width = str(int(broker["token_width"]))
                alternatives = [d.replace("{w}", width) for d in dtypes]
                per_item = "2" if int(broker["kind"]) == KIND_INT else "1"
                plain.append(
                    (name.replace("{j}", str(j)), alternatives, count.replace("kj", per_item))
                )
        elif "{f}" in name:
            per_feed.append((name, dtypes, count))
        else:
            plain.append((name, dtypes, count))
    expanded = [
        (name.replace("{f}", str(f)), dtypes, re.sub(r"\b(bf|Sf|nf)\b", rf"\1[{f}]", count))
        for f in range(h.feed_count)
        for name, dtypes, count in per_feed
    ]
    return plain + expanded


def test_a_compiled_snapshot_has_the_documented_sections_in_order() -> None:
    buf, h = snapshot(), header()
    table = raw_table(buf)
    documented = documented_sections(h, buf)
    assert [name for name, _, _ in documented] == [n.decode() for n in table["name"]]

    feeds = np.frombuffer(buf, FEED_DTYPE, h.feed_count, h.sections["feeds"].offset)
    strings = {s for i in INSTRUMENTS for s in (i.exchange, i.segment, i.instrument_type, i.name)}
    names = {
        "n": len(INSTRUMENTS),
        "b": h.key_bucket_bits,
        "S": h.key_slot_count,
        "m": len(strings),
        "B": 2,
        "F": len(FEEDS),
        "bf": [int(r["bucket_bits"]) for r in feeds],
        "Sf": [int(r["slot_count"]) for r in feeds],
        "nf": [int(r["count"]) for r in feeds],
    }
    for (name, dtypes, count), entry in zip(documented, table, strict=True):
        stored = entry["dtype"].decode()
        assert stored in dtypes, f"{name}: {stored} is not one of {dtypes}"
        if count:
            expected = eval(count, {"__builtins__": {}}, names)  # the spec's own arithmetic
            assert int(entry["count"]) == expected, f"{name}: count is not {count}"
    assert [r["name"].decode() for r in feeds] == list(FEEDS)
    assert names["nf"] == list(FEEDS.values())


def test_each_token_section_has_the_dtype_of_its_brokers_kind() -> None:
    buf, h = snapshot(), header()
    brokers = np.frombuffer(buf, BROKER_DTYPE, h.broker_count, h.sections["brokers"].offset)
    assert [(b["name"].decode(), int(b["kind"])) for b in brokers] == [
        ("angel", KIND_INT),
        ("upstox", KIND_STR),
    ]
    stored = {e["name"].decode(): e["dtype"].decode() for e in raw_table(buf)}
    assert stored["tokens.0"] == "<u8"
    assert stored["tokens.1"] == f"|S{int(brokers[1]['token_width'])}"
    assert int(brokers[1]["token_width"]) == 24  # "NSE_EQ|INE009A01021" padded to 8s


# -- the writer --------------------------------------------------------------------------------


def test_the_header_reads_back_what_went_into_the_compile() -> None:
    h = header()
    assert (h.version_major, h.version_minor) == (2, 0)
    assert h.generation == GENERATION
    assert h.build_time_ns == BUILD_TIME_NS
    assert h.trade_date == (TRADE_DATE - dt.date(1970, 1, 1)).days
    assert h.instrument_count == len(INSTRUMENTS)
    assert h.broker_count == 2
    assert h.feed_count == len(FEEDS)
    assert h.file_size == len(snapshot())
    assert h.header_size == layout.header_size_for(len(h.sections))
    assert h.payload_checksum == xxhash.xxh3_64_intdigest(snapshot()[h.header_size :])


def test_a_registry_without_trade_date_stores_zero() -> None:
    registry = Registry.from_instruments(INSTRUMENTS)
    assert read_header(compile_snapshot(registry, generation=3)).trade_date == 0


@given(st.integers(0, 2**64 - 1))
@settings(max_examples=50, deadline=None)
def test_set_generation_changes_only_the_generation_and_header_checksum(generation: int) -> None:
    before = snapshot()
    buf = bytearray(before)
    set_generation(buf, generation)
    h = read_header(buf)
    assert h.generation == generation
    assert h.payload_checksum == header().payload_checksum
    changed = {i for i, (a, b) in enumerate(zip(before, buf, strict=True)) if a != b}
    generation_at = HEADER_DTYPE.fields["generation"][1]
    allowed = set(range(generation_at, generation_at + 8))
    allowed |= set(range(layout.HEADER_CHECKSUM_OFFSET, layout.HEADER_CHECKSUM_OFFSET + 8))
    assert changed <= allowed
    if generation != GENERATION:
        assert changed & set(range(layout.HEADER_CHECKSUM_OFFSET, HEADER_FIXED_SIZE))


def test_sections_start_on_cache_lines_and_the_gaps_are_zero() -> None:
    buf, h = snapshot(), header()
    assert h.header_size % layout.ALIGN == 0
    assert h.file_size % layout.ALIGN == 0
    table_end = HEADER_FIXED_SIZE + 64 * len(h.sections)
    assert not any(buf[table_end : h.header_size])
    reserved = slice(96, 120)  # the header's reserved bytes
    assert not any(buf[reserved])
    cursor, gaps = h.header_size, 0
    for entry in h.sections.values():
        assert entry.offset % layout.ALIGN == 0, entry.name
        assert entry.offset >= cursor, f"{entry.name} overlaps the section before it"
        assert not any(buf[cursor : entry.offset]), f"bytes before {entry.name} are not zero"
        gaps += entry.offset - cursor
        cursor = entry.offset + entry.nbytes
    assert not any(buf[cursor:])
    gaps += h.file_size - cursor
    assert gaps > 0  # the registry has odd-sized sections, so the check above saw padding


def test_reserved_bytes_of_records_are_zero() -> None:
    buf = bytearray(snapshot())
    for name, padding in [
        ("records", [(60, 64)]),
        ("brokers", [(33, 36)]),
        ("feeds", [(37, 40), (68, 80)]),
    ]:
        entry = header().sections[name]
        rows = np.frombuffer(buf, np.uint8, entry.nbytes, entry.offset).reshape(entry.count, -1)
        for start, end in padding:
            assert not rows[:, start:end].any(), f"{name}[{start}:{end}]"


def test_write_snapshot_refuses_a_section_whose_array_is_not_its_dtype() -> None:
    section = layout.Section("key.pilots", "|u1", np.zeros(4, dtype=np.uint16))
    with pytest.raises(ValueError, match=r"key\.pilots"):
        layout.write_snapshot(
            [section],
            generation=0,
            build_time_ns=0,
            trade_date=0,
            instrument_count=1,
            key_seed=0,
            key_bucket_bits=1,
            key_width=8,
            key_slot_count=2,
            broker_count=0,
            feed_count=0,
        )


# -- the reader refuses damage ----------------------------------------------------------------


def test_an_intact_snapshot_opens_with_and_without_verify() -> None:
    for verify in (False, True):
        resolver = Resolver(snapshot(), verify=verify)
        assert resolver.token("NSE:INFY", "angel") == 1594
        assert resolver.key("NSE_FO|43210", "upstox") == "NFO:NIFTY24APR22000CE"


def test_bad_magic_is_refused() -> None:
    buf = bytearray(snapshot())
    buf[:8] = b"RSLVCTRL"
    assert_refused(buf, "magic")


@pytest.mark.parametrize("major", [0, 1, 3, 0xFFFF])
def test_an_unknown_major_version_is_refused(major: int) -> None:
    assert_refused(with_header(version_major=major), f"version {major}\\.0 is not supported")


def test_a_newer_minor_version_is_read() -> None:
    assert read_header(with_header(version_minor=7)).version_minor == 7


def test_every_short_prefix_is_refused_as_truncated() -> None:
    buf = snapshot()
    for length in range(0, 400):
        assert_refused(buf[:length], "truncated")


def test_a_snapshot_cut_near_its_end_is_refused_as_truncated() -> None:
    buf, h = snapshot(), header()
    for length in [h.header_size - 1, h.header_size, h.header_size + 1, len(buf) - 64]:
        assert_refused(buf[:length], "truncated")
    for cut in range(1, 130):
        assert_refused(buf[:-cut], "truncated")


def test_a_padded_snapshot_is_refused() -> None:
    assert_refused(snapshot() + bytes(64), "padded")


@FUZZ
@given(st.data())
def test_any_truncation_is_refused(data: st.DataObject) -> None:
    buf = snapshot()
    length = data.draw(st.integers(0, len(buf) - 1))
    assert_refused(buf[:length], "truncated")


@FUZZ
@given(st.binary(max_size=2000))
@example(layout.MAGIC + bytes(200))
@example(layout.MAGIC + b"\x01\x00" + bytes(500))
def test_arbitrary_bytes_are_refused(data: bytes) -> None:
    assert_refused(data)


@FUZZ
@given(st.data(), st.integers(1, 255))
def test_a_flipped_byte_in_the_header_or_section_table_is_refused(
    data: st.DataObject, mask: int
) -> None:
    buf = bytearray(snapshot())
    buf[data.draw(st.integers(0, header().header_size - 1))] ^= mask
    assert_refused(buf)


@pytest.mark.parametrize("field", ["generation", "build_time_ns", "key_seed", "header_checksum"])
def test_a_flipped_header_field_is_caught_by_the_header_checksum(field: str) -> None:
    buf = bytearray(snapshot())
    buf[HEADER_DTYPE.fields[field][1]] ^= 0x10
    assert_refused(buf, "header checksum")


def test_a_flipped_byte_in_the_reserved_header_bytes_is_caught_by_the_header_checksum() -> None:
    buf = bytearray(snapshot())
    buf[100] ^= 1
    assert_refused(buf, "header checksum")


@pytest.mark.parametrize("name", ["key.pilots", "records", "feed.2.targets"])
def test_a_flipped_byte_in_the_section_table_is_caught_by_the_header_checksum(name: str) -> None:
    buf = bytearray(snapshot())
    buf[HEADER_FIXED_SIZE + 64 * section_index(name) + 41] ^= 1  # its offset
    assert_refused(buf, "header checksum")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"section_count": 0}, "section_count"),
        ({"section_count": layout.MAX_SECTIONS + 1}, "section_count"),
        ({"header_size": 1664}, "header_size"),
        ({"file_size": 10**6}, "file_size"),
        ({"key_bucket_bits": 0}, "key_bucket_bits"),
        ({"key_bucket_bits": 33}, "key_bucket_bits"),
        ({"key_slot_count": len(INSTRUMENTS) - 1}, "key_slot_count"),
        ({"key_slot_count": 2**32}, "key_slot_count"),
        ({"key_width": 0}, "key_width"),
        ({"key_width": 12}, "key_width"),
        ({"instrument_count": len(INSTRUMENTS) + 1}, "section 'key.remap'"),
        ({"key_width": 32}, "section 'keys'"),
        ({"broker_count": 3}, "section 'brokers'"),
        ({"feed_count": 2}, "section 'feeds'"),
    ],
)
def test_a_lying_header_field_is_refused_by_name(fields: dict[str, int], match: str) -> None:
    assert_refused(with_header(**fields), match)


def test_a_section_count_that_drops_the_last_section_is_refused() -> None:
    h = header()
    count = len(h.sections) - 1
    buf = with_header(section_count=count, header_size=layout.header_size_for(count))
    assert_refused(buf, "feed.2.targets' is missing")


@pytest.mark.parametrize(
    ("section", "fields", "match"),
    [
        ("key.pilots", {"offset": 64}, "'key.pilots': offset 64 is misaligned or inside"),
        ("keys", {"offset": header().sections["keys"].offset + 8}, "'keys': offset .* misaligned"),
        ("records", {"offset": header().file_size}, "'records': bytes .* run past the end"),
        ("feed.2.targets", {"offset": 2**64 - 64}, "'feed.2.targets': bytes .* run past"),
        ("key.fingerprints", {"nbytes": 48}, "'key.fingerprints': nbytes 48 is not count 5"),
        ("strings.data", {"nbytes": 2**63, "count": 2**63}, "'strings.data'.* run past"),
        ("key.fingerprints", {"nbytes": 48, "count": 6}, "'key.fingerprints': 6 items"),
        ("key.remap", {"nbytes": 0, "count": 0}, "'key.remap': 0 items, expected [1-9]"),
        ("brokers", {"nbytes": 48, "count": 1}, "'brokers': 1 items, expected 2"),
        ("key.fingerprints", {"dtype": b"<u4", "nbytes": 20}, "'key.fingerprints': dtype <u4"),
        ("records", {"dtype": b"feed", "nbytes": 400}, "'records': dtype"),
        ("keys", {"dtype": b"|S32", "nbytes": 160}, "'keys': dtype \\|S32 is not \\|S24"),
        ("keys", {"dtype": b"<f8", "nbytes": 40}, "dtype '<f8' is not one this layout uses"),
        ("keys", {"dtype": b"|S7", "nbytes": 35}, "dtype '\\|S7' is not one this layout uses"),
        ("key.pilots", {"name": b"key.remap"}, "'key.remap' appears twice"),
        ("key.pilots", {"name": b"key.pilot"}, "'key.pilots' is missing"),
        ("strings.data", {"name": b"strings.text"}, "'strings.data' is missing"),
        ("tokens.1", {"name": b"tokens.9"}, "'tokens.1' is missing"),
        ("feed.1.remap", {"name": b"feed.1.remaps"}, "'feed.1.remap' is missing"),
        ("key.pilots", {"name": b"key.pil\xf6ts"}, "entry 0: name or dtype is not ASCII"),
    ],
)
def test_a_lying_section_entry_is_refused_by_the_bounds_checks(
    section: str, fields: dict[str, Any], match: str
) -> None:
    assert_refused(with_entry(section, **fields), match)


def test_an_extra_section_is_refused() -> None:
    h = header()
    count = len(h.sections) + 1
    buf = snapshot()
    # Make room for one more table entry by moving the payload one cache line on.
    new = bytearray(buf[: h.header_size]) + bytes(64) + buf[h.header_size :]
    fields = np.frombuffer(new, HEADER_DTYPE, 1)
    fields["section_count"], fields["header_size"] = count, layout.header_size_for(count)
    fields["file_size"] = len(new)
    table = np.frombuffer(new, SECTION_DTYPE, count, offset=HEADER_FIXED_SIZE)
    table["offset"][:-1] += 64
    table[-1] = (b"extra", b"|u1", layout.header_size_for(count), 0, 0)
    reseal_payload(new)
    assert_refused(new, "unknown sections \\['extra'\\]")


@FUZZ
@given(
    st.sampled_from(list(header().sections)),
    st.sampled_from(["offset", "nbytes", "count"]),
    st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 5000)),
)
def test_any_lying_offset_nbytes_or_count_is_refused_or_stays_in_bounds(
    section: str, field: str, value: int
) -> None:
    buf = with_entry(section, **{field: value})
    try:
        h = read_header(bytes(buf))
    except LayoutError:
        return
    for entry in h.sections.values():
        assert entry.offset % layout.ALIGN == 0
        assert h.header_size <= entry.offset <= entry.offset + entry.nbytes <= len(buf)
        assert entry.nbytes == entry.count * entry.dtype.itemsize


@pytest.mark.parametrize(("dtype", "itemsize"), [(b"<u4", 4), (b"|u1", 1)])
def test_a_token_section_with_a_dtype_the_spec_does_not_give_is_refused(
    dtype: bytes, itemsize: int
) -> None:
    # tokens.0 is angel's, an integer broker's: 2n items.
    buf = with_entry("tokens.0", dtype=dtype, nbytes=itemsize * 2 * len(INSTRUMENTS))
    assert_refused(buf, "'tokens.0'.*dtype")


def test_an_unknown_section_dtype_is_refused_naming_the_section() -> None:
    assert_refused(with_entry("keys", dtype=b"<f8", nbytes=40), "'keys'")


# -- the payload -------------------------------------------------------------------------------


@FUZZ
@given(st.data(), st.integers(1, 255))
def test_a_flipped_payload_byte_is_caught_by_verify(data: st.DataObject, mask: int) -> None:
    buf = bytearray(snapshot())
    buf[data.draw(st.integers(header().header_size, len(buf) - 1))] ^= mask
    assert read_header(bytes(buf)).payload_checksum == header().payload_checksum
    assert_resolver_refuses(buf, "payload checksum mismatch", verify=True)


def test_a_changed_payload_value_opens_without_verify_and_is_refused_with_it() -> None:
    buf = bytearray(snapshot())
    records = section_array(buf, "records")
    ordinal = list(Resolver(snapshot())).index("NFO:NIFTY24APR22000CE")
    records["strike"][ordinal] = 22500.0
    resolver = Resolver(bytes(buf))
    assert resolver.record("NFO:NIFTY24APR22000CE").strike == 22500.0
    assert_resolver_refuses(buf, "payload checksum", verify=True)


@FUZZ
@given(st.data(), st.integers(1, 255))
def test_a_flipped_payload_byte_without_verify_opens_or_is_a_layout_error(
    data: st.DataObject, mask: int
) -> None:
    buf = bytearray(snapshot())
    position = data.draw(st.integers(header().header_size, len(buf) - 1))
    buf[position] ^= mask
    with contextlib.suppress(LayoutError):
        Resolver(bytes(buf))


@pytest.mark.parametrize("section", ["brokers", "feeds"])
def test_a_broker_or_feed_name_that_is_not_ascii_is_a_layout_error(section: str) -> None:
    buf = bytearray(snapshot())
    buf[header().sections[section].offset + 1] = 0xFF
    assert_resolver_refuses(buf, "name")
    reseal_payload(buf)
    assert_resolver_refuses(buf, "name", verify=True)


FEED_SLOTS = int(section_array(bytearray(snapshot()), "feeds")["slot_count"][0])


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("bucket_bits", 0, "feed 0: field bucket_bits 0"),
        ("bucket_bits", 33, "feed 0: field bucket_bits 33"),
        ("slot_count", FEEDS["angel:NFO"] - 1, "feed 0: field slot_count 1"),
        ("slot_count", 2**32, "feed 0: field slot_count"),
        ("broker", 2, "feed 0: field broker 2"),
        ("kind", 9, "feed 0: field kind 9"),
        ("count", FEED_SLOTS, "'feed.0.remap': [1-9][0-9]* items, expected 0"),
    ],
)
def test_a_lying_feed_record_is_refused_on_open(field: str, value: int, match: str) -> None:
    buf = bytearray(snapshot())
    feeds = section_array(buf, "feeds")
    feeds[field][0] = value
    assert_resolver_refuses(buf, match)
    reseal_payload(buf)
    assert_resolver_refuses(buf, match, verify=True)


def test_a_broker_whose_feeds_run_past_the_feed_table_is_refused() -> None:
    buf = bytearray(snapshot())
    brokers = section_array(buf, "brokers")
    brokers["first_feed"][1] = len(FEEDS)
    assert_resolver_refuses(buf, "broker upstox: fields first_feed/feed_count")


def test_a_string_offset_past_the_string_data_is_refused() -> None:
    buf = bytearray(snapshot())
    offsets = section_array(buf, "strings.offsets")
    offsets[-1] = header().sections["strings.data"].nbytes + 1
    assert_resolver_refuses(buf, "'strings.offsets' points past 'strings.data'")


INDEX_SECTIONS = [
    ("key.remap", len(INSTRUMENTS), "'key.remap' holds an ordinal out of range"),
    ("feed.0.remap", FEEDS["angel:NFO"], "feed angel:NFO: remap"),
    ("feed.2.remap", FEEDS["upstox"], "feed upstox: remap"),
    ("feed.1.targets", len(INSTRUMENTS), "feed angel:NSE: targets"),
    ("feed.2.targets", len(INSTRUMENTS), "feed upstox: targets"),
]


@pytest.mark.parametrize(("section", "limit", "match"), INDEX_SECTIONS)
def test_verify_refuses_a_stored_index_out_of_range(section: str, limit: int, match: str) -> None:
    buf = bytearray(snapshot())
    assert header().sections[section].count > 0, "the registry must give this section rows"
    values = section_array(buf, section)
    values[-1] = limit
    reseal_payload(buf)
    Resolver(bytes(buf))  # only the O(n) index checks of verify look at the values
    assert_resolver_refuses(buf, match, verify=True)


@FUZZ
@given(st.sampled_from(INDEX_SECTIONS), st.data())
def test_verify_refuses_any_index_past_its_table(
    case: tuple[str, int, str], data: st.DataObject
) -> None:
    section, limit, match = case
    buf = bytearray(snapshot())
    values = section_array(buf, section)
    values[data.draw(st.integers(0, len(values) - 1))] = data.draw(st.integers(limit, 2**32 - 1))
    reseal_payload(buf)
    assert_resolver_refuses(buf, match, verify=True)


def test_an_integer_brokers_tokens_sit_beside_a_copy_of_the_fingerprints() -> None:
    buf = bytearray(snapshot())
    fingerprints = section_array(buf, "key.fingerprints")
    resolver = Resolver(bytes(buf))
    keys = section_array(buf, "keys").astype(str)
    for j, broker in enumerate(section_array(buf, "brokers")):
        if int(broker["kind"]) != KIND_INT:
            continue
        pairs = section_array(buf, f"tokens.{j}").reshape(-1, 2)
        assert np.array_equal(pairs[:, 0], fingerprints)
        name = broker["name"].decode()
        listed = pairs[:, 1] != NO_TOKEN
        assert listed.any()
        got = [resolver.token(k, name) for k in keys[listed].tolist()]
        assert got == pairs[listed, 1].tolist()


def test_the_fast_path_checks_the_brokers_copy_and_verify_refuses_one_that_differs() -> None:
    buf = bytearray(snapshot())
    pairs = section_array(buf, "tokens.0").reshape(-1, 2)  # angel's, an integer broker
    i = int(np.flatnonzero(pairs[:, 1] != NO_TOKEN)[0])
    key = section_array(buf, "keys")[i].decode()
    pairs[i, 0] ^= 1
    reseal_payload(buf)
    resolver = Resolver(bytes(buf))  # open does not compare the copies; the lookup does
    assert resolver.get_token(key, "angel") is None
    assert resolver.record(key).key == key  # key.fingerprints still finds the key
    assert_resolver_refuses(buf, "'tokens.0': its fingerprints differ", verify=True)


@pytest.mark.parametrize("field", ["exchange", "segment", "instrument_type", "name"])
def test_verify_refuses_a_record_string_index_past_the_string_table(field: str) -> None:
    buf = bytearray(snapshot())
    records = section_array(buf, "records")
    records[field][0] = header().sections["strings.offsets"].count - 1
    reseal_payload(buf)
    assert_resolver_refuses(buf, field, verify=True)


# -- the control segment -----------------------------------------------------------------------

CONTROL = ControlState(
    sequence=8,
    generation=GENERATION,
    payload_checksum=header().payload_checksum,
    updated_ns=BUILD_TIME_NS,
    publisher_pid=4242,
    snapshot=layout.snapshot_file_name("universe", GENERATION),
)


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        ControlState,
        sequence=st.integers(0, 2**63 - 1).map(lambda s: 2 * s),
        generation=st.integers(0, 2**64 - 1),
        payload_checksum=st.integers(0, 2**64 - 1),
        updated_ns=st.integers(-(2**63), 2**63 - 1),
        publisher_pid=st.integers(0, 2**64 - 1),
        snapshot=st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=64),
    )
)
def test_control_state_round_trips(state: ControlState) -> None:
    raw = encode_control(state)
    assert len(raw) == CONTROL_SIZE
    assert raw[:8] == b"RSLVCTRL"
    assert raw[8:10] == b"\x01\x00"
    assert not any(raw[10:16]) and not any(raw[56:64])
    assert read_control(raw) == state
    assert read_control(bytearray(raw) + bytes(64)) == state  # a page-sized mapping


def test_the_generation_is_one_8_byte_read_at_its_documented_offset() -> None:
    raw = encode_control(CONTROL)
    at = layout.CONTROL_GENERATION_OFFSET
    assert int.from_bytes(raw[at : at + 8], "little") == GENERATION


def test_an_odd_sequence_never_returns() -> None:
    raw = encode_control(dataclasses.replace(CONTROL, sequence=9))
    with pytest.raises(LayoutError, match="never became stable"):
        read_control(raw, retries=3)


def test_bad_control_magic_is_refused() -> None:
    raw = bytearray(encode_control(CONTROL))
    raw[:8] = layout.MAGIC
    with pytest.raises(LayoutError, match="bad control magic"):
        read_control(raw)


def test_an_unknown_control_version_is_refused() -> None:
    raw = bytearray(encode_control(CONTROL))
    raw[8] = 2
    with pytest.raises(LayoutError, match="control segment version 2"):
        read_control(raw)


@pytest.mark.parametrize("length", [0, 8, 63, CONTROL_SIZE - 1])
def test_a_truncated_control_segment_is_refused(length: int) -> None:
    with pytest.raises(LayoutError, match="control segment truncated"):
        read_control(encode_control(CONTROL)[:length])


def test_a_control_snapshot_name_that_is_not_ascii_is_refused() -> None:
    raw = bytearray(encode_control(CONTROL))
    raw[64] = 0xE9
    with pytest.raises(LayoutError, match="snapshot is not ASCII"):
        read_control(raw)
