"""The Upstox JSON master loader: the documented shapes, every way an object is bad, and a round
trip through the benchmark's writer."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.masters.upstox import write_upstox
from resolverd.errors import EX_DATAERR, EX_NOINPUT, SourceError, SourceMissingError
from resolverd.join import join
from resolverd.loaders.kite import COLUMNS, read_kite
from resolverd.loaders.upstox import (
    load_upstox,
    parse_upstox,
    parse_upstox_rows,
    read_upstox,
    sniff,
)
from resolverd.model import BrokerToken, Instrument
from resolverd.synthetic import generate_universe

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "upstox" / "complete.json"
SOURCE = "upstox=complete.json"
DELETE = object()
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

# Rows of the fixture, numbered as the loader numbers them (the array's first element is row 1).
RELIANCE, JOCIL, SME, TEST_SHARE, BSE_AARTI, NIFTY_INDEX = 1, 3, 4, 6, 7, 10
NIFTY_FUT, NIFTY_CALL, AARTI_FUT, USDINR_CALL, CRUDE_FUT = 12, 13, 16, 21, 23
GOLD_BOND, BSE_BOND, MCX_INDEX = 5, 9, 25
KEPT_ROWS = list(range(1, 25))  # 25, an MCX_INDEX reference row, is a kind resolverd skips

RELIANCE_RECORD = Instrument(
    key="NSE:RELIANCE",
    exchange="NSE",
    segment="NSE",
    instrument_type="EQ",
    name="RELIANCE INDUSTRIES LTD",
    expiry=None,
    strike=0.0,
    tick_size=0.05,
    lot_size=1,
    isin="INE002A01018",
    exchange_token=2885,
    tokens=(BrokerToken("upstox", "upstox", "NSE_EQ|INE002A01018"),),
)
NIFTY_CALL_RECORD = Instrument(
    key="NFO:NIFTY 22500 CE 25 APR 24",
    exchange="NFO",
    segment="NFO-OPT",
    instrument_type="CE",
    name="NIFTY",
    expiry=dt.date(2024, 4, 25),
    strike=22500.0,
    tick_size=0.05,
    lot_size=50,
    isin="",
    exchange_token=68114,
    tokens=(BrokerToken("upstox", "upstox", "NSE_FO|68114"),),
)
NIFTY_INDEX_RECORD = Instrument(
    key="NSE:NIFTY",
    exchange="NSE",
    segment="INDICES",
    instrument_type="EQ",
    name="Nifty 50",
    expiry=None,
    strike=0.0,
    tick_size=0.0,
    lot_size=0,
    isin="",
    exchange_token=26000,
    tokens=(BrokerToken("upstox", "upstox", "NSE_INDEX|Nifty 50"),),
)
USDINR_CALL_RECORD = Instrument(
    key="CDS:USDINR 83.25 CE 26 APR 24",
    exchange="CDS",
    segment="CDS-OPT",
    instrument_type="CE",
    name="USDINR",
    expiry=dt.date(2024, 4, 26),
    strike=83.25,
    tick_size=0.0025,
    lot_size=1,
    isin="",
    exchange_token=11890,
    tokens=(BrokerToken("upstox", "upstox", "NCD_FO|11890"),),
)


def objects() -> list[dict[str, Any]]:
    """A fresh copy of the fixture's objects."""
    loaded: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return loaded


def dump(items: list[Any]) -> str:
    """Objects as Upstox writes them: one line, no blanks, UTF-8 unescaped."""
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False)


def with_key(row: int, key: str, value: Any) -> str:
    """The fixture with one key of one row (numbered from 1) replaced, or deleted."""
    items = objects()
    if value is DELETE:
        del items[row - 1][key]
    else:
        items[row - 1][key] = value
    return dump(items)


def parse(text: str | bytes) -> list[Instrument]:
    return list(parse_upstox(text, SOURCE))


