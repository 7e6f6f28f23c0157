"""The core figures: lookups, batches, compile, open and size, each beside its peers.

Every peer is measured in the same run, on the same data and the same query order as resolverd.
Speed is reported, never asserted; the answers are asserted, so that a fast wrong path cannot
produce a figure.
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

from resolverd import Registry, Resolver, compile_snapshot
from resolverd.loaders import load_kite
from resolverd.synthetic import generate_universe

from . import profile, timing
from .data import BROKER, FEED, Universe, build, fresh, pure_python, shuffled
from .peers import LmdbPeer, dict_batch, dict_get_batch, lmdb_missing

KITE_FILE = (
    Path(
        os.environ.get(
            "RESOLVERD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
        )
    )
    / "kite_instruments_2024-04-03.csv"
)
FULL_SIZE = 1_000_000
RANDOM_QUERIES = 200_000
"""At least this many random lookups per contender: several passes when the universe is small."""
HOT_BATCHES = 300
ROUNDS = 10
"""Contenders take turns in this many rounds, so that a passing load hits all of them alike."""
HOT_TARGETS_NS = {"fingerprint": 250, "pure": 250, "cache": 120}
"""The issue's bounds on a hot token(): the default fingerprint mode (compiled, and pure
Python beside it), and with cache=True."""
MODE_NAMES = {
    "fingerprint": " (fingerprint mode, the default)",
    "pure": ", pure Python (fingerprint mode)",
    "strict": ", strict=True",
    "pure strict": ", strict=True, pure Python",
    "cache": ", cache=True",
}
"""How a row names the resolver it measured. Without "pure Python" a row measured the compiled
lookups (resolverd/_speedups.c), the default wherever they were built."""

Log = Callable[[str], None]


@dataclass(frozen=True)
class CpuSample:
    """Whole-machine CPU time (from /proc/stat) and this process's, to tell a quiet run from a
    noisy one: other work on a 2-core machine inflates every figure."""

    busy: float
    idle: float
    steal: float
    own: float

    @classmethod
    def now(cls) -> CpuSample:
        times = os.times()
        own = times.user + times.system
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return cls(0.0, 0.0, 0.0, own)
        ticks = [int(x) / os.sysconf("SC_CLK_TCK") for x in fields]
        user, nice, system, idle, iowait, irq, softirq, steal = (ticks + [0.0] * 8)[:8]
        return cls(user + nice + system + irq + softirq, idle + iowait, steal, own)

    def since(self, start: CpuSample) -> dict[str, float]:
        """Shares of all cores' time since `start`: this run, everything else, steal."""
        total = (self.busy - start.busy) + (self.idle - start.idle) + (self.steal - start.steal)
        if total <= 0:
            return {}
        own = self.own - start.own
        return {
            "this run": round(own / total, 3),
            "other work": round(max(0.0, self.busy - start.busy - own) / total, 3),
            "steal": round((self.steal - start.steal) / total, 3),
        }


@dataclass(frozen=True)
class Check:
    """One target: `value` (a ratio or an absolute figure) against its bound."""

    text: str
    value: float
    bound: float
    strict: bool = False

    @property
    def met(self) -> bool:
        return self.value < self.bound if self.strict else self.value <= self.bound


@dataclass
class Row:
    """One figure: resolverd's value and the peers' values in the same unit."""

    figure: str
    unit: str
    value: float | None
    p99: float | None = None
    peers: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    note: str = ""


@dataclass
class Results:
    size: int
    suite: str = "core"
    """Names the results files (``<suite>-<size>.md``) and the report's title."""
    rows: list[Row] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    load_before: list[float] = field(default_factory=lambda: [round(x, 2) for x in os.getloadavg()])
    cpu_before: CpuSample = field(default_factory=lambda: CpuSample.now())


