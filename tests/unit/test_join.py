"""Joining sources: on the exchange's contract identity, never on the symbol."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from resolverd.errors import SourceError
from resolverd.join import Origin, join
from resolverd.loaders import Loaded
from resolverd.model import BrokerToken, Instrument

SBIN = Instrument(
    key="NSE:SBIN",
    exchange="NSE",
    segment="NSE",
    instrument_type="EQ",
    name="STATE BANK OF INDIA",
    tick_size=0.05,
    lot_size=1,
    exchange_token=3045,
    tokens=(BrokerToken("kite", "kite", 779521),),
)
CALL = Instrument(
    key="NFO:NIFTY24APR22500CE",
    exchange="NFO",
    segment="NFO-OPT",
    instrument_type="CE",
    name="NIFTY",
    expiry=dt.date(2024, 4, 25),
    strike=22500.0,
    tick_size=0.05,
    lot_size=50,
    exchange_token=35003,
    tokens=(BrokerToken("kite", "kite", 35003 << 8 | 2),),
)


def other_broker(instrument: Instrument, broker: str, token: int, **changes: object) -> Instrument:
    return msgspec.structs.replace(
        instrument, tokens=(BrokerToken(broker, broker, token),), **changes
    )


def source(label: str, *instruments: Instrument, first_row: int = 2) -> Loaded:
    loaded = Loaded(label)
    for row, instrument in enumerate(instruments, first_row):
        loaded.add(row, instrument)
    return loaded


def test_rows_of_one_contract_join_into_one_instrument_with_every_token() -> None:
    joined = join(
        [
            source("kite=k.csv", SBIN, CALL),
            source("fyers=f.csv", other_broker(SBIN, "fyers", 10100000003045), first_row=1),
        ]
    )
    assert [i.key for i in joined.instruments] == ["NSE:SBIN", "NFO:NIFTY24APR22500CE"]
    assert joined.instruments[0].tokens == (
        BrokerToken("kite", "kite", 779521),
        BrokerToken("fyers", "fyers", 10100000003045),
    )
    assert joined.origins[0] == [Origin("kite=k.csv", 2), Origin("fyers=f.csv", 1)]
    assert (joined.merged_rows, joined.renamed, joined.warnings) == (1, 0, [])


def test_a_renamed_symbol_joins_on_its_exchange_token_and_keeps_the_first_key() -> None:
    renamed = other_broker(SBIN, "fyers", 10100000003045, key="NSE:SBI")
    joined = join([source("kite=k.csv", SBIN), source("fyers=f.csv", renamed)])
    assert [i.key for i in joined.instruments] == ["NSE:SBIN"]
    assert joined.renamed == 1
    (warning,) = joined.warnings
    assert (warning.source, warning.row, warning.field) == ("fyers=f.csv", 2, "key")
    assert "calls NSE NSE exchange token 3045 NSE:SBI; kept NSE:SBIN from kite=k.csv row 2" in str(
        warning
    )


def test_the_same_symbol_on_another_exchange_token_does_not_join() -> None:
    relisted = other_broker(SBIN, "fyers", 10100000009999, exchange_token=9999)
    joined = join([source("kite=k.csv", SBIN), source("fyers=f.csv", relisted)])
    assert len(joined) == 2  # the duplicate key is the gates' to refuse, naming both rows


def test_an_index_does_not_join_a_stock_with_the_same_exchange_token() -> None:
    index = other_broker(SBIN, "fyers", 101000000026000, key="NSE:NIFTY50-INDEX", segment="INDICES")
    joined = join([source("kite=k.csv", SBIN), source("fyers=f.csv", index)])
    assert len(joined) == 2


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [("lot_size", 25, "has lot_size 25 here but 50"), ("expiry", dt.date(2024, 4, 24), "expiry")],
)
def test_sources_that_disagree_on_lot_size_or_expiry_are_refused_naming_both_rows(
    field: str, value: object, text: str
) -> None:
    other = other_broker(CALL, "angel", 35003, **{field: value})
    with pytest.raises(SourceError) as caught:
        join([source("kite=k.csv", SBIN, CALL), source("angel=a.json", other, first_row=7)])
    error = caught.value
    assert (error.source, error.row, error.field) == ("angel=a.json", 7, field)
    assert text in error.detail
    assert "kite=k.csv row 3" in error.detail


def test_two_keys_of_one_source_on_one_contract_are_refused() -> None:
    twin = msgspec.structs.replace(SBIN, key="NSE:SBIN-XX")
    with pytest.raises(SourceError, match="listed twice in this source") as caught:
        join([source("kite=k.csv", SBIN, twin)])
    assert (caught.value.row, caught.value.field) == (3, "exchange_token")
    assert "at row 2" in caught.value.detail


def test_one_broker_twice_on_one_contract_is_refused() -> None:
    again = other_broker(SBIN, "kite", 779521)
    with pytest.raises(SourceError, match="already has a kite token"):
        join([source("kite=k.csv", SBIN), source("kite=k2.csv", again)])


def test_a_later_source_fills_in_an_isin_the_first_left_empty() -> None:
    with_isin = other_broker(SBIN, "fyers", 10100000003045, isin="INE062A01020")
    joined = join([source("kite=k.csv", SBIN), source("fyers=f.csv", with_isin)])
    assert joined.instruments[0].isin == "INE062A01020"


def test_a_different_tick_size_is_listed_not_refused() -> None:
    finer = other_broker(SBIN, "fyers", 10100000003045, tick_size=0.01)
    joined = join([source("kite=k.csv", SBIN), source("fyers=f.csv", finer)])
    assert joined.instruments[0].tick_size == 0.05
    assert [w.field for w in joined.warnings] == ["tick_size"]


def test_rows_without_an_exchange_token_never_join() -> None:
    bare = msgspec.structs.replace(SBIN, exchange_token=0)
    joined = join([source("a=a.csv", bare), source("b=b.csv", other_broker(bare, "b", 1))])
    assert len(joined) == 2