def by_row(text: str) -> dict[int, Instrument]:
    return dict(parse_upstox_rows(text, SOURCE))


def assert_source_error(text: str | bytes, row: int | None, field: str | None, detail: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse(text)
    error = caught.value
    assert (error.source, error.row, error.field) == (SOURCE, row, field)
    assert detail in error.detail
    where = SOURCE + (f": row {row}" if row is not None else "")
    if field is not None:
        where += (", " if row is not None else ": ") + f"field {field}"
    assert str(error).startswith(f"{where}: ")
    assert error.exit_code == EX_DATAERR


@pytest.fixture(scope="module")
def fixture_records() -> dict[int, Instrument]:
    return by_row(FIXTURE.read_text(encoding="utf-8"))


# The documented shapes


def test_fixture_keeps_every_modelled_row_under_its_element_number() -> None:
    loaded = read_upstox(FIXTURE)
    assert loaded.source == SOURCE
    assert loaded.rows == KEPT_ROWS
    assert Counter(r.exchange for r in loaded.instruments) == {
        "NSE": 7,
        "BSE": 4,
        "NFO": 6,
        "BFO": 2,
        "CDS": 2,
        "BCD": 1,
        "MCX": 2,
    }
    assert Counter(r.segment for r in loaded.instruments) == {
        "NSE": 6,
        "BSE": 3,
        "INDICES": 2,
        "NFO-FUT": 2,
        "NFO-OPT": 4,
        "BFO-FUT": 1,
        "BFO-OPT": 1,
        "CDS-FUT": 1,
        "CDS-OPT": 1,
        "BCD-FUT": 1,
        "MCX-FUT": 1,
        "MCX-OPT": 1,
    }


def test_kinds_not_modelled_are_counted_warnings_naming_row_and_field() -> None:
    loaded = read_upstox(FIXTURE)
    assert [(w.row, w.field) for w in loaded.warnings] == [
        (TEST_SHARE, "isin"),
        (MCX_INDEX, "segment"),
    ]
    assert [str(w) for w in loaded.warnings] == [
        "upstox=complete.json: row 6, field isin: 'DUMMYSAN011' is not an ISIN; dropped",
        "upstox=complete.json: row 25, field segment: segment 'MCX_INDEX' is not one resolverd"
        " models",
    ]


def test_parser_without_a_warn_callback_yields_only_kept_rows() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    assert [row for row, _ in parse_upstox_rows(text, SOURCE)] == KEPT_ROWS


def test_share_maps_field_by_field(fixture_records: dict[int, Instrument]) -> None:
    assert fixture_records[RELIANCE] == RELIANCE_RECORD


def test_index_option_maps_field_by_field(fixture_records: dict[int, Instrument]) -> None:
    assert fixture_records[NIFTY_CALL] == NIFTY_CALL_RECORD


def test_currency_option_maps_field_by_field(fixture_records: dict[int, Instrument]) -> None:
    assert fixture_records[USDINR_CALL] == USDINR_CALL_RECORD


def test_index_is_in_the_indices_segment_with_no_lot_or_tick(
    fixture_records: dict[int, Instrument],
) -> None:
    assert fixture_records[NIFTY_INDEX] == NIFTY_INDEX_RECORD


def test_tick_size_is_read_in_paise(fixture_records: dict[int, Instrument]) -> None:
    ticks = {r.key: r.tick_size for r in fixture_records.values()}
    assert ticks["NSE:RELIANCE"] == 0.05
    assert ticks["NSE:JOCIL-BE"] == 0.01
    assert ticks["CDS:USDINR FUT 26 APR 24"] == 0.0025
    assert ticks["MCX:CRUDEOIL FUT 19 APR 24"] == 1.0
    assert ticks["MCX:GOLD 69000 CE 25 APR 24"] == 0.5


def test_nse_series_other_than_eq_is_part_of_the_key_as_kite_names_it(
    fixture_records: dict[int, Instrument],
) -> None:
    assert fixture_records[JOCIL].key == "NSE:JOCIL-BE"
    assert fixture_records[SME].key == "NSE:SAMPLESME-SM"
    assert by_row(with_key(JOCIL, "trading_symbol", "JOCIL-BE"))[JOCIL].key == "NSE:JOCIL-BE"
    assert by_row(with_key(RELIANCE, "trading_symbol", "RELIANCE-EQ"))[RELIANCE].key == (
        "NSE:RELIANCE"
    )


def test_bse_group_is_not_part_of_the_key(fixture_records: dict[int, Instrument]) -> None:
    assert fixture_records[BSE_AARTI].key == "BSE:AARTIIND"
    assert fixture_records[8].key == "BSE:KAVVERITEL"  # group T
    assert fixture_records[BSE_BOND].key == "BSE:800IRFC27"  # group F


def test_nse_gold_bond_loads_as_eq_with_its_series_in_the_key(
    fixture_records: dict[int, Instrument],
) -> None:
    assert fixture_records[GOLD_BOND] == Instrument(
        key="NSE:SGBAUG28V-GB",
        exchange="NSE",
        segment="NSE",
        instrument_type="EQ",
        name="SGB 2.50% AUG 2028",
        tick_size=0.01,
        lot_size=1,
        isin="IN0020200153",
        exchange_token=1738,
        tokens=(BrokerToken("upstox", "upstox", "NSE_EQ|IN0020200153"),),
    )


def test_bse_debt_group_loads_as_eq(fixture_records: dict[int, Instrument]) -> None:
    bond = fixture_records[BSE_BOND]
    assert (bond.segment, bond.instrument_type, bond.isin, bond.exchange_token) == (
        "BSE",
        "EQ",
        "INE053F07AB1",
        961765,
    )


@pytest.mark.parametrize(
    ("series", "key"),
    [
        ("BZ", "NSE:RELIANCE-BZ"),
        ("N1", "NSE:RELIANCE-N1"),
        ("SG", "NSE:RELIANCE-SG"),
        ("GS", "NSE:RELIANCE-GS"),
        ("TB", "NSE:RELIANCE-TB"),
        ("W1", "NSE:RELIANCE-W1"),
        ("RR", "NSE:RELIANCE-RR"),
        ("IV", "NSE:RELIANCE-IV"),
    ],
)
def test_nse_cash_of_any_series_loads_as_eq_keyed_with_its_series(series: str, key: str) -> None:
    warnings: list[tuple[str, int, str]] = []
    text = with_key(RELIANCE, "instrument_type", series)
    record = dict(parse_upstox_rows(text, SOURCE, lambda *w: warnings.append(w)))[RELIANCE]
    assert (record.key, record.segment, record.instrument_type) == (key, "NSE", "EQ")
    assert [w for w in warnings if w[1] == RELIANCE] == []


@pytest.mark.parametrize("itype", ["", "eq", "LONGSERIES", "B-E"])
def test_nse_cash_whose_type_is_not_a_series_is_skipped_with_a_warning(itype: str) -> None:
    warnings: list[tuple[str, int, str]] = []
    text = with_key(RELIANCE, "instrument_type", itype)
    rows = [row for row, _ in parse_upstox_rows(text, SOURCE, lambda *w: warnings.append(w))]
    assert RELIANCE not in rows
    assert (RELIANCE, "instrument_type") in [(row, field) for _, row, field in warnings]


def test_derivative_is_named_after_its_underlying_symbol(
    fixture_records: dict[int, Instrument],
) -> None:
    assert fixture_records[AARTI_FUT].name == "AARTIIND"
    unnamed = by_row(with_key(AARTI_FUT, "underlying_symbol", DELETE))
    assert unnamed[AARTI_FUT].name == "AARTI INDUSTRIES LTD"


def test_future_has_no_strike_and_a_test_share_keeps_no_made_up_isin(
    fixture_records: dict[int, Instrument],
) -> None:
    assert (fixture_records[NIFTY_FUT].strike, fixture_records[NIFTY_FUT].segment) == (
        0.0,
        "NFO-FUT",
    )
    assert fixture_records[TEST_SHARE].isin == ""
    assert fixture_records[TEST_SHARE].tokens[0].value == "NSE_EQ|DUMMYSAN011"


def test_expiry_is_the_date_in_india_not_in_utc() -> None:
    half_past_midnight = dt.datetime(2024, 4, 25, 0, 30, tzinfo=IST)
    assert half_past_midnight.astimezone(dt.UTC).date() == dt.date(2024, 4, 24)
    ms = int(half_past_midnight.timestamp()) * 1000
    assert by_row(with_key(NIFTY_CALL, "expiry", ms))[NIFTY_CALL].expiry == dt.date(2024, 4, 25)


def test_nse_commodity_segment_maps_to_nco() -> None:
    items = objects()
    items[CRUDE_FUT - 1]["segment"] = "NSE_COM"
    items[CRUDE_FUT - 1]["instrument_key"] = "NSE_COM|254789"
    record = by_row(dump(items))[CRUDE_FUT]
    assert (record.key, record.exchange, record.segment) == (
        "NCO:CRUDEOIL FUT 19 APR 24",
        "NCO",
        "NCO-FUT",
    )


def test_unknown_keys_and_key_order_do_not_matter() -> None:
    items = objects()
    shuffled = [dict(reversed(list(item.items()))) for item in items]
    shuffled[0]["nested"] = {"a": [1, {"b": None}], "c": "}"}
    shuffled[0]["future_field"] = [1.5, True, None]
    assert parse(dump(shuffled)) == parse(dump(items))


def test_null_counts_as_absent_for_optional_keys() -> None:
    items = objects()
    items[RELIANCE - 1]["name"] = None
    items[RELIANCE - 1]["isin"] = None
    items[NIFTY_INDEX - 1]["exchange_token"] = None
    records = by_row(dump(items))
    assert (records[RELIANCE].name, records[RELIANCE].isin) == ("", "")
    assert records[NIFTY_INDEX].exchange_token == 0


def test_exchange_token_may_be_a_json_number() -> None:
    assert by_row(with_key(NIFTY_CALL, "exchange_token", 68114))[NIFTY_CALL] == NIFTY_CALL_RECORD


def test_parser_takes_text_bytes_or_lines_and_does_no_io() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    expected = parse(text)
    assert parse(text.encode("utf-8")) == expected
    assert list(parse_upstox(text.splitlines(keepends=True), SOURCE)) == expected


def test_byte_order_mark_and_crlf_line_ends_are_tolerated(tmp_path: Path) -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    variant = "\ufeff" + text.replace("\n", "\r\n")
    assert parse(variant) == parse(text)
    path = tmp_path / "complete.json"
    path.write_bytes(variant.encode("utf-8"))
    assert load_upstox(path) == parse(text)


def test_gzipped_and_plain_files_give_the_same_records(tmp_path: Path) -> None:
    path = tmp_path / "complete.json.gz"
    path.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    loaded = read_upstox(path)
    assert loaded.source == "upstox=complete.json.gz"
    assert loaded.instruments == load_upstox(FIXTURE)


def test_ten_megabyte_field_is_read_whole() -> None:
    huge = "N" * 10_000_000
    assert by_row(with_key(RELIANCE, "name", huge))[RELIANCE].name == huge


def test_ten_megabyte_token_is_refused_with_a_short_message() -> None:
    digits = "1" * 10_000_000  # more than int() converts from text
    items = objects()
    items[NIFTY_CALL - 1].update(instrument_key=f"NSE_FO|{digits}", exchange_token=digits)
    with pytest.raises(SourceError) as caught:
        parse(dump(items))
    assert (caught.value.row, caught.value.field) == (NIFTY_CALL, "exchange_token")
    assert "out of range 0..4294967295" in caught.value.detail
    assert len(str(caught.value)) < 200
    garbage = "x" * 10_000_000
    with pytest.raises(SourceError) as caught:
        parse(with_key(RELIANCE, "exchange_token", garbage))
    assert "is not an integer" in caught.value.detail
    assert len(str(caught.value)) < 200


# The key rule


@pytest.mark.parametrize(
    ("row", "key", "detail"),
    [
        (NIFTY_CALL, "NSE_EQ|68114", "is not NSE_FO|<reference>"),
        (NIFTY_CALL, "NSE_FO68114", "is not NSE_FO|<reference>"),
        (NIFTY_CALL, "NSE_FO|", "is not NSE_FO|<reference>"),
        (NIFTY_CALL, "NSE_FO_X|68114", "is not NSE_FO|<reference>"),
        (NIFTY_CALL, "NSE_FO|68115", "does not end with the exchange_token '68114'"),
        (RELIANCE, "NSE_EQ|INE002A01019", "does not end with the isin 'INE002A01018'"),
        (RELIANCE, "BSE_EQ|INE002A01018", "is not NSE_EQ|<reference>"),
        (NIFTY_INDEX, "BSE_INDEX|Nifty 50", "is not NSE_INDEX|<reference>"),
    ],
)
def test_instrument_key_that_breaks_the_segment_bar_reference_rule_is_refused(
    row: int, key: str, detail: str
) -> None:
    assert_source_error(with_key(row, "instrument_key", key), row, "instrument_key", detail)


def test_derivative_with_a_numeric_exchange_token_still_follows_the_key_rule() -> None:
    text = with_key(NIFTY_CALL, "exchange_token", 68115)
    assert_source_error(text, NIFTY_CALL, "instrument_key", "does not end with the exchange_token")


def test_share_without_an_isin_may_have_any_reference() -> None:
    items = objects()
    del items[RELIANCE - 1]["isin"]
    items[RELIANCE - 1]["instrument_key"] = "NSE_EQ|DUMMY 01"
    record = by_row(dump(items))[RELIANCE]
    assert (record.isin, record.tokens[0].value) == ("", "NSE_EQ|DUMMY 01")


# Bad input: each case names the source, the row (the element's number) and the key


@pytest.mark.parametrize(
    ("row", "key", "value", "detail"),
    [
        # missing keys
        (RELIANCE, "segment", DELETE, "is missing"),
        (RELIANCE, "instrument_key", DELETE, "is missing"),
        (NIFTY_CALL, "trading_symbol", DELETE, "is missing"),
        (NIFTY_CALL, "instrument_type", DELETE, "is missing"),
        (RELIANCE, "exchange_token", DELETE, "is missing"),
        (NIFTY_CALL, "exchange_token", DELETE, "is missing"),
        (RELIANCE, "lot_size", DELETE, "is missing"),
        (NIFTY_CALL, "tick_size", DELETE, "is missing"),
        (NIFTY_CALL, "expiry", DELETE, "is missing: a derivative needs one"),
        (NIFTY_CALL, "strike_price", DELETE, "is missing: an option needs one"),
        (NIFTY_CALL, "trading_symbol", "", "is empty"),
        # wrong JSON types
        (RELIANCE, "segment", 7, "Expected `str`, got `int`"),
        (RELIANCE, "lot_size", "1", "Expected `int | null`, got `str`"),
        (RELIANCE, "lot_size", 1.5, "Expected `int | null`, got `float`"),
        (RELIANCE, "lot_size", True, "Expected `int | null`, got `bool`"),
        (NIFTY_CALL, "expiry", "2024-04-25", "Expected `int | null`, got `str`"),
        (NIFTY_CALL, "expiry", 1714069799000.0, "Expected `int | null`, got `float`"),
        (NIFTY_CALL, "strike_price", "22500", "Expected `float | null`, got `str`"),
        (NIFTY_CALL, "tick_size", "5.0", "Expected `float | null`, got `str`"),
        (RELIANCE, "exchange_token", 28.85, "Expected `int | str | null`, got `float`"),
        # bad and overflowing integers
        (RELIANCE, "exchange_token", "28x85", "'28x85' is not an integer"),
        (RELIANCE, "exchange_token", "", "is empty"),
        (RELIANCE, "exchange_token", "4294967296", "out of range 0..4294967295"),
        (RELIANCE, "exchange_token", 2**64, "out of range 0..4294967295"),
        (RELIANCE, "lot_size", 2**32, "out of range 0..4294967295"),
        (RELIANCE, "lot_size", 10**30, "out of range 0..4294967295"),
        (NIFTY_CALL, "expiry", 10**20, "beyond the last date"),
        # bad dates and prices
        (
            NIFTY_CALL,
            "expiry",
            1714069799,
            "before 2000-01-01 in epoch milliseconds (epoch seconds?)",
        ),
        (NIFTY_CALL, "expiry", 0, "before 2000-01-01"),
        # negatives
        (RELIANCE, "lot_size", -1, "-1 is negative"),
        (RELIANCE, "exchange_token", "-2885", "'-2885' is negative"),
        (RELIANCE, "exchange_token", -2885, "-2885 is negative"),
        (NIFTY_CALL, "strike_price", -22500.0, "-22500.0 is negative"),
        (NIFTY_CALL, "tick_size", -5.0, "-5.0 is negative"),
        (NIFTY_CALL, "expiry", -1, "before 2000-01-01"),
    ],
)
def test_bad_value_is_a_source_error_naming_row_and_key(
    row: int, key: str, value: Any, detail: str
) -> None:
    assert_source_error(with_key(row, key, value), row, key, detail)


@pytest.mark.parametrize("key", ["strike_price", "tick_size"])
def test_price_beyond_a_double_is_refused(key: str) -> None:
    text = with_key(NIFTY_CALL, key, 123.0).replace(f'"{key}":123.0', f'"{key}":1e999')
    assert_source_error(text, NIFTY_CALL, key, "Number out of range")


def test_bad_lot_size_message_reads_like_the_style_guide() -> None:
    with pytest.raises(SourceError) as caught:
        parse(with_key(NIFTY_CALL, "lot_size", "50"))
    assert str(caught.value) == (
        "upstox=complete.json: row 13, field lot_size: Expected `int | null`, got `str`"
    )


def test_zero_strike_and_negative_zero_are_accepted_as_zero() -> None:
    record = by_row(with_key(NIFTY_CALL, "strike_price", -0.0))[NIFTY_CALL]
    assert (record.strike, str(record.strike)) == (0.0, "0.0")


def test_a_bad_value_in_a_skipped_row_is_not_checked() -> None:
    items = objects()
    items[MCX_INDEX - 1]["exchange_token"] = "not a token"  # an MCX_INDEX reference row
    items[MCX_INDEX - 1]["instrument_key"] = "somewhere else"
    assert len(parse(dump(items))) == len(parse(dump(objects())))


def test_top_level_that_is_not_an_array_is_refused() -> None:
    assert_source_error(json.dumps(objects()[0]), None, None, "the top level is not a JSON array")


def test_element_that_is_not_an_object_names_its_row() -> None:
    text = dump([*objects()[:2], "NSE_EQ|INE002A01018"])
    assert_source_error(text, 3, None, "the element is not a JSON object")


@pytest.mark.parametrize("text", ["", "   \n", "\ufeff"])
def test_empty_input_has_no_instruments(text: str) -> None:
    assert_source_error(text, None, None, "no instruments: the input is empty")


def test_empty_array_has_no_instruments() -> None:
    assert_source_error("[]", None, None, "no instruments: the JSON array is empty")


def test_array_of_kinds_not_modelled_only_has_no_instruments() -> None:
    text = dump([objects()[MCX_INDEX - 1]])
    assert_source_error(text, None, None, "none of the 1 rows is of a kind resolverd models")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "complete.json"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"^upstox=complete\.json: no instruments"):
        load_upstox(path)


