"""The Angel One scrip master loader: a fixture written from Angel's public samples, every way
an element or the document is bad, and a round trip through the benchmark's writer."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.masters.angel import write_angel
from resolverd.errors import EX_DATAERR, EX_NOINPUT, SourceError, SourceMissingError
from resolverd.loaders.angel import FIELDS, load_angel, parse_angel_rows, read_angel, sniff
from resolverd.loaders.kite import HEADER_PREFIX, load_kite
from resolverd.model import BrokerToken, Instrument, Registry
from resolverd.synthetic import generate_universe

SOURCE = "angel=OpenAPIScripMaster.json"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "angel" / "OpenAPIScripMaster.json"

# Three elements as Angel writes them: rows 1, 2 and 3 of `master(*ROWS)`.
CASH = {
    "token": "2885",
    "symbol": "RELIANCE-EQ",
    "name": "RELIANCE",
    "expiry": "",
    "strike": "-1.000000",
    "lotsize": "1",
    "instrumenttype": "",
    "exch_seg": "NSE",
    "tick_size": "5.000000",
}
OPTION = {
    "token": "68114",
    "symbol": "NIFTY25APR2422500CE",
    "name": "NIFTY",
    "expiry": "25APR2024",
    "strike": "2250000.000000",
    "lotsize": "50",
    "instrumenttype": "OPTIDX",
    "exch_seg": "NFO",
    "tick_size": "5.000000",
}
FUTURE = {
    "token": "52222",
    "symbol": "NIFTY25APR24FUT",
    "name": "NIFTY",
    "expiry": "25APR2024",
    "strike": "-1.000000",
    "lotsize": "50",
    "instrumenttype": "FUTIDX",
    "exch_seg": "NFO",
    "tick_size": "5.000000",
}
ROWS = (CASH, OPTION, FUTURE)

RELIANCE = Instrument(
    key="NSE:RELIANCE",
    exchange="NSE",
    segment="NSE",
    instrument_type="EQ",
    name="RELIANCE",
    expiry=None,
    strike=0.0,
    tick_size=0.05,
    lot_size=1,
    exchange_token=2885,
    tokens=(BrokerToken(broker="angel", feed="angel:NSE", value=2885),),
)
NIFTY_CALL = Instrument(
    key="NFO:NIFTY25APR2422500CE",
    exchange="NFO",
    segment="NFO-OPT",
    instrument_type="CE",
    name="NIFTY",
    expiry=dt.date(2024, 4, 25),
    strike=22500.0,
    tick_size=0.05,
    lot_size=50,
    exchange_token=68114,
    tokens=(BrokerToken(broker="angel", feed="angel:NFO", value=68114),),
)
NIFTY_FUTURE = Instrument(
    key="NFO:NIFTY25APR24FUT",
    exchange="NFO",
    segment="NFO-FUT",
    instrument_type="FUT",
    name="NIFTY",
    expiry=dt.date(2024, 4, 25),
    strike=0.0,
    tick_size=0.05,
    lot_size=50,
    exchange_token=52222,
    tokens=(BrokerToken(broker="angel", feed="angel:NFO", value=52222),),
)


def master(*rows: Any) -> str:
    """A scrip master as Angel serves it: the whole array on one line."""
    return json.dumps(list(rows), separators=(",", ":"), ensure_ascii=False)


def with_field(field: str, value: Any, row: int = 2) -> str:
    """The three sample rows with one value of one row (counted from 1) replaced."""
    rows = [dict(r) for r in ROWS]
    rows[row - 1][field] = value
    return master(*rows)


def parse(text: str | bytes) -> list[Instrument]:
    return [instrument for _, instrument in parse_angel_rows(text, SOURCE)]


def assert_source_error(
    text: str | bytes, row: int | None, field: str | None, detail: str
) -> SourceError:
    with pytest.raises(SourceError) as caught:
        parse(text)
    error = caught.value
    assert (error.source, error.row, error.field) == (SOURCE, row, field)
    assert detail in error.detail
    where = SOURCE + (f": row {row}" if row is not None else "")
    where += f"{',' if row is not None else ':'} field {field}" if field is not None else ""
    assert str(error).startswith(f"{where}: ")
    assert error.exit_code == EX_DATAERR
    return error


# The fixture: one of each kind Angel lists, written from its public samples


@pytest.fixture(scope="module")
def fixture() -> Any:
    return read_angel(FIXTURE)


def test_fixture_keeps_modelled_rows_and_warns_once_per_skipped_row(fixture: Any) -> None:
    skipped = [(w.row, w.field) for w in fixture.warnings]
    assert skipped == [
        (26, "instrumenttype"),
        (29, "instrumenttype"),
        (30, "exch_seg"),
    ]
    assert fixture.rows == [r for r in range(1, 31) if r not in dict(skipped)]
    assert fixture.source == SOURCE


def test_fixture_warnings_say_what_was_skipped_and_why(fixture: Any) -> None:
    details = [w.detail for w in fixture.warnings]
    assert details[0] == (
        "skipped instrument type: 'UNDCUR' on CDS is not a cash security, an index, a future"
        " or an option"
    )
    assert "'COMDTY' on MCX" in details[1]
    assert details[2].startswith("skipped exchange segment: NCDEX has no Kite exchange")


def test_fixture_counts_per_segment(fixture: Any) -> None:
    assert Counter(i.segment for i in fixture.instruments) == {
        "INDICES": 3,
        "NSE": 8,
        "BSE": 2,
        "NFO-FUT": 2,
        "NFO-OPT": 6,
        "BFO-FUT": 1,
        "BFO-OPT": 1,
        "CDS-FUT": 1,
        "CDS-OPT": 1,
        "MCX-FUT": 1,
        "MCX-OPT": 1,
    }


def test_fixture_rows_map_field_by_field(fixture: Any) -> None:
    by_key = {i.key: i for i in fixture.instruments}
    assert by_key["NSE:RELIANCE"] == RELIANCE
    assert by_key["NFO:NIFTY25APR2422500CE"] == NIFTY_CALL
    assert by_key["NSE:Nifty 50"] == Instrument(
        key="NSE:Nifty 50",
        exchange="NSE",
        segment="INDICES",
        instrument_type="EQ",
        name="NIFTY",
        tick_size=0.0,
        exchange_token=99926000,
        tokens=(BrokerToken("angel", "angel:NSE", 99926000),),
    )
    assert by_key["CDS:USDINR24APR83.25CE"] == Instrument(
        key="CDS:USDINR24APR83.25CE",
        exchange="CDS",
        segment="CDS-OPT",
        instrument_type="CE",
        name="USDINR",
        expiry=dt.date(2024, 4, 26),
        strike=83.25,
        tick_size=0.0025,
        lot_size=1,
        exchange_token=11972,
        tokens=(BrokerToken("angel", "angel:CDS", 11972),),
    )
    crude = by_key["MCX:CRUDEOIL24APR6900CE"]
    assert (crude.segment, crude.strike, crude.tick_size, crude.lot_size) == (
        "MCX-OPT",
        6900.0,
        0.1,
        100,
    )
    assert by_key["MCX:CRUDEOIL24APRFUT"].tick_size == 1.0
    assert by_key["BFO:SENSEX24MAR75000PE"].instrument_type == "PE"
    assert by_key["NFO:IDEA25APR2413CE"].strike == 13.0


def test_cash_keys_drop_only_the_eq_series(fixture: Any) -> None:
    keys = {i.key for i in fixture.instruments if i.segment in ("NSE", "BSE")}
    assert keys == {
        "NSE:RELIANCE",
        "NSE:SBIN",
        "NSE:AARTIIND",
        "NSE:STALLION-BE",
        "NSE:VEEKAYEM-SM",
        "NSE:782GJ32-SG",
        "NSE:SGBJUL29IV-GB",
        "NSE:865IHFL27-N1",
        "BSE:RELIANCE",
        "BSE:AARTIIND",
    }


def test_nse_debt_in_the_cash_segment_loads_as_eq_with_its_series_in_the_key(
    fixture: Any,
) -> None:
    by_key = {i.key: i for i in fixture.instruments}
    assert by_key["NSE:782GJ32-SG"] == Instrument(
        key="NSE:782GJ32-SG",
        exchange="NSE",
        segment="NSE",
        instrument_type="EQ",
        name="782GJ32",
        tick_size=0.01,
        lot_size=100,
        exchange_token=10196,
        tokens=(BrokerToken("angel", "angel:NSE", 10196),),
    )
    gold_bond, debenture = by_key["NSE:SGBJUL29IV-GB"], by_key["NSE:865IHFL27-N1"]
    assert (gold_bond.segment, gold_bond.instrument_type, gold_bond.exchange_token) == (
        "NSE",
        "EQ",
        5113,
    )
    assert (debenture.segment, debenture.instrument_type, debenture.exchange_token) == (
        "NSE",
        "EQ",
        28856,
    )


def test_each_exchange_segment_is_its_own_feed(fixture: Any) -> None:
    registry = Registry.from_instruments(fixture.instruments)
    (angel,) = registry.tokens
    assert (angel.broker, angel.kind) == ("angel", "int")
    assert set(angel.feeds.categories) == {
        "angel:NSE",
        "angel:BSE",
        "angel:NFO",
        "angel:BFO",
        "angel:CDS",
        "angel:MCX",
    }
    assert all(i.exchange_token == i.tokens[0].value for i in fixture.instruments)


def test_nfo_tokens_are_the_exchange_tokens_kite_lists(fixture: Any, kite_file: Path) -> None:
    kite = {(i.exchange, i.exchange_token): i for i in load_kite(kite_file)}
    nfo = [i for i in fixture.instruments if i.exchange == "NFO"]
    assert len(nfo) == 8
    for angel in nfo:
        same = kite[("NFO", angel.exchange_token)]
        assert (same.segment, same.instrument_type, same.expiry, same.strike, same.lot_size) == (
            angel.segment,
            angel.instrument_type,
            angel.expiry,
            angel.strike,
            angel.lot_size,
        )


# Recognising the format


def test_sniff_accepts_angel_masters_one_line_or_pretty() -> None:
    assert sniff(FIXTURE.read_text(encoding="utf-8")[:65536])
    assert sniff(master(*ROWS))
    assert sniff(json.dumps(list(ROWS), indent=2))


@pytest.mark.parametrize(
    "head",
    [
        HEADER_PREFIX + ",name,last_price,expiry,strike,tick_size,lot_size,instrument_type\n",
        '[{"segment":"NSE_EQ","name":"RELIANCE","exchange":"NSE","instrument_key":'
        '"NSE_EQ|INE002A01018","exchange_token":"2885","trading_symbol":"RELIANCE",'
        '"lot_size":1,"instrument_type":"EQ","tick_size":5.0}]',
        "10100000002885,RELIANCE INDUSTRIES LTD,0,1,0.05,INE002A01018,0915-1530|1815-1915:,",
        "SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME\n",
        "[]",
        '{"token":"2885","symbol":"RELIANCE-EQ","exch_seg":"NSE"}',
        "[1, 2, 3]",
        "",
    ],
)
def test_sniff_refuses_other_formats(head: str) -> None:
    assert not sniff(head)


# The parser on inline text


def test_parser_needs_no_file_and_yields_rows_in_order() -> None:
    rows = list(parse_angel_rows(master(*ROWS), SOURCE))
    assert rows == [(1, RELIANCE), (2, NIFTY_CALL), (3, NIFTY_FUTURE)]


def test_text_and_utf8_bytes_read_the_same() -> None:
    assert parse(master(*ROWS).encode()) == parse(master(*ROWS))


def test_option_type_comes_from_the_symbols_last_two_letters() -> None:
    put = parse(with_field("symbol", "NIFTY25APR2422500PE"))[1]
    assert (put.instrument_type, put.segment) == ("PE", "NFO-OPT")


def test_currency_option_strike_is_ten_million_times_the_rupees() -> None:
    text = master(OPTION | {"exch_seg": "CDS", "instrumenttype": "OPTCUR", "strike": "8350000"})
    assert parse(text)[0].strike == 0.835


def test_minus_one_strike_means_none_and_other_negatives_are_refused() -> None:
    assert parse(with_field("strike", "-1"))[1].strike == 0.0
    assert_source_error(with_field("strike", "-2250000.000000"), 2, "strike", "is negative")


def test_extra_keys_are_ignored_whatever_their_type() -> None:
    extra = OPTION | {"freeze_qty": "1800", "is_cas_enabled": False, "more": {"a": [1, None]}}
    assert parse(master(extra)) == [NIFTY_CALL]


def test_key_order_does_not_matter() -> None:
    assert parse(master(dict(reversed(OPTION.items())))) == [NIFTY_CALL]


def test_index_rows_on_any_modelled_segment_are_indices() -> None:
    sensex = {
        "token": "99919000",
        "symbol": "SENSEX",
        "name": "SENSEX",
        "expiry": "",
        "strike": "0.000000",
        "lotsize": "1",
        "instrumenttype": "AMXIDX",
        "exch_seg": "BSE",
        "tick_size": "0.000000",
    }
    (index,) = parse(master(sensex))
    assert (index.key, index.exchange, index.segment, index.instrument_type) == (
        "BSE:SENSEX",
        "BSE",
        "INDICES",
        "EQ",
    )


@pytest.mark.parametrize(
    ("changes", "field", "detail"),
    [
        ({"exch_seg": "NCDEX"}, "exch_seg", "NCDEX has no Kite exchange"),
        ({"exch_seg": "NSE_SLBM"}, "exch_seg", "'NSE_SLBM' is not one of NSE, BSE"),
        ({"instrumenttype": "COMDTY"}, "instrumenttype", "'COMDTY' on NFO"),
        ({"instrumenttype": "", "exch_seg": "MCX"}, "instrumenttype", "an empty instrumenttype"),
    ],
)
def test_rows_of_kinds_not_modelled_are_skipped_with_a_warning(
    changes: dict[str, str], field: str, detail: str
) -> None:
    warnings: list[tuple[str, int, str | None]] = []
    rows = [CASH, OPTION | changes, FUTURE]
    kept = list(parse_angel_rows(master(*rows), SOURCE, lambda *w: warnings.append(w)))
    assert [row for row, _ in kept] == [1, 3]
    ((text, row, named),) = warnings
    assert (row, named) == (2, field)
    assert detail in text


@pytest.mark.parametrize(
    ("symbol", "key"),
    [
        ("RELIANCE-EQ", "NSE:RELIANCE"),
        ("CENTRALBK-BE", "NSE:CENTRALBK-BE"),
        ("VEEKAYEM-SM", "NSE:VEEKAYEM-SM"),
        ("INDIGRID-IV", "NSE:INDIGRID-IV"),
        ("EMBASSY-RR", "NSE:EMBASSY-RR"),
        ("BAJAJ-AUTO-EQ", "NSE:BAJAJ-AUTO"),
        ("SGBJUL29IV-GB", "NSE:SGBJUL29IV-GB"),
        ("610GS2031-GS", "NSE:610GS2031-GS"),
        ("782GJ32-SG", "NSE:782GJ32-SG"),
        ("182D110724-TB", "NSE:182D110724-TB"),
        ("865IHFL27-N1", "NSE:865IHFL27-N1"),
        ("IRFC-W1", "NSE:IRFC-W1"),
        ("NIFTY", "NSE:NIFTY"),
    ],
)
def test_nse_cash_rows_of_every_series_load_as_eq_and_keep_all_but_the_eq_series(
    symbol: str, key: str
) -> None:
    warnings: list[tuple[str, int, str | None]] = []
    rows = list(
        parse_angel_rows(
            master(CASH | {"symbol": symbol}, OPTION), SOURCE, lambda *w: warnings.append(w)
        )
    )
    assert [row for row, _ in rows] == [1, 2]
    cash = rows[0][1]
    assert (cash.key, cash.segment, cash.instrument_type) == (key, "NSE", "EQ")
    assert warnings == []


def test_bse_cash_symbols_carry_no_series_and_are_all_kept() -> None:
    (row,) = parse(master(CASH | {"exch_seg": "BSE", "symbol": "RELIANCE", "token": "500325"}))
    assert (row.key, row.segment, row.tokens) == (
        "BSE:RELIANCE",
        "BSE",
        (BrokerToken("angel", "angel:BSE", 500325),),
    )


def test_skipped_rows_are_not_checked_further() -> None:
    ncdex = FUTURE | {"exch_seg": "NCDEX", "token": "not a number", "expiry": "someday"}
    assert parse(master(CASH, ncdex)) == [RELIANCE]


def test_only_rows_of_kinds_not_modelled_is_no_instruments() -> None:
    error = assert_source_error(
        master(CASH | {"exch_seg": "NCDEX"}, OPTION | {"instrumenttype": "UNDCUR"}),
        None,
        None,
        "no instruments: all 2 rows were of kinds not modelled",
    )
    assert error.row is None


# Bad values: each names the row (the array element, from 1) and the key


def test_bad_token_message_reads_like_the_style_guide() -> None:
    with pytest.raises(SourceError) as caught:
        parse(with_field("token", "12x34"))
    assert str(caught.value) == (
        "angel=OpenAPIScripMaster.json: row 2, field token: '12x34' is not an integer"
    )


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("token", "", "is empty"),
        ("token", "68114.0", "is not an integer"),
        ("token", " 68114", "is not an integer"),
        ("token", "-68114", "'-68114' is negative"),
        ("token", str(2**32), "out of range 0..4294967295"),
        ("token", "9" * 80, "(80 characters) is out of range"),
        ("lotsize", "50.0", "'50.0' is not an integer"),
        ("lotsize", "-50", "is negative"),
        ("lotsize", "", "is empty"),
        ("lotsize", str(2**32), "out of range"),
        ("expiry", "2024-04-25", "is not a date in Angel's DDMMMYYYY"),
        ("expiry", "25-04-2024", "is not a date in Angel's DDMMMYYYY"),
        ("expiry", "25apr2024", "is not a date in Angel's DDMMMYYYY"),
        ("expiry", "25APR24", "is not a date in Angel's DDMMMYYYY"),
        ("expiry", "31FEB2024", "'31FEB2024' is not a date: day is out of range"),
        ("expiry", "", "is empty, but an option needs one"),
        ("strike", "abc", "'abc' is not a number"),
        ("strike", "", "is empty"),
        ("strike", "nan", "is not a finite number"),
        ("strike", "1e999", "is not a finite number"),
        ("strike", "22_500", "is not a plain decimal number"),
        ("strike", "-5", "is negative"),
        ("tick_size", "5.0x", "is not a number"),
        ("tick_size", "-5.000000", "is negative"),
        ("tick_size", "NaN", "is not a finite number"),
        ("symbol", "", "is empty"),
        ("symbol", "NIFTY25APR2422500", "ends in neither CE nor PE"),
    ],
)
def test_bad_value_is_a_source_error_naming_row_and_key(
    field: str, value: str, detail: str
) -> None:
    assert_source_error(with_field(field, value), 2, field, detail)


def test_future_without_expiry_is_refused() -> None:
    assert_source_error(with_field("expiry", "", row=3), 3, "expiry", "a future needs one")


def test_derivative_on_a_cash_segment_is_refused() -> None:
    text = with_field("exch_seg", "NSE")
    assert_source_error(text, 2, "instrumenttype", "'OPTIDX' on NSE, a cash segment")


# Bad documents


@pytest.mark.parametrize("field", FIELDS)
def test_missing_key_is_named(field: str) -> None:
    rows = [dict(r) for r in ROWS]
    del rows[1][field]
    assert_source_error(master(*rows), 2, field, "is missing")


@pytest.mark.parametrize(
    ("value", "got"),
    [(68114, "a number"), (None, "null"), (True, "a boolean"), ({"v": "1"}, "an object")],
)
def test_value_that_is_not_a_string_is_named(value: Any, got: str) -> None:
    assert_source_error(with_field("token", value), 2, "token", f"is {got}, not a string")


def test_element_that_is_not_an_object_names_its_row() -> None:
    assert_source_error(master(CASH, ["2885"], FUTURE), 2, None, "the element is an array")


def test_top_level_that_is_not_an_array_is_refused() -> None:
    assert_source_error(json.dumps(CASH), None, None, "the top level is an object, not an array")


@pytest.mark.parametrize("text", ["", "   \r\n", "\ufeff"])
def test_empty_input_has_no_instruments(text: str) -> None:
    assert_source_error(text, None, None, "no instruments: the input is empty")


def test_empty_array_has_no_instruments() -> None:
    assert_source_error("[ ]", None, None, "no instruments: the array is empty")


def test_file_cut_off_inside_an_object_names_the_element() -> None:
    text = master(*ROWS)
    cut = text[: text.index('"strike"', text.index("NIFTY25APR24FUT"))]
    assert_source_error(
        cut, 3, None, f"the file is cut off: it ends inside element 3 (byte {len(cut)})"
    )


def test_file_cut_off_inside_a_string_that_holds_a_comma_names_the_element() -> None:
    text = master(CASH, OPTION | {"name": "NIFTY, the index"}, FUTURE)
    cut = text[: text.index("the index")]
    assert_source_error(cut, 2, None, "it ends inside element 2")


def test_syntax_error_gives_line_column_and_element() -> None:
    lines = json.dumps(list(ROWS), indent=1).splitlines()
    broken = [line.replace('"NIFTY25APR24FUT",', '"NIFTY25APR24FUT"') for line in lines]
    line = next(n for n, text in enumerate(broken, 1) if "NIFTY25APR24FUT" in text) + 1
    error = assert_source_error("\n".join(broken), 3, None, f"not valid JSON at line {line}")
    assert "expected ',' or '}'" in error.detail


def test_element_count_skips_commas_brackets_and_escaped_quotes_inside_strings() -> None:
    tricky = 'say "hi", [ok] {no} \\'
    text = master(CASH | {"name": tricky}, OPTION | {"name": tricky + '"'}, FUTURE)
    broken = text.replace('"NIFTY25APR24FUT",', '"NIFTY25APR24FUT"')
    assert_source_error(broken, 3, None, "not valid JSON at line 1")


def test_text_after_the_array_is_refused() -> None:
    assert_source_error(master(*ROWS) + " []", None, None, "trailing characters")


# The file edge


def test_non_utf8_byte_names_its_element_not_its_line(tmp_path: Path) -> None:
    path = tmp_path / "OpenAPIScripMaster.json"
    text = master(CASH, OPTION | {"name": "NIFTY \u00e9"}, FUTURE)
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(SourceError) as caught:
        load_angel(path)
    assert (caught.value.source, caught.value.row, caught.value.field) == (SOURCE, 2, "name")
    assert "byte 0xe9" in caught.value.detail
    assert "(line 1)" in caught.value.detail


def test_non_utf8_byte_in_an_ignored_key_is_refused_too() -> None:
    text = master(CASH, OPTION | {"freeze_qty": "\u00e9"}).encode("latin-1")
    assert_source_error(text, 2, "freeze_qty", "is not UTF-8")


def test_byte_order_mark_and_crlf_line_ends_are_tolerated(tmp_path: Path) -> None:
    pretty = json.dumps(list(ROWS), indent=2).replace("\n", "\r\n")
    assert parse("\ufeff" + pretty) == parse(master(*ROWS))
    path = tmp_path / "OpenAPIScripMaster.json"
    path.write_bytes(b"\xef\xbb\xbf" + pretty.encode())
    assert load_angel(path) == [RELIANCE, NIFTY_CALL, NIFTY_FUTURE]


def test_gzip_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "OpenAPIScripMaster.json.gz"
    path.write_bytes(gzip.compress(master(*ROWS).encode()))
    assert load_angel(path) == [RELIANCE, NIFTY_CALL, NIFTY_FUTURE]


def test_ten_megabyte_name_is_read_and_ten_megabyte_token_refused(tmp_path: Path) -> None:
    name = "N" * 10_000_000
    assert parse(with_field("name", name))[1].name == name
    assert_source_error(with_field("token", "7" * 10_000_000), 2, "token", "out of range")
    assert_source_error(with_field("symbol", "Z" * 10_000_000), 2, "symbol", "neither CE nor PE")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "OpenAPIScripMaster.json"
    path.write_bytes(b"\n")
    with pytest.raises(SourceError, match="no instruments: the file is empty"):
        load_angel(path)


def test_missing_file_is_source_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceMissingError) as caught:
        load_angel(tmp_path / "OpenAPIScripMaster.json")
    assert (caught.value.source, caught.value.exit_code) == (SOURCE, EX_NOINPUT)


def test_source_label_defaults_to_the_file_name_and_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "today.json"
    path.write_text(with_field("token", "x"), encoding="utf-8")
    with pytest.raises(SourceError, match=r"^angel=today\.json: row 2, field token"):
        load_angel(path)
    with pytest.raises(SourceError, match=r"^angelone: row 2"):
        load_angel(str(path), source="angelone")


# A round trip through the benchmark's writer


def test_synthetic_universe_round_trips_through_writer_and_reader(tmp_path: Path) -> None:
    universe = list(generate_universe(5000).instruments())
    path = tmp_path / "OpenAPIScripMaster.json"
    assert write_angel(universe, path) == 5000
    loaded = read_angel(path)
    assert loaded.warnings == []
    assert loaded.rows == list(range(1, 5001))
    wanted = [
        (
            i.key,
            i.exchange,
            i.segment,
            i.instrument_type,
            i.name,
            i.expiry,
            i.strike,
            i.tick_size,
            i.lot_size,
            i.exchange_token,
            tuple(t for t in i.tokens if t.broker == "angel"),
        )
        for i in universe
    ]
    got = [
        (
            i.key,
            i.exchange,
            i.segment,
            i.instrument_type,
            i.name,
            i.expiry,
            i.strike,
            i.tick_size,
            i.lot_size,
            i.exchange_token,
            i.tokens,
        )
        for i in loaded.instruments
    ]
    assert got == wanted
    assert {i.tokens[0].feed for i in loaded.instruments} == {
        f"angel:{e}" for e in ("NSE", "BSE", "NFO", "BFO", "MCX", "CDS")
    }


def test_writer_skips_instruments_without_an_angel_token(tmp_path: Path) -> None:
    kite_only = msgspec.structs.replace(RELIANCE, tokens=(BrokerToken("kite", "kite", 738561),))
    path = tmp_path / "OpenAPIScripMaster.json"
    assert write_angel([kite_only, NIFTY_CALL], path) == 1
    assert load_angel(path) == [NIFTY_CALL]
