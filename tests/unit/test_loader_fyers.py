"""The Fyers symbol master loader: a fixture of every segment, the real NSE cash master, the
writer's round trip, and every way a row is bad.

``tests/fixtures/fyers/symbol_masters.csv`` is written from Fyers' documented layout and
symbology: rows 1-8 as in ``NSE_CM.csv`` (row 7 a state loan and row 8 a T-bill, both debt),
9-12 ``BSE_CM.csv``, 13-21 ``NSE_FO.csv``, 22-23 ``BSE_FO.csv``, 24-27 ``NSE_CD.csv`` (row 27 an
UNDCUR reference row) and 28-30 ``MCX_COM.csv``. NSE tokens are the exchange's real ones (the
same as in Kite's 2024-04-03 dump); BSE derivative, currency and commodity tokens are
illustrative.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from bench.masters.fyers import write_fyers
from resolverd.errors import EX_DATAERR, EX_NOINPUT, SourceError, SourceMissingError
from resolverd.loaders.fyers import (
    FIELDS,
    load_fyers,
    parse_fyers,
    parse_fyers_rows,
    read_fyers,
    sniff,
)
from resolverd.loaders.kite import load_kite
from resolverd.model import BrokerToken, Instrument
from resolverd.synthetic import generate_universe

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fyers" / "symbol_masters.csv"
SOURCE = "fyers=symbol_masters.csv"
TEXT = FIXTURE.read_text(encoding="utf-8")
LINES = TEXT.splitlines()
SKIPPED_ROWS = [27]  # a currency reference row (UNDCUR), not a contract
# Fixture rows by what they hold (numbered as in the file).
RELIANCE, SHYAMCENT, NIFTYBEES, NIFTY50, SDL = 1, 3, 4, 5, 7
BSE_RELIANCE, BSE_3I = 9, 11
NIFTY_FUT, NIFTY_CALL, RELIANCE_FUT = 13, 14, 19
USDINR_CALL, CRUDE_FUT = 25, 28

RELIANCE_EQ = Instrument(
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
    tokens=(BrokerToken(broker="fyers", feed="fyers", value=10100000002885),),
)
NIFTY_INDEX = Instrument(
    key="NSE:NIFTY50-INDEX",
    exchange="NSE",
    segment="INDICES",
    instrument_type="EQ",
    name="NIFTY50-INDEX",
    lot_size=0,
    tick_size=0.05,
    exchange_token=26000,
    tokens=(BrokerToken("fyers", "fyers", 101000000026000),),
)
NIFTY_22500_CE = Instrument(
    key="NFO:NIFTY24APR22500CE",
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
    tokens=(BrokerToken("fyers", "fyers", 101124042568114),),
)
USDINR_83_5_CE = Instrument(
    key="CDS:USDINR24APR83.5CE",
    exchange="CDS",
    segment="CDS-OPT",
    instrument_type="CE",
    name="USDINR",
    expiry=dt.date(2024, 4, 26),
    strike=83.5,
    tick_size=0.0025,
    lot_size=1,
    exchange_token=11870,
    tokens=(BrokerToken("fyers", "fyers", 101224042611870),),
)
CRUDEOIL_FUT = Instrument(
    key="MCX:CRUDEOIL24APRFUT",
    exchange="MCX",
    segment="MCX-FUT",
    instrument_type="FUT",
    name="CRUDEOIL",
    expiry=dt.date(2024, 4, 19),
    strike=0.0,
    tick_size=1.0,
    lot_size=100,
    exchange_token=420756,
    tokens=(BrokerToken("fyers", "fyers", 1120240419420756),),
)


def text_of(*lines: str) -> str:
    return "".join(f"{line}\n" for line in lines)


def parse(text: str) -> list[Instrument]:
    return list(parse_fyers(text, SOURCE))


def with_field(row: int, field: str, value: str) -> str:
    """The fixture with one field of one row (numbered as in the file) replaced."""
    rows = [line.split(",") for line in LINES]
    rows[row - 1][FIELDS.index(field)] = value
    return text_of(*(",".join(fields) for fields in rows))


def ist_epoch(day: dt.date, hour: int, minute: int) -> int:
    moment = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
    return int(moment.timestamp()) - 19_800


def assert_source_error(text: str, row: int | None, field: str | None, detail: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse(text)
    error = caught.value
    assert (error.source, error.row, error.field) == (SOURCE, row, field)
    assert detail in error.detail
    where = SOURCE + (f": row {row}" if row is not None else "")
    where += f", field {field}" if field is not None else ""
    assert str(error).startswith(f"{where}: ")
    assert error.exit_code == EX_DATAERR


# The fixture: every segment Fyers publishes


@pytest.fixture(scope="module")
def fixture() -> list[Instrument]:
    return load_fyers(FIXTURE)


def test_fixture_loads_every_modelled_row_and_warns_once_per_skipped_row() -> None:
    loaded = read_fyers(FIXTURE)
    assert loaded.source == SOURCE
    assert loaded.rows == [row for row in range(1, 31) if row not in SKIPPED_ROWS]
    assert [(w.row, w.field) for w in loaded.warnings] == [
        (row, "Exchange instrument type") for row in SKIPPED_ROWS
    ]
    assert "type 20 (UNDCUR) is not cash equity" in loaded.warnings[0].detail


def test_fixture_rows_map_field_by_field(fixture: list[Instrument]) -> None:
    by_key = {r.key: r for r in fixture}
    assert fixture[0] == RELIANCE_EQ
    assert by_key["NSE:NIFTY50-INDEX"] == NIFTY_INDEX
    assert by_key["NFO:NIFTY24APR22500CE"] == NIFTY_22500_CE
    assert by_key["CDS:USDINR24APR83.5CE"] == USDINR_83_5_CE
    assert by_key["MCX:CRUDEOIL24APRFUT"] == CRUDEOIL_FUT
    bse = by_key["BSE:RELIANCE"]
    assert (bse.name, bse.exchange_token, bse.tokens[0].value) == (
        "RELIANCE INDUSTRIES LTD.",
        500325,
        1210000000500325,
    )
    stock_future = by_key["NFO:RELIANCE24APRFUT"]
    assert (stock_future.segment, stock_future.name, stock_future.lot_size) == (
        "NFO-FUT",
        "RELIANCE",
        250,
    )
    sensex = by_key["BFO:SENSEX2440574000CE"]
    assert (sensex.segment, sensex.expiry, sensex.strike) == (
        "BFO-OPT",
        dt.date(2024, 4, 5),
        74000.0,
    )


def test_fixture_counts_per_exchange_and_segment(fixture: list[Instrument]) -> None:
    assert Counter((r.exchange, r.segment) for r in fixture) == {
        ("NSE", "NSE"): 6,
        ("NSE", "INDICES"): 2,
        ("BSE", "BSE"): 3,
        ("BSE", "INDICES"): 1,
        ("NFO", "NFO-FUT"): 3,
        ("NFO", "NFO-OPT"): 6,
        ("BFO", "BFO-FUT"): 1,
        ("BFO", "BFO-OPT"): 1,
        ("CDS", "CDS-FUT"): 1,
        ("CDS", "CDS-OPT"): 2,
        ("MCX", "MCX-FUT"): 2,
        ("MCX", "MCX-OPT"): 1,
    }


def test_keys_drop_nse_eq_series_and_bse_group_but_keep_other_series(
    fixture: list[Instrument],
) -> None:
    keys = {r.key for r in fixture}
    assert {
        "NSE:RELIANCE",
        "NSE:SHYAMCENT-BE",
        "NSE:NIFTYBEES",
        "BSE:SBIN",
        "BSE:3IINFOLTD",
    } <= keys
    assert {"NSE:NIFTY50-INDEX", "BSE:SENSEX-INDEX", "NFO:NIFTY2440422400CE"} <= keys


def test_bse_share_with_a_dash_in_its_symbol_loses_only_the_group() -> None:
    text = with_field(BSE_RELIANCE, "Symbol ticker", "BSE:BAJAJ-AUTO-A")
    assert "BSE:BAJAJ-AUTO" in {r.key for r in parse(text)}


def test_fixture_agrees_with_kites_dump_on_every_contract_both_list(
    fixture: list[Instrument], kite_file: Path
) -> None:
    kite = {r.key: r for r in load_kite(kite_file)}
    shared = [r for r in fixture if r.key in kite]
    nfo = [r.key for r in fixture if r.exchange == "NFO"]
    assert [r.key for r in shared] == [
        "NSE:RELIANCE",
        "NSE:SBIN",
        "BSE:RELIANCE",
        "BSE:SBIN",
        *nfo,
    ]
    for fyers in shared:
        # Kite lists no ISIN, and names a company its own way; a derivative's name must agree.
        expected = msgspec.structs.replace(kite[fyers.key], tokens=fyers.tokens, isin=fyers.isin)
        if fyers.exchange == "NFO":
            assert fyers == expected
        else:
            assert msgspec.structs.replace(fyers, name=expected.name) == expected


def test_expiry_is_the_day_in_india_even_when_utc_is_still_the_day_before() -> None:
    # 00:30 in India on 25 April is 19:00 UTC on 24 April.
    early = str(ist_epoch(dt.date(2024, 4, 25), 0, 30))
    records = {r.key: r for r in parse(with_field(NIFTY_CALL, "Expiry date", early))}
    assert records["NFO:NIFTY24APR22500CE"].expiry == dt.date(2024, 4, 25)


def test_expiry_of_a_cash_row_is_checked_then_dropped() -> None:
    assert parse(with_field(RELIANCE, "Expiry date", "1714039200"))[0].expiry is None
    assert parse(with_field(RELIANCE, "Expiry date", " "))[0].expiry is None
    assert_source_error(
        with_field(RELIANCE, "Expiry date", "soon"), RELIANCE, "Expiry date", "epoch seconds"
    )


def test_strike_of_a_non_option_is_zero_whatever_fyers_writes() -> None:
    for text in ("-1.0", "-1", "0", "17.5"):
        records = {r.key: r for r in parse(with_field(NIFTY_FUT, "Strike price", text))}
        assert records["NFO:NIFTY24APRFUT"].strike == 0.0


# The real NSE cash master


@pytest.fixture(scope="module")
def real(fyers_file: Path) -> list[Instrument]:
    return load_fyers(fyers_file)


def test_real_file_loads_every_row_debt_included(fyers_file: Path) -> None:
    loaded = read_fyers(fyers_file)
    assert (len(loaded), loaded.warnings) == (6769, [])
    assert loaded.rows == list(range(1, 6770))
    assert len({r.key for r in loaded.instruments}) == 6769
    bonds = Counter(r.key.rpartition("-")[2] for r in loaded.instruments if "-" in r.key)
    assert bonds["SG"] > 0 and bonds["TB"] > 0  # state loans and T-bills, series kept


def test_real_file_reliance_carries_its_exchange_token_and_fytoken(
    real: list[Instrument],
) -> None:
    by_key = {r.key: r for r in real}
    reliance = by_key["NSE:RELIANCE"]
    assert (reliance.exchange_token, reliance.tokens) == (
        2885,
        (BrokerToken("fyers", "fyers", 10100000002885),),
    )
    assert reliance.isin == "INE002A01018"
    assert by_key["NSE:NIFTYBEES"].tick_size == 0.01


def test_real_file_counts_cash_and_indices(real: list[Instrument]) -> None:
    assert Counter(r.segment for r in real) == {"NSE": 6694, "INDICES": 75}
    assert {r.instrument_type for r in real} == {"EQ"}
    assert all(r.expiry is None and r.strike == 0.0 for r in real)


def test_real_file_head_is_sniffed_as_fyers(fyers_file: Path) -> None:
    assert sniff(fyers_file.read_text(encoding="utf-8")[: 64 * 1024])


# Sniffing


def test_sniff_accepts_the_first_line_of_every_segment_file() -> None:
    assert all(sniff(line + "\n") for line in LINES)


@pytest.mark.parametrize(
    "head",
    [
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
        "lot_size,instrument_type,segment,exchange\n408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,"
        "NSE\n",
        "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
        "lot_size,instrument_type,option_type,exchange\nNSE_EQ|INE002A01018,2885,RELIANCE,...\n",
        '[{"token":"2885","symbol":"RELIANCE-EQ","name":"RELIANCE","expiry":"","strike":'
        '"-1.000000","lotsize":"1","instrumenttype":"","exch_seg":"NSE","tick_size":"5.000000"}]',
        "SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_EXPIRY_CODE\n"
        "NSE,E,2885,EQUITY,0\n",
        LINES[0].replace("10100000002885", "10110000002885"),
        LINES[0].replace("NSE:RELIANCE-EQ", "BSE:RELIANCE-EQ"),
        LINES[0] + ",extra",
        "",
    ],
    ids=["kite", "upstox", "angel", "dhan", "fytoken", "ticker", "width", "empty"],
)
def test_sniff_refuses_other_formats_and_broken_first_rows(head: str) -> None:
    assert not sniff(head)


# The parser on inline text


def test_parser_needs_no_file_and_takes_text_or_lines() -> None:
    records = parse(TEXT)
    assert records[0] == RELIANCE_EQ
    assert list(parse_fyers(io.StringIO(TEXT, newline=""), SOURCE)) == records
    assert list(parse_fyers(TEXT.splitlines(keepends=True), SOURCE)) == records


def test_row_numbers_count_skipped_and_blank_rows() -> None:
    text = text_of(LINES[RELIANCE - 1], "", LINES[SDL - 1], LINES[NIFTY_CALL - 1])
    assert [row for row, _ in parse_fyers_rows(text, SOURCE)] == [1, 3, 4]


def test_skipped_rows_reach_warn_and_are_not_yielded() -> None:
    calls: list[tuple[str, int, str]] = []
    records = list(
        parse_fyers(TEXT, SOURCE, lambda detail, row, field: calls.append((detail, row, field)))
    )
    assert len(records) == 29
    assert [row for _, row, _ in calls] == SKIPPED_ROWS
    assert {field for _, _, field in calls} == {"Exchange instrument type"}


def test_type_code_fyers_does_not_document_is_skipped_naming_code_and_segment() -> None:
    calls: list[tuple[str, int, str]] = []
    text = with_field(RELIANCE, "Exchange instrument type", "42")
    records = list(parse_fyers(text, SOURCE, lambda *call: calls.append(call)))
    assert records[0].key == "NSE:SBIN"
    assert calls[0] == (
        "skipped: Exchange instrument type 42 is not one Fyers documents for NSE CM",
        RELIANCE,
        "Exchange instrument type",
    )
    assert [row for _, row, _ in calls] == [RELIANCE, *SKIPPED_ROWS]


def test_byte_order_mark_and_crlf_line_ends_are_tolerated() -> None:
    crlf = "\ufeff" + TEXT.replace("\n", "\r\n")
    assert parse(crlf) == parse(TEXT)
    assert list(parse_fyers(io.StringIO(crlf, newline=""), SOURCE)) == parse(TEXT)


def test_quoted_fields_are_read_as_csv() -> None:
    quoted = TEXT.replace("RELIANCE INDUSTRIES LTD,", '"RELIANCE INDUSTRIES, LTD",', 1)
    records = parse(quoted)
    assert records[0] == msgspec.structs.replace(RELIANCE_EQ, name="RELIANCE INDUSTRIES, LTD")
    assert records[1:] == parse(TEXT)[1:]


def test_cut_inside_the_reserved_last_field_loses_nothing_the_records_hold() -> None:
    assert parse(TEXT[:-2]) == parse(TEXT)


# Bad input: each case names the source, the row (the first line is row 1) and the field


def test_bad_fytoken_message_reads_like_the_style_guide() -> None:
    with pytest.raises(SourceError) as caught:
        parse(with_field(NIFTY_CALL, "Fytoken", "1011240425681x4"))
    assert str(caught.value) == (
        "fyers=symbol_masters.csv: row 14, field Fytoken: '1011240425681x4' is not an integer"
    )


@pytest.mark.parametrize(
    ("row", "field", "value", "detail"),
    [
        (NIFTY_CALL, "Fytoken", "", "is empty"),
        (NIFTY_CALL, "Fytoken", "-101124042568114", "is negative"),
        (NIFTY_CALL, "Fytoken", " 101124042568114", "is not an integer"),
        (NIFTY_CALL, "Fytoken", "1" * 21, "out of range 0..18446744073709551614"),
        (NIFTY_CALL, "Fytoken", "1" * 5000, "a 5,000-digit number is out of range"),
        (NIFTY_CALL, "Fytoken", "١٠١١٢٤٠٤٢٥٦٨١١٤", "is not an integer"),
        (NIFTY_CALL, "Scrip code", "68l14", "is not an integer"),
        (NIFTY_CALL, "Scrip code", "", "is empty"),
        (NIFTY_CALL, "Scrip code", str(2**32), "out of range 0..4294967295"),
        (NIFTY_CALL, "Minimum lot size", "50.0", "'50.0' is not an integer"),
        (NIFTY_CALL, "Minimum lot size", "-50", "is negative"),
        (NIFTY_CALL, "Minimum lot size", "", "is empty"),
        (NIFTY_CALL, "Minimum lot size", str(2**32), "out of range"),
        (NIFTY_CALL, "Tick size", "0.05x", "is not a number"),
        (NIFTY_CALL, "Tick size", "", "is empty"),
        (NIFTY_CALL, "Tick size", "-0.05", "is negative"),
        (NIFTY_CALL, "Tick size", "NaN", "is not a finite number"),
        (NIFTY_CALL, "Tick size", "0_05", "is not a plain decimal number"),
        (NIFTY_CALL, "Strike price", "abc", "'abc' is not a number"),
        (NIFTY_CALL, "Strike price", "-1.0", "is negative"),
        (NIFTY_CALL, "Strike price", "inf", "is not a finite number"),
        (NIFTY_CALL, "Strike price", "1e999", "is not a finite number"),
        (NIFTY_FUT, "Strike price", "abc", "'abc' is not a number"),
        (NIFTY_CALL, "Expiry date", "2024-04-25", "is not a time in epoch seconds"),
        (NIFTY_CALL, "Expiry date", "-1714039200", "is negative"),
        (NIFTY_CALL, "Expiry date", "", "a future or option needs one"),
        (NIFTY_CALL, "Expiry date", "0", "a future or option needs one"),
        (NIFTY_CALL, "Expiry date", "9" * 13, "out of range"),
        (RELIANCE, "ISIN", "INE002A0101", "is not 12 letters and digits"),
        (RELIANCE, "ISIN", "INE002A0101-", "is not 12 letters and digits"),
        (NIFTY_CALL, "Option type", "XX", "on an option (expected CE or PE)"),
        (NIFTY_CALL, "Option type", "", "on an option"),
        (NIFTY_FUT, "Option type", "CE", "'CE' on a row of type FUT (expected XX)"),
        (RELIANCE, "Option type", "PE", "'PE' on a row of type EQ"),
        (RELIANCE, "Symbol ticker", "", "is empty"),
        (RELIANCE, "Symbol ticker", "NSE:", "is not NSE:<symbol>"),
        (RELIANCE, "Symbol ticker", "BSE:RELIANCE-EQ", "is not NSE:<symbol>"),
        (NIFTY_CALL, "Symbol ticker", "NIFTY24APR22500CE", "is not NSE:<symbol>"),
        (CRUDE_FUT, "Symbol ticker", "NSE:CRUDEOIL24APRFUT", "is not MCX:<symbol>"),
        (RELIANCE, "Exchange", "", "is empty"),
        (RELIANCE, "Exchange", "NSE", "'NSE' is not an integer"),
        (RELIANCE, "Exchange", "13", "'13' is not a Fyers exchange code"),
        (RELIANCE, "Segment", "", "is empty"),
        (RELIANCE, "Segment", "30", "'30' is not a segment of exchange 10 (NSE)"),
        (CRUDE_FUT, "Segment", "10", "'10' is not a segment of exchange 11 (MCX)"),
        (RELIANCE, "Exchange instrument type", "", "is empty"),
        (RELIANCE, "Exchange instrument type", "EQ", "'EQ' is not an integer"),
        (RELIANCE, "Exchange instrument type", "-1", "is negative"),
        (RELIANCE, "Exchange instrument type", "1000", "out of range 0..999"),
    ],
)
def test_bad_field_is_a_source_error_naming_row_and_field(
    row: int, field: str, value: str, detail: str
) -> None:
    assert_source_error(with_field(row, field, value), row, field, detail)


@pytest.mark.parametrize(
    ("row", "fytoken", "detail"),
    [
        (NIFTY_CALL, "101224042568114", "does not start with Exchange and Segment 1011"),
        (NIFTY_CALL, "101124042568115", "does not end with Scrip code 68114"),
        (NIFTY_CALL, "101124042668114", "has '240426' between exchange, segment and scrip code"),
        (NIFTY_CALL, "10112404268114", "has 5 digits between 1011 and 68114, not 6"),
        (RELIANCE, "10100000012885", "where the rule wants 000000 for cash"),
        (RELIANCE, "1010000002885", "has 5 digits between 1010 and 2885"),
        (USDINR_CALL, "101224042511870", "where the rule wants the expiry 240426 (YYMMDD)"),
        (BSE_RELIANCE, "1010000000500325", "does not start with Exchange and Segment 1210"),
    ],
)
def test_fytoken_that_breaks_the_encoding_rule_says_which_part(
    row: int, fytoken: str, detail: str
) -> None:
    assert_source_error(with_field(row, "Fytoken", fytoken), row, "Fytoken", detail)


def test_fytoken_must_follow_the_expiry_field() -> None:
    next_day = str(ist_epoch(dt.date(2024, 4, 26), 15, 30))
    text = with_field(NIFTY_CALL, "Expiry date", next_day)
    assert_source_error(text, NIFTY_CALL, "Fytoken", "the expiry 240426 (YYMMDD)")


def test_row_with_a_missing_or_extra_field_names_the_row() -> None:
    short = LINES[NIFTY_CALL - 1].rsplit(",", 1)[0]
    assert_source_error(
        text_of(LINES[0], short), 2, "Reserved 3", "20 fields, but a Fyers master row"
    )
    assert_source_error(text_of(LINES[0], LINES[1] + ",x"), 2, None, "22 fields")


def test_file_cut_off_in_the_middle_of_a_row_is_refused_on_that_row() -> None:
    assert_source_error(TEXT[:-40], 30, "Scrip code", "(is the file cut off?)")


def test_header_row_is_refused_with_a_hint() -> None:
    header = "Fytoken,Symbol Details,Exchange Instrument type,Minimum lot size,Tick size"
    assert_source_error(text_of(header, LINES[0]), 1, None, "a header row?")


@pytest.mark.parametrize("text", ["", "\n", "\r\n\r\n", "\ufeff"])
def test_empty_input_has_no_instruments(text: str) -> None:
    assert_source_error(text, None, None, "no instruments")


def test_ten_megabyte_field_is_refused_naming_its_row_by_text_or_by_lines() -> None:
    huge = with_field(NIFTY_CALL, "Symbol details", "N" * 10_000_000)
    assert_source_error(huge, NIFTY_CALL, None, "beyond the CSV limit")
    with pytest.raises(SourceError, match="not valid CSV") as caught:
        list(parse_fyers(io.StringIO(huge, newline=""), SOURCE))
    assert caught.value.row == NIFTY_CALL


# The file edge


def test_non_utf8_byte_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "symbol_masters.csv"
    path.write_bytes(TEXT.encode().replace(b"SHYAM CENTURY", b"SHY\xc2M CENTURY"))
    with pytest.raises(SourceError) as caught:
        load_fyers(path)
    assert (caught.value.source, caught.value.row) == (SOURCE, SHYAMCENT)
    assert caught.value.field == "Symbol details"  # Fyers' own name for field 2
    assert "0xc2" in str(caught.value)


def test_gzip_file_reads_like_the_plain_one(tmp_path: Path) -> None:
    path = tmp_path / "symbol_masters.csv.gz"
    path.write_bytes(gzip.compress(TEXT.encode()))
    assert load_fyers(path) == parse(TEXT)


def test_missing_file_is_source_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceMissingError) as caught:
        load_fyers(tmp_path / "NSE_FO.csv")
    assert caught.value.source == "fyers=NSE_FO.csv"
    assert caught.value.exit_code == EX_NOINPUT


def test_source_label_defaults_to_the_file_name_and_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "NSE_FO.csv"
    path.write_text(with_field(2, "Tick size", "x"), encoding="utf-8")
    with pytest.raises(SourceError, match=r"^fyers=NSE_FO\.csv: row 2, field Tick size"):
        load_fyers(path)
    with pytest.raises(SourceError, match=r"^fyers-fo: row 2"):
        load_fyers(str(path), source="fyers-fo")


# The writer's round trip over the synthetic universe


@pytest.fixture(scope="module")
def universe() -> list[Instrument]:
    return list(generate_universe(5000).instruments())


def only_fyers(record: Instrument) -> Instrument:
    tokens = tuple(t for t in record.tokens if t.broker == "fyers")
    return msgspec.structs.replace(record, tokens=tokens)


@pytest.mark.parametrize("name", ["NSE_ALL.csv", "NSE_ALL.csv.gz"])
def test_round_trip_through_the_writer_keeps_keys_tokens_and_metadata(
    universe: list[Instrument], tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    assert write_fyers(universe, path) == 5000
    loaded = read_fyers(path)
    assert (loaded.rows, loaded.warnings) == (list(range(1, 5001)), [])
    assert loaded.instruments == [only_fyers(r) for r in universe]


def test_writer_writes_only_instruments_with_a_fyers_token(
    universe: list[Instrument], tmp_path: Path
) -> None:
    kite_only = msgspec.structs.replace(
        universe[0], tokens=tuple(t for t in universe[0].tokens if t.broker == "kite")
    )
    path = tmp_path / "NSE_CM.csv"
    assert write_fyers([kite_only, universe[1]], path) == 1
    assert [r.key for r in load_fyers(path)] == [universe[1].key]


def test_writer_writes_series_and_group_tags_the_loader_strips_again(
    universe: list[Instrument], tmp_path: Path
) -> None:
    path = tmp_path / "CM.csv"
    cash = [r for r in universe if r.exchange in ("NSE", "BSE")]
    write_fyers(cash, path)
    tickers = {line.split(",")[9] for line in path.read_text().splitlines()}
    assert "NSE:RELIANCE-EQ" in tickers
    assert "BSE:RELIANCE-A" in tickers
    assert any(t.startswith("NSE:") and t.endswith("-BE") for t in tickers)
