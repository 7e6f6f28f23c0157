"""The C reader's figures (issue 7): single lookups through include/resolverd.h, hot and
random, beside the Python client's on the same snapshot, the same keys and the same query
order, in the same run, and beside the machine's memory latency, the floor a random lookup
that misses the caches cannot go under.

The C side is bench/c/lookup_bench.c, compiled here with the system compiler
(`cc -std=c99 -O2`); it times batches of 1,000 calls with clock_gettime and reports p50/p99
ns per call over batches, as bench/timing.py does for Python. Each side's answers are checked:
the Python client's before it is timed, the C program's by a sum of its answers that must equal
the one the Python client gives, so a fast wrong path cannot produce a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from resolverd import Resolver

from . import report, timing
from .core import CpuSample, Results, Row
from .data import BROKER, FEED, build, fresh, pure_python, shuffled

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).resolve().parent / "c" / "lookup_bench.c"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Werror", f"-I{ROOT / 'include'}"]
MIN_RANDOM_CALLS = 1_000_000
"""Random figures pass over the shuffled keys until at least this many calls (C side)."""
MASK64 = (1 << 64) - 1
METHOD = (
    "C figures: medians (p99 in brackets) of batches of 1,000 calls timed with "
    "`clock_gettime(CLOCK_MONOTONIC)` in bench/c/lookup_bench.c (`cc -std=c99 -O2`), through "
    "include/resolverd.h in fingerprint mode. Python figures: the same snapshot file, keys and "
    "query order through `Resolver.token()`/`key()`, timed as `python -m bench core` times them "
    "(bench/timing.py). Hot: one key (token) again and again; random: every Kite key (token) "
    "once in a shuffled order. Memory latency: dependent loads at random over 256 MiB. Speed "
    "is measured here, never asserted in tests; both readers' answers were checked."
)


def add_arguments(parser: argparse.ArgumentParser, results: Path) -> None:
    """The ``python -m bench c`` options."""
    parser.add_argument(
        "--size",
        type=int,
        default=1_000_000,
        help="instruments in the synthetic universe (default %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=results, help="where c-<N>.md and c-<N>.json go"
    )


def find_compiler(variable: str = "CC", *names: str) -> str | None:
    """The compiler $`variable` names, else the first of `names` (default cc, gcc) on PATH."""
    return os.environ.get(variable) or next(
        (found for name in names or ("cc", "gcc") if (found := shutil.which(name))), None
    )


def main(args: argparse.Namespace, command: str) -> int:
    compiler = find_compiler()
    if compiler is None:
        raise SystemExit("python -m bench c: no C compiler ($CC, cc or gcc)")
    if args.size < 1_000:
        raise SystemExit("python -m bench c: --size must be at least 1000 (one timed batch)")
    start = time.perf_counter()
    results = run(args.size, compiler)
    print()
    print(report.printed(results))
    md, js = write(results, args.out, command)
    print(f"\nwrote {md} and {js} in {time.perf_counter() - start:.1f} s")
    return 0


def _expected_sum(values: list[int], calls: int) -> int:
    """The C program's check for `calls` lookups cycling through `values`' answers."""
    passes, rest = divmod(calls, len(values))
    return (passes * sum(values) + sum(values[:rest])) & MASK64


def run(size: int, compiler: str, *, log: Any = print) -> Results:
    results = Results(size, suite="c")
    log(f"generating and compiling a {size:,}-instrument universe ...")
    universe = build(size)
    n = len(universe.keys)
    order = shuffled(n, seed=1)
    keys = [universe.keys[i] for i in order.tolist()]
    token_order = shuffled(n, seed=3)
    tokens = universe.tokens[token_order]
    hot = n // 2
    with tempfile.TemporaryDirectory(prefix="resolverd-bench-c-") as scratch:
        where = Path(scratch)
        snapshot = where / "universe.snap"
        snapshot.write_bytes(universe.snapshot)
        (where / "keys.txt").write_bytes(b"".join(k.encode() + b"\n" for k in keys))
        (where / "tokens.u64").write_bytes(tokens.astype("<u8").tobytes())
        binary = where / "lookup_bench"
        log(f"compiling {SOURCE.name} with {compiler} ...")
        subprocess.run([compiler, *CFLAGS, str(SOURCE), "-o", str(binary)], check=True)
        with Resolver.open(snapshot) as resolver:
            log(f"checking the Python client's answers over {n:,} keys and tokens ...")
            forward = [int(resolver.token(k, BROKER)) for k in fresh(keys)]
            reverse = [resolver.key(t, FEED) for t in tokens.tolist()]
            expected_tokens = universe.tokens[order]
            assert forward == expected_tokens.tolist(), "Python token() answers differ"
            assert reverse == [universe.keys[i] for i in token_order.tolist()]
            log(f"C lookups over {n:,} keys ...")
            output = subprocess.run(
                [
                    *map(str, (binary, snapshot, where / "keys.txt", where / "tokens.u64", hot)),
                    str(MIN_RANDOM_CALLS),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            c = {line["figure"]: line for line in map(json.loads, output.splitlines())}
            lengths = [len(k.encode()) for k in reverse]
            checks = {
                "token_hot": _expected_sum([forward[hot]], c["token_hot"]["calls"]),
                "token_random": _expected_sum(forward, c["token_random"]["calls"]),
                "key_hot": _expected_sum([lengths[hot]], c["key_hot"]["calls"]),
                "key_random": _expected_sum(lengths, c["key_random"]["calls"]),
            }
            for figure, expected in checks.items():
                assert c[figure]["check"] == expected, f"C {figure}: wrong answers"
            log("Python lookups, the same keys and order, compiled and pure Python ...")
            hot_key, hot_token = keys[hot], int(tokens[hot])
            with pure_python():
                pure = Resolver.open(snapshot)
            clients = {"Python client": resolver, "Python client, pure Python": pure}
            if not resolver.compiled:
                del clients["Python client"]
            python = {
                name: {
                    "token_hot": timing.hot(r.token, hot_key, BROKER),
                    "token_random": timing.over(r.token, fresh(keys), BROKER),
                    "key_hot": timing.hot(r.key, hot_token, FEED),
                    "key_random": timing.over(r.key, tokens.tolist(), FEED),
                }
                for name, r in clients.items()
            }
            pure.close()
    titles = {
        "token_hot": "token(key, 'kite') hot key",
        "token_random": f"token(key, 'kite') uniform random keys, {size:,}-instrument snapshot",
        "key_hot": "key(token, 'kite') hot token",
        "key_random": f"key(token, 'kite') uniform random tokens, {size:,}-instrument snapshot",
    }
    latency = c["memory_latency"]["p50"]
    for figure, title in titles.items():
        mine = c[figure]
        row = Row(title, "ns", mine["p50"], mine["p99"])
        for client, figures in python.items():
            theirs = figures[figure]
            row.peers[client] = (theirs.p50, theirs.p99)
            row.ratios[client] = mine["p50"] / theirs.p50
        if figure.endswith("random"):
            row.note = f"{mine['p50'] / latency:.2f} x the memory latency below"
        results.rows.append(row)
    results.rows.append(
        Row(
            "memory latency: one dependent load at random over 256 MiB",
            "ns",
            latency,
            c["memory_latency"]["p99"],
            note="the floor of a lookup whose loads all miss the caches, one after another",
        )
    )
    results.notes.append(
        f"{n:,} Kite keys and tokens of the synthetic universe, "
        f"{len(universe.snapshot) / 1e6:.1f} MB snapshot; C random figures over "
        f"{c['token_random']['calls']:,} calls, Python over "
        f"{next(iter(python.values()))['token_random'].calls:,}. The Python client's"
        " lookups are the compiled ones (resolverd/_speedups.c) unless a column says pure Python."
    )
    results.notes.append(
        "A random forward lookup reads a pilot, a fingerprint and a token (and rarely a remap "
        "entry): dependent loads into tables of n entries; a reverse lookup a pilot, a token, "
        "a target and the key's bytes. Independent lookups in a loop overlap their misses, "
        "which is how a random lookup can come under a few memory latencies."
    )
    log(
        "  "
        + ", ".join(
            f"{k}: C {c[k]['p50']:.1f} ns, "
            + ", ".join(f"{name} {figures[k].p50:.0f}" for name, figures in python.items())
            for k in titles
        )
    )
    return results


def markdown(results: Results, info: dict[str, Any], command: str) -> str:
    """The report as `report.markdown` lays out the other suites' (its own title and method)."""
    lines = [
        f"# resolverd C reader benchmarks, {results.size:,} instruments",
        "",
        f"`{command}` on {info['cpu']} (family/model/stepping "
        f"{info['cpu_family_model_stepping']}, {info['cores']} cores), Python {info['python']}, "
        f"numpy {info['numpy']}, xxhash {info['xxhash']}, {info['cc']}, {info['date']}. Load "
        f"average when the run started: {results.load_before}, when it ended: "
        f"{info['load_average_1_5_15']}; shares of all cores' time during the run: "
        f"{report._shares(info['cpu_during_run'])} (other work on the machine inflates figures, "
        "p99s first).",
        "",
        METHOD,
        "",
    ]
    lines += report._table(
        ["figure", "C (resolverd.h)", "peers", "ratio", "target", "met?"],
        [report._cells(r) for r in results.rows],
    )
    if results.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in results.notes]
    return "\n".join(lines) + "\n"


def _compiler_version() -> str:
    compiler = find_compiler() or "cc"
    try:
        first = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown C compiler"
    return first.strip()


def write(results: Results, directory: Path, command: str) -> tuple[Path, Path]:
    """`c-<size>.md` and `c-<size>.json` in `directory`, with the machine and versions."""
    info = report.machine()
    info["cc"] = _compiler_version()
    info["cpu_during_run"] = CpuSample.now().since(results.cpu_before)
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / f"c-{results.size}.md"
    js = directory / f"c-{results.size}.json"
    md.write_text(markdown(results, info, command))
    js.write_text(report.as_json(results, info, command))
    return md, js
