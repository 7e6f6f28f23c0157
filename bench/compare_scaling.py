"""Compile time, snapshot size and open time from 10,000 to 5,000,000 instruments.

Each size is generated twice with `resolverd.synthetic.generate_universe`: with every broker's
token column (four reverse tables) and with Kite's only, the case of a single-broker desk. The
generation is timed apart from the compile: it stands in for reading the brokers' files, which
the loaders section measures. The open time is `Resolver.open` on the snapshot written to a
temporary file, the way a trading process maps it; it should not grow with the size, since an
open validates the header and section table only.
"""

from __future__ import annotations

import gc
import math
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from resolverd import Registry, Resolver, compile_snapshot
from resolverd.synthetic import BROKERS, generate_universe

from .compare_types import Section
from .data import kite_column

Log = Callable[[str], None]

SIZES = (10_000, 100_000, 1_000_000)
LARGE = 5_000_000
"""Added by the orchestrator's --large flag: about 5 GB at peak with every broker."""
VARIANTS: dict[str, tuple[str, ...]] = {"all brokers": tuple(BROKERS), "kite only": ("kite",)}
BEST_OF_UP_TO = 100_000
"""Compiles up to this size are timed best of `BEST_OF` (they are short enough to be noisy)."""
BEST_OF = 3
OPENS = 21
PEAK_BYTES_PER_INSTRUMENT = 1_500
"""Memory generate + compile add at peak, until a size of `GROWTH_FROM` or more has been
measured here: about 950 bytes per instrument with every broker at 1M, with a margin."""
MARGIN = 1.25
GROWTH_FROM = 100_000
"""The growth notes fit sizes from here up, where fixed costs no longer dominate."""


@dataclass(frozen=True)
class Point:
    """One size of one variant, measured."""

    variant: str
    instruments: int
    generate_s: float
    compile_s: float
    compile_runs: int
    snapshot_bytes: int
    open_us: float
    peak_mb: float | None
    """How far resident memory rose during generate + compile: a lower bound of what they
    need, since memory an earlier size freed is reused without raising it."""

    def row(self) -> dict[str, Any]:
        best = f"best of {self.compile_runs}" if self.compile_runs > 1 else "one run"
        return {
            "instruments": self.instruments,
            "brokers": self.variant,
            "generate s": round(self.generate_s, 3),
            "compile s": round(self.compile_s, 3),
            "compile timing": best,
            "snapshot MB": round(self.snapshot_bytes / 1e6, 2),
            "bytes/instrument": round(self.snapshot_bytes / self.instruments, 1),
            "open us (median)": round(self.open_us, 1),
        }


def run(sizes: Sequence[int] = SIZES, *, log: Log = print) -> Section:
    """Measure every size in `sizes` (ascending is best: each size's memory need is estimated
    from the ones before) with every broker and with Kite only."""
    section = Section("Compile time and snapshot size against instruments")
    points: list[Point] = []
    # Bytes per instrument at peak, from the largest size measured so far (small sizes are
    # dominated by fixed costs) with every broker: the variant that needs the most, measured
    # first at each size, so the least flattered by memory the previous size freed.
    per_instrument = float(PEAK_BYTES_PER_INSTRUMENT)
    with tempfile.TemporaryDirectory(prefix="resolverd-scaling-") as scratch:
        for n in sizes:
            for variant, brokers in VARIANTS.items():
                why = _does_not_fit(n, per_instrument)
                if why:
                    log(f"skipping {n:,} instruments, {variant}: {why}")
                    section.skipped.append(f"{n:,} instruments, {variant}: {why}")
                    continue
                point = _measure(n, variant, brokers, Path(scratch), log)
                points.append(point)
                if point.peak_mb and n >= GROWTH_FROM and brokers == VARIANTS["all brokers"]:
                    per_instrument = point.peak_mb * 1e6 / n
    section.rows = [p.row() for p in points]
    section.notes = _growth_notes(points)
    section.data = _series(points)
    return section


