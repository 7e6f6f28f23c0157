"""``python -m bench core|loaders|c [--size N] [--out DIR]``,
``python -m bench daemon|torture|compare [--out DIR]``: run a suite and write its results."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from . import c_reader, compare, core, daemon, loaders, report, torture

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    suites = {
        "core": commands.add_parser(
            "core", help="lookups, batches, compile, open and size, with peers"
        ),
        "loaders": commands.add_parser(
            "loaders", help="rows/s of every loader, the whole source path, PostgreSQL"
        ),
    }
    suites["loaders"].add_argument(
        "--dsn", help="PostgreSQL server for a throwaway database (default $RESOLVERD_DSN)"
    )
    for name, run in suites.items():
        run.add_argument(
            "--size",
            type=int,
            default=core.FULL_SIZE,
            help="instruments in the synthetic universe (default %(default)s)",
        )
        run.add_argument(
            "--out",
            type=Path,
            default=RESULTS,
            help=f"where {name}-<N>.md and {name}-<N>.json go (default bench/results)",
        )
    daemon.add_arguments(
        commands.add_parser(
            "daemon", help="announcements, swaps reaching readers, the generation check"
        ),
        RESULTS,
    )
    c_reader.add_arguments(
        commands.add_parser("c", help="the C header's single lookups beside the Python client"),
        RESULTS,
    )
    compare.add_arguments(
        commands.add_parser(
            "compare",
            help="resolverd beside a dict, the CSV parse, lmdb, sqlite, Redis, PostgreSQL",
        ),
        RESULTS,
    )
    torture.add_arguments(
        commands.add_parser(
            "torture", help="readers checking every answer through swaps and kill -9 (the soak)"
        ),
        RESULTS,
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    if args.command == "daemon":
        return daemon.main(args, command)
    if args.command == "c":
        return c_reader.main(args, command)
    if args.command == "torture":
        return torture.main(args, command)
    if args.command == "compare":
        return compare.main(args, command)
    if args.size < 1_000:
        parser.error("--size must be at least 1000 (one timed batch)")

    start = time.perf_counter()
    if args.command == "core":
        results = core.run(args.size)
    else:
        results = loaders.run(args.size, dsn=args.dsn)
    print()
    print(report.printed(results))
    md, js = report.write(results, args.out, command)
    print(f"\nwrote {md} and {js} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