def test_file_cut_off_inside_an_object_names_the_row_it_ends_in() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    cut = text[: text.index('"NSE_FO|68114"')]
    assert_source_error(cut, NIFTY_CALL, None, "the JSON is cut off: it ends at line 14")


def test_file_cut_off_between_objects_names_the_next_row() -> None:
    text = dump(objects())
    cut = text[: text.index('{"weekly":false,"segment":"NSE_FO","name":"NIFTY"')]
    assert_source_error(cut, NIFTY_FUT, None, "the JSON is cut off")


def test_file_cut_off_before_the_closing_bracket_names_the_row_after_the_last() -> None:
    text = dump(objects())
    assert_source_error(text[:-1], 26, None, "the JSON is cut off")


def test_syntax_error_names_row_line_and_byte_offset() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    lines[3] = lines[3].replace("},", "}")  # line 4 is row 3; the comma after it goes missing
    row_4 = sum(len(line) for line in lines[:4])  # where line 5, row 4, starts (ASCII)
    assert_source_error(
        "".join(lines),
        4,
        None,
        f"not valid JSON at line 5, byte offset {row_4}: expected ',' or ']'",
    )


def test_text_after_the_array_is_refused_without_a_row() -> None:
    text = dump(objects()) + " trailing"
    assert_source_error(text, None, None, "trailing characters")


