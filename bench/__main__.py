"""``python -m bench core [--size N] [--out DIR]``: run the core figures and write the results."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from . import core, report

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("core", help="lookups, batches, compile, open and size, with peers")
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
        help="where core-<N>.md and core-<N>.json go (default bench/results)",
    )
    args = parser.parse_args(argv)
    if args.size < 1_000:
        parser.error("--size must be at least 1000 (one timed batch)")

    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    results = core.run(args.size)
    print()
    print(report.printed(results))
    md, js = report.write(results, args.out, command)
    print(f"\nwrote {md} and {js} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
