"""Torture and kill -9 soak: readers check every answer while the daemon swaps and dies.

``python -m bench torture [--readers 4] [--swaps 1000] [--duration S] [--kill-trials N]``

Reader processes (spawned interpreters, as trading processes are) follow a registry by name and
resolve as fast as they can, both ways, singly and in batches, and check every answer against
the generation it was read from. Meanwhile the harness has the daemon (a real ``resolverd
serve``) publish generation after generation as fast as it can, each one a different registry:
keys come and go, tokens and lot sizes change (`Churn`). Then, for each kill trial, it asks for
one more generation and kills the daemon with SIGKILL at a random moment of that build and
publication, checks what is left in the publishing directory, and starts a new daemon on it.

What counts as wrong: an answer that no single generation between the two version reads around
the lookup would give (`check_lookups`), a batch whose answers come from two generations, a
reader going back to an older version. What counts as lost: a version the control segment named
when the daemon was killed that its successor does not serve. What counts as left over: any file
beyond the control file, the lock and the generations the daemon reports linked, once its grace
period is over.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np

from resolverd import NO_TOKEN, Resolver
from resolverd.errors import LayoutError, ResolverError
from resolverd.shm_layout import read_header, verify_payload

from . import report
from .processes import finish, receive, spawn
from .served import Served, scratch_directory

NAME = "torture"
BROKER = "kite"
HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
    "lot_size,instrument_type,segment,exchange\n"
)
SEGMENT = 1  # Kite's segment byte for NSE equities: instrument_token = exchange_token << 8 | 1
GRACE_S = 0.05
TRADE_DATE = "2024-04-03"
BATCH = 32
_CHUNK = 512  # checks between two looks at the stop event
_EXAMPLES = 5


@dataclass(frozen=True)
class Churn:
    """A Kite master that changes with every version v: `static` instruments whose answers never
    change, and `count` churning ones ``NSE:CHURN<i>`` of which about one in five is absent in
    any version (a different fifth each time), with a token and a lot size that encode v.
    CHURN0 is in every version: its token tells a reader which version it is resolving from."""

    static: int = 200
    count: int = 400

    @property
    def base(self) -> int:
        return self.static + 1

    def key(self, i: int) -> str:
        return f"NSE:CHURN{i}"

    def static_key(self, i: int) -> str:
        return f"NSE:STATIC{i}"

    def static_token(self, i: int) -> int:
        return (i + 1) << 8 | SEGMENT

    def token(self, version: int, i: int) -> int:
        return (self.base + version * self.count + i) << 8 | SEGMENT

    def decode(self, token: int) -> tuple[int, int]:
        """(version, i) of a churning instrument's token; nonsense for any other number."""
        version, i = divmod((token >> 8) - self.base, self.count)
        return version, i

    def present(self, version: int, i: int) -> bool:
        return i == 0 or (i * 7 + version) % 5 != 0

    def lot(self, version: int, i: int) -> int:
        return 1 + (version + i) % 7

    def text(self, version: int) -> str:
        rows = [HEADER]
        for i in range(self.static):
            token = self.static_token(i)
            rows.append(f"{token},{token >> 8},STATIC{i},STATIC {i},0,,0,0.05,1,EQ,NSE,NSE\n")
        for i in range(self.count):
            if self.present(version, i):
                token, lot = self.token(version, i), self.lot(version, i)
                rows.append(f"{token},{token >> 8},CHURN{i},CHURN {i},0,,0,0.05,{lot},EQ,NSE,NSE\n")
        return "".join(rows)

    def write(self, path: Path, version: int) -> None:
        """Replace the file atomically, as a broker dump is replaced."""
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(self.text(version))
        os.replace(temporary, path)


# -- the readers ----------------------------------------------------------------------------------