def test_non_utf8_byte_names_its_row_on_a_one_line_master(tmp_path: Path) -> None:
    items = objects()
    items[BSE_AARTI - 1]["name"] = "AARTI \xe9"
    path = tmp_path / "complete.json"
    path.write_bytes(dump(items).encode("utf-8").replace(b"\xc3\xa9", b"\xe9"))
    with pytest.raises(SourceError) as caught:
        load_upstox(path)
    assert (caught.value.source, caught.value.row) == (SOURCE, BSE_AARTI)
    assert "byte 0xe9 at line 1, byte offset" in caught.value.detail
    assert str(caught.value).startswith("upstox=complete.json: row 7, field name: byte 0xe9")


def test_non_utf8_byte_in_a_key_the_loader_ignores_is_refused_too() -> None:
    items = objects()
    items[0]["short_name"] = "\xe9"
    data = dump(items).encode("utf-8").replace(b"\xc3\xa9", b"\xff")
    assert_source_error(data, 1, "short_name", "byte 0xff at line 1")


def test_missing_file_is_source_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceMissingError) as caught:
        load_upstox(tmp_path / "complete.json")
    assert caught.value.source == SOURCE
    assert caught.value.exit_code == EX_NOINPUT


def test_source_label_defaults_to_the_file_name_and_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "NSE.json"
    path.write_text(with_key(2, "lot_size", -1), encoding="utf-8")
    with pytest.raises(SourceError, match=r"^upstox=NSE\.json: row 2, field lot_size"):
        load_upstox(path)
    with pytest.raises(SourceError, match=r"^bod: row 2, field lot_size"):
        load_upstox(str(path), source="bod")