def _timed_row(
    figure: str,
    mine: timing.Timing,
    peers: Mapping[str, timing.Timing | None],
    *,
    ratio_to: tuple[str, ...] = (),
    checks: tuple[tuple[str, float, bool], ...] = (),
    note: str = "",
) -> Row:
    """A row of per-call nanoseconds; `checks` are (peer, bound, strict) ratio targets."""
    row = Row(figure, "ns", mine.p50, mine.p99, note=note)
    for name, t in peers.items():
        if t is not None:
            row.peers[name] = (t.p50, t.p99)
    for name in ratio_to:
        if name in row.peers:
            row.ratios[name] = mine.p50 / row.peers[name][0]
    for name, bound, strict in checks:
        if name in row.ratios:
            sign = "<" if strict else "<="
            row.checks.append(Check(f"{sign} {bound:g} x {name}", row.ratios[name], bound, strict))
    return row


def run(size: int, *, log: Log = print) -> Results:
    results = Results(size)
    log(f"generating and compiling a {size:,}-instrument universe (all brokers) ...")
    universe = build(size)
    log(
        f"  {len(universe.registry):,} instruments, {len(universe.keys):,} with a Kite token, "
        f"{len(universe.snapshot) / 1e6:.1f} MB snapshot, compiled in "
        f"{universe.compile_seconds:.2f} s"
    )
    # The lookups read the snapshot the way a trading process does: a file in /dev/shm, mapped.
    path = _write_temporary(universe.snapshot)
    try:
        _lookups(results, universe, path, log)
        results.rows.append(
            Row(
                f"compile_snapshot, {size:,} instruments, all four brokers (generation excluded)",
                "s",
                universe.compile_seconds,
                note=f"one run; {len(universe.snapshot) / 1e6:.1f} MB; the snapshot measured above",
            )
        )
        _open(results, universe, path, log)
    finally:
        path.unlink(missing_ok=True)
    _size(results, universe)
    del universe
    _compile(results, size, log)
    _compile_kite_file(results, log)
    return results


def _lookups(results: Results, universe: Universe, path: Path, log: Log) -> None:
    """Single and batch lookups, resolverd's three modes beside the dict and lmdb."""
    by_key = universe.token_by_key()
    lmdb_peer = None
    reason = lmdb_missing()
    if reason:
        log(f"skipping the lmdb peer: {reason}")
        results.skipped.append(f"lmdb peer: {reason}")
    else:
        log("  loading the same Kite column into lmdb ...")
        width = max(len(k.encode()) for k in universe.keys)
        lmdb_peer = LmdbPeer(by_key.items(), len(by_key), key_bytes=width)
    resolvers = {
        "fingerprint": Resolver.open(path),
        "strict": Resolver.open(path, strict=True),
        "cache": Resolver.open(path, cache=True),
    }
    with pure_python():
        resolvers["pure"] = Resolver.open(path)
        resolvers["pure strict"] = Resolver.open(path, strict=True)
    if not resolvers["fingerprint"].compiled:
        reason = "resolverd._speedups is not built: every figure is pure Python"
        log(f"note: {reason}")
        results.notes.append(reason + ".")
    try:
        overhead = timing.loop_overhead()
        results.notes.append(
            f"Every per-call figure includes the timing loop: an empty `for` iteration costs "
            f"{overhead.p50:.1f} ns (p99 {overhead.p99:.1f}) here, for every contender alike."
        )
        _hot(results, universe, resolvers, by_key, lmdb_peer, log)
        _hot_reverse(results, universe, resolvers, log)
        _random(results, universe, resolvers, by_key, lmdb_peer, log)
        _batch_tokens(
            results, universe, resolvers["fingerprint"], resolvers["pure"], by_key, lmdb_peer, log
        )
        _batch_keys(results, universe, resolvers["fingerprint"], resolvers["pure"], log)
    finally:
        if lmdb_peer is not None:
            lmdb_peer.close()
        for r in resolvers.values():
            r.close()


def _hot_key(universe: Universe) -> tuple[str, int]:
    i = len(universe.keys) // 2
    return universe.keys[i].encode().decode(), int(universe.tokens[i])