class _Checker:
    """One reader's checks (see the module docstring); counts and the first few failures."""

    def __init__(self, r: Resolver, churn: Churn) -> None:
        self.r, self.churn = r, churn
        self.counts = {"lookups": 0, "checks": 0, "wrong": 0, "exceptions": 0}
        self.examples: list[str] = []
        self.last_version = 0
        self.first_version: int | None = None

    def note(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{kind}: {text}")

    def version(self) -> int:
        """The version of the generation the next lookup resolves from (one lookup itself)."""
        version, i = self.churn.decode(int(self.r.token(self.churn.key(0), BROKER)))
        if i != 0:
            self.note("wrong", f"the version key resolved to instrument {i}")
        if version < self.last_version:
            self.note("wrong", f"went back from version {self.last_version} to {version}")
        if self.first_version is None:
            self.first_version = version
        self.last_version = version
        self.counts["lookups"] += 1
        return version

    def check(self, kind: int, i: int, picks: list[int]) -> None:
        """One check of kind 0..5 on churning instrument i (static instrument i for kind 0)."""
        self.counts["checks"] += 1
        churn, r = self.churn, self.r
        if kind == 0:
            key, token = churn.static_key(i % churn.static), churn.static_token(i % churn.static)
            got, back = r.token(key, BROKER), r.key(token, BROKER)
            self.counts["lookups"] += 2
            if got != token or back != key:
                self.note("wrong", f"static {key}: token {got}, key({token}) {back!r}")
            return
        v1 = self.version()
        key = churn.key(i)
        if kind == 1:
            got = r.get_token(key, BROKER)
            v2 = self.version()
            self._forward(key, i, got, v1, v2)
        elif kind == 2:
            token = churn.token(v1, i)
            back = r.get_key(token, BROKER)
            v2 = self.version()
            hit_ok = back == key and churn.present(v1, i)
            miss_ok = back is None and (not churn.present(v1, i) or v2 > v1)
            if not (hit_ok or miss_ok):
                self.note("wrong", f"get_key({token}) = {back!r} between versions {v1} and {v2}")
        elif kind == 3:
            self._record(key, i, v1)
        elif kind == 4:
            self._batch_forward(picks, v1)
        else:
            self._batch_reverse(picks, v1)
        self.counts["lookups"] += 1 if kind < 4 else len(picks)

    def _forward(self, key: str, i: int, got: Any, v1: int, v2: int) -> None:
        churn = self.churn
        if got is None:
            if all(churn.present(v, i) for v in range(v1, v2 + 1)):
                self.note("wrong", f"get_token({key!r}) missed, present in versions {v1}..{v2}")
            return
        version, index = churn.decode(int(got))
        if index != i or not v1 <= version <= v2 or not churn.present(version, i):
            self.note("wrong", f"token({key!r}) = {got} (version {version}) in {v1}..{v2}")

    def _record(self, key: str, i: int, v1: int) -> None:
        churn = self.churn
        try:
            record = self.r.record(key)
        except KeyError:
            v2 = self.version()
            if all(churn.present(v, i) for v in range(v1, v2 + 1)):
                self.note("wrong", f"record({key!r}) missed, present in versions {v1}..{v2}")
            return
        v2 = self.version()
        version, index = churn.decode(record.exchange_token << 8 | SEGMENT)
        tokens = {t.broker: t.value for t in record.tokens}
        if (
            index != i
            or not v1 <= version <= v2
            or record.lot_size != churn.lot(version, i)
            or tokens.get(BROKER) != churn.token(version, i)
        ):
            self.note("wrong", f"record({key!r}) mixes versions or is not of {v1}..{v2}: {record}")

    def _batch_forward(self, picks: list[int], v1: int) -> None:
        churn = self.churn
        tokens = self.r.tokens([churn.key(i) for i in picks], BROKER)
        v2 = self.version()
        hits = tokens != np.uint64(NO_TOKEN)
        versions = {churn.decode(int(t))[0] for t in tokens[hits].tolist()}
        if len(versions) != 1:
            self.note("wrong", f"one batch of tokens from versions {sorted(versions)}")
            return
        (version,) = versions
        expected = [
            churn.token(version, i) if churn.present(version, i) else NO_TOKEN for i in picks
        ]
        if not v1 <= version <= v2 or tokens.tolist() != expected:
            self.note("wrong", f"batch of tokens is not version {version}'s (in {v1}..{v2})")

    def _batch_reverse(self, picks: list[int], v1: int) -> None:
        churn = self.churn
        keys = self.r.keys([churn.token(v1, i) for i in picks], BROKER).tolist()
        v2 = self.version()
        expected = [churn.key(i).encode() if churn.present(v1, i) else b"" for i in picks]
        moved_on = v2 > v1 and not any(keys)  # a later generation has none of v1's tokens
        if keys != expected and not moved_on:
            self.note("wrong", f"batch of keys for version {v1}'s tokens is wrong (now {v2})")


def check_lookups(
    conn: Connection, stop: Event, name: str, directory: str, churn: Churn, seed: int
) -> None:
    """Follow registry `name` and check lookups from ``"go"`` until `stop` is set; send back the
    counts (see `_Checker`)."""
    with Resolver.open(name, directory=Path(directory)) as r:
        checker = _Checker(r, churn)
        conn.send(("ready", checker.version()))
        conn.recv()  # "go"
        rng = random.Random(seed)
        plan = [
            (rng.randrange(6), rng.randrange(churn.count), [0, *rng.sample(range(churn.count), 31)])
            for _ in range(_CHUNK)
        ]
        while not stop.is_set():
            for kind, i, picks in plan:
                try:
                    checker.check(kind, i, picks)
                except Exception as exc:  # every failure is counted, whatever it is
                    checker.note("exceptions", f"{type(exc).__name__}: {exc}")
        conn.send(
            {
                **checker.counts,
                "first_version": checker.first_version,
                "last_version": checker.last_version,
                "swaps_seen": r.swaps,  # type: ignore[attr-defined]  # a Following's counter
                "failed_refreshes": r.failed_refreshes,  # type: ignore[attr-defined]
                "last_error": r.last_error,  # type: ignore[attr-defined]
                "examples": checker.examples,
            }
        )


# -- the harness ----------------------------------------------------------------------------------


@dataclass
class Options:
    readers: int = 4
    swaps: int = 1000
    duration: float = 0.0
    kill_trials: int = 5
    static: int = 200
    churn: int = 400
    seed: int = 1


@dataclass
class Outcome:
    """What a run did and found; `failures` says what must not have happened."""

    options: dict[str, Any]
    swaps: int = 0
    swap_seconds: float = 0.0
    kill_trials: int = 0
    killed_while_building: int = 0
    versions_published_during_kills: int = 0
    torn_files: int = 0
    lost_versions: int = 0
    left_over_files: int = 0
    orphaned_workers: int = 0
    failed_swaps: int = 0
    readers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lookups(self) -> int:
        return sum(int(r["lookups"]) for r in self.readers)

    @property
    def wrong(self) -> int:
        return sum(int(r["wrong"]) for r in self.readers)

    @property
    def exceptions(self) -> int:
        return sum(int(r["exceptions"]) for r in self.readers)

    def failures(self) -> list[str]:
        found = [f"{self.wrong} wrong answers"] if self.wrong else []
        found += [f"{self.exceptions} exceptions in readers"] if self.exceptions else []
        for what in ("torn_files", "lost_versions", "left_over_files", "orphaned_workers"):
            if getattr(self, what):
                found.append(f"{getattr(self, what)} {what.replace('_', ' ')}")
        if self.failed_swaps:
            found.append(f"{self.failed_swaps} reloads that did not publish")
        if len(self.readers) != self.options["readers"]:
            found.append(f"{len(self.readers)} of {self.options['readers']} readers reported")
        return found


def run(options: Options, *, log: Any = print) -> Outcome:
    """The whole run: readers, the swap phase, the kill trials; the outcome."""
    root = scratch_directory()
    outcome = Outcome(asdict(options))
    churn = Churn(options.static, options.churn)
    source = root / "instruments.csv"
    churn.write(source, 1)
    served = Served(
        root / "shm",
        NAME,
        [f"{BROKER}={source}"],
        trade_date=TRADE_DATE,
        watch=False,
        log=root / "daemon.log",
        grace=GRACE_S,
    )
    stop: Event | None = None
    started: list[Any] = []
    try:
        served.start()
        stop = multiprocessing.get_context("spawn").Event()
        arguments = [
            (stop, NAME, str(served.directory), churn, seed) for seed in range(options.readers)
        ]
        started = spawn(check_lookups, arguments)
        for index, (_, conn) in enumerate(started):
            receive(conn, f"reader {index} opening the registry")
        for _, conn in started:
            conn.send("go")
        version = _swap(served, churn, source, options, outcome, log)
        _kill_trials(served, churn, source, version, options, outcome, log)
        stop.set()
        outcome.readers = [receive(conn, f"reader {i}") for i, (_, conn) in enumerate(started)]
        _without_paths(outcome, served.directory)
    finally:
        if stop is not None:
            stop.set()
        finish(started)
        served.stop()
        shutil.rmtree(root, ignore_errors=True)
    return outcome


def _without_paths(outcome: Outcome, directory: Path) -> None:
    """The scratch directory out of the readers' messages: results files name no local path."""
    for reader in outcome.readers:
        if reader["last_error"]:
            reader["last_error"] = reader["last_error"].replace(f"{directory}/", "")
        reader["examples"] = [e.replace(f"{directory}/", "") for e in reader["examples"]]


def _swap(
    served: Served, churn: Churn, source: Path, options: Options, outcome: Outcome, log: Any
) -> int:
    """Publish version after version as fast as the daemon goes; returns the last version."""
    log(f"swapping: {options.swaps} swaps at least, {options.duration:g} s at least ...")
    version = 1
    began = time.perf_counter()
    while outcome.swaps < options.swaps or time.perf_counter() - began < options.duration:
        version += 1
        churn.write(source, version)
        status = served.reload()
        if status["last_reload"]["result"] != "ok":
            outcome.failed_swaps += 1
            outcome.notes.append(f"version {version}: {status['last_reload']}")
        outcome.swaps += 1
        if outcome.swaps % 250 == 0:
            log(f"  {outcome.swaps} swaps in {time.perf_counter() - began:.1f} s")
    outcome.swap_seconds = time.perf_counter() - began
    return version


def _kill_trials(
    served: Served,
    churn: Churn,
    source: Path,
    version: int,
    options: Options,
    outcome: Outcome,
    log: Any,
) -> None:
    """Kill the daemon at a random moment of a reload, `options.kill_trials` times."""
    if not options.kill_trials:
        return
    rng = random.Random(options.seed)
    per_swap = outcome.swap_seconds / max(outcome.swaps, 1)
    log(f"kill -9 trials: {options.kill_trials}, each at a random moment of a reload ...")
    for trial in range(options.kill_trials):
        version += 1
        churn.write(source, version)
        assert served.process is not None
        workers = _children(served.process.pid)
        served.reload(wait=False, timeout=10.0)
        time.sleep(rng.uniform(0.0, 2.0 * per_swap))
        served.process.send_signal(signal.SIGKILL)
        served.process.wait()
        outcome.kill_trials += 1
        named = _control_version(served, churn)
        outcome.killed_while_building += named < version
        outcome.versions_published_during_kills += named == version
        outcome.torn_files += _torn(served.directory, outcome)
        outcome.orphaned_workers += _orphans(workers)
        served.start()  # a new daemon adopts the directory
        after = _control_version(served, churn)
        if after < named:
            outcome.lost_versions += 1
            outcome.notes.append(f"trial {trial}: killed at version {named}, restarted at {after}")
        outcome.left_over_files += _left_over(served, outcome)
        if (trial + 1) % 25 == 0:
            log(f"  {trial + 1} kill trials")


def _control_version(served: Served, churn: Churn) -> int:
    """The version the control segment names now, read as a new reader would."""
    with Resolver.open(NAME, directory=served.directory) as r:
        return churn.decode(int(r.token(churn.key(0), BROKER)))[0]


def _torn(directory: Path, outcome: Outcome) -> int:
    """Published generation files that are not complete and intact (there must be none)."""
    torn = 0
    for path in directory.glob(f"resolverd.{NAME}.*.snap"):
        try:
            data = path.read_bytes()
            verify_payload(data, read_header(data))
        except FileNotFoundError:
            continue  # unlinked by the grace timer of the daemon just killed: never torn
        except (LayoutError, ResolverError) as exc:
            torn += 1
            outcome.notes.append(f"{path.name}: {exc}")
    return torn


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the daemon's build worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _orphans(workers: list[int], timeout: float = 10.0) -> int:
    """How many of the killed daemon's workers outlive it (PR_SET_PDEATHSIG should end them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in workers if _running(pid)]
        if not alive:
            return 0
        time.sleep(0.02)
    return len(alive)


def _running(pid: int) -> bool:
    """Whether `pid` still runs: a zombie (dead, waiting for init to reap it) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _left_over(served: Served, outcome: Outcome, timeout: float = 30.0) -> int:
    """Once the restarted daemon has built and its grace period is over: files in the directory
    beyond the control file, lock, sockets and linked generations it reports."""
    deadline = time.monotonic() + timeout
    while True:
        status = served.status()
        linked = set(status["linked_generations"])
        settled = status["last_reload"] is not None and len(linked) == 1
        if settled or time.monotonic() > deadline:
            break
        time.sleep(GRACE_S)
    expected = linked | {f"resolverd.{NAME}.ctl", f".resolverd.{NAME}.lock"}
    expected |= {"resolverd.control", "resolverd.pub"}
    extra = sorted(p.name for p in served.directory.iterdir() if p.name not in expected)
    if extra or not settled:
        outcome.notes.append(f"left over after a restart: {extra}, linked {sorted(linked)}")
    return len(extra) + (not settled)


# -- the report -----------------------------------------------------------------------------------


def _lookups_kind() -> str:
    """Which lookups the reader processes (which inherit this environment) resolve with."""
    from resolverd import client

    pure = client._speedups is None or os.environ.get("RESOLVERD_PURE_PYTHON") == "1"
    return "pure-Python" if pure else "compiled (resolverd/_speedups.c)"


def markdown(outcome: Outcome, info: dict[str, Any], command: str, seconds: float) -> str:
    o = outcome
    lines = [
        "# resolverd torture and kill -9 soak",
        "",
        f"`{command}` on {info['cpu']} ({info['cores']} cores), Python {info['python']}, "
        f"numpy {info['numpy']}, {info['date']}; {seconds:.0f} s in all.",
        "",
        "Reader processes follow the registry and check every answer against the generation it "
        "was read from while the daemon publishes a different registry in each generation as "
        "fast as it can; then the daemon is killed with SIGKILL at a random moment of a reload "
        "and restarted, again and again (see `bench/torture.py`). The readers' lookups are "
        f"the {_lookups_kind()} ones.",
        "",
        "| figure | value | must be |",
        "|---|---|---|",
        f"| swaps (generations published while readers resolve) | {o.swaps:,} in "
        f"{o.swap_seconds:.1f} s ({o.swaps / max(o.swap_seconds, 1e-9):.1f}/s) | ≥ "
        f"{o.options['swaps']:,} |",
        f"| lookups checked, by {len(o.readers)} reader processes | {o.lookups:,} | |",
        f"| wrong answers | {o.wrong} | 0 |",
        f"| exceptions in readers | {o.exceptions} | 0 |",
        f"| reloads that did not publish | {o.failed_swaps} | 0 |",
        f"| kill -9 trials (killed before publishing / after) | {o.kill_trials} "
        f"({o.killed_while_building} / {o.versions_published_during_kills}) | |",
        f"| torn or half-written generation files | {o.torn_files} | 0 |",
        f"| versions lost by a restart | {o.lost_versions} | 0 |",
        f"| files left beyond the retention | {o.left_over_files} | 0 |",
        f"| build workers outliving a killed daemon | {o.orphaned_workers} | 0 |",
        "",
        "## Per reader",
        "",
        "| reader | lookups | checks | versions | swaps seen | failed refreshes | wrong | "
        "exceptions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(o.readers):
        lines.append(
            f"| {index} | {r['lookups']:,} | {r['checks']:,} | {r['first_version']} to "
            f"{r['last_version']} | {r['swaps_seen']} | {r['failed_refreshes']} | {r['wrong']} "
            f"| {r['exceptions']} |"
        )
    notes = list(o.notes)
    for index, r in enumerate(o.readers):
        notes += [f"reader {index}: {example}" for example in r["examples"]]
        if r["last_error"]:
            notes.append(
                f"reader {index}, last failed refresh (kept its generation): {r['last_error']}"
            )
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser, results: Path) -> None:
    defaults = Options()
    parser.add_argument("--readers", type=int, default=defaults.readers)
    parser.add_argument(
        "--swaps", type=int, default=defaults.swaps, help="swaps at least (default %(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="seconds of swapping at least (the soak)"
    )
    parser.add_argument("--kill-trials", type=int, default=defaults.kill_trials)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--out", type=Path, default=results, help="where torture.md and torture.json go"
    )


def main(args: argparse.Namespace, command: str) -> int:
    options = Options(args.readers, args.swaps, args.duration, args.kill_trials, seed=args.seed)
    if options.readers < 1 or options.swaps < 0 or options.kill_trials < 0:
        raise SystemExit("python -m bench torture: --readers >= 1, --swaps and --kill-trials >= 0")
    began = time.perf_counter()
    outcome = run(options)
    seconds = time.perf_counter() - began
    info = report.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    md, js = args.out / "torture.md", args.out / "torture.json"
    md.write_text(markdown(outcome, info, command, seconds))
    data = {"command": command, "machine": info, "seconds": seconds, **asdict(outcome)}
    js.write_text(json.dumps(data, indent=2) + "\n")
    print(md.read_text())
    print(f"wrote {md} and {js}")
    for failure in outcome.failures():
        print(f"FAILED: {failure}")
    return 1 if outcome.failures() else 0
