"""``python -m bench compare``: resolverd beside what trading code uses today, in one run.

For each dataset (the real Kite file, the 1M synthetic universe, and with ``--large`` the 5M
one) every contender of `bench.stores` is loaded with the same keys and tokens and measured:
single and batch lookups (`bench.compare_lookups`), start-up to the first correct lookup
(`bench.compare_startup`) and memory with 1, 4 and 16 reader processes
(`bench.compare_memory`). Once per run: compile time and snapshot size as the universe grows
from 10k to 5M instruments (`bench.compare_scaling`; 10k and 100k with ``--quick``), and the
swap figures of the daemon suite's latest results file. The report is ``compare.md`` and
``compare.json`` with PNG charts, in ``bench/results`` by default.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import compare_lookups, compare_memory, compare_scaling, compare_startup, datasets, report
from .charts import write_charts
from .compare_types import Section
from .served import scratch_directory
from .stores import STORES, Store

SCALING_SIZES = (10_000, 100_000, 1_000_000, 5_000_000)
QUICK_SCALING_SIZES = (10_000, 100_000)
Log = Any


def add_arguments(parser: argparse.ArgumentParser, results: Path) -> None:
    parser.add_argument(
        "--dataset",
        action="append",
        choices=["kite", *datasets.SIZES],
        help="a dataset to measure (repeatable; default: kite and 1m, with --large also 5m)",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="add the 5M-instrument universe (long: tens of minutes)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer calls, readers and sizes (the CI form)"
    )
    parser.add_argument(
        "--out", type=Path, default=results, help="where compare.md, .json and the charts go"
    )


def main(args: argparse.Namespace, command: str) -> int:
    names = args.dataset or (["kite"] if args.quick else ["kite", "1m"])
    if args.large and "5m" not in names:
        names.append("5m")
    began = time.perf_counter()
    sections, failures = run(names, quick=args.quick)
    seconds = time.perf_counter() - began
    args.out.mkdir(parents=True, exist_ok=True)
    charts = write_charts(_for_charts(sections), args.out, title_suffix=_machine_line())
    info = report.machine()
    md, js = args.out / "compare.md", args.out / "compare.json"
    md.write_text(markdown(sections, info, command, seconds, charts, args.out))
    document = {
        "command": command,
        "machine": info,
        "seconds": seconds,
        "sections": {key: asdict(section) for key, section in sections.items()},
    }
    js.write_text(json.dumps(report._rounded(document), indent=2, ensure_ascii=False) + "\n")
    print(md.read_text())
    print(f"wrote {md}, {js} and {len(charts)} charts in {seconds:.0f} s")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


def run(names: list[str], *, quick: bool, log: Log = print) -> tuple[dict[str, Section], list[str]]:
    """Every section, keyed ``<dataset>/<part>`` (and ``scaling``, ``swap``); what failed."""
    sections: dict[str, Section] = {}
    failures: list[str] = []
    available: list[Store] = []
    for store in STORES:
        why = store.missing()
        if why:
            log(f"skipping {store.name}: {why}")
        else:
            available.append(store)
    skipped = [f"{s.name}: {s.missing()}" for s in STORES if s not in available]
    for name in names:
        why = datasets.missing(name)
        if why:
            log(f"skipping dataset {name}: {why}")
            sections[f"{name}/skipped"] = Section(f"Dataset {name}", skipped=[why])
            continue
        root = scratch_directory()
        try:
            log(f"dataset {name}: building ...")
            dataset = datasets.build(name, root)
            log(f"  {len(dataset):,} instruments with a Kite token")
            parts = {
                "lookups": lambda d=dataset: compare_lookups.run(
                    d, available, log=log, quick=quick
                ),
                "startup": lambda d=dataset: compare_startup.run(
                    d, available, log=log, quick=quick
                ),
                "memory": lambda d=dataset: compare_memory.run(d, available, log=log, quick=quick),
            }
            for part, measure in parts.items():
                log(f"dataset {name}: {part} ...")
                section = measure()
                section.title = f"{section.title} ({_label(dataset)})"
                section.skipped = [*skipped, *section.skipped]
                sections[f"{name}/{part}"] = section
                failures += [f"{name}/{part}: {f}" for f in section.data.get("failures", [])]
        finally:
            shutil.rmtree(root, ignore_errors=True)
    sizes = QUICK_SCALING_SIZES if quick else SCALING_SIZES
    log(f"scaling: {', '.join(f'{s:,}' for s in sizes)} ...")
    sections["scaling"] = compare_scaling.run(sizes, log=log)
    sections["swap"] = swap_section()
    return sections, failures


def _label(dataset: datasets.Dataset) -> str:
    if dataset.name == "kite":
        return f"the real Kite file, {len(dataset):,} instruments"
    return f"synthetic universe, {len(dataset):,} instruments"


def swap_section(results: Path | None = None) -> Section:
    """The swap figures, from the daemon suite's latest results file (it measures them with a
    running daemon; this suite does not start one)."""
    path = (results or Path(__file__).resolve().parent / "results") / "daemon.json"
    section = Section("Swaps: announcement latency and readers following (daemon suite)")
    if not path.exists():
        section.skipped.append(f"no daemon results at {path}: run `python -m bench daemon`")
        return section
    document = json.loads(path.read_text())
    for row in document["rows"]:
        if row["unit"] in ("us", "s") and (
            "announced" in row["figure"] or "reader" in row["figure"]
        ):
            section.rows.append(
                {
                    "figure": row["figure"],
                    "p50": f"{row['value']:,.1f} {row['unit']}",
                    "p99": "" if row["p99"] is None else f"{row['p99']:,.1f} {row['unit']}",
                }
            )
    section.notes.append(
        f"From `bench/results/daemon.json`, written by `{document['command']}` on "
        f"{document['machine']['date']}."
    )
    return section


def _for_charts(sections: dict[str, Section]) -> dict[str, Section]:
    """The sections the charts draw: the largest dataset measured, and the scaling."""
    chosen: dict[str, Section] = {}
    for name in ("5m", "1m", "kite"):
        if f"{name}/lookups" in sections:
            chosen["lookups"] = sections[f"{name}/lookups"]
            chosen["memory"] = sections[f"{name}/memory"]
            break
    chosen["scaling"] = sections["scaling"]
    return chosen


def _machine_line() -> str:
    info = report.machine()
    return f"{info['cpu']}, {info['cores']} cores, Python {info['python']}"


def markdown(
    sections: dict[str, Section],
    info: dict[str, Any],
    command: str,
    seconds: float,
    charts: list[Path],
    out: Path,
) -> str:
    lines = [
        "# resolverd against its peers",
        "",
        f"`{command}` on {info['cpu']} (family/model/stepping "
        f"{info['cpu_family_model_stepping']}, {info['cores']} cores), Python {info['python']}, "
        f"numpy {info['numpy']}, lmdb {info['lmdb']}, {info['date']}; {seconds:.0f} s in all.",
        "",
        "Every contender holds the same keys and Kite tokens and is measured in the same run; "
        "single lookups are per-call figures from batches timed with `time.perf_counter_ns`, "
        "interleaved so that machine load falls on all alike; every contender's answers were "
        "checked before any was timed. resolverd resolves in fingerprint mode (the default).",
        "",
    ]
    lines += [f"![{chart.stem}]({chart.relative_to(out)})" for chart in charts]
    for section in sections.values():
        lines += ["", f"## {section.title}", ""]
        if section.rows:
            header = list(dict.fromkeys(k for row in section.rows for k in row))
            lines += report._table(
                header, [[str(row.get(k, "")) for k in header] for row in section.rows]
            )
        if section.notes or section.skipped:
            lines.append("")
        lines += [f"- {note}" for note in section.notes]
        lines += [f"- skipped: {what}" for what in section.skipped]
    return "\n".join(lines) + "\n"
