"""The generic loader: in-house CSV and JSON(L) masters read through a TOML column mapping."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from resolverd import loaders
from resolverd.errors import EX_CONFIG, EX_DATAERR, ConfigError, SourceError
from resolverd.loaders import load_source, register_mapping
from resolverd.loaders.generic import (
    Mapping,
    load_generic,
    load_mapping,
    parse_generic_rows,
    read_generic,
)
from resolverd.model import BrokerToken, Instrument
from resolverd.synthetic import generate_universe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "generic"
DESK_TOML = FIXTURES / "desk_csv.toml"
OMS_TOML = FIXTURES / "oms_jsonl.toml"
DESK_CSV = (FIXTURES / "desk.csv").read_text(encoding="utf-8")
OMS_JSONL = (FIXTURES / "oms.jsonl").read_text(encoding="utf-8")
DESK = load_mapping(DESK_TOML)
OMS = load_mapping(OMS_TOML)
OMS_ARRAY = msgspec.structs.replace(OMS, format="json")
SOURCE = "x=file"

# Rows of desk.csv (the header is row 1), mapped field by field.
RELIANCE = Instrument(
    key="NSE:RELIANCE",
    exchange="NSE",
    segment="NSE",
    instrument_type="EQ",
    name="RELIANCE INDUSTRIES",
    tick_size=0.05,
    lot_size=1,
    isin="INE002A01018",
    exchange_token=2885,
    tokens=(BrokerToken("desk", "desk", 1001),),
)
NIFTY_50 = Instrument(
    key="NSE:NIFTY 50",
    exchange="NSE",
    segment="INDICES",
    instrument_type="EQ",
    name="NIFTY 50",
    lot_size=0,
    exchange_token=1001,
    tokens=(BrokerToken("desk", "desk", 1006),),
)
NIFTY_CALL = Instrument(
    key="NFO:NIFTY24APR22500CE",
    exchange="NFO",
    segment="NFO-OPT",
    instrument_type="CE",
    name="NIFTY",
    expiry=dt.date(2024, 4, 25),
    strike=22500.0,
    tick_size=0.05,
    lot_size=50,
    exchange_token=68114,
    tokens=(BrokerToken("desk", "desk", 1009),),
)
USDINR_CALL = Instrument(
    key="CDS:USDINR24APR83.5CE",
    exchange="CDS",
    segment="CDS-OPT",
    instrument_type="CE",
    name="USDINR",
    expiry=dt.date(2024, 4, 26),
    strike=83.5,
    tick_size=0.0025,
    lot_size=1000,
    exchange_token=9861,
    tokens=(BrokerToken("desk", "desk", 1018),),
)
GOLD_CALL = Instrument(
    key="MCX:GOLD24JUN72000CE",
    exchange="MCX",
    segment="MCX-OPT",
    instrument_type="CE",
    name="GOLD",
    expiry=dt.date(2024, 5, 25),
    strike=72000.0,
    tick_size=0.5,
    lot_size=1,
    exchange_token=434522,
    tokens=(BrokerToken("desk", "desk", 1020),),
)
# Rows of oms.jsonl (row N is line N; line 8 is blank).
SBIN = Instrument(
    key="NSE:SBIN",
    exchange="NSE",
    segment="NSE",
    instrument_type="EQ",
    name="STATE BANK OF INDIA",
    tick_size=0.05,
    lot_size=1,
    exchange_token=3045,
    tokens=(BrokerToken("oms", "oms:NSE_EQ", "EQ.NSE.SBIN"),),
)
NIFTY_CALL_OMS = Instrument(
    key="NFO:NIFTY24APR22500CE",
    exchange="NFO",
    segment="NFO-OPT",
    instrument_type="CE",
    name="NIFTY",
    expiry=dt.date(2024, 4, 25),
    strike=22500.0,
    tick_size=0.05,
    lot_size=50,
    exchange_token=68114,
    tokens=(BrokerToken("oms", "oms:NSE_FO", "FO.NFO.68114"),),
)
EURINR_PUT = Instrument(
    key="CDS:EURINR24APR90.25PE",
    exchange="CDS",
    segment="CDS-OPT",
    instrument_type="PE",
    name="EURINR",
    expiry=dt.date(2024, 4, 26),
    strike=90.25,
    tick_size=0.0025,
    lot_size=1000,
    exchange_token=10312,
    tokens=(BrokerToken("oms", "oms:NSE_CD", "CD.CDS.10312"),),
)


def parse(text: str, mapping: Mapping = DESK) -> dict[int, Instrument]:
    return dict(parse_generic_rows(text, mapping, SOURCE))


def assert_source_error(
    text: str, row: int | None, field: str | None, detail: str, mapping: Mapping = DESK
) -> None:
    with pytest.raises(SourceError) as caught:
        parse(text, mapping)
    error = caught.value
    assert (error.source, error.row, error.field) == (SOURCE, row, field)
    assert detail in error.detail
    assert error.exit_code == EX_DATAERR


def desk_rows() -> list[list[str]]:
    return list(csv.reader(io.StringIO(DESK_CSV, newline="")))


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def desk_with(column: str, value: str, row: int = 10) -> str:
    """desk.csv with one field of one row (numbered as in the file) replaced."""
    rows = desk_rows()
    rows[row - 1][rows[0].index(column)] = value
    return csv_text(rows)


def oms_lines() -> list[str]:
    return OMS_JSONL.splitlines()


DELETE = object()


def oms_with(row: int, key: str, value: object) -> str:
    """oms.jsonl with one key of one object (numbered by line) set, or removed if `value` is
    `DELETE`."""
    lines = oms_lines()
    obj = msgspec.json.decode(lines[row - 1])
    if value is DELETE:
        del obj[key]
    else:
        obj[key] = value
    lines[row - 1] = msgspec.json.encode(obj).decode()
    return "\n".join(lines) + "\n"


def as_array(jsonl: str) -> str:
    return "[\n" + ",\n".join(line for line in jsonl.splitlines() if line.strip()) + "\n]\n"


def write_mapping(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text, encoding="utf-8")
    return path


# The fixtures: a CSV in paise with an index, and JSON Lines with string tokens and a feed per
# venue


def test_csv_fixture_maps_rows_field_by_field() -> None:
    records = parse(DESK_CSV)
    assert records[2] == RELIANCE
    assert records[7] == NIFTY_50
    assert records[10] == NIFTY_CALL
    assert records[19] == USDINR_CALL
    assert records[21] == GOLD_CALL


def test_csv_fixture_covers_cash_indices_futures_options_currency_and_commodity() -> None:
    records = parse(DESK_CSV)
    assert Counter(r.segment for r in records.values()) == {
        "NSE": 3,
        "BSE": 2,
        "INDICES": 2,
        "NFO-FUT": 3,
        "NFO-OPT": 4,
        "BFO-FUT": 1,
        "BFO-OPT": 1,
        "CDS-FUT": 1,
        "CDS-OPT": 1,
        "MCX-FUT": 1,
        "MCX-OPT": 1,
    }


def test_cash_symbol_loses_its_eq_series_tag() -> None:
    keys = [r.key for r in parse(DESK_CSV).values()]
    assert keys[:3] == ["NSE:RELIANCE", "NSE:INFY", "NSE:SBIN"]


def test_rows_of_kinds_we_do_not_model_are_skipped_with_a_warning_each() -> None:
    loaded = read_generic(FIXTURES / "desk.csv", DESK)
    assert loaded.source == "desk=desk.csv"
    assert loaded.rows == list(range(2, 22))
    assert [(w.row, w.field, w.detail) for w in loaded.warnings] == [
        (22, "type", "skipped, not cash, an index, a future or an option: 'GS'"),
        (23, "exch", "skipped, an exchange we do not model: 'NCDEX'"),
    ]
    assert str(loaded.warnings[0]).startswith("desk=desk.csv: row 22, field type: skipped")


def test_parser_reports_skips_through_its_warn_callback() -> None:
    told: list[tuple[int | None, str | None]] = []

    def warn(detail: str, row: int | None, field: str | None) -> None:
        told.append((row, field))

    rows = [row for row, _ in parse_generic_rows(DESK_CSV, DESK, SOURCE, warn)]
    assert rows == list(range(2, 22))
    assert told == [(22, "type"), (23, "exch")]


def test_jsonl_fixture_maps_rows_field_by_field_with_a_feed_per_venue() -> None:
    records = parse(OMS_JSONL, OMS)
    assert records[1] == SBIN
    assert records[5] == NIFTY_CALL_OMS
    assert records[10] == EURINR_PUT
    assert {r.tokens[0].feed for r in records.values()} == {
        "oms:NSE_EQ",
        "oms:BSE_EQ",
        "oms:NSE_FO",
        "oms:BSE_FO",
        "oms:NSE_CD",
        "oms:MCX_FO",
    }


def test_jsonl_numbers_may_be_json_numbers_or_strings() -> None:
    records = parse(OMS_JSONL, OMS)
    # Row 5 writes strike, tick, lot and xtoken as strings, row 6 (its put) as numbers.
    call, put = records[5], records[6]
    assert (call.strike, call.tick_size, call.lot_size, call.exchange_token) == (
        put.strike,
        put.tick_size,
        put.lot_size,
        put.exchange_token - 1,
    )


def test_jsonl_blank_lines_are_skipped_but_counted_and_skips_warned() -> None:
    loaded = read_generic(FIXTURES / "oms.jsonl", OMS)
    assert loaded.rows == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12]
    assert [(w.row, w.field) for w in loaded.warnings] == [(13, "kind")]


def test_json_array_reads_like_jsonl_with_elements_as_rows() -> None:
    lines = parse(OMS_JSONL, OMS)
    elements = parse(as_array(OMS_JSONL), OMS_ARRAY)
    assert list(elements.values()) == list(lines.values())
    assert list(elements) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]


def test_registered_mapping_reads_named_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "FORMATS", dict(loaders.FORMATS))
    assert register_mapping(DESK_TOML) == "desk"
    loaded = load_source(f"desk={FIXTURES / 'desk.csv'}")
    assert (loaded.source, len(loaded), len(loaded.warnings)) == ("desk=desk.csv", 20, 2)
    assert loaded.instruments[0] == RELIANCE


def test_gzip_file_reads_like_the_plain_one(tmp_path: Path) -> None:
    path = tmp_path / "desk.csv.gz"
    path.write_bytes(gzip.compress(DESK_CSV.encode()))
    assert load_generic(path, DESK) == list(parse(DESK_CSV).values())


def test_source_label_defaults_to_mapping_name_and_file_name(tmp_path: Path) -> None:
    path = tmp_path / "today.jsonl"
    path.write_text(oms_with(3, "lot", "x"), encoding="utf-8")
    with pytest.raises(SourceError, match=r"^oms=today\.jsonl: row 3, field lot: "):
        read_generic(path, OMS)
    with pytest.raises(SourceError, match=r"^oms-desk: row 3, field lot: "):
        read_generic(str(path), OMS, source="oms-desk")


# Values: scale, tokens, keys and vocabulary


def test_paise_scale_of_one_hundredth_divides_exactly() -> None:
    # 35 * 0.01 is 0.35000000000000003; 35 / 100 is 0.35, the float the text 0.35 reads as.
    records = parse(desk_with("tick_paise", "35").replace(",2250000,", ",2250025,"))
    assert (records[10].tick_size, records[10].strike) == (0.35, 22500.25)


def test_scale_that_is_not_one_over_an_integer_multiplies() -> None:
    mapping = msgspec.structs.replace(DESK, scale=msgspec.structs.replace(DESK.scale, strike=2.5))
    assert parse(DESK_CSV, mapping)[10].strike == 2250000 * 2.5


def test_columns_are_found_by_name_in_any_order() -> None:
    rows = [list(reversed(row)) for row in desk_rows()]
    assert parse(csv_text(rows)) == parse(DESK_CSV)


def test_delimiter_is_taken_from_the_mapping() -> None:
    out = io.StringIO()
    csv.writer(out, delimiter=";", lineterminator="\n").writerows(desk_rows())
    assert ";" in out.getvalue().partition("\n")[0]
    mapping = msgspec.structs.replace(DESK, delimiter=";")
    assert parse(out.getvalue(), mapping) == parse(DESK_CSV)


def test_key_column_must_start_with_the_rows_exchange() -> None:
    assert_source_error(
        oms_with(1, "key", "SBIN"), 1, "key", "does not start with the row's exchange", OMS
    )
    assert_source_error(oms_with(4, "key", "NSE:NIFTY24APRFUT"), 4, "key", "NFO:SYMBOL", OMS)


def test_template_key_without_a_symbol_names_the_template() -> None:
    assert_source_error(desk_with("symbol", ""), 10, "{exch}:{symbol}", "has no symbol")


def test_int_token_below_the_no_token_mark_is_kept() -> None:
    largest = 2**64 - 2
    assert parse(desk_with("desk_id", str(largest)))[10].tokens[0].value == largest


def test_str_token_must_not_be_empty() -> None:
    assert_source_error(oms_with(2, "oms_id", ""), 2, "oms_id", "is empty", OMS)


def test_str_token_must_be_a_json_string() -> None:
    assert_source_error(oms_with(2, "oms_id", 1594), 2, "oms_id", "Expected `str`", OMS)


def test_feed_column_value_must_make_a_storable_feed_name() -> None:
    assert_source_error(oms_with(2, "venue", ""), 2, "venue", "is empty", OMS)
    assert_source_error(oms_with(2, "venue", "V" * 40), 2, "venue", "1 to 32 ASCII", OMS)


def test_derivative_on_a_cash_exchange_is_refused() -> None:
    text = desk_with("type", "FUT", row=3)
    assert_source_error(text, 3, "type", "a FUT on cash exchange NSE")


def test_index_segment_is_only_for_eq_rows() -> None:
    assert_source_error(desk_with("segment", "INDICES"), 10, "segment", "expected 'NFO-OPT'")


def test_unmapped_segment_is_kites_for_exchange_and_type() -> None:
    segments = [r.segment for r in parse(OMS_JSONL, OMS).values()]
    assert segments[:5] == ["NSE", "NSE", "BSE", "NFO-FUT", "NFO-OPT"]


def test_every_row_skipped_is_no_instruments() -> None:
    rows = desk_rows()
    text = csv_text([rows[0], rows[21], rows[22]])
    assert_source_error(text, None, None, "no instruments: all 2 rows are of kinds we skip")


# Bad input: each case names the source, the row and the source's own name for the field


def test_bad_field_message_reads_like_the_style_guide() -> None:
    with pytest.raises(SourceError) as caught:
        parse(desk_with("desk_id", "12x34"))
    assert str(caught.value) == "x=file: row 10, field desk_id: '12x34' is not an integer"


@pytest.mark.parametrize(
    ("column", "value", "detail"),
    [
        ("desk_id", "", "is empty"),
        ("desk_id", "1.5", "is not an integer"),
        ("desk_id", " 1009", "is not an integer"),
        ("desk_id", "-1009", "is negative"),
        ("desk_id", str(2**64 - 1), "out of range 0..18446744073709551614"),
        ("desk_id", str(2**64), "out of range"),
        ("exch_token", "68x14", "is not an integer"),
        ("exch_token", "-68114", "is negative"),
        ("exch_token", str(2**64), "out of range 0..18446744073709551615"),
        ("lot", "50.0", "is not an integer"),
        ("lot", "-50", "is negative"),
        ("lot", "", "is empty"),
        ("lot", str(2**32), "out of range 0..4294967295"),
        ("expiry", "2024-04-25", "is not a date of the form '%d-%b-%Y'"),
        ("expiry", "31-Feb-2024", "is not a date"),
        ("strike_paise", "abc", "is not a number"),
        ("strike_paise", "", "is empty"),
        ("strike_paise", "-2250000", "is negative"),
        ("strike_paise", "nan", "is not a finite number"),
        ("strike_paise", "1e999", "is not a finite number"),
        ("strike_paise", "22_500", "is not a plain decimal number"),
        ("tick_paise", "5x", "is not a number"),
        ("tick_paise", "-5", "is negative"),
        ("exch", "", "is empty"),
        ("type", "", "is empty"),
        ("segment", "", "is empty"),
        ("segment", "NSE_FO", "expected 'NFO-OPT'"),
    ],
)
def test_bad_csv_field_is_a_source_error_naming_row_and_column(
    column: str, value: str, detail: str
) -> None:
    assert_source_error(desk_with(column, value), 10, column, detail)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("INE002A01019", "'INE002A01019' has a wrong check digit (ISO 6166)"),
        ("INE002A0101", "is not an ISIN"),
        ("ine002a01018", "is not an ISIN"),
    ],
)
def test_isin_must_have_the_iso_6166_shape_and_check_digit(value: str, detail: str) -> None:
    assert_source_error(desk_with("isin", value, row=2), 2, "isin", detail)


@pytest.mark.parametrize(
    ("key", "value", "detail"),
    [
        ("lot", True, "Expected `int | str`, got `bool`"),
        ("lot", 1.5, "Expected `int | str`, got `float`"),
        ("lot", -50, "-50 is negative"),
        ("lot", 2**32, "out of range 0..4294967295"),
        ("xtoken", 2**64, "out of range"),
        ("xtoken", "12x34", "'12x34' is not an integer"),
        ("strike", "abc", "'abc' is not a number"),
        ("strike", -22500, "is negative"),
        ("strike", None, "Expected `float | str`, got `null`"),
        ("tick", {"paise": 5}, "Expected `float | str`, got `object`"),
        ("expiry", "25-04-2024", "is not a date of the form '%Y-%m-%d'"),
        ("expiry", 20240425, "Expected `str | null`, got `int`"),
        ("name", None, "Expected `str`, got `null`"),
    ],
)
def test_bad_json_value_is_a_source_error_naming_row_and_key(
    key: str, value: object, detail: str
) -> None:
    assert_source_error(oms_with(5, key, value), 5, key, detail, OMS)


def test_json_number_out_of_float_range_names_row_and_key() -> None:
    text = oms_lines()
    text[4] = text[4].replace('"strike": "22500"', '"strike": 1e999')
    assert_source_error("\n".join(text) + "\n", 5, "strike", "Number out of range", OMS)


def test_json_array_error_path_becomes_row_and_key() -> None:
    assert_source_error(as_array(oms_with(5, "lot", "x")), 5, "lot", "is not an integer", OMS_ARRAY)
    assert_source_error(as_array(oms_with(9, "lot", True)), 8, "lot", "got `bool`", OMS_ARRAY)


def test_json_element_that_is_not_an_object_names_its_row() -> None:
    text = as_array(OMS_JSONL).replace("\n]", ",\n42\n]")
    assert_source_error(text, 13, None, "Expected `object`, got `int`", OMS_ARRAY)


def test_json_document_that_is_not_an_array_is_refused() -> None:
    assert_source_error(oms_lines()[0], None, None, "not a JSON array of objects", OMS_ARRAY)


def test_header_missing_a_mapped_column_names_it() -> None:
    rows = [row[:9] + row[10:] for row in desk_rows()]
    assert_source_error(csv_text(rows), 1, "lot", "the header has no column 'lot'")


def test_object_missing_a_mapped_key_names_row_and_key() -> None:
    assert_source_error(oms_with(3, "lot", DELETE), 3, "lot", "the object has no key 'lot'", OMS)
    text = as_array(oms_with(3, "venue", DELETE))
    assert_source_error(text, 3, "venue", "the object has no key 'venue'", OMS_ARRAY)


def test_row_with_the_wrong_number_of_fields_names_the_row() -> None:
    rows = desk_rows()
    rows[4].append("extra")
    assert_source_error(csv_text(rows), 5, None, "14 fields, but the header has 13")


def test_csv_blank_lines_are_skipped_but_counted() -> None:
    text = DESK_CSV.replace("\n1003,", "\n\n1003,")
    assert sorted(parse(text))[:4] == [2, 3, 5, 6]


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff"])
def test_empty_input_has_no_instruments(text: str) -> None:
    assert_source_error(text, None, None, "no instruments: the input is empty")


def test_header_without_rows_has_no_instruments() -> None:
    header = DESK_CSV.partition("\n")[0] + "\n"
    assert_source_error(header, None, None, "the header has no data rows")


def test_empty_json_array_has_no_instruments() -> None:
    assert_source_error("[]\n", None, None, "no instruments: the array is empty", OMS_ARRAY)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "desk.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="no instruments: the file is empty"):
        read_generic(path, DESK)


def test_csv_cut_off_mid_row_names_the_last_row() -> None:
    # Cut inside the last field: without the line-end rule it would read as a short token.
    text = DESK_CSV[: DESK_CSV.index("77654") + 2]
    assert_source_error(text, 23, None, "the last row has no line end")


def test_csv_cut_off_inside_a_quoted_field_is_not_valid_csv() -> None:
    text = DESK_CSV[: DESK_CSV.index("quoted, with") + 7] + "\n"
    assert_source_error(text, 19, None, "not valid CSV")


def test_jsonl_cut_off_mid_object_names_the_row() -> None:
    text = OMS_JSONL[: OMS_JSONL.index('"SPOT.MCX')]
    assert_source_error(text, 13, None, "the file looks cut off", OMS)


def test_json_array_cut_off_is_refused() -> None:
    text = as_array(OMS_JSONL)
    assert_source_error(text[: len(text) // 2], None, None, "the file looks cut off", OMS_ARRAY)


def test_malformed_json_names_byte_and_line() -> None:
    text = as_array(OMS_JSONL).replace('"oms_id": "EQ.NSE.INFY"', '"oms_id": EQ.NSE.INFY')
    assert_source_error(text, None, None, "(line 3)", OMS_ARRAY)
    text = OMS_JSONL.replace('"oms_id": "EQ.NSE.INFY"', '"oms_id": EQ.NSE.INFY')
    assert_source_error(text, 2, None, "not valid JSON: JSON is malformed", OMS)


def test_unparseable_jsonl_line_names_its_row() -> None:
    lines = oms_lines()
    lines[1] += " {}"
    assert_source_error("\n".join(lines) + "\n", 2, None, "trailing characters", OMS)


@pytest.mark.parametrize(
    ("name", "mapping", "text", "row", "field"),
    [
        ("desk.csv", DESK, DESK_CSV.replace("INFOSYS,,", "INFOSYS \xe9,,"), 3, "underlying"),
        ("oms.jsonl", OMS, OMS_JSONL.replace('"INFOSYS"', '"INFOSYS \xe9"'), 2, "name"),
    ],
)
def test_non_utf8_byte_names_its_row_and_field(
    tmp_path: Path, name: str, mapping: Mapping, text: str, row: int, field: str
) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(SourceError) as caught:
        read_generic(path, mapping)
    assert (caught.value.row, caught.value.field) == (row, field)
    assert "0xe9" in str(caught.value)


def test_non_utf8_byte_in_a_json_array_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "oms.json"
    text = as_array(OMS_JSONL.replace('"INFOSYS"', '"INFOSYS \xe9"'))
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(SourceError) as caught:
        read_generic(path, OMS_ARRAY)
    assert (caught.value.row, caught.value.field) == (None, "name")
    assert "0xe9" in caught.value.detail
    assert caught.value.detail.endswith("(line 3)")


@pytest.mark.parametrize(
    ("mapping", "text"),
    [(DESK, DESK_CSV), (OMS, OMS_JSONL), (OMS_ARRAY, as_array(OMS_JSONL))],
    ids=["csv", "jsonl", "json"],
)
def test_byte_order_mark_and_crlf_line_ends_are_tolerated(mapping: Mapping, text: str) -> None:
    expected = parse(text, mapping)
    assert parse("\ufeff" + text, mapping) == expected
    assert parse(text.replace("\n", "\r\n"), mapping) == expected


def test_byte_order_mark_in_a_file_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "oms.json"
    path.write_bytes(b"\xef\xbb\xbf" + as_array(OMS_JSONL).encode())
    assert load_generic(path, OMS_ARRAY) == list(parse(OMS_JSONL, OMS).values())


def test_ten_megabyte_csv_field_is_refused_naming_its_row() -> None:
    text = desk_with("underlying", "N" * 10_000_000)
    assert_source_error(text, 10, None, "not valid CSV: field larger than field limit")


def test_ten_megabyte_json_string_is_read_whole() -> None:
    records = parse(oms_with(5, "name", "N" * 10_000_000), OMS)
    assert len(records[5].name) == 10_000_000


# The mapping file: every mistake is a ConfigError naming the file and the key


def mapping_error(tmp_path: Path, text: str) -> str:
    path = write_mapping(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    assert caught.value.exit_code == EX_CONFIG
    message = str(caught.value)
    assert message.startswith(f"mapping {path}: ")
    return message.removeprefix(f"mapping {path}: ")


BASE = DESK_TOML.read_text(encoding="utf-8")


def test_fixture_mappings_load_with_their_defaults() -> None:
    assert (DESK.name, DESK.format, DESK.feed, DESK.delimiter) == ("desk", "csv", "desk", ",")
    assert (OMS.feed, OMS.feed_column, OMS.date_format) == ("", "venue", "%Y-%m-%d")
    assert (OMS.scale.strike, OMS.scale.tick_size) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('token_kind = "int"', 'token_knd = "int"', "unknown key 'token_knd'"),
        ('token = "desk_id"', 'tokn = "desk_id"', "unknown key 'tokn' in [columns]"),
        ("strike = 0.01", "lot_size = 0.01", "unknown key 'lot_size' in [scale]"),
        ('token = "desk_id"\n', "", "missing key 'token' in [columns]"),
        ('broker = "desk"\n', "", "missing key 'broker'"),
        ('token_kind = "int"', 'token_kind = "float"', "token_kind: Invalid enum value 'float'"),
        ('format = "csv"', 'format = "xml"', "format: Invalid enum value 'xml'"),
        ('feed = "desk"', "feed = 1", "feed: Expected `str`, got `int`"),
        ("strike = 0.01", 'strike = "0.01"', "scale.strike: Expected `float`, got `str`"),
        ('exchange = "exch"', "exchange = []", "columns.exchange: Expected `str`, got `array`"),
        ("strike = 0.01", "strike = 0.0", "[scale]: strike must be a finite number above 0"),
        ("strike = 0.01", "strike = inf", "[scale]: strike must be a finite number above 0"),
        ('exchange = "exch"', 'exchange = ""', "[columns]: exchange must name a column"),
        ('name = "desk"', 'name = "my desk"', "name 'my desk' must be a word"),
        ('broker = "desk"', 'broker = "a:b"', "broker 'a:b' must be 1 to 32 ASCII characters"),
        ('broker = "desk"', f'broker = "{"b" * 33}"', "must be 1 to 32 ASCII characters"),
        ('feed = "desk"', 'feed = "desk"\nfeed_column = "exch"', "give feed or feed_column"),
        ("%d-%b-%Y", "%Y-%m", "date_format '%Y-%m' does not read back a whole date"),
        ('format = "csv"', 'format = "json"\ndelimiter = ";"', "delimiter is for csv only"),
        ('format = "csv"', 'format = "csv"\ndelimiter = ";;"', "delimiter must be one character"),
    ],
)
def test_bad_mapping_is_a_config_error_naming_the_key(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in BASE
    assert expected in mapping_error(tmp_path, BASE.replace(old, new, 1))


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{exch!r}:{symbol}", "write each placeholder as {column}, not {exch!r}"),
        ("{exch}:{symbol:>10}", "not {symbol:>10}"),
        ("{}:{symbol}", "write each placeholder as {column}"),
        ("NSE:SBIN", "reads no column"),
        ("{exch:{symbol}", "key_template '{exch:{symbol}'"),
    ],
)
def test_bad_key_template_is_a_config_error(tmp_path: Path, template: str, expected: str) -> None:
    text = BASE.replace('"{exch}:{symbol}"', repr(template).replace("'", '"'))
    message = mapping_error(tmp_path, text)
    assert message.startswith("[columns]: ")
    assert expected in message


def test_key_and_key_template_are_one_or_the_other(tmp_path: Path) -> None:
    both = BASE.replace("[columns]\n", '[columns]\nkey = "symbol"\n')
    assert "give exactly one of key and key_template" in mapping_error(tmp_path, both)
    neither = BASE.replace('key_template = "{exch}:{symbol}"\n', "")
    assert "give exactly one of key and key_template" in mapping_error(tmp_path, neither)


def test_json_template_columns_may_be_integers_shared_with_a_field() -> None:
    columns = msgspec.structs.replace(OMS.columns, key="", key_template="{exchange}:{xtoken}")
    mapping = msgspec.structs.replace(OMS, columns=columns)
    records = parse(OMS_JSONL, mapping)
    # Row 4 writes xtoken as a JSON integer, row 5 as a string of digits.
    assert (records[4].key, records[4].exchange_token) == ("NFO:52222", 52222)
    assert (records[5].key, records[5].exchange_token) == ("NFO:68114", 68114)


def test_template_braces_doubled_are_literal_text() -> None:
    columns = msgspec.structs.replace(DESK.columns, key_template="{exch}:{{{symbol}}}")
    mapping = msgspec.structs.replace(DESK, columns=columns)
    assert parse(DESK_CSV, mapping)[10].key == "NFO:{NIFTY24APR22500CE}"


def test_mapping_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    assert mapping_error(tmp_path, "name = \n").startswith("not valid TOML: ")


def test_missing_mapping_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_mapping(tmp_path / "nope.toml")


# Round trip: the synthetic universe written as an in-house file reads back unchanged


@pytest.fixture(scope="module")
def universe() -> list[Instrument]:
    return list(generate_universe(5000).instruments())


def token_of(instrument: Instrument, broker: str) -> BrokerToken:
    return next(t for t in instrument.tokens if t.broker == broker)


def test_synthetic_universe_round_trips_through_csv_in_paise(universe: list[Instrument]) -> None:
    rows = [desk_rows()[0]]
    for i in universe:
        exchange, _, symbol = i.key.partition(":")
        rows.append(
            [
                str(token_of(i, "angel").value),
                exchange,
                symbol,
                i.instrument_type,
                i.segment,
                i.name,
                i.expiry.strftime("%d-%b-%Y") if i.expiry else "",
                str(round(i.strike * 100)),
                repr(round(i.tick_size * 100, 4)),
                str(i.lot_size),
                i.isin,
                str(i.exchange_token),
                "",
            ]
        )
    # Angel's tokens are unique per exchange: its feeds are angel:NSE, angel:NFO...
    mapping = msgspec.structs.replace(DESK, broker="angel", feed="", feed_column="exch")
    back = parse(csv_text(rows), mapping)
    assert list(back) == list(range(2, 5002))
    # Paise divided by 100 give back the very floats the universe holds.
    assert list(back.values()) == [
        msgspec.structs.replace(i, tokens=(token_of(i, "angel"),)) for i in universe
    ]


def test_synthetic_universe_round_trips_through_jsonl_with_str_tokens(
    universe: list[Instrument],
) -> None:
    encode = msgspec.json.encode
    lines = [
        encode(
            {
                "key": i.key,
                "oms_id": token_of(i, "upstox").value,
                "exchange": i.exchange,
                "kind": i.instrument_type,
                "name": i.name,
                "expiry": i.expiry,
                "strike": i.strike,
                "tick": i.tick_size,
                "lot": i.lot_size,
                "xtoken": i.exchange_token,
                "isin": i.isin,
            }
        ).decode()
        for i in universe
    ]
    columns = msgspec.structs.replace(OMS.columns, isin="isin")
    mapping = msgspec.structs.replace(
        OMS, broker="upstox", feed="upstox", feed_column="", columns=columns
    )
    back = parse("\n".join(lines) + "\n", mapping)
    assert list(back) == list(range(1, 5001))
    assert list(back.values()) == [
        msgspec.structs.replace(i, tokens=(token_of(i, "upstox"),)) for i in universe
    ]