def _hot(
    results: Results,
    universe: Universe,
    resolvers: dict[str, Resolver],
    by_key: dict[str, int],
    lmdb_peer: LmdbPeer | None,
    log: Log,
) -> None:
    key, expected = _hot_key(universe)
    log(f"hot key {key!r} ...")
    for r in resolvers.values():
        assert r.token(key, BROKER) == expected
    assert by_key[key] == expected
    if lmdb_peer is not None:
        assert lmdb_peer.token(key) == expected
    batches = HOT_BATCHES // ROUNDS

    def hot(token: Callable[[str, str], Any]) -> Callable[[int], timing.Timing]:
        return lambda _: timing.hot(token, key, BROKER, batches=batches)

    contenders = {mode: hot(r.token) for mode, r in resolvers.items()}
    contenders["dict"] = lambda _: timing.hot_subscript(by_key, key, batches=batches)
    if lmdb_peer is not None:
        contenders["lmdb"] = lambda _: lmdb_peer.hot(key, batches=batches)
    measured = timing.interleaved(contenders, ROUNDS)
    peers = {"dict": measured["dict"], "lmdb": measured.get("lmdb")}
    for mode in resolvers:
        option = MODE_NAMES[mode]
        row = _timed_row(
            f"token() hot key{option}", measured[mode], peers, ratio_to=("dict", "lmdb")
        )
        bound = HOT_TARGETS_NS.get(mode)
        if bound is not None:
            row.checks.append(Check(f"<= {bound} ns", measured[mode].p50, bound))
        results.rows.append(row)
    results.tables[
        "pure-Python token(): where the time goes (fingerprint mode; 100,000 random keys, run "
        "back to back with no peer in between, find the tables warmer than the interleaved "
        "figure above)"
    ] = profile.token_steps(
        universe.snapshot,
        key,
        BROKER,
        expected,
        resolvers["pure"],
        [universe.keys[i] for i in shuffled(len(universe.keys), seed=4)[:100_000].tolist()],
    )
    log("  " + ", ".join(f"{name} {t.p50:.0f} ns" for name, t in measured.items()))


def _hot_reverse(
    results: Results, universe: Universe, resolvers: dict[str, Resolver], log: Log
) -> None:
    """key() on one hot token, without and with the per-process cache, beside a dict."""
    key, token = _hot_key(universe)
    by_token = universe.key_by_token()
    modes = ("fingerprint", "pure", "cache")
    for mode in modes:
        assert resolvers[mode].key(token, FEED) == key
    assert by_token[token] == key
    batches = HOT_BATCHES // ROUNDS

    def hot(r: Resolver) -> Callable[[int], timing.Timing]:
        return lambda _: timing.hot(r.key, token, FEED, batches=batches)

    contenders = {mode: hot(resolvers[mode]) for mode in modes}
    contenders["dict"] = lambda _: timing.hot_subscript(by_token, token, batches=batches)
    measured = timing.interleaved(contenders, ROUNDS)
    for mode in modes:
        option = "" if mode == "fingerprint" else MODE_NAMES[mode]
        results.rows.append(
            _timed_row(
                f"key() hot token{option}",
                measured[mode],
                {"dict": measured["dict"]},
                ratio_to=("dict",),
            )
        )
    log("  reverse: " + ", ".join(f"{name} {t.p50:.0f} ns" for name, t in measured.items()))


