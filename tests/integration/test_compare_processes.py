"""The peer comparison's process sections on a small synthetic dataset: start-up to the first
correct lookup in fresh interpreters (`bench.compare_startup`) and the PSS of reader processes
(`bench.compare_memory`). Every contender available here runs; one that answers wrong is noted
as a failure with its figure left out; a reader count that would not fit in memory is skipped
with its reason, before any reader starts. Nothing here is timed or sized."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bench import compare_memory, compare_startup
from bench.compare_types import Section
from bench.datasets import Dataset, synthetic
from bench.stores import STORES, CsvDictStore, Opened, ResolverdStore, Spec, Store

pytestmark = pytest.mark.integration

INSTRUMENTS = 2_000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """A Kite-only synthetic universe as the comparison's datasets are made: a Kite CSV and a
    snapshot compiled from the same registry."""
    return synthetic("small", tmp_path_factory.mktemp("processes"), INSTRUMENTS)


class OffByOneStore:
    """resolverd, but every token it gives is one too high: a contender that answers wrong.
    (Defined here at module level: the children unpickle it by reference.)"""

    name = "off by one"
    shared = True

    def missing(self) -> str | None:
        return None

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        return ResolverdStore().prepare(dataset, workdir)

    def open(self, spec: Spec) -> Opened:
        real = ResolverdStore().open(spec)
        return Opened(
            lambda key: real.forward(key) + 1,
            real.reverse,
            lambda keys: real.forward_batch(keys) + 1,
            real.reverse_batch,
            real.close,
            [real],
        )

    def cleanup(self, spec: Spec) -> None:
        pass


def _available() -> list[Store]:
    return [store for store in STORES if store.missing() is None]


def _contenders(section: Section) -> list[str]:
    return [row["contender"] for row in section.rows]


def _no_leftovers(dataset: Dataset) -> list[str]:
    """What a section left in the dataset's directory besides the dataset's own files."""
    own = {dataset.csv.name, dataset.snapshot.name}
    return sorted(p.name for p in dataset.directory.iterdir() if p.name not in own)


def test_startup_runs_every_contender_in_fresh_interpreters(dataset: Dataset) -> None:
    stores: Sequence[Store] = [*_available(), OffByOneStore()]
    section = compare_startup.run(dataset, stores, log=lambda _: None, repeats=2, quick=True)

    names = [store.name for store in stores]
    assert _contenders(section) == [*compare_startup.BASELINES, *names]
    # The liar is the only failure: its child refused its own answer, and it has no figure.
    assert len(section.data["failures"]) == 1
    assert section.data["failures"][0].startswith("off by one: wrong answer, exit code 3")
    assert "off by one" not in section.data["startup_ms"]
    liar = section.rows[-1]
    assert liar["start-up, median"] == "—" and liar["most of it"].startswith("failed")
    for name in [*compare_startup.BASELINES, *names[:-1]]:
        runs = section.data["startup_ms"][name]
        assert len(runs) == 2 and all(ms > 0 for ms in runs), (name, runs)
    for name in names[:-1]:  # each store's child went through every phase
        assert set(section.data["phases_ms"][name]) == set(compare_startup.PHASES), name
        assert any(note.startswith(f"{name}: ") for note in section.notes) or name == "resolverd"
    json.dumps(section.data)  # the orchestrator writes it to compare.json
    assert _no_leftovers(dataset) == []


def test_a_store_that_needs_only_the_standard_library_is_started_without_numpy() -> None:
    assert compare_startup.libraries(CsvDictStore()) == ("csv",)
    assert "resolverd" in compare_startup.libraries(ResolverdStore())


def test_memory_sums_each_readers_pss_beside_a_baseline_that_opened_nothing(
    dataset: Dataset,
) -> None:
    stores: Sequence[Store] = [*_available(), OffByOneStore()]
    readers = (1, 2)
    section = compare_memory.run(dataset, stores, log=lambda _: None, readers=readers)

    names = [store.name for store in stores]
    expected = [(name, n) for name in [compare_memory.BASELINE, *names] for n in readers]
    assert [(row["contender"], row["readers"]) for row in section.rows] == expected
    # The liar's first reader found the wrong token and said which; nothing else failed.
    assert len(section.data["failures"]) == 1
    failure = section.data["failures"][0]
    assert failure.startswith("off by one: 1 readers: ") and "forward_batch" in failure
    assert section.data["smaps_kb"]["off by one"] == {}
    for name in [compare_memory.BASELINE, *names[:-1]]:
        measured = section.data["smaps_kb"][name]
        assert set(measured) == set(readers), name
        for fields in measured.values():
            assert fields["Pss"] > 0 and fields["Rss"] >= fields["Pss"], (name, fields)
        # The sum grows with the readers: each is a whole interpreter.
        assert measured[2]["Pss"] > measured[1]["Pss"], (name, measured)
        assert set(section.data["pss_mb"][name]) == set(readers)
    for name in names[:-1]:
        assert set(section.data["data_mb"][name]) == set(readers)
    servers = {store.name for store in stores if getattr(store, "remote", False)}
    assert set(section.data["server_bytes"]) == servers
    assert all(size > 0 for size in section.data["server_bytes"].values())
    json.dumps(section.data)
    assert _no_leftovers(dataset) == []


def test_a_reader_count_that_would_not_fit_is_skipped_before_any_reader_starts(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    available_kb = 4 * 1024 * 1024
    monkeypatch.setattr(compare_memory, "_mem_available_kb", lambda: available_kb)
    # Over a thousand pairs at 10 MB each: over 10 GB per reader, more than 60% of 4 GB.
    assert len(dataset) > 1000
    monkeypatch.setattr(compare_memory, "PRIOR_BYTES_PER_PAIR", 10 << 20)
    started: list[Any] = []

    def spawn(*args: Any) -> list[Any]:
        started.append(args)
        return []

    monkeypatch.setattr(compare_memory, "spawn", spawn)

    section = compare_memory.run(dataset, [ResolverdStore()], log=lambda _: None, readers=(1, 4))

    assert started == []
    assert section.data["failures"] == []
    assert {row["PSS in all"] for row in section.rows} == {"skipped: memory"}
    assert len(section.skipped) == 4  # the baseline and resolverd, 1 and 4 readers each
    for line in section.skipped:
        assert "more than 60% of the 4.00 GB available" in line, line
