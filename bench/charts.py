"""The peer comparison's charts: PNGs drawn from the sections' `data` (see `bench.compare`).

``compare-lookups.png``: single-lookup latency per contender, p50 and p99, forward and
reverse, random keys (from the lookups section). ``compare-memory.png``: total PSS against reader
processes (from the memory section). ``compare-compile.png``: compile time and snapshot size
against instruments (from the scaling section). A chart whose section is absent, or holds
nothing to draw, is not written.

Figures are drawn on `matplotlib.figure.Figure` directly, which renders with Agg for a PNG and
touches neither pyplot's global state nor a display.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .compare_types import Section

LOOKUPS, MEMORY, SCALING = "lookups", "memory", "scaling"
SIZE = (9.0, 5.0)
DPI = 100
DIRECTIONS = {"forward": "key → token", "reverse": "token → key"}
QUANTILES = ("p50", "p99")
COLOURS = {
    ("forward", "p50"): "#1f5fa8",
    ("forward", "p99"): "#8fb4e0",
    ("reverse", "p50"): "#c0561b",
    ("reverse", "p99"): "#f0b38f",
}
LINE_COLOURS = ("#1f5fa8", "#c0561b", "#2c8c3c", "#7a3fa0", "#8c6d1f", "#b03060", "#444444")


def write_charts(sections: dict[str, Section], out: Path, *, title_suffix: str) -> list[Path]:
    """Write every chart whose section is in `sections` (keys `LOOKUPS`, `MEMORY`, `SCALING`)
    into `out` (created if need be); the paths written, in that order. `title_suffix` (the
    machine) ends each chart's subtitle, after the dataset."""
    drawers: dict[str, tuple[str, Callable[[Section, str], Figure | None]]] = {
        LOOKUPS: ("compare-lookups.png", _lookups),
        MEMORY: ("compare-memory.png", _memory),
        SCALING: ("compare-compile.png", _compile),
    }
    written = []
    for key, (name, draw) in drawers.items():
        section = sections.get(key)
        if section is None:
            continue
        figure = draw(section, title_suffix)
        if figure is None:
            continue
        out.mkdir(parents=True, exist_ok=True)
        path = out / name
        figure.savefig(path, dpi=DPI)
        written.append(path)
    return written


def _dataset(section: Section) -> str:
    """The dataset a section measured: the title's last parentheses (where `bench.compare`
    puts its description), led by `data["dataset"]` (its short name) unless that says it."""
    found = re.search(r"\(([^()]*)\)\s*$", section.title)
    label = found.group(1) if found else section.title
    named = section.data.get("dataset")
    if isinstance(named, str) and named and named.lower() not in label.lower():
        label = f"dataset {named}, {label}"
    return label


def _figure(title: str, dataset: str, machine: str) -> Figure:
    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    # The blank second line of the title makes the layout leave room for the subtitle.
    figure.suptitle(f"{title}\n", fontsize=12, fontweight="bold")
    subtitle = f"{dataset}; {machine}" if machine else dataset
    figure.text(0.5, 0.925, subtitle, ha="center", va="top", fontsize=9, color="#333")
    return figure


