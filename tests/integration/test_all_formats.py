"""Every broker format at once: one synthetic universe written in each broker's real format,
read back through format detection, joined on exchange token and compiled."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bench.masters.angel import write_angel
from bench.masters.dhan import write_dhan
from bench.masters.fyers import write_fyers
from bench.masters.kite import write_kite
from bench.masters.upstox import write_upstox
from resolverd import Resolver, compile_snapshot
from resolverd.model import Instrument, date_to_days
from resolverd.sources import build_registry
from resolverd.synthetic import DEFAULT_TRADE_DATE, generate_universe

WRITERS = {
    "instruments.csv.gz": write_kite,
    "NSE_FO.csv": write_fyers,
    "OpenAPIScripMaster.json": write_angel,
    "complete.json.gz": write_upstox,
    "api-scrip-master.csv": write_dhan,
}


@pytest.fixture(scope="module")
def universe() -> list[Instrument]:
    return list(generate_universe(4000).instruments())


@pytest.fixture(scope="module")
def masters(universe: list[Instrument], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    directory = tmp_path_factory.mktemp("masters")
    for name, write in WRITERS.items():
        assert write(universe, directory / name) > 0
    return [str(directory / name) for name in WRITERS]  # bare paths: formats are detected


def test_five_brokers_join_into_one_instrument_per_contract(
    universe: list[Instrument], masters: list[str]
) -> None:
    registry, report = build_registry(masters, trade_date=DEFAULT_TRADE_DATE)
    assert sorted(report.sources) == sorted(
        f"{fmt}={Path(m).name}"
        for fmt, m in zip(("kite", "fyers", "angel", "upstox", "dhan"), masters, strict=True)
    )
    assert len(registry) == len(universe)
    assert report.brokers == {
        b: len(universe) for b in ("kite", "fyers", "angel", "upstox", "dhan")
    }
    with Resolver(compile_snapshot(registry)) as resolver:
        for instrument in universe[:: max(1, len(universe) // 500)]:
            record = resolver.record(instrument.key)  # Kite, listed first, names every key
            assert record.lot_size == instrument.lot_size
            assert record.expiry == instrument.expiry
            for token in instrument.tokens:
                assert resolver.token(instrument.key, token.broker) == token.value
                assert resolver.key(token.value, token.feed) == instrument.key
            dhan = next(t for t in record.tokens if t.broker == "dhan")
            assert dhan.value == instrument.exchange_token
            assert resolver.key(dhan.value, dhan.feed) == instrument.key


def test_a_later_trade_date_drops_what_expired_in_every_source(masters: list[str]) -> None:
    later = DEFAULT_TRADE_DATE + dt.timedelta(days=30)
    registry, report = build_registry(masters, trade_date=later)
    assert report.expired > 0
    assert len(report.stale) == 5
    days = registry.expiry_days
    assert ((days == 0) | (days >= date_to_days(later))).all()
    assert len(registry) == len(build_registry(masters, trade_date=DEFAULT_TRADE_DATE)[0]) - (
        report.expired
    )
