"""The two real masters joined: Kite (2024-04-03) and Fyers NSE cash (2024-06-25).

The expectations are read from the raw CSVs with the csv module, not through the loaders, so
that a loader bug cannot agree with itself.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from resolverd import Resolver, compile_snapshot
from resolverd.sources import build_registry

TRADE_DATE = dt.date(2024, 4, 3)


@pytest.fixture(scope="module")
def raw(kite_file: Path, fyers_file: Path) -> tuple[dict[int, str], dict[int, tuple[str, int]]]:
    """Kite's NSE cash symbols and Fyers' (ticker, Fytoken), both by exchange token."""
    with kite_file.open(newline="") as f:
        kite = {
            int(r["exchange_token"]): r["tradingsymbol"]
            for r in csv.DictReader(f)
            if (r["exchange"], r["segment"]) == ("NSE", "NSE")
        }
    with fyers_file.open(newline="") as f:
        fyers = {int(r[12]): (r[9], int(r[0])) for r in csv.reader(f)}
    return kite, fyers


def test_nse_equities_join_on_exchange_token_including_renamed_ones(
    kite_file: Path, fyers_file: Path, raw: tuple[dict[int, str], dict[int, tuple[str, int]]]
) -> None:
    kite, fyers = raw
    both = set(kite) & set(fyers)
    renamed = {t for t in both if f"NSE:{kite[t]}" != fyers[t][0].removesuffix("-EQ")}
    assert both and renamed  # MCDOWELL-N became UNITDSPR, L&TFH became LTF between the dates

    registry, report = build_registry(
        [f"kite={kite_file}", f"fyers={fyers_file}"], trade_date=TRADE_DATE
    )
    assert report.merged_rows == len(both)
    assert report.renamed == len(renamed)
    with Resolver(compile_snapshot(registry)) as resolver:
        for token in both:
            key = f"NSE:{kite[token]}"  # the first source names the key
            assert resolver.token(key, "fyers") == fyers[token][1]
            assert resolver.key(fyers[token][1], "fyers") == key
            assert resolver.record(key).exchange_token == token
        for token in renamed:
            assert fyers[token][0].removesuffix("-EQ") not in resolver
    renames = [w for w in report.warnings if w.detail.startswith("renamed:")]
    assert len(renames) == len(renamed)


def test_fyers_first_names_the_keys_instead(
    kite_file: Path, fyers_file: Path, raw: tuple[dict[int, str], dict[int, tuple[str, int]]]
) -> None:
    kite, fyers = raw
    registry, _ = build_registry(
        [f"fyers={fyers_file}", f"kite={kite_file}"], trade_date=TRADE_DATE
    )
    with Resolver(compile_snapshot(registry)) as resolver:
        for token in set(kite) & set(fyers):
            key = fyers[token][0].removesuffix("-EQ")
            assert resolver.key(token << 8 | 1, "kite") == key
