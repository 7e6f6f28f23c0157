"""The daemon figures (issue 4): how soon a swap is announced, how soon a changed source reaches
every reader, what following a registry adds to a lookup, and that lookups never fail while
generations are swapped under them.

The real daemon runs as a subprocess (`bench.served`) and publishes in a scratch directory in
/dev/shm; readers are processes of their own (`bench.followers`), following the registry by
name as a trading process does. Speed is reported, never asserted; correctness is: every answer
a reader gets is checked against the generation it was read from, and a wrong answer or an
exception fails the run (exit 1) after its results are written.

The sections, in the report's order:

1. Announcement latency: a reload is requested (``wait=False``) on a source changed each time
   (`bench.moving`), and a SUB subscriber, already waiting in ``recv``, stamps
   ``time.time_ns()`` on receipt; the figure is that minus the Swap's ``published_ns``, which
   the daemon stamps right after it flips the control segment.
2. Source change to every reader: the real Kite file, watched (polled every 50 ms, no debounce),
   is replaced atomically with one token changed; K reader processes look the changed key up
   every `poll` seconds and report when they first get the new token. The figure is the replace
   to the last reader's switch; the Swap's ``reload_seconds`` shows how much of it is the build.
3. The generation check: the same hot ``token()`` on a resolver opened by file path and one
   opened by registry name, interleaved batches of 1,000 calls; the figure is the difference of
   the medians. Measured on the fresh registry and again past generation `LONG_LIVED`, because
   the check's cost depends on the size of the sequence number it reads. Also: a ``token``
   bound before a swap and kept after it.
4. Lookups during continuous swaps: R reader processes resolve random keys both ways in tight
   loops (`bench.followers.check_lookups`) while the harness asks for one reload after another.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import itertools
import multiprocessing
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from resolverd import Resolver
from resolverd.daemon import announce
from resolverd.shm_layout import control_file_name, read_control
from resolverd.synthetic import DEFAULT_TRADE_DATE

from . import followers, report, timing, zmq_peer
from .core import KITE_FILE, Check, CpuSample, Results, Row
from .data import BROKER, pure_python
from .moving import MovingSource
from .processes import RECEIVE_TIMEOUT_S, finish, receive, spawn
from .served import Served, scratch_directory

Log = Callable[[str], None]

NAME = "bench"
"""The synthetic registry's name (sections 1, 3 and 4); the Kite file is served as ``kite``."""
WARM_UP_SWAPS = 5
SWAPPING_GRACE_S = 0.5
"""The synthetic registry's grace period. The harness swaps it 10 to 20 times a second, and
with the default 10 s grace over a hundred replaced generations would stay linked, a state no
daily-reloaded registry is ever in: the daemon stats every linked generation after each swap,
right after it announces, and on 2 cores that work delays the announcement it has just sent."""
LONG_LIVED = 150
"""The generation section 3 measures again at, as a registry reloaded daily for some months is:
each swap adds 2 to the control segment's sequence, and the publisher starts a new control file
before it would pass 256, where CPython's cache of small ints ends (see shm_layout); the figure
shows the check costs the same there."""


@dataclass(frozen=True)
class Options:
    """What a run measures; `quick` is the CI form (fewer swaps, repetitions and seconds)."""

    swaps: int = 200
    reps: int = 5
    readers: int = 4
    lookup_readers: int = 2
    seconds: float = 5.0
    rounds: int = 40
    batches: int = 25
    size: int = 2_000
    moving: int = 64
    poll: float = 0.001
    kite: Path = KITE_FILE
    quick: bool = False

    @property
    def stem(self) -> str:
        """The results files' name: the quick form does not overwrite a full run's."""
        return "daemon-quick" if self.quick else "daemon"


QUICK: dict[str, Any] = {"swaps": 50, "reps": 2, "seconds": 2.0, "rounds": 10, "batches": 20}


