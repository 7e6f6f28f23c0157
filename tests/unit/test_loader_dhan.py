"""The Dhan scrip master loader: both published layouts, and every way a row is bad."""

from __future__ import annotations

import datetime as dt
import gzip
from collections import Counter
from pathlib import Path
from typing import Literal

import msgspec
import pytest

from bench.masters.dhan import write_dhan
from resolverd.errors import EX_DATAERR, SourceError, SourceMissingError
from resolverd.join import join
from resolverd.loaders import FORMATS
from resolverd.loaders._common import Loaded
from resolverd.loaders.dhan import load_dhan, parse_dhan_rows, read_dhan, sniff
from resolverd.loaders.kite import parse_kite_rows
from resolverd.model import BrokerToken, Instrument
from resolverd.synthetic import generate_universe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dhan"
COMPACT = FIXTURES / "api-scrip-master.csv"
DETAILED = FIXTURES / "api-scrip-master-detailed.csv"

SOURCE = "dhan=api-scrip-master.csv"
HEADER = (
    "SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_EXPIRY_CODE,"
    "SEM_TRADING_SYMBOL,SEM_LOT_UNITS,SEM_CUSTOM_SYMBOL,SEM_EXPIRY_DATE,SEM_STRIKE_PRICE,"
    "SEM_OPTION_TYPE,SEM_TICK_SIZE,SEM_EXPIRY_FLAG,SEM_EXCH_INSTRUMENT_TYPE,SEM_SERIES,"
    "SM_SYMBOL_NAME"
)
COLUMNS = HEADER.split(",")
# Rows of the compact fixture; in a file of their own they are rows 2, 3 and 4.
ROWS = (
    "NSE,E,1333,EQUITY,0,HDFCBANK,1.0,HDFC Bank,,-0.01000,XX,5.0000,NA,ES,EQ,HDFC BANK LTD",
    "NSE,D,68114,OPTIDX,0,NIFTY-Apr2024-22500-CE,50.0,NIFTY 25 APR 22500 CALL,"
    "2024-04-25 14:30:00,22500.00000,CE,5.0000,M,OP,NA,",
    "NSE,D,52222,FUTIDX,0,NIFTY-Apr2024-FUT,50.0,NIFTY APR FUT,2024-04-25 14:30:00,-0.01000,XX,"
    "5.0000,M,FUT,NA,",
)

HDFCBANK = Instrument(
    key="NSE:HDFCBANK",
    exchange="NSE",
    segment="NSE",
    instrument_type="EQ",
    name="HDFC BANK LTD",
    expiry=None,
    strike=0.0,
    tick_size=0.05,
    lot_size=1,
    isin="",
    exchange_token=1333,
    tokens=(BrokerToken("dhan", "dhan:NSE_EQ", 1333),),
)
NIFTY_CALL = Instrument(
    key="NFO:NIFTY-Apr2024-22500-CE",
    exchange="NFO",
    segment="NFO-OPT",
    instrument_type="CE",
    name="NIFTY",
    expiry=dt.date(2024, 4, 25),
    strike=22500.0,
    tick_size=0.05,
    lot_size=50,
    exchange_token=68114,
    tokens=(BrokerToken("dhan", "dhan:NSE_FNO", 68114),),
)
NIFTY_INDEX = Instrument(
    key="NSE:NIFTY",
    exchange="NSE",
    segment="INDICES",
    instrument_type="EQ",
    name="NIFTY",
    tick_size=0.01,
    lot_size=1,
    exchange_token=0,
    tokens=(BrokerToken("dhan", "dhan:IDX_I", 13),),
)
CRUDE_FUTURE = Instrument(
    key="MCX:CRUDEOIL-19Apr2024-FUT",
    exchange="MCX",
    segment="MCX-FUT",
    instrument_type="FUT",
    name="CRUDEOIL",
    expiry=dt.date(2024, 4, 19),
    tick_size=1.0,
    lot_size=100,
    exchange_token=251869,
    tokens=(BrokerToken("dhan", "dhan:MCX_COMM", 251869),),
)


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "".join(f"{line}\n" for line in (header, *rows))


