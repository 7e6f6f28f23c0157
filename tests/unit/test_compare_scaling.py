"""The scaling section of the peer comparison (`bench/compare_scaling.py`) and the charts
(`bench/charts.py`): the right rows for the right sizes, a size that cannot fit skipped with its
reason, and charts that are real PNGs of the intended size, written only where there is data.
Nothing here is timed: the figures are checked for shape and consistency, never for speed."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import compare_scaling
from bench.compare_types import Section

pytest.importorskip("matplotlib", reason="the charts need matplotlib (the bench extra)")

from bench.charts import write_charts  # only once matplotlib is known present

SIZES = (1_000, 3_000)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scaling() -> Section:
    return compare_scaling.run(SIZES, log=lambda _: None)


def test_a_row_for_each_size_and_broker_variant_in_order(scaling: Section) -> None:
    got = [(row["instruments"], row["brokers"]) for row in scaling.rows]
    assert got == [(n, variant) for n in SIZES for variant in compare_scaling.VARIANTS]
    assert scaling.skipped == []
    for row in scaling.rows:
        assert row["snapshot MB"] > 0
        assert row["compile s"] > 0
        assert row["open us (median)"] > 0
        assert row["compile timing"] == "best of 3"  # every size here is below BEST_OF_UP_TO


def test_bytes_grow_with_size_and_with_brokers(scaling: Section) -> None:
    bytes_of = {(r["instruments"], r["brokers"]): r["snapshot MB"] for r in scaling.rows}
    for variant in compare_scaling.VARIANTS:
        assert bytes_of[(3_000, variant)] > bytes_of[(1_000, variant)]
    for n in SIZES:
        assert bytes_of[(n, "all brokers")] > bytes_of[(n, "kite only")]


def test_bytes_per_instrument_matches_the_snapshot_size(scaling: Section) -> None:
    series = scaling.data["series"]
    for variant, columns in series.items():
        rows = [r for r in scaling.rows if r["brokers"] == variant]
        assert columns["instruments"] == [r["instruments"] for r in rows]
        for row, size in zip(rows, columns["snapshot_bytes"], strict=True):
            assert row["bytes/instrument"] == pytest.approx(size / row["instruments"], abs=0.05)
            assert row["snapshot MB"] == pytest.approx(size / 1e6, abs=0.005)


def test_the_notes_state_growth_for_each_variant(scaling: Section) -> None:
    for variant in compare_scaling.VARIANTS:
        (note,) = [n for n in scaling.notes if n.startswith(f"{variant}, 1,000 to 3,000")]
        assert "compile time grows" in note and "snapshot size grows" in note
    assert any("every broker's column costs" in n for n in scaling.notes)


def test_the_section_survives_a_json_round_trip(scaling: Section) -> None:
    document = json.loads(json.dumps(asdict(scaling)))
    assert document["data"]["series"]["kite only"]["instruments"] == list(SIZES)


def test_a_size_that_cannot_fit_is_skipped_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo: the memory check cannot run here")
    monkeypatch.setattr(compare_scaling, "PEAK_BYTES_PER_INSTRUMENT", 10**15)
    section = compare_scaling.run((1_000,), log=lambda _: None)
    assert section.rows == []
    assert len(section.skipped) == len(compare_scaling.VARIANTS)
    assert all("GB available" in why for why in section.skipped)


@pytest.mark.parametrize(
    ("sizes", "values", "slope"),
    [
        ((1e4, 1e5, 1e6), (2.0, 20.0, 200.0), 1.0),
        ((1e3, 2e3, 4e3), (1.0, 4.0, 16.0), 2.0),
        ((1e3, 1e6), (5.0, 5.0), 0.0),
    ],
)
def test_log_log_slope(sizes: tuple[float, ...], values: tuple[float, ...], slope: float) -> None:
    assert compare_scaling.log_log_slope(sizes, values) == pytest.approx(slope)


def test_growth_words() -> None:
    got = [compare_scaling.growth(s) for s in (0.05, 0.6, 1.02, 1.2, 2.0)]
    assert got == ["flat", "sublinear", "linear", "slightly superlinear", "superlinear"]


def lookups_section() -> Section:
    single = {
        "resolverd": {
            "forward random": {"p50": 420.0, "p99": 700.0, "p999": 900.0, "calls": 1000},
            "reverse random": {"p50": 300.0, "p99": 500.0, "p999": 800.0, "calls": 1000},
        },
        "dict": {"forward random": {"p50": 650.0, "p99": 900.0, "p999": 1e3, "calls": 1000}},
        "redis": {},
    }
    return Section("Lookups (synthetic universe, 3,000 instruments)", data={"single": single})


def memory_section() -> Section:
    """What `bench.compare_memory` writes, with reader counts as JSON leaves them (str) for
    one contender and a data share below zero (noise), which a log axis cannot show."""
    pss = {
        "baseline (nothing opened)": {1: 25.0, 4: 100.0, 16: 400.0},
        "resolverd": {1: 30.0, 4: 105.0, 16: 410.0},
        "dict": {"1": 300.0, "4": 1200.0},
    }
    share = {"resolverd": {1: 5.0, 4: -1.0, 16: 10.0}, "dict": {"1": 275.0, "4": 1100.0}}
    data = {"pss_mb": pss, "data_mb": share, "server_bytes": {}}
    return Section("Memory (synthetic universe, 3,000 instruments)", data=data)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_three_charts_are_written_as_pngs(scaling: Section, tmp_path: Path) -> None:
    sections = {"lookups": lookups_section(), "memory": memory_section(), "scaling": scaling}
    written = write_charts(sections, tmp_path / "charts", title_suffix="test machine")
    names = ["compare-lookups.png", "compare-memory.png", "compare-compile.png"]
    assert [p.name for p in written] == names
    for path in written:
        assert path.stat().st_size > 0
        assert png_size(path) == (900, 500)


def test_a_chart_whose_section_is_missing_is_not_written(scaling: Section, tmp_path: Path) -> None:
    written = write_charts({"scaling": scaling}, tmp_path, title_suffix="test machine")
    assert written == [tmp_path / "compare-compile.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare-compile.png"]


def test_a_section_with_nothing_to_draw_writes_no_chart(tmp_path: Path) -> None:
    hot_only = Section(
        "Lookups (x)", data={"single": {"dict": {"forward hot": {"p50": 40.0, "p99": 60.0}}}}
    )
    sections = {"lookups": hot_only, "memory": Section("Memory (x)"), "scaling": Section("S")}
    assert write_charts(sections, tmp_path, title_suffix="test machine") == []
    assert list(tmp_path.iterdir()) == []