def _measure(n: int, variant: str, brokers: tuple[str, ...], scratch: Path, log: Log) -> Point:
    gc.collect()
    peak = _PeakMemory()
    log(f"generate_universe({n:,}), {variant} ...")
    start = perf_counter_ns()
    registry = generate_universe(n, brokers=brokers)
    generate_s = (perf_counter_ns() - start) / 1e9
    runs = BEST_OF if n <= BEST_OF_UP_TO else 1
    compile_s, snapshot = _best_compile(registry, runs)
    peak_mb = peak.mb()
    key, token = _probe(registry)
    del registry
    path = scratch / f"{n}-{len(brokers)}.snap"
    path.write_bytes(snapshot)
    size = len(snapshot)
    del snapshot
    gc.collect()
    try:
        open_us = _median_open(path, key, token)
    finally:
        path.unlink()
    log(
        f"  generated in {generate_s:.2f} s, compiled in {compile_s:.2f} s, "
        f"{size / 1e6:.1f} MB ({size / n:.0f} B/instrument), opened in {open_us:.0f} us"
        + ("" if peak_mb is None else f", peak {peak_mb:.0f} MB above the start")
    )
    return Point(variant, n, generate_s, compile_s, runs, size, open_us, peak_mb)


def _best_compile(registry: Registry, runs: int) -> tuple[float, bytearray]:
    best = math.inf
    snapshot = bytearray()
    for _ in range(runs):
        snapshot = bytearray()  # the previous run's bytes must not double the peak
        gc.collect()
        start = perf_counter_ns()
        snapshot = compile_snapshot(registry, build_time_ns=0)
        best = min(best, (perf_counter_ns() - start) / 1e9)
    return best, snapshot


def _probe(registry: Registry) -> tuple[str, int]:
    """A key and its Kite token, to check that each timed open gives a working resolver."""
    keys, tokens = kite_column(registry)
    i = len(keys) // 2
    return keys[i], int(tokens[i])


def _median_open(path: Path, key: str, token: int) -> float:
    """Microseconds for `Resolver.open(path)`, the median over `OPENS` (after one that warms
    the page cache); close() is not timed."""
    elapsed = []
    for attempt in range(OPENS + 1):
        start = perf_counter_ns()
        resolver = Resolver.open(path)
        stop = perf_counter_ns()
        try:
            got = resolver.token(key, "kite")
        finally:
            resolver.close()
        if got != token:
            raise RuntimeError(f"{path}: token({key!r}, 'kite') = {got}, expected {token}")
        if attempt:
            elapsed.append((stop - start) / 1e3)
    return statistics.median(elapsed)


class _PeakMemory:
    """How far this process's resident memory rises above its level now: writing 5 to
    /proc/self/clear_refs resets the peak (VmHWM) to the current size (Linux 4.0+); None where
    either is unavailable."""

    def __init__(self) -> None:
        self.base_kb = _proc_kb(Path("/proc/self/status"), "VmRSS:")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.base_kb = None

    def mb(self) -> float | None:
        peak_kb = _proc_kb(Path("/proc/self/status"), "VmHWM:")
        if self.base_kb is None or peak_kb is None:
            return None
        return max(0, peak_kb - self.base_kb) / 1e3