def add_arguments(parser: argparse.ArgumentParser, results: Path) -> None:
    """The ``python -m bench daemon`` options."""
    default = Options()
    parser.add_argument(
        "--out", type=Path, default=results, help="where daemon.md and daemon.json go"
    )
    parser.add_argument(
        "--kite", type=Path, default=default.kite, help="the real Kite file (default: shared data)"
    )
    parser.add_argument("--swaps", type=int, help=f"announcements timed (default {default.swaps})")
    parser.add_argument(
        "--reps", type=int, help=f"Kite file changes timed (default {default.reps})"
    )
    parser.add_argument(
        "--readers",
        type=int,
        default=default.readers,
        help="reader processes waiting for a Kite file change (default %(default)s)",
    )
    parser.add_argument(
        "--lookup-readers",
        type=int,
        default=default.lookup_readers,
        help="reader processes resolving during continuous swaps (default %(default)s)",
    )
    parser.add_argument(
        "--seconds", type=float, help=f"of continuous swaps (default {default.seconds:g})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the CI form: {', '.join(f'{k} {v:g}' for k, v in QUICK.items())}; "
        "writes daemon-quick.md and .json",
    )


def options_from(args: argparse.Namespace) -> Options:
    options = Options(
        kite=args.kite,
        readers=args.readers,
        lookup_readers=args.lookup_readers,
        quick=args.quick,
    )
    if args.quick:
        options = replace(options, **QUICK)
    given = {"swaps": args.swaps, "reps": args.reps, "seconds": args.seconds}
    return replace(options, **{k: v for k, v in given.items() if v is not None})


def main(args: argparse.Namespace, command: str) -> int:
    """Run the suite, write its results, and return the exit code: 1 if any lookup failed."""
    missing = [name for name in ("zmq", "uvloop") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"python -m bench daemon: {', '.join(missing)} not installed; the daemon needs its"
            " extra (pip install -e '.[daemon]')"
        )
    options = options_from(args)
    if min(options.swaps, options.reps, options.readers, options.lookup_readers) < 1:
        raise SystemExit("python -m bench daemon: --swaps, --reps and the readers must be >= 1")
    if options.seconds <= 0:
        raise SystemExit("python -m bench daemon: --seconds must be more than 0")
    start = time.perf_counter()
    results, failures = run(options)
    print()
    print(report.printed(results))
    md, js = write(results, args.out, command, options.stem)
    print(f"\nwrote {md} and {js} in {time.perf_counter() - start:.1f} s")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


def run(options: Options, *, log: Log = print) -> tuple[Results, list[str]]:
    """Every section; the results and what failed (wrong answers, exceptions)."""
    root = scratch_directory()
    log(f"scratch directory {root}")
    failures: list[str] = []
    try:
        cpu_before = _cpu_now()
        source = MovingSource.create(root / "bench.csv", options.size, options.moving)
        results = Results(source.instruments, suite="daemon", cpu_before=cpu_before)
        log(
            f"registry {NAME!r}: {source.instruments:,} instruments, {options.moving} of them"
            " moving with each generation"
        )
        served = Served(
            root / "moving",
            NAME,
            [f"kite={source.path}"],
            trade_date=DEFAULT_TRADE_DATE.isoformat(),
            watch=False,
            log=root / "bench.log",
            grace=SWAPPING_GRACE_S,
        )
        with served:
            swapper = Swapper(served, source)
            fresh = _generation_check(served, source, options, log)
            first = _announcements(served, swapper, options.swaps, log)
            log(f"swapping on to generation {LONG_LIVED} ...")
            while swapper.generation < LONG_LIVED:
                swapper.next()
            long_lived = _generation_check(served, source, options, log)
            stale = _stale_binding(served, swapper, source, options, log)
            fourth, failures = _during_swaps(served, swapper, source, options, log)
        second = _source_change(root, options, log)
        for part in (first, second, fresh, long_lived, stale, fourth):
            results.rows += part.rows
            results.tables.update(part.tables)
            results.notes += part.notes
            results.skipped += part.skipped
        results.notes.append(
            f"The daemon: `python -m resolverd serve SOURCE --name NAME --dir DIR --metrics ''`"
            f" in a scratch directory in {root.parent}, log level info, with files polled every"
            " 50 ms (`WATCH_INTERVAL_SECONDS=0.05`), no debounce and no schedule. The Kite file's"
            " daemon has the default 10 s grace period. The synthetic registry is not watched"
            f" (only reload requests build it) and its grace period is {SWAPPING_GRACE_S:g} s:"
            " swapped 10 to 20 times a second, it would otherwise keep over a hundred replaced"
            " generations linked, which the daemon stats after every swap, right after it"
            " announces (a daily-reloaded registry has one or two)."
        )
        return results, failures
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Swapper:
    """Publishes generation after generation of the moving source: write the file for the next
    generation, then ask the daemon for it."""

    def __init__(self, served: Served, source: MovingSource) -> None:
        self.served, self.source = served, source
        self.generation = int(served.status()["generation"])
        if self.generation != 1:
            raise RuntimeError(f"the daemon started at generation {self.generation}, not 1")

    def next(self, *, wait: bool = True) -> int:
        """Write generation `generation + 1` and request a reload; with `wait`, return once the
        daemon has published it (and check that it did)."""
        generation = self.generation + 1
        self.source.write(generation)
        if wait:
            status = self.served.reload()
            if status["generation"] != generation:
                raise RuntimeError(
                    f"asked for generation {generation}, the daemon is at {status['generation']}:"
                    f" {status['last_reload']}"
                )
        else:
            self.served.reload(wait=False, timeout=10.0)
        self.generation = generation
        return generation