def _log_axis(axis: Axis) -> None:
    """Ticks at 1, 2 and 5 of each decade, labelled without exponents."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(_count))
    axis.set_minor_formatter(NullFormatter())


def _random_figure(figures: Mapping[str, Any], direction: str) -> Mapping[str, Any] | None:
    """The figures of single lookups over random keys in `direction`; the lookups section may
    name them "forward random", "random forward", "forward_random", ..."""
    for name, values in figures.items():
        words = set(re.split(r"[^a-z0-9]+", name.lower()))
        if direction in words and "random" in words and isinstance(values, Mapping):
            return values
    return None


def _lookups(section: Section, machine: str) -> Figure | None:
    single = section.data.get("single") or {}
    bars: dict[str, dict[tuple[str, str], float]] = {}
    for contender, figures in single.items():
        for direction in DIRECTIONS:
            values = _random_figure(figures or {}, direction) or {}
            for q in QUANTILES:
                value = values.get(q)
                if isinstance(value, int | float) and value > 0:
                    bars.setdefault(contender, {})[(direction, q)] = float(value)
    if not bars:
        return None
    figure = _figure(
        "Single lookup latency, uniform random keys (lower is better)",
        _dataset(section),
        machine,
    )
    axes = figure.add_subplot()
    series = [(d, q) for d in DIRECTIONS for q in QUANTILES]
    width = 0.8 / len(series)
    contenders = list(bars)
    for i, (direction, q) in enumerate(series):
        xs, heights = [], []
        for c, contender in enumerate(contenders):
            if (direction, q) in bars[contender]:
                xs.append(c - 0.4 + width * (i + 0.5))
                heights.append(bars[contender][(direction, q)])
        bars_drawn = axes.bar(
            xs,
            heights,
            width,
            color=COLOURS[(direction, q)],
            label=f"{direction} ({DIRECTIONS[direction]}) {q}",
        )
        if q == QUANTILES[0]:
            axes.bar_label(bars_drawn, [_count(h, None) for h in heights], fontsize=7, padding=1)
    axes.set_yscale("log")
    axes.set_ylabel("ns per lookup (log scale)")
    _log_axis(axes.yaxis)
    axes.set_xticks(range(len(contenders)), contenders, rotation=15 if len(contenders) > 5 else 0)
    axes.grid(axis="y", which="major", alpha=0.3)
    axes.legend(fontsize=8, ncols=2, loc="upper left")
    _headroom(axes)
    return figure


def _memory(section: Section, machine: str) -> Figure | None:
    total = _reader_lines(section.data.get("pss_mb"))
    if not total:
        return None
    # The data's share (total less the baseline's) where the memory section gives it: with a
    # small dataset the interpreters dominate the total and hide the differences.
    share = _reader_lines(section.data.get("data_mb"))
    figure = _figure(
        "Memory of the reader processes, PSS (lower is better)", _dataset(section), machine
    )
    colours = iter(LINE_COLOURS * len(total))
    colour = {
        name: "#888" if _is_baseline(name) else next(colours)
        for name in dict.fromkeys([*total, *share])
    }
    panels = figure.subplots(1, 2) if share else [figure.add_subplot()]
    _draw_readers(panels[0], total, colour, "total PSS of the readers, MB (log scale)")
    if share:
        _draw_readers(panels[1], share, colour, "the data's share: total less baseline, MB (log)")
    if section.data.get("server_bytes"):
        panels[-1].text(
            0.99,
            0.01,
            "server peers hold their data in the server,\noutside the readers' PSS",
            transform=panels[-1].transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            color="#555",
        )
    return figure


def _reader_lines(by_contender: Any) -> dict[str, list[tuple[int, float]]]:
    """{contender: [(readers, MB), ...]} from {contender: {readers: MB}}, positive values only
    (a log axis cannot show the rest); reader counts may be str after a JSON round trip."""
    lines = {}
    for contender, by_readers in (by_contender or {}).items():
        points = [
            (int(readers), float(mb))
            for readers, mb in (by_readers or {}).items()
            if isinstance(mb, int | float) and mb > 0
        ]
        if points:
            lines[contender] = sorted(points)
    return lines


def _is_baseline(contender: str) -> bool:
    """The baseline (interpreters that open nothing) is a reference line, not a contender."""
    return contender.lower().startswith("baseline")


def _draw_readers(
    axes: Axes, lines: dict[str, list[tuple[int, float]]], colour: dict[str, str], ylabel: str
) -> None:
    for contender, points in lines.items():
        reference = _is_baseline(contender)
        axes.plot(
            [n for n, _ in points],
            [mb for _, mb in points],
            "--" if reference else "-",
            marker="" if reference else "o",
            color=colour[contender],
            label=contender,
        )
    counts = sorted({n for points in lines.values() for n, _ in points})
    axes.set_xscale("log", base=2)
    axes.set_xticks(counts, [str(n) for n in counts])
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_yscale("log")
    _log_axis(axes.yaxis)
    axes.set_xlabel("reader processes")
    axes.set_ylabel(ylabel)
    axes.grid(which="major", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")


def _compile(section: Section, machine: str) -> Figure | None:
    series = section.data.get("series") or {}
    drawn = {
        variant: columns
        for variant, columns in series.items()
        if columns and len(columns.get("instruments") or ()) > 0
    }
    if not drawn:
        return None
    figure = _figure(
        "Compile time and snapshot size against instruments",
        "synthetic universe (resolverd.synthetic), generation not included",
        machine,
    )
    seconds, size = figure.subplots(1, 2)
    for i, (variant, columns) in enumerate(drawn.items()):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        n = columns["instruments"]
        seconds.plot(n, columns["compile_s"], marker="o", color=colour, label=variant)
        size.plot(
            n, [b / 1e6 for b in columns["snapshot_bytes"]], marker="o", color=colour, label=variant
        )
    first = next(iter(drawn.values()))
    _linear_guide(seconds, first["instruments"], first["compile_s"])
    _linear_guide(size, first["instruments"], [b / 1e6 for b in first["snapshot_bytes"]])
    seconds.set_ylabel("compile_snapshot, seconds (log scale)")
    size.set_ylabel("snapshot size, MB (log scale)")
    for axes in (seconds, size):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("instruments (log scale)")
        _log_axis(axes.xaxis)
        _log_axis(axes.yaxis)
        axes.grid(which="major", alpha=0.3)
        axes.legend(fontsize=8, loc="upper left")
    return figure


def _linear_guide(axes: Axes, xs: list[float], ys: list[float]) -> None:
    """A dotted line through the largest point, proportional to the size: linear growth."""
    if len(xs) < 2:
        return
    x0, y0 = xs[-1], ys[-1]
    axes.plot([xs[0], x0], [y0 * xs[0] / x0, y0], ":", color="#888", label="proportional to size")


def _headroom(axes: Axes) -> None:
    """Room above the tallest bar for the legend on a log axis."""
    low, high = axes.get_ylim()
    axes.set_ylim(low, high * 8)


def _count(value: float, _: object) -> str:
    """Tick labels without exponents: 100, 10k, 1M, 0.01."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"