def parse(text: str) -> list[Instrument]:
    return [record for _, record in parse_dhan_rows(text.splitlines(keepends=True), SOURCE)]


def with_field(column: str, value: str, row: int = 3) -> str:
    """The three sample rows with one field of one row (numbered as in a file) replaced."""
    rows = [line.split(",") for line in ROWS]
    rows[row - 2][COLUMNS.index(column)] = value
    return csv_text(*(",".join(fields) for fields in rows))


def assert_source_error(text: str, row: int | None, field: str | None, detail: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse(text)
    error = caught.value
    assert (error.source, error.row, error.field) == (SOURCE, row, field)
    assert detail in error.detail
    assert error.exit_code == EX_DATAERR


@pytest.fixture(scope="module")
def compact() -> Loaded:
    return read_dhan(COMPACT)


@pytest.fixture(scope="module")
def detailed() -> Loaded:
    return read_dhan(DETAILED)


def replace(record: Instrument, **changes: object) -> Instrument:
    return msgspec.structs.replace(record, **changes)


def by_token(loaded: Loaded) -> dict[int, Instrument]:
    return {int(r.tokens[0].value): r for r in loaded.instruments}


# The fixtures: one file per layout, written from Dhan's published column list


def test_compact_rows_map_field_by_field(compact: Loaded) -> None:
    records = by_token(compact)
    assert records[1333] == HDFCBANK
    assert records[68114] == NIFTY_CALL
    assert records[13] == NIFTY_INDEX
    assert records[251869] == CRUDE_FUTURE
    assert compact.source == "dhan=api-scrip-master.csv"
    assert compact.rows[:4] == [2, 3, 4, 5]


def test_detailed_rows_map_field_by_field(detailed: Loaded) -> None:
    records = by_token(detailed)
    assert records[1333] == replace(HDFCBANK, isin="INE040A01034")
    assert records[68114] == NIFTY_CALL
    assert records[13] == replace(NIFTY_INDEX, name="NIFTY 50")
    assert records[251869] == CRUDE_FUTURE
    assert records[52222].expiry == dt.date(2024, 4, 25)


def test_both_layouts_describe_one_contract_alike(compact: Loaded, detailed: Loaded) -> None:
    short, full = by_token(compact), by_token(detailed)
    assert set(full) <= set(short)
    for token, record in full.items():
        if record.segment != "INDICES":
            assert replace(record, isin="") == short[token], record.key


def test_each_exchange_segment_maps_to_a_kite_exchange_and_a_dhan_feed(compact: Loaded) -> None:
    seen = Counter((r.exchange, r.segment, r.tokens[0].feed) for r in compact.instruments)
    assert seen == {
        ("NSE", "INDICES", "dhan:IDX_I"): 2,
        ("BSE", "INDICES", "dhan:IDX_I"): 1,
        ("NSE", "NSE", "dhan:NSE_EQ"): 4,
        ("BSE", "BSE", "dhan:BSE_EQ"): 3,
        ("NFO", "NFO-FUT", "dhan:NSE_FNO"): 4,
        ("NFO", "NFO-OPT", "dhan:NSE_FNO"): 6,
        ("BFO", "BFO-FUT", "dhan:BSE_FNO"): 1,
        ("BFO", "BFO-OPT", "dhan:BSE_FNO"): 1,
        ("CDS", "CDS-FUT", "dhan:NSE_CURRENCY"): 1,
        ("CDS", "CDS-OPT", "dhan:NSE_CURRENCY"): 1,
        ("BCD", "BCD-FUT", "dhan:BSE_CURRENCY"): 1,
        ("MCX", "MCX-FUT", "dhan:MCX_COMM"): 2,
        ("MCX", "MCX-OPT", "dhan:MCX_COMM"): 1,
    }


def test_weekly_options_sharing_a_trading_symbol_get_their_expiry_day_in_the_key(
    compact: Loaded,
) -> None:
    calls = {
        r.key: r.expiry
        for r in compact.instruments
        if r.name == "NIFTY" and r.strike == 22500 and r.instrument_type == "CE"
    }
    assert calls == {
        "NFO:NIFTY-Apr2024-22500-CE": dt.date(2024, 4, 25),
        "NFO:NIFTY-04Apr2024-22500-CE": dt.date(2024, 4, 4),
        "NFO:NIFTY-10Apr2024-22500-CE": dt.date(2024, 4, 10),
    }
    assert by_token(compact)[863742].key == "BFO:SENSEX-05Apr2024-74000-CE"
    assert len({r.key for r in compact.instruments}) == len(compact)


def test_tick_size_is_read_in_paise_and_kept_in_rupees(compact: Loaded) -> None:
    records = by_token(compact)
    assert [records[t].tick_size for t in (1333, 8932, 251869, 254791)] == [
        0.05,
        0.0025,
        1.0,
        0.1,
    ]


def test_index_keeps_its_dhan_token_but_has_no_exchange_token(compact: Loaded) -> None:
    indices = [r for r in compact.instruments if r.segment == "INDICES"]
    assert [(r.key, r.exchange_token, r.tokens[0].value) for r in indices] == [
        ("NSE:NIFTY", 0, 13),
        ("NSE:BANKNIFTY", 0, 25),
        ("BSE:SENSEX", 0, 51),
    ]


def test_compact_derivative_is_named_after_its_underlying_not_dhans_mnemonic(
    compact: Loaded,
) -> None:
    records = by_token(compact)
    assert (records[135012].name, records[52288].name, records[825565].name) == (
        "RELIANCE",
        "BAJAJ-AUTO",
        "SENSEX",
    )


def test_debt_rows_load_as_eq_and_an_nse_bond_keeps_its_series_in_the_key(
    compact: Loaded, detailed: Loaded
) -> None:
    assert compact.warnings == []
    assert detailed.warnings == []
    assert compact.rows == list(range(2, 30))
    gold_bond = Instrument(
        key="NSE:SGBAUG28V-GB",
        exchange="NSE",
        segment="NSE",
        instrument_type="EQ",
        name="SOVEREIGN GOLD BONDS",
        tick_size=0.01,
        lot_size=1,
        exchange_token=16883,
        tokens=(BrokerToken("dhan", "dhan:NSE_EQ", 16883),),
    )
    assert by_token(compact)[16883] == gold_bond
    assert by_token(detailed)[16883] == replace(gold_bond, isin="IN0020200153")
    # BSE's series column is the group, which no BSE key carries (Kite's BSE:RELIANCE).
    debenture = by_token(compact)[973355]
    assert (debenture.key, debenture.segment, debenture.instrument_type) == (
        "BSE:973355",
        "BSE",
        "EQ",
    )


@pytest.mark.parametrize(
    ("symbol", "xtype", "series", "key"),
    [
        ("IRFC", "DBT", "N1", "NSE:IRFC-N1"),
        ("IRFC", "DBT", "N2", "NSE:IRFC-N2"),
        ("IRFC-N1", "DBT", "N1", "NSE:IRFC-N1"),
        ("782GJ32", "GB", "SG", "NSE:782GJ32-SG"),
        ("182D110724", "TB", "TB", "NSE:182D110724-TB"),
        ("IIFL", "DEB", "NA", "NSE:IIFL"),
        ("IIFL", "DEB", "", "NSE:IIFL"),
        ("IIFL-EQ", "DEB", "EQ", "NSE:IIFL"),
        ("JOCIL", "ES", "BE", "NSE:JOCIL"),
    ],
)
def test_nse_debt_key_appends_its_series_unless_the_symbol_carries_it_or_it_is_none(
    symbol: str, xtype: str, series: str, key: str
) -> None:
    fields = ROWS[0].split(",")
    fields[COLUMNS.index("SEM_TRADING_SYMBOL")] = symbol
    fields[COLUMNS.index("SEM_EXCH_INSTRUMENT_TYPE")] = xtype
    fields[COLUMNS.index("SEM_SERIES")] = series
    (record,) = parse(csv_text(",".join(fields)))
    assert (record.key, record.segment, record.instrument_type) == (key, "NSE", "EQ")


# Rows of kinds not modelled


def test_unmodelled_segment_and_instrument_are_skipped_and_reported() -> None:
    told: list[tuple[str, int | None, str | None]] = []
    text = csv_text(
        ROWS[0],
        "NSE,M,440001,FUTCOM,0,CRUDEOIL-Apr2024-FUT,100.0,X,2024-04-19 23:30:00,,XX,100.0,M,FUT,,",
        "NSE,C,9001,FUTIRC,0,GS2033-Apr2024-FUT,1.0,X,2024-04-25 14:30:00,,XX,0.25,M,FUT,,",
        ROWS[1],
    )
    kept = list(parse_dhan_rows(text.splitlines(keepends=True), SOURCE, lambda *w: told.append(w)))
    assert [(row, r.key) for row, r in kept] == [(2, HDFCBANK.key), (5, NIFTY_CALL.key)]
    assert told == [
        ("skipped: exchange NSE segment M is not modelled", 3, "SEM_SEGMENT"),
        ("skipped: instrument FUTIRC is not modelled", 4, "SEM_INSTRUMENT_NAME"),
    ]


def test_input_of_skipped_rows_only_has_no_instruments() -> None:
    row = "NSE,C,9001,FUTIRC,0,GS2033-Apr2024-FUT,1.0,X,2024-04-25 14:30:00,,XX,0.25,M,FUT,,"
    assert_source_error(csv_text(row), None, None, "all 1 rows are of kinds not modelled")


# Joining: Dhan's security id is the exchange token


def test_dhan_rows_join_kite_rows_on_the_exchange_token(compact: Loaded) -> None:
    kite_text = (
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
        "lot_size,instrument_type,segment,exchange\n"
        "17437186,68114,NIFTY24APR22500CE,NIFTY,0,25-04-2024,22500,0.05,50,CE,NFO-OPT,NFO\n"
    )
    kite = Loaded("kite=instruments.csv")
    for row, record in parse_kite_rows(kite_text.splitlines(keepends=True), kite.source):
        kite.add(row, record)
    joined = join([kite, compact])
    call = next(r for r in joined.instruments if r.key == "NFO:NIFTY24APR22500CE")
    assert call.tokens == (
        BrokerToken("kite", "kite", 17437186),
        BrokerToken("dhan", "dhan:NSE_FNO", 68114),
    )
    assert len(joined) == 1 + len(compact) - 1


# Sniffing


def test_sniff_takes_either_layout_and_nothing_else() -> None:
    assert sniff(COMPACT.read_text(encoding="utf-8")[:200])
    assert sniff(DETAILED.read_text(encoding="utf-8").replace("\n", "\r\n"))
    assert sniff(HEADER)
    for other in (
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike",
        "10100000002885,RELIANCE INDUSTRIES LTD,0,1,0.05,INE002A01018,0915-1530|1815-1915:",
        "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size",
        '[{"token":"2885","symbol":"RELIANCE-EQ","name":"RELIANCE","expiry":""}]',
        "",
        "SECURITY_ID\n",
    ):
        assert not sniff(other), other


def test_no_other_registered_format_takes_a_dhan_head() -> None:
    for head in (COMPACT.read_text(encoding="utf-8"), DETAILED.read_text(encoding="utf-8")):
        takers = [name for name, f in FORMATS.items() if name != "dhan" and f.sniff(head)]
        assert takers == []


# The parser on inline text


def test_parser_needs_no_file_and_yields_records_in_order() -> None:
    records = parse(csv_text(*ROWS))
    assert records[:2] == [HDFCBANK, NIFTY_CALL]


def test_columns_are_found_by_name_and_extra_columns_ignored() -> None:
    order = [*reversed(COLUMNS), "SEM_EXTRA"]
    rows = [",".join([*reversed(line.split(",")), "x"]) for line in ROWS]
    assert parse(csv_text(*rows, header=",".join(order))) == parse(csv_text(*ROWS))


def test_byte_order_mark_and_crlf_line_ends_are_tolerated() -> None:
    text = "\ufeff" + csv_text(*ROWS).replace("\n", "\r\n")
    assert parse(text) == parse(csv_text(*ROWS))


def test_day_first_expiry_with_a_two_digit_year_is_the_same_date() -> None:
    assert parse(with_field("SEM_EXPIRY_DATE", "25/04/24")) == parse(csv_text(*ROWS))


def test_lot_size_written_as_an_integer_or_a_decimal_is_the_same() -> None:
    assert parse(with_field("SEM_LOT_UNITS", "50")) == parse(with_field("SEM_LOT_UNITS", "50.00"))


def test_placeholders_in_columns_a_kind_does_not_use_are_ignored() -> None:
    text = csv_text(ROWS[0].replace(",,-0.01000,XX,", ",0001-01-01,junk,YY,"), ROWS[1])
    assert parse(text)[0] == HDFCBANK


def test_blank_lines_are_skipped_but_counted_as_rows() -> None:
    text = csv_text(ROWS[0], "", ROWS[1].replace("68114", "68x14"))
    assert_source_error(text, 4, "SEM_SMST_SECURITY_ID", "'68x14' is not an integer")


# Bad input: each case names the source, the row (header = row 1) and the column


def test_bad_security_id_message_names_source_row_and_column() -> None:
    with pytest.raises(SourceError) as caught:
        parse(with_field("SEM_SMST_SECURITY_ID", "35x01"))
    assert str(caught.value) == (
        "dhan=api-scrip-master.csv: row 3, field SEM_SMST_SECURITY_ID: '35x01' is not an integer"
    )


@pytest.mark.parametrize(
    ("column", "value", "detail"),
    [
        ("SEM_SMST_SECURITY_ID", "", "is empty"),
        ("SEM_SMST_SECURITY_ID", "681.14", "is not an integer"),
        ("SEM_SMST_SECURITY_ID", " 68114", "is not an integer"),
        ("SEM_SMST_SECURITY_ID", "-68114", "is negative"),
        ("SEM_SMST_SECURITY_ID", "0", "is 0"),
        ("SEM_SMST_SECURITY_ID", str(2**32), "out of range 0..4294967295"),
        ("SEM_SMST_SECURITY_ID", "9" * 30, "out of range"),
        ("SEM_EXM_EXCH_ID", "", "is empty"),
        ("SEM_SEGMENT", "", "is empty"),
        ("SEM_INSTRUMENT_NAME", "", "is empty"),
        ("SEM_INSTRUMENT_NAME", "EQUITY", "EQUITY is not an instrument of segment D"),
        ("SEM_TRADING_SYMBOL", "", "is empty"),
        ("SEM_EXPIRY_DATE", "", "a derivative needs an expiry"),
        ("SEM_EXPIRY_DATE", "0001-01-01 00:00:00", "no-expiry placeholder"),
        ("SEM_EXPIRY_DATE", "2024-02-30 14:30:00", "is not a date"),
        ("SEM_EXPIRY_DATE", "2024/04/25", "is not a date"),
        ("SEM_EXPIRY_DATE", "25/13/24", "is not a date"),
        ("SEM_EXPIRY_DATE", "25/04/2x", "is not a date"),
        ("SEM_STRIKE_PRICE", "abc", "is not a number"),
        ("SEM_STRIKE_PRICE", "", "is empty"),
        ("SEM_STRIKE_PRICE", "-22500", "is negative"),
        ("SEM_STRIKE_PRICE", "nan", "is not a finite number"),
        ("SEM_STRIKE_PRICE", "1e999", "is not a finite number"),
        ("SEM_OPTION_TYPE", "XX", "'XX' is not CE or PE"),
        ("SEM_TICK_SIZE", "5.0x", "is not a number"),
        ("SEM_TICK_SIZE", "-5.0000", "is negative"),
        ("SEM_LOT_UNITS", "50.5", "is not a whole number of units"),
        ("SEM_LOT_UNITS", "-50.0", "is negative"),
        ("SEM_LOT_UNITS", "fifty", "is not a number"),
        ("SEM_LOT_UNITS", "", "is empty"),
        ("SEM_LOT_UNITS", f"{2**32}.0", "out of range"),
    ],
)
def test_bad_field_is_a_source_error_naming_row_and_column(
    column: str, value: str, detail: str
) -> None:
    assert_source_error(with_field(column, value), 3, column, detail)


def test_row_with_a_missing_or_extra_field_names_the_row() -> None:
    assert_source_error(csv_text(ROWS[0], ROWS[1] + ",extra"), 3, None, "17 fields")
    short = csv_text(ROWS[0], ROWS[1].rsplit(",", 1)[0])
    assert_source_error(short, 3, "SM_SYMBOL_NAME", "15 fields")


def test_header_missing_a_column_names_it() -> None:
    header = HEADER.replace(",SEM_TICK_SIZE", "")
    rows = [line.replace(",5.0000,", ",") for line in ROWS]
    assert_source_error(csv_text(*rows, header=header), 1, "SEM_TICK_SIZE", "no column")


def test_header_without_the_series_column_names_it() -> None:
    header = HEADER.replace(",SEM_SERIES", "")
    at = COLUMNS.index("SEM_SERIES")
    rows = [",".join(f for i, f in enumerate(line.split(",")) if i != at) for line in ROWS]
    assert_source_error(csv_text(*rows, header=header), 1, "SEM_SERIES", "no column")


def test_header_of_neither_layout_is_refused_on_row_1() -> None:
    header = HEADER.replace("SEM_SMST_SECURITY_ID", "SEM_ID")
    assert_source_error(csv_text(*ROWS, header=header), 1, None, "neither SEM_SMST_SECURITY_ID")
    assert_source_error("".join(f"{line}\n" for line in ROWS), 1, None, "neither")


def test_column_named_twice_is_an_error() -> None:
    header = f"{HEADER},SEM_TICK_SIZE"
    rows = [f"{line},5.0000" for line in ROWS]
    assert_source_error(csv_text(*rows, header=header), 1, "SEM_TICK_SIZE", "twice")


@pytest.mark.parametrize("text", ["", csv_text(), csv_text("")])
def test_empty_or_header_only_input_has_no_instruments(text: str) -> None:
    assert_source_error(text, None, None, "no instruments")


def test_detailed_layout_names_its_own_columns_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "api-scrip-master-detailed.csv"
    text = DETAILED.read_text(encoding="utf-8")
    path.write_text(text.replace("NSE,D,52222,", "NSE,D,52x22,"), encoding="utf-8")
    with pytest.raises(SourceError) as caught:
        load_dhan(path)
    assert (caught.value.row, caught.value.field) == (8, "SECURITY_ID")


def test_detailed_isin_that_is_not_one_is_dropped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "detailed.csv"
    path.write_text(
        DETAILED.read_text(encoding="utf-8").replace("INE040A01034", "DUMMYHDFC01"),
        encoding="utf-8",
    )
    loaded = read_dhan(path)
    assert by_token(loaded)[1333].isin == ""
    assert [(w.row, w.field) for w in loaded.warnings] == [(4, "ISIN")]


def test_ten_megabyte_field_is_refused_naming_its_row() -> None:
    huge = "N" * 10_000_000
    text = csv_text(ROWS[0], ROWS[1].replace("NIFTY 25 APR 22500 CALL", huge), ROWS[2])
    assert_source_error(text, 3, None, "not valid CSV")


# The file edge


def test_non_utf8_byte_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "api-scrip-master.csv"
    path.write_bytes(csv_text(*ROWS).replace("HDFC Bank", "HDFC \xe9").encode("latin-1"))
    with pytest.raises(SourceError) as caught:
        load_dhan(path)
    assert (caught.value.source, caught.value.row, caught.value.field) == (
        SOURCE,
        2,
        "SEM_CUSTOM_SYMBOL",
    )
    assert "0xe9" in str(caught.value)


def test_file_cut_off_mid_row_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api-scrip-master.csv"
    text = COMPACT.read_text(encoding="utf-8")
    path.write_text(text[: text.index("NIFTY 10 APR")], encoding="utf-8")
    with pytest.raises(
        SourceError, match=r"^dhan=api-scrip-master\.csv: row 16, field SEM_EXPIRY_DATE: 8 fields"
    ):
        load_dhan(path)


def test_file_cut_off_in_its_last_field_is_read_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "api-scrip-master.csv"
    path.write_text(csv_text(ROWS[1], ROWS[2], ROWS[0])[:-5], encoding="utf-8")
    loaded = read_dhan(path)
    assert loaded.instruments[2].name == "HDFC BANK"
    assert [w.detail for w in loaded.warnings] == [
        "the file does not end with a line break: it may be cut off"
    ]


def test_empty_or_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "api-scrip-master.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="the file is empty"):
        load_dhan(path)
    with pytest.raises(SourceMissingError):
        load_dhan(tmp_path / "absent.csv")


def test_source_label_defaults_to_the_file_name_and_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "today.csv"
    path.write_text(csv_text(ROWS[0], ROWS[0].replace(",1333,", ",0,")), encoding="utf-8")
    with pytest.raises(SourceError, match=r"^dhan=today\.csv: row 3"):
        load_dhan(path)
    with pytest.raises(SourceError, match=r"^scrips: row 3"):
        load_dhan(str(path), source="scrips")


# Round trip through the writer


@pytest.mark.parametrize("layout", ["compact", "detailed"])
def test_written_universe_reads_back_with_the_same_contracts(
    tmp_path: Path, layout: Literal["compact", "detailed"]
) -> None:
    universe = list(generate_universe(5000).instruments())
    path = tmp_path / f"{layout}.csv.gz"
    assert write_dhan(universe, path, layout=layout) == len(universe)
    assert gzip.decompress(path.read_bytes()).startswith(b"SEM_" if layout == "compact" else b"EX")
    loaded = read_dhan(path)
    assert (len(loaded), loaded.warnings) == (len(universe), [])
    assert len({r.key for r in loaded.instruments}) == len(universe)
    feeds = {"NSE": "NSE_EQ", "BSE": "BSE_EQ", "NFO": "NSE_FNO", "BFO": "BSE_FNO"}
    feeds |= {"CDS": "NSE_CURRENCY", "BCD": "BSE_CURRENCY", "MCX": "MCX_COMM"}
    for want, got in zip(universe, loaded.instruments, strict=True):
        assert got.tokens == (
            BrokerToken("dhan", f"dhan:{feeds[want.exchange]}", want.exchange_token),
        )
        if want.instrument_type == "EQ":
            assert got.key == want.key
        else:
            assert got.key.startswith(f"{want.exchange}:{want.name}-")
        # The file holds strikes to 5 decimals and ticks in paise to 4.
        assert abs(got.strike - want.strike) <= 5e-6
        assert abs(got.tick_size - want.tick_size) <= 5e-7
        isin = want.isin if layout == "detailed" else ""
        assert replace(
            got, key=want.key, tokens=want.tokens, strike=want.strike, tick_size=want.tick_size
        ) == replace(want, isin=isin)