@contextlib.contextmanager
def _subscriber(endpoint: str, registry: str) -> Iterator[Any]:
    """A SUB socket receiving `registry`'s swaps, connected long enough to have joined."""
    import zmq

    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, int(RECEIVE_TIMEOUT_S * 1000))
    socket.setsockopt(zmq.SUBSCRIBE, announce.SWAP_PREFIX + registry.encode())
    socket.connect(endpoint)
    time.sleep(0.3)  # ZeroMQ's slow joiner: the subscription must reach the PUB socket first
    try:
        yield socket
    finally:
        socket.close()


def _next_swap(socket: Any, registry: str) -> tuple[announce.Swap, int, int]:
    """The next Swap of `registry`, the ``time.time_ns()`` of its receipt and its payload's
    size in bytes."""
    while True:
        frames, received = _receive_frames(socket, "a swap announcement")
        message = announce.decode(frames)
        if isinstance(message, announce.Swap) and message.registry == registry:
            return message, received, len(frames[1])


def _receive_frames(socket: Any, what: str) -> tuple[list[bytes], int]:
    """The next message on a SUB socket and the ``time.time_ns()`` right after it arrived."""
    import zmq

    try:
        frames: list[bytes] = socket.recv_multipart()
    except zmq.Again:
        raise RuntimeError(f"no {what} within {RECEIVE_TIMEOUT_S:g} s") from None
    return frames, time.time_ns()


def _bare_pyzmq(directory: Path, size: int, count: int, gap: float) -> list[float]:
    """Microseconds from send to receipt of `count` messages of `size` bytes sent `gap` seconds
    apart by a bare pyzmq publisher process (`bench.zmq_peer`)."""
    endpoint = f"ipc://{directory / 'peer.pub'}"
    topic = announce.SWAP_PREFIX + b"peer"
    [(process, conn)] = spawn(zmq_peer.publish, [(endpoint, topic, size, count, gap)])
    latencies = []
    try:
        receive(conn, "the bare pyzmq publisher")
        with _subscriber(endpoint, "peer") as socket:
            conn.send("go")
            for _ in range(count):
                frames, received = _receive_frames(socket, "message from the bare publisher")
                latencies.append((received - zmq_peer.stamp(frames[1])) / 1e3)
        receive(conn, "the bare pyzmq publisher")
    finally:
        finish([(process, conn)])
    return latencies