def _proc_kb(path: Path, field: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _does_not_fit(n: int, per_instrument: float) -> str | None:
    """Why generating and compiling `n` instruments would not fit in available memory, or None.
    `per_instrument` is the peak measured at the largest size so far (or the default)."""
    available_kb = _proc_kb(Path("/proc/meminfo"), "MemAvailable:")
    if available_kb is None:
        return None
    need = n * per_instrument * MARGIN
    available = available_kb * 1e3
    if need <= available:
        return None
    return (
        f"needs about {need / 1e9:.1f} GB ({per_instrument:.0f} B/instrument at peak, "
        f"x{MARGIN:g}), {available / 1e9:.1f} GB available"
    )


def log_log_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of log(y) against log(x): 1 for linear growth."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    spread = sum((x - mx) ** 2 for x in lx)
    if spread == 0:
        raise ValueError("a slope needs at least two distinct sizes")
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / spread


def growth(slope: float) -> str:
    """Words for a log-log slope."""
    if slope < 0.2:
        return "flat"
    if slope < 0.9:
        return "sublinear"
    if slope <= 1.1:
        return "linear"
    if slope <= 1.3:
        return "slightly superlinear"
    return "superlinear"


def _growth_notes(points: Sequence[Point]) -> list[str]:
    notes = []
    figures: dict[str, Callable[[Point], float]] = {
        "compile time": lambda p: p.compile_s,
        "snapshot size": lambda p: float(p.snapshot_bytes),
        "open time": lambda p: p.open_us,
    }
    for variant in VARIANTS:
        mine = sorted((p for p in points if p.variant == variant), key=lambda p: p.instruments)
        fitted = [p for p in mine if p.instruments >= GROWTH_FROM]
        if len(fitted) < 2:
            fitted = mine
        if len({p.instruments for p in fitted}) < 2:
            continue
        sizes = [float(p.instruments) for p in fitted]
        span = f"{fitted[0].instruments:,} to {fitted[-1].instruments:,} instruments"
        parts = []
        for figure, value in figures.items():
            slope = log_log_slope(sizes, [value(p) for p in fitted])
            parts.append(
                f"{figure} grows {2**slope:.2f}x per doubling (log-log slope {slope:.2f}): "
                f"{growth(slope)}"
            )
        notes.append(f"{variant}, {span}: " + "; ".join(parts) + ".")
    notes.extend(_variant_notes(points))
    notes.extend(_memory_note(points))
    return notes


def _variant_notes(points: Sequence[Point]) -> list[str]:
    """What the three further brokers' reverse tables cost, at the largest size with both."""
    by_size: dict[int, dict[str, Point]] = {}
    for p in points:
        by_size.setdefault(p.instruments, {})[p.variant] = p
    both = [n for n, found in by_size.items() if len(found) == len(VARIANTS)]
    if not both:
        return []
    n = max(both)
    every, kite = by_size[n]["all brokers"], by_size[n]["kite only"]
    return [
        f"At {n:,} instruments every broker's column costs "
        f"{every.compile_s / kite.compile_s:.2f}x the compile time of Kite's alone "
        f"({every.compile_s:.2f} s against {kite.compile_s:.2f} s) and "
        f"{every.snapshot_bytes / kite.snapshot_bytes:.2f}x the bytes "
        f"({every.snapshot_bytes / n:.0f} against {kite.snapshot_bytes / n:.0f} B/instrument). "
        "Generation is timed apart and is not part of the compile."
    ]


def _memory_note(points: Sequence[Point]) -> list[str]:
    measured = [p for p in points if p.peak_mb and p.variant == "all brokers"]
    if not measured:
        return []
    p = max(measured, key=lambda p: p.instruments)
    mb = p.peak_mb or 0.0
    return [
        f"Generating and compiling {p.instruments:,} instruments with every broker raised this "
        f"process's resident memory by {mb:,.0f} MB at peak "
        f"({mb * 1e6 / p.instruments:,.0f} B/instrument); each size is skipped unless "
        f"{MARGIN:g}x that fits in the memory available."
    ]


def _series(points: Sequence[Point]) -> dict[str, Any]:
    """For the chart and the JSON file: per variant, columns in ascending size."""
    series: dict[str, dict[str, list[Any]]] = {}
    for p in sorted(points, key=lambda p: p.instruments):
        columns = series.setdefault(
            p.variant,
            {
                "instruments": [],
                "generate_s": [],
                "compile_s": [],
                "snapshot_bytes": [],
                "open_us": [],
                "peak_mb": [],
            },
        )
        columns["instruments"].append(p.instruments)
        columns["generate_s"].append(p.generate_s)
        columns["compile_s"].append(p.compile_s)
        columns["snapshot_bytes"].append(p.snapshot_bytes)
        columns["open_us"].append(p.open_us)
        columns["peak_mb"].append(p.peak_mb)
    return {"series": series}
