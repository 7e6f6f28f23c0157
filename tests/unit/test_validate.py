"""The gates between loading and compiling."""

from __future__ import annotations

import datetime as dt

import msgspec
import numpy as np
import pytest

from resolverd.compiler import compile_snapshot
from resolverd.errors import RegistryError, SourceError
from resolverd.join import join
from resolverd.loaders import Loaded
from resolverd.model import BrokerToken, Registry
from resolverd.shm_layout import read_header
from resolverd.synthetic import generate_universe
from resolverd.validate import Report, check, drop_expired_columns

from .test_join import CALL, SBIN, source

TRADE_DATE = dt.date(2024, 4, 3)


def test_expired_contracts_are_dropped_counted_and_the_source_called_stale() -> None:
    expired = msgspec.structs.replace(
        CALL,
        key="NFO:NIFTY24MAR22500CE",
        expiry=dt.date(2024, 3, 28),
        exchange_token=1,
        tokens=(BrokerToken("kite", "kite", 1 << 8 | 2),),
    )
    kept, report = check(join([source("kite=k.csv", SBIN, CALL, expired)]), trade_date=TRADE_DATE)
    assert [i.key for i in kept] == ["NSE:SBIN", "NFO:NIFTY24APR22500CE"]
    assert report.expired == 1
    assert report.sources["kite=k.csv"].rows == 3
    (stale,) = report.stale
    assert "kite=k.csv is stale: 1 of its 3 contracts expired before the trade date 2024-04-03" in (
        stale
    )
    assert "the latest on 2024-03-28" in stale


def test_a_contract_expiring_on_the_trade_date_is_kept() -> None:
    kept, report = check(join([source("kite=k.csv", CALL)]), trade_date=dt.date(2024, 4, 25))
    assert len(kept) == 1
    assert report.stale == []


def test_duplicate_keys_are_refused_naming_both_rows() -> None:
    other = msgspec.structs.replace(
        SBIN, exchange_token=9999, tokens=(BrokerToken("fyers", "fyers", 10100000009999),)
    )
    with pytest.raises(SourceError) as caught:
        check(join([source("kite=k.csv", SBIN), source("fyers=f.csv", other)]), trade_date=None)
    error = caught.value
    assert (error.source, error.row, error.field) == ("fyers=f.csv", 2, "key")
    assert "key NSE:SBIN is listed twice: here and at kite=k.csv row 2" in error.detail


def test_a_token_used_twice_in_a_feed_is_refused_naming_both_rows() -> None:
    clash = msgspec.structs.replace(CALL, tokens=SBIN.tokens)
    with pytest.raises(SourceError) as caught:
        check(join([source("kite=k.csv", SBIN, clash)]), trade_date=None)
    error = caught.value
    assert (error.row, error.field) == (3, "token")
    assert "token 779521 of feed kite is used twice: by NSE:SBIN (kite=k.csv row 2)" in error.detail


def test_the_same_token_in_two_feeds_is_fine() -> None:
    angel_nse = msgspec.structs.replace(SBIN, tokens=(BrokerToken("angel", "angel:NSE", 3045),))
    angel_nfo = msgspec.structs.replace(CALL, tokens=(BrokerToken("angel", "angel:NFO", 3045),))
    kept, _ = check(join([source("angel=a.json", angel_nse, angel_nfo)]), trade_date=None)
    assert len(kept) == 2


def test_a_broker_that_fell_by_more_than_the_allowed_share_is_refused() -> None:
    joined = join([source("kite=k.csv", SBIN, CALL)])
    with pytest.raises(RegistryError, match=r"broker kite: 2 instruments against 3 .* 33\.3%"):
        check(joined, trade_date=None, previous={"kite": 3})
    kept, report = check(joined, trade_date=None, previous={"kite": 3}, max_drop=0.5)
    assert len(kept) == 2
    assert report.previous == {"kite": 3}


def test_a_broker_missing_altogether_counts_as_a_full_fall() -> None:
    with pytest.raises(RegistryError, match="broker fyers: 0 instruments"):
        check(join([source("kite=k.csv", SBIN)]), trade_date=None, previous={"fyers": 10})


def test_the_report_groups_warnings_and_shows_a_few_of_each_kind() -> None:
    loaded = Loaded("x=x.csv")
    loaded.add(2, SBIN)
    for row in range(3, 20):
        loaded.warn("skipped: a bond", row=row, field="instrument_type")
    _, report = check(join([loaded]), trade_date=None)
    text = "\n".join(report.lines())
    assert "17 warnings" in text
    assert "  skipped: 17" in text
    assert "... and 12 more" in text


def test_the_report_says_whether_expiries_were_checked() -> None:
    joined = join([source("kite=k.csv", SBIN, CALL)])
    _, unchecked = check(joined, trade_date=None)
    assert unchecked.lines()[0].startswith("no trade date: 2 instruments from 2 rows")
    assert unchecked.lines()[0].endswith("; expiries not checked")
    _, checked = check(joined, trade_date=dt.date(2024, 4, 3))
    assert checked.lines()[0].startswith("trade date 2024-04-03: 2 instruments")
    assert checked.lines()[0].endswith("; 0 expired contracts dropped")


def test_columnar_expiry_gate_matches_the_record_gate() -> None:
    universe = generate_universe(3000, trade_date=TRADE_DATE)
    later = dt.date(2024, 4, 20)
    columns = drop_expired_columns(universe, "synthetic", Report(later))
    records = Loaded("synthetic")
    for row, instrument in enumerate(universe.instruments(), 1):
        records.add(row, instrument)
    kept, report = check(join([records]), trade_date=later)
    assert report.expired > 0
    assert list(columns.keys) == [i.key for i in kept]
    rebuilt = Registry.from_instruments(kept, trade_date=later)
    assert set(columns.exchange.categories) == set(rebuilt.exchange.categories)
    np.testing.assert_array_equal(columns.expiry_days, rebuilt.expiry_days)


def test_a_registry_filtered_in_columns_compiles_like_the_same_records() -> None:
    universe = generate_universe(3000, trade_date=TRADE_DATE)
    later = dt.date(2024, 4, 20)
    columns = drop_expired_columns(universe, "synthetic", Report(later))
    kept = [i for i in universe.instruments() if i.expiry is None or i.expiry >= later]
    rebuilt = Registry.from_instruments(kept, trade_date=later)
    assert (
        read_header(compile_snapshot(columns)).payload_checksum
        == read_header(compile_snapshot(rebuilt)).payload_checksum
    )


def test_a_clash_names_the_row_that_brought_the_token_when_one_row_brings_several() -> None:
    # A registry read from PostgreSQL gives one row with every broker's token.
    both = msgspec.structs.replace(
        SBIN,
        tokens=(BrokerToken("kite", "kite", 779521), BrokerToken("fyers", "fyers", 7)),
    )
    clash = msgspec.structs.replace(
        CALL, tokens=(BrokerToken("fyers", "fyers", 7),), exchange_token=99
    )
    with pytest.raises(SourceError) as caught:
        check(join([source("postgres=db", both), source("fyers=f.csv", clash)]), trade_date=None)
    error = caught.value
    assert (error.source, error.row) == ("fyers=f.csv", 2)
    assert "by NSE:SBIN (postgres=db row 2)" in error.detail
