"""The results of a run as a printed table, a markdown file and a JSON file."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from .core import CpuSample, Results, Row

UNITS = {"ns": "ns", "us": "µs", "s": "s", "B": "B", "bits": "bits", "rows/s": "rows/s"}
TITLES = {"core": "core benchmarks", "loaders": "loader benchmarks"}
METHODS = {
    "core": "Per-call figures are medians (p99 in brackets) of batches of 1,000 calls timed with "
    "`time.perf_counter_ns`; batch calls are timed whole. Peers ran in the same process "
    "and run, on the same data and query order. Speed is measured here, never asserted "
    "in tests; every figure's answers were checked before it was timed.",
    "loaders": "Each figure is the wall-clock time of whole calls (the median of several where a "
    "call is short), turned into rows per second; every synthetic master is written from the "
    "same universe by `bench/masters`, and the records each call returned were counted before "
    "its time was kept. The PostgreSQL figures use a throwaway database on the local server.",
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name in ("model name", "cpu family", "model", "stepping") and name not in cpu:
                cpu[name] = value.strip()
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("numpy", "xxhash", "lmdb", "msgspec", "resolverd"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu.get("model name", platform.processor() or platform.machine()),
        "cpu_family_model_stepping": "/".join(
            cpu.get(k, "?") for k in ("cpu family", "model", "stepping")
        ),
        "cores": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        **versions,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0%}" for name, value in shares.items()) or "unknown"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _value(value: float | None, p99: float | None, unit: str) -> str:
    if value is None:
        return "—"
    text = f"{_number(value)} {UNITS[unit]}"
    return text + (f" (p99 {_number(p99)})" if p99 is not None else "")


def _cells(row: Row) -> list[str]:
    peers = (
        "; ".join(f"{name}: {_value(p50, p99, row.unit)}" for name, (p50, p99) in row.peers.items())
        or "—"
    )
    ratios = "; ".join(f"{r:.2f} x {name}" for name, r in row.ratios.items()) or "—"
    targets = "; ".join(c.text for c in row.checks) or "—"
    met = "; ".join("yes" if c.met else f"**NO** ({_number(c.value)})" for c in row.checks)
    figure = row.figure + (f" <br><sub>{row.note}</sub>" if row.note else "")
    return [figure, _value(row.value, row.p99, row.unit), peers, ratios, targets, met or "—"]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return lines


def markdown(results: Results, info: dict[str, Any], command: str) -> str:
    lines = [
        f"# resolverd {TITLES[results.suite]}, {results.size:,} instruments",
        "",
        f"`{command}` on {info['cpu']} (family/model/stepping "
        f"{info['cpu_family_model_stepping']}, {info['cores']} cores), Python {info['python']}, "
        f"numpy {info['numpy']}, xxhash {info['xxhash']}, lmdb {info['lmdb']}, {info['date']}. "
        f"Load average when the run started: {results.load_before}, when it ended: "
        f"{info['load_average_1_5_15']}; shares of all cores' time during the run: "
        f"{_shares(info['cpu_during_run'])} (other work on the machine inflates figures, "
        "p99s first).",
        "",
        METHODS[results.suite],
        "",
    ]
    lines += _table(
        ["figure", "resolverd", "peers", "ratio", "target", "met?"],
        [_cells(r) for r in results.rows],
    )
    missed = [(r, c) for r in results.rows for c in r.checks if not c.met]
    lines += ["", "## Targets missed", ""]
    lines += [
        f"- {r.figure}: {_number(c.value)} against {c.text} ({c.value / c.bound:.2f} x the bound)"
        for r, c in missed
    ] or ["- none"]
    for title, table in results.tables.items():
        lines += ["", f"## {title}", ""]
        header = list(dict.fromkeys(k for row in table for k in row))
        lines += _table(header, [[str(row.get(k, "")) for k in header] for row in table])
    if results.notes or results.skipped:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in results.notes]
        lines += [f"- skipped: {what}" for what in results.skipped]
    return "\n".join(lines) + "\n"


def public_argv(argv: list[str]) -> list[str]:
    """The arguments a results file records, less what names a path of the machine that ran
    it: argv[0] is already gone, and --out and its value go too."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(arg)
    return kept


def as_json(results: Results, info: dict[str, Any], command: str) -> str:
    rows = []
    for row in results.rows:
        data = asdict(row)
        data["peers"] = {name: {"p50": p50, "p99": p99} for name, (p50, p99) in row.peers.items()}
        for check, raw in zip(row.checks, data["checks"], strict=True):
            raw["met"] = check.met
        rows.append(data)
    document = {
        "size": results.size,
        "command": command,
        "argv": public_argv(sys.argv[1:]),
        "machine": info,
        "load_average_before": results.load_before,
        "rows": rows,
        "tables": results.tables,
        "notes": results.notes,
        "skipped": results.skipped,
    }
    return json.dumps(_rounded(document), indent=2, ensure_ascii=False) + "\n"


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def printed(results: Results) -> str:
    """A plain-text table for the terminal."""
    header = ["figure", "resolverd", "peers", "ratio", "target", "met?"]
    cells = [[c.replace("**", "").split(" <br>")[0] for c in _cells(r)] for r in results.rows]
    widths = [min(max(len(h), *(len(r[i]) for r in cells)), 60) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    for title, table in results.tables.items():
        lines += ["", title]
        for row in table:
            lines.append("  " + "  ".join(str(v) for v in row.values()))
    return "\n".join(lines)


def write(results: Results, directory: Path, command: str) -> tuple[Path, Path]:
    info = machine()
    info["cpu_during_run"] = CpuSample.now().since(results.cpu_before)
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / f"{results.suite}-{results.size}.md"
    js = directory / f"{results.suite}-{results.size}.json"
    md.write_text(markdown(results, info, command))
    js.write_text(as_json(results, info, command))
    return md, js
