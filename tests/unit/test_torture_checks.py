"""The torture run's checks catch what they must: answers from two generations, or from an
older one (`bench/torture.py`). A torture run that reports 0 wrong means something only if a
wrong answer would have been counted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from bench.torture import Churn, _Checker
from resolverd import Resolver, compile_snapshot
from resolverd.sources import build_registry

CHURN = Churn(static=5, count=20)
KINDS = range(6)


def snapshot(tmp_path: Path, version: int) -> Resolver:
    source = tmp_path / f"v{version}.csv"
    CHURN.write(source, version)
    registry, _ = build_registry([f"kite={source}"], trade_date=dt.date(2024, 4, 3))
    return Resolver(compile_snapshot(registry, generation=version))


class Mixed:
    """A resolver that answers the version lookup from `newer` and everything else from
    `older`: what a reader would see if a swap could tear through a lookup."""

    def __init__(self, older: Resolver, newer: Resolver) -> None:
        self.older, self.newer = older, newer

    def token(self, key: str, broker: str) -> Any:
        return (self.newer if key == CHURN.key(0) else self.older).token(key, broker)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.older, name)


def run_checks(checker: _Checker, kinds: range) -> None:
    picks = [0, *range(1, CHURN.count, 3)]
    for kind in kinds:
        for i in range(CHURN.count):
            checker.check(kind, i, picks)


def test_a_whole_generation_passes_every_kind_of_check(tmp_path: Path) -> None:
    checker = _Checker(snapshot(tmp_path, 7), CHURN)
    run_checks(checker, KINDS)
    assert checker.counts["wrong"] == 0, checker.examples
    assert checker.counts["checks"] == 6 * CHURN.count
    assert checker.first_version == checker.last_version == 7


@pytest.mark.parametrize("kind", range(1, 6))
def test_answers_of_an_older_generation_than_the_one_read_are_counted(
    tmp_path: Path, kind: int
) -> None:
    checker = _Checker(Mixed(snapshot(tmp_path, 7), snapshot(tmp_path, 8)), CHURN)  # type: ignore[arg-type]
    run_checks(checker, range(kind, kind + 1))
    assert checker.counts["wrong"] > 0


def test_going_back_to_an_older_version_is_counted(tmp_path: Path) -> None:
    older, newer = snapshot(tmp_path, 7), snapshot(tmp_path, 8)
    checker = _Checker(newer, CHURN)
    checker.version()
    checker.r = older
    checker.version()
    assert checker.counts["wrong"] == 1
    assert "went back from version 8 to 7" in checker.examples[0]
