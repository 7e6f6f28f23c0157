"""The synthetic universe: its size, its determinism, and the brokers' token rules on every row.

The rules are written out here again from the brokers' documentation rather than imported, so
that a wrong constant in `resolverd.synthetic` fails a test instead of agreeing with itself.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from resolverd import NO_TOKEN
from resolverd.errors import UnknownNameError
from resolverd.model import Categorical, Registry, TokenColumn, days_to_date
from resolverd.synthetic import generate_universe

TRADE_DATE = dt.date(2024, 4, 3)
EXCHANGES = {"NSE", "BSE", "NFO", "BFO", "MCX", "CDS"}
SEGMENTS = {
    "NSE",
    "BSE",
    "NFO-FUT",
    "NFO-OPT",
    "BFO-FUT",
    "BFO-OPT",
    "MCX-FUT",
    "MCX-OPT",
    "CDS-FUT",
    "CDS-OPT",
}
KITE_SEGMENT_ID = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "BFO": 5, "MCX": 7}
FYERS_PREFIX = {
    "NSE": "1010",
    "NFO": "1011",
    "CDS": "1012",
    "MCX": "1120",
    "BSE": "1210",
    "BFO": "1211",
}
UPSTOX_DERIVATIVES = {"NFO": "NSE_FO", "BFO": "BSE_FO", "MCX": "MCX_FO", "CDS": "NCD_FO"}
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKLY_MONTHS = "123456789OND"
OPTION_KEY = re.compile(
    r"(?P<exchange>[A-Z]+):(?P<name>[A-Z&-]+?)(?P<yy>\d\d)"
    r"(?:(?P<mon>[A-Z]{3})|(?P<m>[1-9OND])(?P<dd>\d\d))"
    r"(?P<strike>\d+(?:\.\d+)?)(?P<type>CE|PE)"
)
FUTURE_KEY = re.compile(r"(?P<exchange>[A-Z]+):(?P<name>[A-Z&-]+?)(?P<yy>\d\d)(?P<mon>[A-Z]{3})FUT")


@pytest.fixture(scope="module")
def universe() -> Registry:
    return generate_universe(50_000)


def values(column: Categorical) -> NDArray[np.object_]:
    return np.array(column.categories, dtype=object)[column.codes]


def token_column(registry: Registry, broker: str) -> TokenColumn:
    (column,) = (t for t in registry.tokens if t.broker == broker)
    return column


def everything(registry: Registry) -> tuple[object, ...]:
    """Every column of a registry, in a form that compares by value."""
    categoricals = [
        registry.exchange,
        registry.segment,
        registry.instrument_type,
        registry.name,
    ]
    arrays = [
        registry.expiry_days,
        registry.strike,
        registry.tick_size,
        registry.lot_size,
        registry.isin,
        registry.exchange_token,
    ]
    tokens = [(t.broker, t.kind, list(t.values), list(values(t.feeds))) for t in registry.tokens]
    return (
        list(registry.keys),
        [list(values(c)) for c in categoricals],
        [a.tolist() for a in arrays],
        tokens,
        registry.trade_date,
    )


def isin_is_valid(isin: str) -> bool:
    """ISO 6166: letters as two digits (A=10 ... Z=35), then the Luhn check over the digits."""
    digits = "".join(str(int(c, 36)) for c in isin)
    total = 0
    for place, char in enumerate(reversed(digits)):
        d = int(char) * (2 if place % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


@pytest.mark.parametrize("n", [1_000, 1_001, 9_999, 12_345, 20_000, 49_999])
def test_has_exactly_the_number_of_instruments_asked_for(n: int) -> None:
    registry = generate_universe(n)
    assert len(registry) == n
    columns = (
        registry.exchange,
        registry.segment,
        registry.instrument_type,
        registry.name,
        registry.expiry_days,
        registry.strike,
        registry.tick_size,
        registry.lot_size,
        registry.isin,
        registry.exchange_token,
    )
    assert [len(c) for c in columns] == [n] * len(columns)
    for broker in registry.tokens:
        assert len(broker.values) == n
        assert len(broker.feeds) == n


def test_keys_are_unique(universe: Registry) -> None:
    assert len(set(universe.keys)) == len(universe)


def test_the_same_seed_gives_the_same_registry() -> None:
    assert everything(generate_universe(10_000, seed=7)) == everything(
        generate_universe(10_000, seed=7)
    )


def test_another_seed_gives_another_registry() -> None:
    one, other = generate_universe(10_000, seed=1), generate_universe(10_000, seed=2)
    assert one.keys != other.keys
    assert token_column(one, "kite").values.tolist() != token_column(other, "kite").values.tolist()


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1_000, 30_000), seed=st.integers(0, 2**32 - 1))
def test_any_size_and_seed_gives_unique_keys_and_kite_tokens(n: int, seed: int) -> None:
    registry = generate_universe(n, seed=seed)
    assert len(registry) == n
    assert len(set(registry.keys)) == n
    assert len(np.unique(token_column(registry, "kite").values)) == n


def test_kite_token_is_the_exchange_token_shifted_over_the_segment_id(universe: Registry) -> None:
    segment_id = np.array([KITE_SEGMENT_ID[e] for e in values(universe.exchange)], np.uint64)
    kite = token_column(universe, "kite")
    assert kite.kind == "int"
    expected = (universe.exchange_token << np.uint64(8)) | segment_id
    assert np.array_equal(kite.values, expected)
    assert int(np.max(kite.values)) < 2**32  # Kite's instrument tokens are 32-bit


def test_fyers_token_is_prefix_then_expiry_then_exchange_token(universe: Registry) -> None:
    fyers = token_column(universe, "fyers")
    exchanges = values(universe.exchange)
    for row in range(len(universe)):
        expiry = days_to_date(int(universe.expiry_days[row]))
        middle = "000000" if expiry is None else expiry.strftime("%y%m%d")
        token = int(universe.exchange_token[row])
        assert int(fyers.values[row]) == int(f"{FYERS_PREFIX[exchanges[row]]}{middle}{token}")


def test_fyers_cash_token_has_the_form_of_the_real_master(universe: Registry) -> None:
    fyers = token_column(universe, "fyers")
    nse = np.flatnonzero(values(universe.exchange) == "NSE")[:50]
    for row in nse.tolist():
        assert str(fyers.values[row]) == f"1010000000{universe.exchange_token[row]}"


def test_tokens_are_unique_within_each_feed(universe: Registry) -> None:
    assert {t.broker for t in universe.tokens} == {"kite", "fyers", "angel", "upstox"}
    for column in universe.tokens:
        feeds = values(column.feeds)
        for feed in set(feeds):
            rows = np.flatnonzero(feeds == feed)
            tokens = [column.values[i] for i in rows.tolist()]
            assert len(set(tokens)) == len(tokens), (column.broker, feed)


def test_one_feed_per_broker_except_angel_which_has_one_per_exchange(
    universe: Registry,
) -> None:
    exchanges = values(universe.exchange)
    for column in universe.tokens:
        feeds = values(column.feeds)
        if column.broker == "angel":
            assert list(feeds) == [f"angel:{e}" for e in exchanges]
            assert np.array_equal(column.values, universe.exchange_token)
        else:
            assert set(feeds) == {column.broker}
        if column.kind == "int":
            assert (np.asarray(column.values) != NO_TOKEN).all()
        else:
            assert None not in column.values


def test_upstox_token_is_the_isin_for_equities_and_the_exchange_token_otherwise(
    universe: Registry,
) -> None:
    upstox = token_column(universe, "upstox")
    assert upstox.kind == "str"
    exchanges = values(universe.exchange)
    for row in range(0, len(universe), 7):
        exchange = exchanges[row]
        if exchange in ("NSE", "BSE"):
            expected = f"{exchange}_EQ|{universe.isin[row].decode()}"
        else:
            expected = f"{UPSTOX_DERIVATIVES[exchange]}|{universe.exchange_token[row]}"
        assert upstox.values[row] == expected


def test_every_exchange_and_segment_appears_from_20000_instruments() -> None:
    registry = generate_universe(20_000)
    assert set(values(registry.exchange)) == EXCHANGES
    assert set(values(registry.segment)) == SEGMENTS
    assert set(values(registry.instrument_type)) == {"EQ", "FUT", "CE", "PE"}


def test_categorical_tables_hold_only_values_in_use(universe: Registry) -> None:
    for column in (universe.exchange, universe.segment, universe.instrument_type, universe.name):
        assert len(np.unique(column.codes)) == len(column.categories)
        assert len(set(column.categories)) == len(column.categories)


@pytest.mark.parametrize("trade_date", [TRADE_DATE, dt.date(2024, 12, 30), dt.date(2025, 9, 30)])
def test_derivatives_expire_on_or_after_the_trade_date_and_cash_never(trade_date: dt.date) -> None:
    registry = generate_universe(20_000, trade_date=trade_date)
    cash = np.isin(values(registry.exchange), ["NSE", "BSE"])
    assert registry.trade_date == trade_date
    assert (registry.expiry_days[cash] == 0).all()
    assert (registry.expiry_days[~cash] >= (trade_date - dt.date(1970, 1, 1)).days).all()


def check_keys_against_metadata(registry: Registry, rows: list[int]) -> None:
    exchanges, types = values(registry.exchange), values(registry.instrument_type)
    names, segments = values(registry.name), values(registry.segment)
    for row in rows:
        key, expiry = registry.keys[row], days_to_date(int(registry.expiry_days[row]))
        pattern = FUTURE_KEY if types[row] == "FUT" else OPTION_KEY
        parsed = pattern.fullmatch(key)
        assert parsed is not None and expiry is not None, key
        assert parsed["exchange"] == exchanges[row]
        assert segments[row] == f"{exchanges[row]}-{'FUT' if types[row] == 'FUT' else 'OPT'}"
        assert parsed["name"] == names[row], key
        assert int(parsed["yy"]) == expiry.year % 100, key
        if parsed["mon"]:
            assert parsed["mon"] == MONTHS[expiry.month - 1], key
        else:
            month = WEEKLY_MONTHS.index(parsed["m"]) + 1
            assert (month, int(parsed["dd"])) == (expiry.month, expiry.day), key
        if types[row] != "FUT":
            assert float(parsed["strike"]) == registry.strike[row], key
            assert parsed["type"] == types[row], key
        else:
            assert registry.strike[row] == 0


def test_derivative_keys_parse_back_to_their_metadata(universe: Registry) -> None:
    derivatives = np.flatnonzero(values(universe.instrument_type) != "EQ")
    sample = np.random.default_rng(0).choice(derivatives, 3_000, replace=False)
    check_keys_against_metadata(universe, sorted(sample.tolist()))


def test_weekly_symbols_for_october_to_december_use_o_n_d() -> None:
    registry = generate_universe(20_000, trade_date=dt.date(2024, 9, 30))
    keys = registry.keys
    weekly = [k for k in keys if re.fullmatch(r"NFO:NIFTY24[OND]\d\d\d+(CE|PE)", k)]
    assert weekly, "no weekly NIFTY option in October"
    chosen = set(weekly[:200])
    rows = [row for row, key in enumerate(keys) if key in chosen]
    check_keys_against_metadata(registry, rows)


def test_kite_formats_for_monthly_weekly_and_futures(universe: Registry) -> None:
    keys = set(universe.keys)
    assert "NFO:NIFTY24APRFUT" in keys
    assert "NFO:NIFTY24APR22450CE" in keys  # 2024-04-25, the last Thursday: monthly
    assert "NFO:NIFTY2441122450PE" in keys  # 2024-04-11: weekly
    assert "NFO:BANKNIFTY2440347600CE" in keys  # expiring on the trade date itself
    assert "NSE:RELIANCE" in keys
    assert "BSE:RELIANCE" in keys


def test_equities_have_valid_isins_and_a_dual_listing_shares_one(universe: Registry) -> None:
    exchanges, types = values(universe.exchange), values(universe.instrument_type)
    cash = np.isin(exchanges, ["NSE", "BSE"])
    assert (types[cash] == "EQ").all()
    assert (universe.isin[~cash] == b"").all()
    isins = [i.decode() for i in universe.isin[cash].tolist()]
    assert all(len(i) == 12 and i.startswith("INE") and isin_is_valid(i) for i in isins)
    nse = {
        k.removeprefix("NSE:"): i
        for k, i, e in zip(universe.keys, universe.isin, exchanges, strict=False)
        if e == "NSE"
    }
    bse = {
        k.removeprefix("BSE:"): i
        for k, i, e in zip(universe.keys, universe.isin, exchanges, strict=False)
        if e == "BSE"
    }
    dual = nse.keys() & bse.keys()
    assert len(dual) > 100
    assert all(nse[s] == bse[s] for s in dual)
    assert len(set(nse.values())) == len(nse)
    assert len(set(bse.values())) == len(bse)


def test_the_isin_check_used_here_accepts_real_isins() -> None:
    assert isin_is_valid("INE002A01018")  # Reliance Industries
    assert isin_is_valid("INE009A01021")  # Infosys
    assert isin_is_valid("US0378331005")  # Apple
    assert not isin_is_valid("INE002A01017")


def test_nse_lists_other_series_than_eq(universe: Registry) -> None:
    nse = [k for k in universe.keys if k.startswith("NSE:")]
    for series in ("-BE", "-SM"):
        assert any(k.endswith(series) for k in nse)


def test_tick_lot_and_strike_follow_the_segment(universe: Registry) -> None:
    exchanges, types = values(universe.exchange), values(universe.instrument_type)
    ticks = {e: set(universe.tick_size[exchanges == e].tolist()) for e in EXCHANGES}
    assert ticks["NSE"] == ticks["BSE"] == ticks["NFO"] == ticks["BFO"] == {0.05}
    assert ticks["CDS"] == {0.0025}
    assert ticks["MCX"] <= {1.0, 0.1, 0.05}
    options = np.isin(types, ["CE", "PE"])
    assert (universe.strike[options] > 0).all()
    assert (universe.strike[~options] == 0).all()
    assert (universe.lot_size[types == "EQ"] == 1).all()
    assert (universe.lot_size >= 1).all()


def test_exchange_tokens_stay_in_their_exchange_range(universe: Registry) -> None:
    exchanges = values(universe.exchange)
    nse = universe.exchange_token[exchanges == "NSE"]
    nfo = universe.exchange_token[exchanges == "NFO"]
    assert nse.min() >= 1 and nse.max() < 100_000
    assert nfo.min() >= 10_000 and nfo.max() < 1_000_000


def test_a_1000_row_universe_is_whole() -> None:
    registry = generate_universe(1_000)
    assert len(registry) == len(set(registry.keys)) == 1_000
    assert {"NSE", "BSE", "NFO"} <= set(values(registry.exchange))
    check_keys_against_metadata(
        registry, np.flatnonzero(values(registry.instrument_type) != "EQ").tolist()
    )


def test_brokers_choose_the_token_columns_and_their_order() -> None:
    registry = generate_universe(2_000, brokers=("upstox", "kite"))
    assert [t.broker for t in registry.tokens] == ["upstox", "kite"]
    full = generate_universe(2_000)
    assert token_column(registry, "kite").values.tolist() == (
        token_column(full, "kite").values.tolist()
    )


def test_an_unknown_broker_is_refused() -> None:
    with pytest.raises(UnknownNameError, match="zerodha"):
        generate_universe(1_000, brokers=("kite", "zerodha"))


def test_an_empty_universe_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        generate_universe(0)