def _random(
    results: Results,
    universe: Universe,
    resolvers: dict[str, Resolver],
    by_key: dict[str, int],
    lmdb_peer: LmdbPeer | None,
    log: Log,
) -> None:
    n = len(universe.keys)
    order = shuffled(n, seed=1)
    ordered = [universe.keys[i] for i in order.tolist()]
    expected = universe.tokens[order]

    # The answers first, on one fresh list (and not one that is timed: its hashes are cached).
    queries = fresh(ordered)
    modes = ("fingerprint", "pure", "strict", "pure strict")
    for mode in modes:
        got = np.fromiter(map(resolvers[mode].token, queries, [BROKER] * n), np.uint64, n)
        assert np.array_equal(got, expected), f"{mode} mode answers differ"
    assert dict_batch(by_key, queries) == expected.tolist()
    if lmdb_peer is not None:
        assert lmdb_peer.batch(queries) == expected.tolist()
    del queries

    passes = max(1, -(-RANDOM_QUERIES // n))
    ordered *= passes
    length = len(ordered) // ROUNDS // timing.BATCH * timing.BATCH
    log(
        f"uniform random keys over {len(universe.registry):,} instruments: {passes} pass(es) "
        f"over the shuffled keys in {ROUNDS} interleaved segments of {length:,}, each "
        "contender on its own fresh str objects ..."
    )

    def segment(r: int) -> list[str]:
        return fresh(ordered[r * length : (r + 1) * length])

    def over(token: Callable[[str, str], Any]) -> Callable[[int], timing.Timing]:
        return lambda r: timing.over(token, segment(r), BROKER)

    contenders = {mode: over(resolvers[mode].token) for mode in modes}
    contenders["dict"] = lambda r: timing.over_subscript(by_key, segment(r))
    if lmdb_peer is not None:
        contenders["lmdb"] = lambda r: lmdb_peer.over(segment(r))
    measured = timing.interleaved(contenders, ROUNDS)
    peers = {"dict": measured["dict"], "lmdb": measured.get("lmdb")}
    checks = (("lmdb", 0.5, False), ("dict", 1.0, True))
    where = f"{len(universe.registry):,}-instrument snapshot"
    for mode in modes:
        option = "" if mode == "fingerprint" else MODE_NAMES[mode]
        results.rows.append(
            _timed_row(
                f"token() uniform random keys{option}, {where}",
                measured[mode],
                peers,
                ratio_to=("dict", "lmdb"),
                checks=checks if "strict" not in mode else (),
            )
        )
    log("  " + ", ".join(f"{name} {t.p50:.0f} ns" for name, t in measured.items()))


def _batch_tokens(
    results: Results,
    universe: Universe,
    resolver: Resolver,
    pure: Resolver,
    by_key: dict[str, int],
    lmdb_peer: LmdbPeer | None,
    log: Log,
) -> None:
    """tokens() over every Kite key (a list of str), shuffled: the default resolver and a
    pure-Python one, beside a dict and lmdb."""
    n = len(universe.keys)
    order = shuffled(n, seed=2)
    keys = fresh(universe.keys[i] for i in order.tolist())
    expected = universe.tokens[order]
    log(f"batch tokens() over {n:,} keys (a list of str) ...")
    assert np.array_equal(resolver.tokens(keys, BROKER), expected)
    assert np.array_equal(pure.tokens(keys, BROKER), expected)
    repeats = 5 if n <= 200_000 else 3
    mine = timing.whole(lambda: resolver.tokens(keys, BROKER), n, repeats=repeats)
    theirs = timing.whole(lambda: pure.tokens(keys, BROKER), n, repeats=repeats)
    peers = {
        "dict [d[k] for k in keys]": timing.whole(
            lambda: dict_batch(by_key, keys), n, repeats=repeats
        )
    }
    if lmdb_peer is not None:
        peers["lmdb, a list comprehension"] = timing.whole(
            lambda: lmdb_peer.batch(keys), n, repeats=repeats
        )
    for option, figure in (("", mine), (", pure Python", theirs)):
        row = _timed_row(
            f"tokens(keys, 'kite') batch of {n:,}{option}, per key",
            figure,
            peers,
            ratio_to=tuple(peers),
        )
        row.checks.append(Check("<= 150 ns/key", figure.p50, 150))
        results.rows.append(row)
    results.tables["pure-Python tokens() batch: where the time goes"] = profile.tokens_steps(
        pure, keys
    )
    log(
        f"  {mine.p50:.0f} ns/key, pure Python {theirs.p50:.0f}; "
        + ", ".join(f"{k} {t.p50:.0f}" for k, t in peers.items())
    )


def _batch_keys(
    results: Results, universe: Universe, resolver: Resolver, pure: Resolver, log: Log
) -> None:
    """keys() and feed_ordinals() over every Kite token, shuffled: the default resolver and a
    pure-Python one, beside a dict."""
    n = len(universe.keys)
    order = shuffled(n, seed=3)
    tokens = universe.tokens[order].copy()
    expected_keys = [universe.keys[i] for i in order.tolist()]
    log(f"batch keys() and feed_ordinals() over {n:,} tokens (a uint64 array) ...")
    contenders = {"": resolver, ", pure Python": pure}
    for r in contenders.values():
        assert r.keys(tokens, FEED).astype(str).tolist() == expected_keys
        assert (r.feed_ordinals(tokens, FEED) >= 0).all()
    by_token = universe.key_by_token()
    token_list = tokens.tolist()
    assert dict_get_batch(by_token, token_list) == expected_keys
    repeats = 20 if n <= 200_000 else 7
    peer = timing.whole(lambda: dict_get_batch(by_token, token_list), n, repeats=repeats)
    tolist = timing.whole(tokens.tolist, n, repeats=repeats)
    peers = {"dict [d.get(t) for t in tokens]": peer}
    note = (
        f"the dict peer's input is a list of int; turning the uint64 array into one "
        f"(`tolist()`) costs a further {tolist.p50:.1f} ns/token"
    )
    figures = []
    for option, r in contenders.items():
        mine = timing.whole(lambda r=r: r.keys(tokens, FEED), n, repeats=repeats)
        ords = timing.whole(lambda r=r: r.feed_ordinals(tokens, FEED), n, repeats=repeats)
        row = _timed_row(
            f"keys(tokens, 'kite') batch of {n:,}{option}, per token",
            mine,
            peers,
            ratio_to=tuple(peers),
            note=note,
        )
        row.checks.append(Check("<= 20 ns/token", mine.p50, 20))
        results.rows.append(row)
        results.rows.append(
            _timed_row(
                f"feed_ordinals(tokens, 'kite') batch of {n:,}{option}, per token",
                ords,
                peers,
                ratio_to=tuple(peers),
            )
        )
        figures.append(f"keys{option} {mine.p50:.1f} ns/token, feed_ordinals {ords.p50:.1f}")
    results.tables["pure-Python keys() batch: where the time goes"] = profile.keys_steps(
        pure, tokens, FEED
    )
    log("  " + "; ".join(figures) + f"; dict {peer.p50:.1f}")


def _write_temporary(snapshot: bytearray) -> Path:
    """The snapshot as a file in /dev/shm (or the temporary directory); the caller removes it."""
    fd, name = tempfile.mkstemp(
        prefix="resolverd-bench-",
        suffix=".snap",
        dir="/dev/shm" if Path("/dev/shm").is_dir() else None,
    )
    with os.fdopen(fd, "wb") as out:
        out.write(snapshot)
    return Path(name)


def _open(results: Results, universe: Universe, path: Path, log: Log) -> None:
    key, expected = _hot_key(universe)
    log(f"Resolver.open() to the first lookup, {path} ...")
    figures = {}
    for label, options in (
        ("", {}),
        ("verify=True", {"verify": True}),
        ("populate=True", {"populate": True}),
    ):
        t = _open_to_first_lookup(path, key, expected, options)
        figures[label] = t
        title = "Resolver.open(path) to the first token()"
        title += f", {label}" if label else ""
        results.rows.append(
            Row(
                f"{title}, {len(universe.registry):,}-instrument file",
                "us",
                t.p50 / 1e3,
                t.p99 / 1e3,
                note=f"median of {t.batches}; close() not timed",
            )
        )
    results.tables["open(): where the time goes"] = profile.open_steps(path, key, BROKER)
    shown = ", ".join(f"{label or 'plain'} {t.p50 / 1e3:.0f} us" for label, t in figures.items())
    log(f"  {shown}")


def _open_to_first_lookup(
    path: Path, key: str, expected: int, options: dict[str, Any], *, repeats: int = 21
) -> timing.Timing:
    elapsed = []
    for attempt in range(repeats + 1):
        start = perf_counter_ns()
        r = Resolver.open(path, **options)
        token = r.token(key, BROKER)
        stop = perf_counter_ns()
        r.close()
        assert token == expected
        if attempt:  # the first one warms the page cache and the code paths
            elapsed.append(float(stop - start))
    return timing.Timing.of(elapsed, repeats)


def _size(results: Results, universe: Universe) -> None:
    with Resolver(universe.snapshot) as r:
        header = r.header
        n = header.instrument_count
        sections = header.sections
        feeds = {f: r.feed_size(f) for f in r.feeds}
    results.rows.append(
        Row(
            "snapshot bytes per instrument",
            "B",
            header.file_size / n,
            note=f"{header.file_size:,} bytes for {n:,} instruments, {len(feeds)} feeds",
        )
    )
    overhead = sections["key.pilots"].nbytes + sections["key.remap"].nbytes
    results.rows.append(
        Row(
            "key hash overhead (pilots + remap), bits per key",
            "bits",
            overhead * 8 / n,
            note=f"{header.key_slot_count:,} slots, 2^{header.key_bucket_bits} buckets",
        )
    )
    table = []
    for f, feed in enumerate(feeds):
        count = feeds[feed]
        parts = {
            p: sections[f"feed.{f}.{p}"].nbytes for p in ("pilots", "remap", "tokens", "targets")
        }
        table.append(
            {
                "feed": feed,
                "tokens": count,
                "hash bits/token": round((parts["pilots"] + parts["remap"]) * 8 / count, 2),
                "table bytes/token": round(sum(parts.values()) / count, 2),
            }
        )
    results.tables["reverse tables per feed"] = table
    groups: dict[str, int] = {}
    for name, entry in sections.items():
        group = "feed.*" if name.startswith("feed.") else name
        group = "tokens.*" if name.startswith("tokens.") else group
        groups[group] = groups.get(group, 0) + entry.nbytes
    results.tables["snapshot sections, bytes per instrument"] = [
        {"section": name, "bytes/instrument": round(nbytes / n, 2)}
        for name, nbytes in groups.items()
    ]


def _compile(results: Results, size: int, log: Log) -> None:
    log(f"compile_snapshot(generate_universe({size:,}, brokers=('kite', 'fyers'))) ...")
    registry = generate_universe(size, brokers=("kite", "fyers"))
    repeats = 3
    seconds, snapshot = timing.seconds(lambda: compile_snapshot(registry), repeats=repeats)
    row = Row(
        f"compile_snapshot, {size:,} instruments, kite + fyers (generation excluded)",
        "s",
        seconds,
        note=f"median of {repeats}; {len(snapshot) / 1e6:.1f} MB",
    )
    if size == FULL_SIZE:
        row.checks.append(Check("<= 1.5 s", seconds, 1.5))
    else:
        row.note += "; the 1.5 s target is for 1,000,000 instruments"
    results.rows.append(row)
    results.tables["compile_snapshot(): where the time goes (cProfile, kite + fyers)"] = (
        profile.compile_profile(lambda: compile_snapshot(registry))
    )
    log(f"  {seconds:.2f} s")


def _compile_kite_file(results: Results, log: Log) -> None:
    if not KITE_FILE.exists():
        reason = f"real Kite file not present at {KITE_FILE}"
        log(f"skipping the real-file compile: {reason}")
        results.skipped.append(f"real-file compile: {reason}")
        return
    log(f"load + compile {KITE_FILE.name} ...")
    steps: dict[str, list[float]] = {
        "load_kite": [],
        "Registry.from_instruments": [],
        "compile_snapshot": [],
    }
    totals = []
    records: Any = None
    snapshot = bytearray()
    for _ in range(3):
        gc.collect()
        marks = [perf_counter_ns()]
        records = load_kite(KITE_FILE)
        marks.append(perf_counter_ns())
        registry = Registry.from_instruments(records)
        marks.append(perf_counter_ns())
        snapshot = compile_snapshot(registry)
        marks.append(perf_counter_ns())
        for name, start, stop in zip(steps, marks, marks[1:], strict=False):
            steps[name].append((stop - start) / 1e9)
        totals.append((marks[-1] - marks[0]) / 1e9)
    with Resolver(snapshot) as r:  # Zerodha's own example instrument
        assert r.token("NSE:INFY", "kite") == 408065
    total = timing.percentile(totals, 50)
    parts = ", ".join(f"{name} {timing.percentile(v, 50):.3f} s" for name, v in steps.items())
    row = Row(
        f"load + compile the real Kite file ({len(records):,} rows)",
        "s",
        total,
        note=f"median of 3: {parts}",
    )
    row.checks.append(Check("< 0.5 s", total, 0.5, strict=True))
    results.rows.append(row)
    log(f"  {total:.3f} s ({parts})")