# Sniffing


def test_sniff_recognises_an_upstox_master_by_its_first_instrument_key() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    assert sniff(text[:65_536])
    assert sniff(dump(objects())[:200])
    assert sniff(json.dumps(objects()[NIFTY_CALL - 1 :], indent=2)[:400])


@pytest.mark.parametrize(
    "head",
    [
        ",".join(COLUMNS) + "\n1793,7,AARTIIND,AARTI INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE\n",
        "10100000002885,RELIANCE INDUSTRIES LTD,0,1,0.05,INE002A01018,0915-1530|1815-1915:,"
        "2024-06-25,,NSE:RELIANCE-EQ,10,10,2885,RELIANCE,2885,-1.0,XX,10100000002885,None,0,0.0\n",
        "SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME\nNSE,E,1333,EQUITY\n",
        '[{"token":"2885","symbol":"RELIANCE-EQ","name":"RELIANCE","expiry":"","strike":'
        '"-1.000000","lotsize":"1","instrumenttype":"","exch_seg":"NSE","tick_size":"5.000000"}]',
        "[]",
        '{"segment":"NSE_EQ","instrument_key":"NSE_EQ|INE002A01018"}',
        '[{"segment":"NSE_EQ","instrument_key":"NSE|2885"}]',
    ],
    ids=["kite", "fyers", "dhan", "angel", "empty-array", "one-object", "unknown-segment"],
)
def test_sniff_refuses_other_brokers_and_non_masters(head: str) -> None:
    assert not sniff(head)


