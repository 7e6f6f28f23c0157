"""The Kite ``instruments`` loader: the real dump, Zerodha's mocks, and every way a row is bad."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from resolverd.errors import EX_DATAERR, EX_NOINPUT, SourceError, SourceMissingError
from resolverd.loaders import load_source
from resolverd.loaders.kite import COLUMNS, load_kite, parse_kite
from resolverd.model import BrokerToken, Instrument, Registry

SOURCE = "kite=instruments.csv"
HEADER = ",".join(COLUMNS)
# Three real rows of the 2024-04-03 dump; in a file they are rows 2, 3 and 4.
ROWS = (
    "1793,7,AARTIIND,AARTI INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE",
    "17437186,68114,NIFTY24APR22500CE,NIFTY,0,25-04-2024,22500,0.05,50,CE,NFO-OPT,NFO",
    "134197252,524208,AARTIIND,AARTI INDUSTRIES.,0,,0,0.05,1,EQ,BSE,BSE",
)

AARTIIND = Instrument(
    key="NSE:AARTIIND",
    exchange="NSE",
    segment="NSE",
    instrument_type="EQ",
    name="AARTI INDUSTRIES",
    expiry=None,
    strike=0.0,
    tick_size=0.05,
    lot_size=1,
    exchange_token=7,
    tokens=(BrokerToken(broker="kite", feed="kite", value=1793),),
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
    tokens=(BrokerToken(broker="kite", feed="kite", value=17437186),),
)


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "".join(f"{line}\n" for line in (header, *rows))


def parse(text: str) -> list[Instrument]:
    return list(parse_kite(text.splitlines(keepends=True), SOURCE))


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
    where = SOURCE + (f": row {row}" if row is not None else "")
    where += f", field {field}" if field is not None else ""
    assert str(error).startswith(f"{where}: ")
    assert error.exit_code == EX_DATAERR


# The real dump


@pytest.fixture(scope="module")
def real(kite_file: Path) -> list[Instrument]:
    return load_kite(kite_file)


def test_real_file_loads_every_row_with_unique_keys(real: list[Instrument]) -> None:
    assert len(real) == 31_373
    assert len({r.key for r in real}) == 31_373


def test_real_file_counts_per_exchange_and_segment(real: list[Instrument]) -> None:
    assert Counter(r.exchange for r in real) == {"NSE": 182, "BSE": 181, "NFO": 31_010}
    assert Counter(r.segment for r in real) == {
        "NSE": 182,
        "BSE": 181,
        "NFO-FUT": 558,
        "NFO-OPT": 30_452,
    }


def test_real_file_rows_map_field_by_field(real: list[Instrument]) -> None:
    by_key = {r.key: r for r in real}
    assert real[0] == AARTIIND
    assert by_key["NFO:NIFTY24APR22500CE"] == NIFTY_CALL
    assert by_key["BSE:AARTIIND"].tokens[0].value == 134197252
    assert by_key["BSE:AARTIIND"].name == "AARTI INDUSTRIES."
    future = by_key["NFO:AARTIIND24APRFUT"]
    assert (future.instrument_type, future.expiry, future.strike, future.lot_size) == (
        "FUT",
        dt.date(2024, 4, 25),
        0.0,
        1000,
    )


def test_real_file_low_token_byte_is_the_segment(real: list[Instrument]) -> None:
    low_bytes = {(r.segment, int(r.tokens[0].value) & 0xFF) for r in real}
    assert low_bytes == {("NSE", 1), ("BSE", 4), ("NFO-FUT", 2), ("NFO-OPT", 2)}


def test_real_file_builds_a_registry(real: list[Instrument]) -> None:
    registry = Registry.from_instruments(real)
    assert len(registry) == 31_373
    (kite,) = registry.tokens
    assert (kite.broker, kite.kind, kite.feeds.categories) == ("kite", "int", ("kite",))
    assert kite.values[0] == 1793
    assert registry.exchange_token[0] == 7


def test_real_file_through_load_source_by_name_and_by_sniffing(
    kite_file: Path, real: list[Instrument]
) -> None:
    label = f"kite={kite_file.name}"
    for spec in (f"kite={kite_file}", str(kite_file)):
        loaded = load_source(spec)
        assert (loaded.source, loaded.instruments) == (label, real)
        assert loaded.rows == list(range(2, len(real) + 2))


# Zerodha's mocks: the live API's format


def test_mocks_load_with_iso_expiries_and_empty_names(kite_mocks: Path) -> None:
    for name in ("instruments_all.csv", "instruments_nse.csv"):
        records = load_kite(kite_mocks / name)
        assert len(records) == 99
        assert len({r.key for r in records}) == 99
    by_key = {r.key: r for r in load_kite(kite_mocks / "instruments_all.csv")}
    option = by_key["NFO:BANKNIFTY18JAN23500CE"]
    assert (option.name, option.expiry, option.strike, option.lot_size) == (
        "",
        dt.date(2018, 1, 25),
        23500.0,
        40,
    )
    assert option.tokens == (BrokerToken("kite", "kite", 12073986),)
    cash = by_key["NSE:CENTRALBK-BE"]
    assert (cash.expiry, cash.strike, cash.exchange_token) == (None, 0.0, 14898)


# The parser on inline text


def test_parser_needs_no_file_and_yields_records_in_order() -> None:
    assert parse(csv_text(*ROWS))[:2] == [AARTIIND, NIFTY_CALL]


def test_both_expiry_formats_give_the_same_date() -> None:
    iso = parse(with_field("expiry", "2024-04-25"))
    day_first = parse(with_field("expiry", "25-04-2024"))
    assert iso == day_first
    assert iso[1].expiry == dt.date(2024, 4, 25)


def test_columns_are_found_by_name_and_extra_columns_ignored() -> None:
    order = [*reversed(COLUMNS), "isin"]
    rows = [",".join([*reversed(line.split(",")), "INE769A01020"]) for line in ROWS]
    assert parse(csv_text(*rows, header=",".join(order))) == parse(csv_text(*ROWS))


def test_byte_order_mark_and_crlf_line_ends_are_tolerated() -> None:
    text = "\ufeff" + csv_text(*ROWS).replace("\n", "\r\n")
    assert parse(text) == parse(csv_text(*ROWS))


def test_blank_lines_are_skipped_but_counted_as_rows() -> None:
    text = csv_text(ROWS[0], "", ROWS[1].replace("68114", "68115"))
    assert_source_error(text, 4, "instrument_token", "does not match exchange_token 68115")


# Bad input: each case names the source, the row (header = row 1) and the field


def test_bad_instrument_token_message_reads_like_the_style_guide() -> None:
    with pytest.raises(SourceError) as caught:
        parse(with_field("instrument_token", "12x34"))
    assert str(caught.value) == (
        "kite=instruments.csv: row 3, field instrument_token: '12x34' is not an integer"
    )


@pytest.mark.parametrize(
    ("column", "value", "detail"),
    [
        ("instrument_token", "", "is empty"),
        ("instrument_token", "1.5", "'1.5' is not an integer"),
        ("instrument_token", " 17437186", "is not an integer"),
        ("instrument_token", "-17437186", "'-17437186' is negative"),
        ("instrument_token", str(2**32), "out of range 0..4294967295"),
        ("exchange_token", "68x14", "'68x14' is not an integer"),
        ("exchange_token", "-68114", "is negative"),
        ("tradingsymbol", "", "is empty"),
        ("exchange", "", "is empty"),
        ("expiry", "2024/04/25", "is not a date"),
        ("expiry", "31-02-2024", "is not a date"),
        ("expiry", "25-04-24", "is not a date"),
        ("expiry", "04-25-2024", "is not a date"),
        ("strike", "abc", "'abc' is not a number"),
        ("strike", "", "is empty"),
        ("strike", "-22500", "is negative"),
        ("strike", "nan", "is not a finite number"),
        ("strike", "inf", "is not a finite number"),
        ("strike", "1e999", "is not a finite number"),
        ("strike", "22_500", "is not a plain decimal number"),
        ("tick_size", "0.05x", "is not a number"),
        ("tick_size", "-0.05", "is negative"),
        ("tick_size", "NaN", "is not a finite number"),
        ("lot_size", "50.0", "'50.0' is not an integer"),
        ("lot_size", "-50", "is negative"),
        ("lot_size", "", "is empty"),
        ("lot_size", str(2**32), "out of range"),
    ],
)
def test_bad_field_is_a_source_error_naming_row_and_field(
    column: str, value: str, detail: str
) -> None:
    assert_source_error(with_field(column, value), 3, column, detail)


def test_token_that_breaks_the_exchange_token_identity_names_both_numbers() -> None:
    text = with_field("exchange_token", "68115")
    assert_source_error(text, 3, "instrument_token", "17437186 does not match exchange_token 68115")


def test_identity_takes_any_segment_byte_without_a_table() -> None:
    token = 68114 << 8 | 0xEE
    records = parse(with_field("instrument_token", str(token)))
    assert records[1].tokens[0].value == token


def test_wrong_number_of_fields_names_the_row() -> None:
    assert_source_error(csv_text(ROWS[0], ROWS[1] + ",extra"), 3, None, "13 fields")
    short = csv_text(ROWS[0], ROWS[1].rsplit(",", 1)[0])
    assert_source_error(short, 3, "exchange", "11 fields")  # the column it lacks


def test_missing_header_is_reported_on_row_1() -> None:
    text = "".join(f"{line}\n" for line in ROWS)
    assert_source_error(text, 1, "instrument_token", "is the header row missing?")


def test_missing_column_is_named() -> None:
    header = HEADER.replace(",lot_size", "")
    rows = [line.replace(",50,CE", ",CE").replace(",1,EQ", ",EQ") for line in ROWS]
    assert_source_error(csv_text(*rows, header=header), 1, "lot_size", "no column 'lot_size'")


def test_column_named_twice_is_an_error() -> None:
    assert_source_error(csv_text(header=HEADER + ",expiry"), 1, "expiry", "twice")


@pytest.mark.parametrize("text", ["", csv_text(), csv_text("")])
def test_empty_or_header_only_input_has_no_instruments(text: str) -> None:
    assert_source_error(text, None, None, "no instruments")


def test_duplicate_key_names_both_rows() -> None:
    text = csv_text(*ROWS, ROWS[0].replace("1793,7,", "2049,8,"))
    assert_source_error(text, 5, "tradingsymbol", "NSE:AARTIIND is listed twice: rows 2 and 5")


def test_same_symbol_on_two_exchanges_is_not_a_duplicate() -> None:
    keys = [r.key for r in parse(csv_text(*ROWS))]
    assert keys == ["NSE:AARTIIND", "NFO:NIFTY24APR22500CE", "BSE:AARTIIND"]


def test_unparseable_csv_names_the_row() -> None:
    huge_name = "N" * 200_000  # beyond csv.field_size_limit()
    text = csv_text(ROWS[0], ROWS[1].replace("NIFTY,", f"{huge_name},"), ROWS[2])
    assert_source_error(text, 3, None, "not valid CSV")


# The file edge


def test_non_utf8_byte_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "instruments.csv"
    path.write_bytes(csv_text(*ROWS).replace("AARTI INDUSTRIES.", "AARTI \xe9").encode("latin-1"))
    with pytest.raises(SourceError) as caught:
        load_kite(path)
    assert (caught.value.source, caught.value.row) == (SOURCE, 4)
    assert "0xe9" in str(caught.value)
    assert str(caught.value).startswith("kite=instruments.csv: row 4, field name: ")


def test_missing_file_is_source_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceMissingError) as caught:
        load_kite(tmp_path / "instruments.csv")
    assert caught.value.source == SOURCE
    assert caught.value.exit_code == EX_NOINPUT


def test_source_label_defaults_to_the_file_name_and_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "today.csv"
    path.write_text(csv_text(ROWS[0], ROWS[0]), encoding="utf-8")
    with pytest.raises(SourceError, match=r"^kite=today\.csv: row 3"):
        load_kite(path)
    with pytest.raises(SourceError, match=r"^zerodha: row 3"):
        load_kite(str(path), source="zerodha")
