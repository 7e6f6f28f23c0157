"""Source specs, format detection and the field parsers every loader shares."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import pytest

from resolverd.errors import ConfigError, SourceError, SourceMissingError
from resolverd.loaders import FORMATS, load_source
from resolverd.loaders._common import (
    csv_field_at,
    decode_utf8,
    json_key_at,
    kite_segment,
    parse_date,
    parse_number,
    parse_uint,
    read_source,
    strip_eq,
)
from resolverd.loaders.kite import COLUMNS

KITE_HEADER = ",".join(COLUMNS)
KITE_ROW = "408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE"
SOURCE = "x=file"

# load_source: specs and format detection


def test_every_registered_format_sniffs_only_its_own_kind_of_head() -> None:
    assert FORMATS["kite"].sniff(KITE_HEADER)
    assert [name for name, f in FORMATS.items() if f.sniff(KITE_HEADER + "\n")] == ["kite"]


def test_bare_path_is_detected_by_its_header_even_behind_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "dump.csv"
    path.write_text(f"\ufeff{KITE_HEADER}\r\n{KITE_ROW}\r\n", encoding="utf-8")
    loaded = load_source(str(path))
    assert loaded.source == "kite=dump.csv"
    assert [i.key for i in loaded.instruments] == ["NSE:INFY"]
    assert loaded.rows == [2]


def test_gzip_file_is_detected_and_read(tmp_path: Path) -> None:
    path = tmp_path / "dump.csv.gz"
    path.write_bytes(gzip.compress(f"{KITE_HEADER}\n{KITE_ROW}\n".encode()))
    assert [i.key for i in load_source(str(path)).instruments] == ["NSE:INFY"]


def test_bare_path_of_unknown_format_lists_known_formats(tmp_path: Path) -> None:
    path = tmp_path / "mystery.csv"
    path.write_text("alpha;beta;gamma\n1;2;3\n", encoding="utf-8")
    with pytest.raises(SourceError, match="cannot tell the format") as caught:
        load_source(str(path))
    assert "known formats: " + ", ".join(FORMATS) in str(caught.value)
    assert caught.value.row == 1


def test_bare_path_of_empty_file_cannot_be_told(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="an empty file"):
        load_source(str(path))


def test_named_empty_file_is_refused_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"\n\n")
    with pytest.raises(SourceError, match="no instruments: the file is empty"):
        load_source(f"kite={path}")


def test_unknown_format_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown format 'nosuch'; known formats: kite"):
        load_source(f"nosuch={tmp_path / 'x.csv'}")


def test_missing_file_is_source_missing_whether_named_or_bare(tmp_path: Path) -> None:
    with pytest.raises(SourceMissingError):
        load_source(str(tmp_path / "absent.csv"))
    with pytest.raises(SourceMissingError):
        load_source(f"kite={tmp_path / 'absent.csv'}")


def test_bare_path_containing_an_equals_sign_is_a_path(tmp_path: Path) -> None:
    path = tmp_path / "date=2024-04-03.csv"
    path.write_text(f"{KITE_HEADER}\n{KITE_ROW}\n", encoding="utf-8")
    assert load_source(str(path)).source == "kite=date=2024-04-03.csv"


# reading bytes


def test_truncated_gzip_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.json.gz"
    whole = gzip.compress(b'[{"a": 1}]' * 1000)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SourceError, match="gzip stream is cut off or corrupt"):
        read_source(path, SOURCE)


def test_non_utf8_byte_names_its_line() -> None:
    with pytest.raises(SourceError) as caught:
        decode_utf8(b"a,b\nc,d\ne,\xff\n", SOURCE)
    assert caught.value.row == 3
    assert "byte 0xff at offset 10 is not UTF-8" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"a,b,c\n1,2,\xff\n", "c"),
        (b'a,b,c\n1,"x,\xff",3\n', "b"),  # a quoted delimiter does not start a field
        (b"a,b,c\n\xff,2,3\n", "a"),
        (b"a,b\n1,2,\xff\n", None),  # past the header's last column
        (b"a,\xff,c\n1,2,3\n", None),  # in the header itself
    ],
)
def test_non_utf8_byte_in_a_csv_names_its_column(data: bytes, field: str | None) -> None:
    with pytest.raises(SourceError) as caught:
        decode_utf8(data, SOURCE, field_at=csv_field_at)
    assert (caught.value.row, caught.value.field) == (
        data.count(b"\n", 0, data.index(b"\xff")) + 1,
        field,
    )


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (b'[{"token": "1", "name": "A\xffB"}]', "name"),
        (b'[{"note": "say \\"hi\\"", "name": "\\"A\xff"}]', "name"),  # escaped quotes
        (b'[{"na\xffme": "AB"}]', None),  # in a key, not a value
        (b'[{"lot": 1\xff}]', None),  # outside any string
    ],
)
def test_json_key_at_names_the_key_of_the_string_a_byte_is_in(data: bytes, key: str | None) -> None:
    assert json_key_at(data, data.index(b"\xff")) == key


def test_bom_is_dropped() -> None:
    assert decode_utf8("\ufeffa,b".encode(), SOURCE) == "a,b"


# fields


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "is empty"),
        ("-5", "'-5' is negative"),
        ("1.5", "'1.5' is not an integer"),
        ("١٢", "is not an integer"),  # Arabic-Indic digits pass isdigit(), not isascii()
        ("18446744073709551616", "is out of range"),
        ("9" * 5000, "5,000 characters"),  # beyond int()'s own limit on digit strings
    ],
)
def test_parse_uint_refuses_with_a_reason(text: str, detail: str) -> None:
    with pytest.raises(SourceError, match=detail) as caught:
        parse_uint(text, SOURCE, 7, "token")
    assert (caught.value.row, caught.value.field) == (7, "token")


def test_parse_uint_honours_its_maximum() -> None:
    assert parse_uint("4294967295", SOURCE, 1, "f", maximum=2**32 - 1) == 2**32 - 1
    with pytest.raises(SourceError, match=r"out of range 0\.\.4294967295"):
        parse_uint("4294967296", SOURCE, 1, "f", maximum=2**32 - 1)


@pytest.mark.parametrize(
    ("text", "value"), [("0.05", 0.05), ("22500", 22500.0), ("1e-05", 1e-05), (".5", 0.5)]
)
def test_parse_number_reads_plain_decimals(text: str, value: float) -> None:
    assert parse_number(text, SOURCE, 1, "strike") == value


def test_parse_number_scales_paise_to_rupees() -> None:
    assert parse_number("5.0", SOURCE, 1, "tick_size", scale=0.01) == pytest.approx(0.05)


@pytest.mark.parametrize("text", ["nan", "inf", "1_000", " 5", "-1", "5,0", ""])
def test_parse_number_refuses_anything_else(text: str) -> None:
    with pytest.raises(SourceError):
        parse_number(text, SOURCE, 1, "strike")


@pytest.mark.parametrize(
    "text", ["2024-04-25", "25-04-2024", "25APR2024", "25-Apr-2024", "2024-04-25 14:30:00"]
)
def test_parse_date_reads_every_broker_form(text: str) -> None:
    assert parse_date(text, SOURCE, 1, "expiry") == dt.date(2024, 4, 25)


@pytest.mark.parametrize("text", ["2024-02-30", "2024/04/25", "25APX2024", "tomorrow"])
def test_parse_date_refuses_non_dates(text: str) -> None:
    with pytest.raises(SourceError, match="is not a date"):
        parse_date(text, SOURCE, 3, "expiry")


def test_kite_vocabulary_helpers() -> None:
    assert kite_segment("NFO", "CE") == "NFO-OPT"
    assert kite_segment("MCX", "FUT") == "MCX-FUT"
    assert kite_segment("NSE", "EQ") == "NSE"
    assert strip_eq("SBIN-EQ") == "SBIN"
    assert strip_eq("IDEA-BE") == "IDEA-BE"


def test_a_huge_bad_field_is_shown_cut_short() -> None:
    with pytest.raises(SourceError) as caught:
        parse_number("x" * 10_000_000, SOURCE, 2, "strike")
    assert len(str(caught.value)) < 200
    assert "10,000,000 characters" in str(caught.value)


def test_the_registry_loaders_integer_parse_is_exact_or_raises() -> None:
    # numpy's text parser, which the PostgreSQL loader uses for speed, saturates and stops
    # silently; the loader must fall back to int(), which raises, rather than take its result.
    from resolverd.loaders.postgres import _integers

    big = ["18446744073709551614", "0", "9223372036854775808"]
    assert _integers(big, np.uint64).tolist() == [int(t) for t in big]
    assert _integers([], np.uint64).tolist() == []
    with pytest.raises(OverflowError):
        _integers(["1", "18446744073709551616"], np.uint64)
    with pytest.raises(OverflowError):
        _integers(["-5"], np.uint64)
    with pytest.raises(ValueError):
        _integers(["1", "x"], np.int64)