# The writer


def test_writer_round_trip_keeps_keys_tokens_and_metadata(tmp_path: Path) -> None:
    universe = list(generate_universe(5000).instruments())
    path = tmp_path / "complete.json.gz"
    assert write_upstox(universe, path) == 5000
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    loaded = read_upstox(path)
    assert loaded.warnings == []
    assert len(loaded) == 5000
    for wrote, read in zip(universe, loaded.instruments, strict=True):
        upstox = tuple(t for t in wrote.tokens if t.broker == "upstox")
        assert read.tokens == upstox
        assert (
            read.key,
            read.exchange,
            read.segment,
            read.instrument_type,
            read.name,
            read.expiry,
            read.strike,
            read.lot_size,
            read.isin,
            read.exchange_token,
        ) == (
            wrote.key,
            wrote.exchange,
            wrote.segment,
            wrote.instrument_type,
            wrote.name,
            wrote.expiry,
            wrote.strike,
            wrote.lot_size,
            wrote.isin,
            wrote.exchange_token,
        )
        assert read.tick_size == pytest.approx(wrote.tick_size, rel=1e-12)
    series = {r.key.rpartition("-")[2] for r in loaded.instruments if r.exchange == "NSE"}
    assert {"BE", "SM"} <= series  # the universe's series tags survived the trip