def _announcements(served: Served, swapper: Swapper, swaps: int, log: Log) -> Results:
    part = Results(0)
    log(f"1. announcement latency over {swaps} swaps (+{WARM_UP_SWAPS} not timed) ...")
    control = served.directory / control_file_name(NAME)
    latencies, from_flip, reloads, receipts = [], [], [], []
    late = size = 0
    with _subscriber(served.publish, NAME) as socket:
        for attempt in range(WARM_UP_SWAPS + swaps):
            generation = swapper.next(wait=False)
            requested = time.time_ns()
            swap, received, size = _next_swap(socket, NAME)
            receipts.append(received)
            if swap.generation != generation:
                raise RuntimeError(f"announced generation {swap.generation}, not {generation}")
            state = read_control(control.read_bytes())
            if state.generation != generation:
                raise RuntimeError(f"the control file names {state.generation}, not {generation}")
            if attempt < WARM_UP_SWAPS:
                continue
            if swap.published_ns < requested:
                # Published before the request returned: the subscriber was not yet in recv,
                # and its stamp would include the wait; not a figure of the announcement.
                late += 1
                continue
            latencies.append((received - swap.published_ns) / 1e3)
            from_flip.append((received - state.updated_ns) / 1e3)
            reloads.append(swap.reload_seconds)
    if not latencies:
        raise RuntimeError("every swap was published before its reload request returned")
    gap = statistics.median(b - a for a, b in itertools.pairwise(receipts)) / 1e9
    log(f"  the peer: a bare pyzmq publisher, {size:,}-byte messages every {gap * 1e3:.0f} ms ...")
    bare = _bare_pyzmq(served.directory.parent, size, len(latencies), gap)
    p50, p99 = timing.percentile(latencies, 50), timing.percentile(latencies, 99)
    peer = (timing.percentile(bare, 50), timing.percentile(bare, 99))
    flip50, flip99 = timing.percentile(from_flip, 50), timing.percentile(from_flip, 99)
    row = Row(
        f"Swap announced to a SUB subscriber: published_ns to recv, {len(latencies)} swaps",
        "us",
        p50,
        p99,
        peers={"bare pyzmq PUB to SUB, same size and pace": peer},
        ratios={"bare pyzmq": p50 / peer[0]},
        note=f"max {max(latencies):,.0f} µs (the peer's {max(bare):,.0f}); from the control"
        f" segment's updated_ns, stamped just before the flip: {flip50:,.0f} µs (p99"
        f" {flip99:,.0f}); ipc:// on one host, {size:,}-byte Swap payloads about every"
        f" {gap * 1e3:.0f} ms, each swap a reload of the {NAME!r} registry (median"
        f" {statistics.median(reloads) * 1e3:.0f} ms, Swap.reload_seconds)",
    )
    row.checks.append(Check("p99 < 1,000 µs", p99, 1000.0, strict=True))
    part.rows.append(row)
    part.tables["Swap announcement latency, µs: percentiles and the swaps over 1 ms"] = [
        {
            "from": what,
            **{f"p{q}": round(timing.percentile(values, q)) for q in (10, 50, 90, 99)},
            "max": round(max(values)),
            "over 1 ms": f"{sum(v > 1000 for v in values)} of {len(values)}",
        }
        for what, values in (
            ("Swap.published_ns", latencies),
            ("the control segment's updated_ns", from_flip),
            ("the peer's send (bare pyzmq)", bare),
        )
    ]
    if late:
        part.notes.append(
            f"Announcement latency: {late} of {swaps} swaps were published before the reload"
            " request returned (the subscriber was not yet waiting) and are not in the figure."
        )
    log(
        f"  p50 {p50:.0f} µs, p99 {p99:.0f} µs, max {max(latencies):.0f} µs; bare pyzmq p50"
        f" {peer[0]:.0f} µs, p99 {peer[1]:.0f} µs"
    )
    return part


def _generation_check(served: Served, source: MovingSource, options: Options, log: Log) -> Results:
    """The same hot token() and key() by file path and following, interleaved; the difference
    is the check. Measured on the compiled lookups (the default where they were built) and on
    the pure-Python ones. Its figures name the control segment's sequence (see `LONG_LIVED`)."""
    part = Results(0)
    key, token = source.static[len(source.static) // 2]
    status = served.status()
    path, generation = Path(status["snapshot"]), status["generation"]
    sequence = read_control((served.directory / control_file_name(NAME)).read_bytes()).sequence
    rounds, batches = options.rounds, options.batches
    log(
        f"3. the generation check at generation {generation} (control sequence {sequence}):"
        f" hot token({key!r}) and key({token}), by path vs following, compiled and pure"
        f" Python, {rounds} interleaved rounds of {batches} batches of {timing.BATCH:,} calls ..."
    )
    with contextlib.ExitStack() as stack:
        opened = {
            "": (
                stack.enter_context(Resolver.open(path)),
                stack.enter_context(Resolver.open(NAME, directory=served.directory)),
            )
        }
        with pure_python():
            opened[", pure Python"] = (
                stack.enter_context(Resolver.open(path)),
                stack.enter_context(Resolver.open(NAME, directory=served.directory)),
            )
        if not opened[""][0].compiled:
            del opened[""]
            part.notes.append("resolverd._speedups is not built: the check is pure Python.")
        contenders: dict[str, Callable[[int], timing.Timing]] = {}
        for kind, (by_path, named) in opened.items():
            for r in (by_path, named):
                assert r.token(key, BROKER) == token and r.key(token, BROKER) == key
                for method, argument in (("token", key), ("key", token)):
                    how = "path" if r is by_path else "following"
                    lookup = getattr(r, method)
                    contenders[f"{method}, {how}{kind}"] = (
                        lambda _, lookup=lookup, argument=argument: timing.hot(
                            lookup, argument, BROKER, batches=batches
                        )
                    )
        measured = timing.interleaved(contenders, rounds)
    where = f"generation {generation}, control sequence {sequence}"
    for kind in opened:
        path_token, followed_token = (
            measured[f"token, path{kind}"],
            measured[f"token, following{kind}"],
        )
        path_key, followed_key = measured[f"key, path{kind}"], measured[f"key, following{kind}"]
        difference = followed_token.p50 - path_token.p50
        calls = (
            f"medians of {path_token.batches:,} batches of {timing.BATCH:,} calls each, the"
            f" resolvers taking turns in {rounds} rounds; the same generation's file"
        )
        part.rows.append(
            _following_row(f"token() hot key{kind}", where, path_token, followed_token, calls)
        )
        read = (
            "one load of the control segment's sequence in C, and a compare"
            if not kind
            else "one read of the control segment's sequence through a memoryview, and a compare"
        )
        row = Row(
            f"the generation check on a hot token(){kind}: following minus by path, {where}",
            "ns",
            difference,
            note=f"difference of the two medians above: {read}",
        )
        row.checks.append(Check("< 20 ns", difference, 20.0, strict=True))
        part.rows.append(row)
        note = f"difference {followed_key.p50 - path_key.p50:.1f} ns; {calls}"
        part.rows.append(
            _following_row(f"key() hot token{kind}", where, path_key, followed_key, note)
        )
        log(
            f"  token{kind}: path {path_token.p50:.1f} ns, following {followed_token.p50:.1f} ns"
            f" (+{difference:.1f}); key: path {path_key.p50:.1f}, following"
            f" {followed_key.p50:.1f}"
        )
    return part


def _following_row(
    lookup: str, where: str, by_path: timing.Timing, following: timing.Timing, note: str
) -> Row:
    """A following resolver's figure beside the same lookup on one opened by file path."""
    return Row(
        f"{lookup}, resolver opened by registry name (following), {where}",
        "ns",
        following.p50,
        following.p99,
        peers={"opened by file path": (by_path.p50, by_path.p99)},
        ratios={"opened by file path": following.p50 / by_path.p50},
        note=note,
    )


def _stale_binding(
    served: Served, swapper: Swapper, source: MovingSource, options: Options, log: Log
) -> Results:
    """A token() bound before a swap and kept after it, against r.token read again."""
    part = Results(0)
    key, token = source.static[len(source.static) // 2]
    rounds, batches = max(2, options.rounds // 4), options.batches
    log("3. token() through a function bound before a swap ...")
    with Resolver.open(NAME, directory=served.directory) as named:
        # It still answers right, through the follow path on every call; measured because a
        # caller can fall into it.
        stale = named.token
        swapper.next()
        assert named.token(key, BROKER) == token and named.token is not stale
        assert stale(key, BROKER) == token
        kept = timing.interleaved(
            {
                "stale": lambda _: timing.hot(stale, key, BROKER, batches=batches),
                "fresh": lambda _: timing.hot(named.token, key, BROKER, batches=batches),
            },
            rounds,
        )
    overhead = timing.loop_overhead()
    part.rows.append(
        Row(
            "token() through `t = r.token` bound before a swap and kept after it (following)",
            "ns",
            kept["stale"].p50,
            kept["stale"].p99,
            peers={"r.token read after the swap": (kept["fresh"].p50, kept["fresh"].p99)},
            ratios={"r.token read after the swap": kept["stale"].p50 / kept["fresh"].p50},
            note="right answers, but every call finds the old generation's sequence stale and"
            " goes through the follow path (lock, compare, the current generation's token());"
            " re-read r.token after a swap (Resolver.on_swap) to get back to the direct path",
        )
    )
    part.notes.append(
        f"Every per-call figure includes the timing loop: an empty `for` iteration costs "
        f"{overhead.p50:.1f} ns (p99 {overhead.p99:.1f}) here, for both resolvers alike."
    )
    log(f"  {kept['stale'].p50:.0f} ns, r.token read again {kept['fresh'].p50:.0f} ns")
    return part


def _during_swaps(
    served: Served, swapper: Swapper, source: MovingSource, options: Options, log: Log
) -> tuple[Results, list[str]]:
    part = Results(0)
    count, seconds = options.lookup_readers, options.seconds
    log(f"4. lookups by {count} reader processes during {seconds:g} s of continuous swaps ...")
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    directory = str(served.directory)
    started = spawn(
        followers.check_lookups,
        [(stop, NAME, directory, source.static, source.moving, seed) for seed in range(count)],
    )
    try:
        for index, (_, conn) in enumerate(started):
            receive(conn, f"lookup reader {index} opening the registry")
        first = swapper.generation
        for _, conn in started:
            conn.send("go")
        deadline = time.monotonic() + seconds
        began = time.perf_counter()
        while time.monotonic() < deadline:
            swapper.next()
        elapsed = time.perf_counter() - began
        stop.set()
        counts = [receive(conn, f"lookup reader {i}") for i, (_, conn) in enumerate(started)]
    finally:
        stop.set()
        finish(started)
    swaps = swapper.generation - first
    lookups = sum(c["lookups"] for c in counts)
    wrong = sum(c["wrong"] for c in counts)
    exceptions = sum(c["exceptions"] for c in counts)
    straddled = sum(c["straddled"] for c in counts)
    seen = ", ".join(str(c["swaps_seen"]) for c in counts)
    row = Row(
        f"lookups both ways by {count} reader processes during {swaps} swaps in {elapsed:.1f} s:"
        " wrong answers, exceptions",
        "ns",
        None,
        note=f"{lookups:,} lookups ({lookups / elapsed / count:,.0f}/s per reader, each checked),"
        f" {straddled:,} of them with a swap between the generation reads around them; swaps"
        f" seen by each reader: {seen}; {wrong} wrong, {exceptions} exceptions",
    )
    row.checks += [
        Check("0 wrong answers", float(wrong), 0.0),
        Check("0 exceptions", float(exceptions), 0.0),
    ]
    part.rows.append(row)
    part.tables[f"lookups during {swaps} continuous swaps, per reader"] = [
        {
            "reader": index,
            "lookups": f"{c['lookups']:,}",
            "with a swap between": f"{c['straddled']:,}",
            "swaps seen": c["swaps_seen"],
            "generations": f"{c['first_generation']} to {c['last_generation']}",
            "wrong": c["wrong"],
            "exceptions": c["exceptions"],
            "failed refreshes": c["failed_refreshes"],
        }
        for index, c in enumerate(counts)
    ]
    failures = []
    for index, c in enumerate(counts):
        for example in c["examples"]:
            part.notes.append(f"lookup reader {index}: {example}")
        if c["last_error"]:
            part.notes.append(f"lookup reader {index}, last failed refresh: {c['last_error']}")
        if c["wrong"] or c["exceptions"]:
            failures.append(
                f"lookup reader {index}: {c['wrong']} wrong answers, {c['exceptions']} exceptions"
                f" in {c['lookups']:,} lookups ({'; '.join(c['examples'])})"
            )
    log(
        f"  {lookups:,} lookups, {swaps} swaps ({swaps / elapsed:.1f}/s), swaps seen {seen},"
        f" {wrong} wrong, {exceptions} exceptions"
    )
    return part, failures


def _changed_row(text: str, step: int) -> tuple[str, str, int]:
    """`text` (a Kite CSV) with its first instrument's token replaced by one no row has:
    (the new text, that instrument's key, its new token)."""
    lines = text.splitlines(keepends=True)
    columns = next(csv.reader([lines[0]]))
    where = {name: columns.index(name) for name in ("instrument_token", "exchange_token")}
    where |= {name: columns.index(name) for name in ("tradingsymbol", "exchange")}
    highest = max(int(row[where["exchange_token"]]) for row in csv.reader(lines[1:]) if row)
    row = next(csv.reader([lines[1]]))
    exchange_token = highest + step
    token = exchange_token << 8 | int(row[where["instrument_token"]]) & 0xFF
    row[where["instrument_token"]], row[where["exchange_token"]] = str(token), str(exchange_token)
    out = io.StringIO()
    csv.writer(out, lineterminator=lines[1][len(lines[1].rstrip("\r\n")) :]).writerow(row)
    key = f"{row[where['exchange']]}:{row[where['tradingsymbol']]}"
    return "".join([lines[0], out.getvalue(), *lines[2:]]), key, token


def _source_change(root: Path, options: Options, log: Log) -> Results:
    part = Results(0)
    kite = options.kite
    if not kite.is_file():
        reason = f"real Kite file not present at {kite}"
        log(f"2. skipping the source change to every reader: {reason}")
        part.skipped.append(f"source change to every reader: {reason}")
        return part
    count, reps = options.readers, options.reps
    folder = root / "kite-source"
    folder.mkdir()
    path = folder / "instruments.csv"
    shutil.copyfile(kite, path)
    text = path.read_text()
    rows = text.count("\n") - 1
    dated = re.search(r"\d{4}-\d{2}-\d{2}", kite.name)
    log(f"2. {kite.name} ({rows:,} rows) replaced {reps} times, {count} readers following ...")
    served = Served(
        root / "kite",
        "kite",
        [f"kite={path}"],
        trade_date=dated[0] if dated else None,
        watch=True,
        log=root / "kite.log",
    )
    table = []
    totals, builds = [], []
    key = _changed_row(text, 1)[1]
    with served, _subscriber(served.publish, "kite") as socket:
        started = spawn(
            followers.await_token,
            [("kite", str(served.directory), key, options.poll)] * count,
        )
        try:
            for index, (_, conn) in enumerate(started):
                receive(conn, f"reader {index} opening the registry")
            for rep in range(1, reps + 1):
                changed, _, token = _changed_row(text, rep)
                temporary = folder / ".instruments.csv.tmp"
                temporary.write_text(changed)
                for _, conn in started:
                    conn.send(token)
                for index, (_, conn) in enumerate(started):
                    receive(conn, f"reader {index}")  # "polling"
                replaced = time.time_ns()
                os.replace(temporary, path)
                swap, _, _ = _next_swap(socket, "kite")
                seen = [receive(conn, f"reader {i}") for i, (_, conn) in enumerate(started)]
                if {generation for _, generation in seen} != {swap.generation}:
                    raise RuntimeError(f"readers on {seen}, the swap was to {swap.generation}")
                stamps = [stamp for stamp, _ in seen]
                total = (max(stamps) - replaced) / 1e9
                published = (swap.published_ns - replaced) / 1e9
                totals.append(total)
                builds.append(swap.reload_seconds)
                table.append(
                    {
                        "change": rep,
                        "replace to published, ms": round(published * 1e3, 1),
                        "of which the reload (Swap.reload_seconds), ms": round(
                            swap.reload_seconds * 1e3, 1
                        ),
                        "of which noticing the change, ms": round(
                            (published - swap.reload_seconds) * 1e3, 1
                        ),
                        "published to first reader, ms": round(
                            (min(stamps) - swap.published_ns) / 1e6, 1
                        ),
                        "published to last reader, ms": round(
                            (max(stamps) - swap.published_ns) / 1e6, 1
                        ),
                        "replace to last reader, ms": round(total * 1e3, 1),
                    }
                )
                log(
                    f"  change {rep}: {total * 1e3:.0f} ms to the last reader (reload"
                    f" {swap.reload_seconds * 1e3:.0f} ms)"
                )
        finally:
            finish(started)
    worst = max(totals)
    each = ", ".join(f"{t:.3f}" for t in totals)
    row = Row(
        f"source file replaced to all {count} reader processes on the new generation, real Kite"
        f" file ({rows:,} rows), max of {reps}",
        "s",
        worst,
        note=f"each: {each} s; readers look the changed key ({key}) up every"
        f" {options.poll * 1e3:g} ms; the file is polled every 50 ms",
    )
    row.checks.append(Check("< 1 s", worst, 1.0, strict=True))
    part.rows.append(row)
    part.rows.append(
        Row(
            "... of which the daemon's reload: build in the worker, verify, publish"
            " (Swap.reload_seconds)",
            "s",
            statistics.median(builds),
            note=f"median of {reps}; max {max(builds):.3f} s",
        )
    )
    part.tables[f"source change to every reader: each of {reps} changes of {kite.name}"] = table
    part.notes.append(
        "Source change to every reader: readers follow the control segment, which the daemon"
        " flips just before it stamps the Swap's published_ns, so a reader can switch before"
        " that stamp (a negative 'published to ... reader'); 'noticing the change' is the"
        " replace to published_ns less the reload: the file poll, the debouncer and the hand-off"
        " to the build worker."
    )
    return part


# -- the results files ------------------------------------------------------------------------

METHOD = (
    "The daemon runs as a subprocess, readers are separate processes following the registry by "
    "name; every answer a reader gets is checked against the generation it was read from. "
    "Latencies are wall-clock (`time.time_ns()`) across processes on one host; per-call lookup "
    "figures are medians (p99 in brackets) of batches of 1,000 calls timed with "
    "`time.perf_counter_ns`, the two resolvers taking turns. Speed is measured here, never "
    "asserted in tests."
)


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("pyzmq", "uvloop"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    try:
        import zmq

        found["libzmq"] = zmq.zmq_version()
    except ImportError:
        found["libzmq"] = None
    return found


def markdown(results: Results, info: dict[str, Any], command: str) -> str:
    """The report as `report.markdown` lays out the other suites' (its own title and method)."""
    lines = [
        "# resolverd daemon benchmarks",
        "",
        f"`{command}` on {info['cpu']} (family/model/stepping "
        f"{info['cpu_family_model_stepping']}, {info['cores']} cores), Python {info['python']}, "
        f"numpy {info['numpy']}, msgspec {info['msgspec']}, pyzmq {info['pyzmq']} (libzmq "
        f"{info['libzmq']}), uvloop {info['uvloop']}, {info['date']}. Load average when the run "
        f"started: {results.load_before}, when it ended: {info['load_average_1_5_15']}; shares "
        f"of all cores' time during the run: {report._shares(info['cpu_during_run'])} (other "
        "work on the machine inflates figures, p99s first; this run's share counts the "
        "daemons, their build workers and the readers).",
        "",
        METHOD,
        "",
    ]
    lines += report._table(
        ["figure", "resolverd", "peers", "ratio", "target", "met?"],
        [report._cells(r) for r in results.rows],
    )
    missed = [(r, c) for r in results.rows for c in r.checks if not c.met]
    lines += ["", "## Targets missed", ""]
    lines += [
        f"- {r.figure}: {report._number(c.value)} against {c.text}"
        + (f" ({c.value / c.bound:.2f} x the bound)" if c.bound else "")
        for r, c in missed
    ] or ["- none"]
    for title, table in results.tables.items():
        lines += ["", f"## {title}", ""]
        header = list(dict.fromkeys(k for row in table for k in row))
        lines += report._table(header, [[str(row.get(k, "")) for k in header] for row in table])
    if results.notes or results.skipped:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in results.notes]
        lines += [f"- skipped: {what}" for what in results.skipped]
    return "\n".join(lines) + "\n"


def _cpu_now() -> CpuSample:
    """`CpuSample.now`, with the CPU time of this process's finished children (the daemons,
    their build workers, the readers) counted as this run's own."""
    sample = CpuSample.now()
    times = os.times()
    return replace(sample, own=sample.own + times.children_user + times.children_system)


def write(results: Results, directory: Path, command: str, stem: str) -> tuple[Path, Path]:
    """`<stem>.md` and `<stem>.json` in `directory`, with the machine and versions."""
    info = report.machine() | _versions()
    info["cpu_during_run"] = _cpu_now().since(results.cpu_before)
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / f"{stem}.md", directory / f"{stem}.json"
    md.write_text(markdown(results, info, command))
    js.write_text(report.as_json(results, info, command))
    return md, js