def test_writer_writes_only_instruments_with_an_upstox_token(tmp_path: Path) -> None:
    universe = list(generate_universe(1000, brokers=("kite", "upstox")).instruments())
    without = [r if i % 3 else without_upstox(r) for i, r in enumerate(universe)]
    path = tmp_path / "complete.json"
    written = write_upstox(without, path)
    assert written == sum(1 for i in range(1000) if i % 3)
    assert len(json.loads(path.read_text(encoding="utf-8"))) == written
    assert [r.key for r in load_upstox(path)] == [r.key for i, r in enumerate(universe) if i % 3]


def without_upstox(record: Instrument) -> Instrument:
    """`record` with its upstox token removed."""
    return msgspec.structs.replace(
        record, tokens=tuple(t for t in record.tokens if t.broker != "upstox")
    )


# The join key


def test_fixture_joins_the_real_kite_dump_on_exchange_tokens(kite_file: Path) -> None:
    joined = join([read_kite(kite_file), read_upstox(FIXTURE)])
    by_key = {r.key: r for r in joined.instruments}
    assert by_key["NFO:NIFTY24APR22500CE"].tokens == (
        BrokerToken("kite", "kite", 17437186),
        BrokerToken("upstox", "upstox", "NSE_FO|68114"),
    )
    both = sorted(r.key for r in joined.instruments if len(r.tokens) == 2)
    assert both == [
        "BSE:AARTIIND",
        "NFO:AARTIIND24APR550CE",
        "NFO:AARTIIND24APRFUT",
        "NFO:NIFTY2441022500CE",
        "NFO:NIFTY24APR22500CE",
        "NFO:NIFTY24APR22500PE",
        "NFO:NIFTY24APRFUT",
        "NSE:AARTIIND",
        "NSE:RELIANCE",
    ]
    assert joined.merged_rows == len(both)
