"""`resolverd demo`: the built-in job, run end to end on a synthetic universe.

It prints a short narrative, a few lines per step, with what each step took:

1. Generate the universe (`synthetic.generate_universe`) and write its Kite columns as a Kite
   ``instruments`` CSV in a new temporary directory (in /dev/shm unless told otherwise).
2. Start ``resolverd serve kite=FILE --name demo`` on that directory, as a child process. While
   the daemon's worker loads, gates and compiles generation 1, this process compiles the whole
   universe (every broker) itself, maps it and times lookups both ways.
3. Once generation 1 is published, start a reader: a second Python process that opens the
   registry by name, resolves a few keys both ways and waits for a swap.
4. Change one instrument's Kite token in the CSV (a new file renamed over the old one, the way a
   fresh broker dump arrives). The daemon notices, rebuilds and swaps; the reader prints the new
   token, the generation switch, and how long after the change it noticed.
5. Stop the daemon with SIGTERM and check that it exits 0; open the registry again to show that
   its current generation outlives the daemon; purge it and remove the directory.

A step that fails raises `ResolverError` saying what failed (with the end of the daemon's log
where that helps). Whatever happens, the daemon and the reader are stopped and the directory is
removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._extras import require
from ._files import write_atomically
from .client import Resolver
from .compiler import compile_snapshot
from .errors import ResolverError, UnavailableError
from .model import Categorical, Registry, days_to_date
from .shm_layout import NO_TOKEN
from .synthetic import DEFAULT_TRADE_DATE, generate_universe

__all__ = ["REGISTRY_NAME", "run_demo"]

REGISTRY_NAME = "demo"
SOURCE_FILE = "instruments.csv"
SAMPLE_SIZE = 5  # keys shown; the reader resolves the first three and watches the first
SHM = Path("/dev/shm")

# The daemon's settings for the demo: poll the CSV ten times a second and rebuild at once (the
# defaults, a poll a second and half a second of debounce, suit a real dump, not a show), and
# no daily reload that could land in the middle of it.
DAEMON_ENVIRONMENT = {
    f"RESOLVERD__REGISTRIES__{REGISTRY_NAME.upper()}__WATCH_INTERVAL_SECONDS": "0.1",
    f"RESOLVERD__REGISTRIES__{REGISTRY_NAME.upper()}__DEBOUNCE_SECONDS": "0",
    f"RESOLVERD__REGISTRIES__{REGISTRY_NAME.upper()}__SCHEDULE": "[]",
}
# A service manager sets these for the process it started, not for the daemon the demo starts:
# inherited, they would make that daemon talk sd_notify on our behalf or put its sockets in our
# runtime directory instead of the demo's.
NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "RUNTIME_DIRECTORY")

_READER_CODE = "import sys; from resolverd.demo import _reader_main; sys.exit(_reader_main())"
# What the reader prints once it has followed the swap; the demo checks the token against the
# one it wrote.
_SWAP_ANSWER = re.compile(r"^token\(.*\) = (?P<new>\d+) \(was (?P<old>\d+)\)")
_WAITING = "waiting for a swap"


def _say(label: str, text: str) -> None:
    print(f"{label:10} {text}" if label else text, flush=True)


def _patience(size: int) -> float:
    """Seconds to wait for one build of `size` instruments before calling the daemon stuck:
    about four times what a build takes on a 2-core machine (20 s a million)."""
    return 30.0 + size * 80e-6


def run_demo(size: int, *, seed: int = 0, out: str | None = None, parent: str | None = None) -> int:
    """Run the demo (see the module docstring), printing as it goes; returns the exit code, 0.

    `out` also keeps this process's own snapshot of the universe (every broker) at that path;
    `parent` is where the temporary directory is made (default /dev/shm where it exists, else
    the system's temporary directory). Raises `ResolverError` naming the step that failed,
    after stopping every process it started and removing the temporary directory.
    """
    if size < 1:
        raise ResolverError(f"--size {size}: the universe needs at least one instrument")
    require("daemon", "zmq", "uvloop", needed_by="resolverd demo (it serves the universe)")
    started = time.perf_counter()
    base = parent if parent is not None else (str(SHM) if SHM.is_dir() else None)
    try:
        directory = Path(tempfile.mkdtemp(prefix="resolverd-demo-", dir=base))
    except OSError as exc:
        raise ResolverError(f"cannot make the demo's directory: {exc}") from None
    demo = _Demo(directory, size, seed, out)
    try:
        with _exit_on_termination():
            demo.run()
    except OSError as exc:
        raise ResolverError(f"demo failed: {exc}") from None
    finally:
        demo.clean_up()
    _say("done", f"in {time.perf_counter() - started:.1f} s")
    return 0


@contextlib.contextmanager
def _exit_on_termination() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit while the demo runs, so that its clean-up runs:
    by default they end the process at once, and the daemon, in a session of its own, would
    outlive it. (Only the main thread may set handlers; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, leave) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Demo:
    """One run: the directory, the processes it started, and the steps in order."""

    def __init__(self, directory: Path, size: int, seed: int, out: str | None) -> None:
        self.directory, self.size, self.seed = directory, size, seed
        self.snapshot_path = Path(out) if out else directory / "demo.snap"
        self.source = directory / SOURCE_FILE
        self.log_path = directory / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.reader: _Reader | None = None

    def run(self) -> None:
        t0 = time.perf_counter()
        registry = generate_universe(self.size, seed=self.seed)
        t1 = time.perf_counter()
        _say(
            "universe",
            f"{len(registry):,} synthetic instruments (seed {self.seed}), "
            f"generated in {t1 - t0:.2f} s",
        )
        rng = np.random.default_rng(self.seed)
        sample = [
            registry.keys[i]
            for i in rng.choice(
                len(registry), min(SAMPLE_SIZE, len(registry)), replace=False
            ).tolist()
        ]
        lines, rows = kite_csv_lines(registry)
        write_atomically(self.source, "".join(lines).encode())
        _say(
            "source",
            f"{self.source}: the universe's Kite columns as a Kite instruments CSV, "
            f"{len(lines) - 1:,} rows, {self.source.stat().st_size / 1e6:.1f} MB, "
            f"written in {time.perf_counter() - t1:.2f} s",
        )

        daemon_started = self.start_daemon()
        _say(
            "daemon",
            f"`resolverd serve kite={SOURCE_FILE} --name {REGISTRY_NAME}` started (pid "
            f"{self.pid}); it builds generation 1 while this process compiles every broker",
        )
        correct = _compile_and_time(registry, sample, rng, self.snapshot_path)
        if not correct:
            raise ResolverError("a batch lookup disagreed with the registry it was compiled from")

        self.wait_for_generation_1(daemon_started)
        self.reader = _Reader(self.directory, sample[:3], _patience(self.size))
        _say(
            "reader", f"a second process (pid {self.reader.process.pid}) follows {REGISTRY_NAME!r}:"
        )
        self.reader.echo_until(lambda line: line.startswith(_WAITING), _patience(0))

        key = sample[0]
        new_token, old_token, changed = _changed_row(lines, rows[key], registry)
        lines[rows[key]] = changed
        write_atomically(self.source, "".join(lines).encode())
        self.reader.tell_changed(time.monotonic_ns())
        _say(
            "change",
            f"{SOURCE_FILE} rewritten and renamed into place: {key} now has Kite token "
            f"{new_token} (was {old_token}); the daemon polls it every 0.1 s",
        )
        answer = self.reader.echo_until(
            lambda line: bool(_SWAP_ANSWER.match(line)), _patience(self.size)
        )
        seen = _SWAP_ANSWER.match(answer)
        assert seen is not None
        if int(seen["new"]) != new_token:
            raise ResolverError(
                f"the reader resolved {key} to {seen['new']} after the swap, not {new_token}"
            )
        if self.reader.finish(_patience(0)) != 0:
            raise ResolverError(f"the reader exited with code {self.reader.process.returncode}")
        self.reader = None
        self.report_build(2)

        self.stop_daemon()
        with Resolver.open(REGISTRY_NAME, directory=self.directory) as after:
            token = after.token(key, "kite")
            generation = after.generation
        if token != new_token:
            raise ResolverError(f"after the stop, {key} resolves to {token}, not {new_token}")
        _say(
            "after",
            f"the stopped daemon left generation {generation} in place: Resolver.open"
            f"({REGISTRY_NAME!r}) still answers token({key!r}, 'kite') = {token}",
        )
        self.purge()

    # -- the daemon ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.pid

    def start_daemon(self) -> float:
        """Start ``resolverd serve`` on the directory; when it started (perf_counter)."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("RESOLVERD__") and name not in NOT_INHERITED
        }
        environment.update(DAEMON_ENVIRONMENT)
        argv = [
            sys.executable,
            "-m",
            "resolverd",
            "serve",
            f"kite={self.source}",
            "--name",
            REGISTRY_NAME,
            "--dir",
            str(self.directory),
            "--metrics",
            "",
            "--trade-date",
            DEFAULT_TRADE_DATE.isoformat(),
            "--log-format",
            "json",
        ]
        with open(self.log_path, "wb") as log:
            # A session of its own: a Ctrl-C meant for the demo does not reach the daemon
            # first, and a daemon that will not stop is killed with its build worker.
            self.daemon = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        return time.perf_counter()

    def wait_for_generation_1(self, daemon_started: float) -> None:
        deadline = time.monotonic() + _patience(self.size)
        while True:
            self.check_daemon_alive("before publishing generation 1")
            try:
                with Resolver.open(REGISTRY_NAME, directory=self.directory) as first:
                    instruments = len(first)
                break
            except UnavailableError:
                if time.monotonic() > deadline:
                    raise ResolverError(
                        f"the daemon published nothing in {_patience(self.size):.0f} s"
                        + self.log_tail()
                    ) from None
                time.sleep(0.05)
        _say(
            "daemon",
            f"generation 1 published, {instruments:,} instruments, "
            f"{time.perf_counter() - daemon_started:.1f} s after the daemon started",
        )
        self.report_build(1)

    def report_build(self, generation: int) -> None:
        """Say what the daemon's build of `generation` took, from its log line."""
        wanted = f"registry {REGISTRY_NAME}: generation {generation} published"
        deadline = time.monotonic() + 2.0  # the line follows the publication at once
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    entry: Any = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("msg") == wanted:
                    _say(
                        "daemon",
                        f"its worker built generation {generation}: load, join and gates "
                        f"{entry.get('load_seconds')} s, compile {entry.get('compile_seconds')} s",
                    )
                    return
            time.sleep(0.05)

    def check_daemon_alive(self, when: str) -> None:
        assert self.daemon is not None
        code = self.daemon.poll()
        if code is not None:
            raise ResolverError(f"the daemon exited with code {code} {when}" + self.log_tail())

    def log_tail(self, lines: int = 8) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "; the daemon's log ends:\n" + "\n".join(tail) if tail else ""

    def stop_daemon(self) -> None:
        assert self.daemon is not None
        self.check_daemon_alive("while it should be serving")
        t0 = time.perf_counter()
        self.daemon.send_signal(signal.SIGTERM)
        try:
            code = self.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise ResolverError("the daemon did not stop within 30 s of SIGTERM") from None
        if code != 0:
            raise ResolverError(f"the daemon exited with code {code} on SIGTERM" + self.log_tail())
        _say("stop", f"SIGTERM: the daemon exited with code 0 in {time.perf_counter() - t0:.2f} s")

    def purge(self) -> None:
        from .daemon.publish import purge

        removed = purge(self.directory, REGISTRY_NAME)
        _say(
            "purge",
            f"removed registry {REGISTRY_NAME!r}: {', '.join(sorted(p.name for p in removed))}",
        )

    def clean_up(self) -> None:
        """Stop whatever still runs and remove the directory; never raises."""
        if self.reader is not None:
            self.reader.kill()
        daemon = self.daemon
        if daemon is not None and daemon.returncode != 0:
            # The daemon installs its SIGTERM handler only after its first build: a SIGTERM
            # before that ends it at once and leaves its build worker running, orphaned. So
            # the whole group (its own session) is stopped, and then anything left in it.
            with contextlib.suppress(ProcessLookupError):
                if daemon.poll() is None:
                    os.killpg(daemon.pid, signal.SIGTERM)
                    try:
                        daemon.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        os.killpg(daemon.pid, signal.SIGKILL)
                        daemon.wait()
                os.killpg(daemon.pid, signal.SIGKILL)
        existed = self.directory.exists()
        shutil.rmtree(self.directory, ignore_errors=True)
        if existed and not self.directory.exists():
            _say("removed", str(self.directory))


def _compile_and_time(
    registry: Registry, sample: list[str], rng: np.random.Generator, path: Path
) -> bool:
    """Compile `registry`, map it from `path` and print lookup timings both ways; True if every
    batch answer matched the registry."""
    t1 = time.perf_counter()
    snapshot = compile_snapshot(registry)
    t2 = time.perf_counter()
    write_atomically(path, snapshot)
    del snapshot
    t3 = time.perf_counter_ns()
    with Resolver.open(path) as resolver:
        first = resolver.token(sample[0], "kite")
        t4 = time.perf_counter_ns()
        kite = next(c for c in registry.tokens if c.broker == "kite")
        forward_ns = _time_per_call(resolver.token, sample[0], 200_000)
        reverse_ns = _time_per_call(resolver.key, int(first), 200_000)
        picks = rng.integers(0, len(registry), min(len(registry), 1_000_000))
        # Fresh str objects, as keys arriving from elsewhere would be.
        batch_keys = [registry.keys[int(i)].encode().decode() for i in picks]
        batch_tokens = np.asarray(kite.values)[picks]
        t5 = time.perf_counter_ns()
        tokens = resolver.tokens(batch_keys, "kite")
        t6 = time.perf_counter_ns()
        keys = resolver.keys(batch_tokens, "kite")
        t7 = time.perf_counter_ns()
        correct = bool((tokens == batch_tokens).all()) and bool(
            (keys == np.array([k.encode() for k in batch_keys])).all()
        )
        size = path.stat().st_size
        lines = [
            f"compile    {t2 - t1:.2f} s -> {size / 1e6:.1f} MB "
            f"({size / len(registry):.0f} bytes/instrument), "
            f"brokers {', '.join(resolver.brokers)}",
            f"open       {(t4 - t3) / 1e3:.0f} us from Resolver.open to the first answer",
            "",
            *(
                f"  token({k!r}, 'kite') = {resolver.token(k, 'kite')}"
                f"   key(..) = {resolver.key(resolver.token(k, 'kite'), 'kite')!r}"
                for k in sample[:3]
            ),
            "",
            f"token(key, broker)  hot {forward_ns:6.0f} ns per lookup (fingerprint mode, "
            + ("compiled lookups)" if resolver.compiled else "pure-Python lookups)"),
            f"key(token, feed)    hot {reverse_ns:6.0f} ns per lookup",
            f"tokens(keys)        {(t6 - t5) / len(picks):6.0f} ns per key, batch of "
            f"{len(picks):,}",
            f"keys(tokens)        {(t7 - t6) / len(picks):6.1f} ns per token, batch of "
            f"{len(picks):,}",
            f"every batch answer checked against the registry: {'ok' if correct else 'WRONG'}",
            "",
        ]
    print("\n".join(lines), flush=True)
    return correct


def _time_per_call(lookup: Callable[[Any, str], object], arg: object, repeat: int) -> float:
    """Median ns per call over batches of 1,000 direct calls (loop overhead included)."""
    per_batch = []
    for _ in range(repeat // 1000):
        started = time.perf_counter_ns()
        for _ in range(1000):
            lookup(arg, "kite")
        per_batch.append((time.perf_counter_ns() - started) / 1000)
    return sorted(per_batch)[len(per_batch) // 2]


# -- the source --------------------------------------------------------------------------------


def kite_csv_lines(registry: Registry) -> tuple[list[str], dict[str, int]]:
    """The registry's Kite columns as the lines of a Kite ``instruments`` CSV (the header first,
    each line ending in a newline) for the rows with a Kite token, and each key's index there.

    The trading symbol is the key's symbol, so keys read back unchanged; ``last_price`` is 0.
    Raises `ResolverError` if the registry has no integer ``kite`` broker.
    """
    from .loaders.kite import COLUMNS

    kite = next((c for c in registry.tokens if c.broker == "kite"), None)
    if kite is None or not isinstance(kite.values, np.ndarray):
        raise ResolverError("the universe has no integer kite tokens to serve")
    listed = np.flatnonzero(kite.values != NO_TOKEN)
    # Text is made once per distinct value and spread by index: a million rows have a few
    # thousand distinct strikes and expiries, and formatting each row's floats would cost more
    # than the rest of the file.
    tokens = kite.values[listed].tolist()
    exchange_tokens = registry.exchange_token[listed].tolist()
    lot_sizes = registry.lot_size[listed].tolist()
    keys = [registry.keys[i] for i in listed.tolist()]
    symbols = [key.partition(":")[2] for key in keys]
    if _needs_quotes("".join(symbols)):
        symbols = [_field(s) for s in symbols]
    expiry = _texts(
        registry.expiry_days[listed], lambda d: "" if d == 0 else str(days_to_date(int(d)))
    )
    strike = _texts(registry.strike[listed], _number)
    tick = _texts(registry.tick_size[listed], _number)
    name, itype, segment, exchange = (
        _strings(column, listed)
        for column in (
            registry.name,
            registry.instrument_type,
            registry.segment,
            registry.exchange,
        )
    )
    lines = [",".join(COLUMNS) + "\n"]
    lines += [
        f"{a},{b},{c},{d},0,{e},{f},{g},{h},{i},{j},{k}\n"
        for a, b, c, d, e, f, g, h, i, j, k in zip(
            tokens,
            exchange_tokens,
            symbols,
            name,
            expiry,
            strike,
            tick,
            lot_sizes,
            itype,
            segment,
            exchange,
            strict=True,
        )
    ]
    return lines, {key: line for line, key in enumerate(keys, 1)}


def _changed_row(lines: list[str], line: int, registry: Registry) -> tuple[int, int, str]:
    """(new Kite token, old Kite token, new text) for line `line` of the CSV: a token no row has.

    Kite's rule ``instrument_token == exchange_token << 8 | segment`` holds, so the exchange
    token changes with it: one past the largest in the universe, unique in every segment.
    """
    fields = lines[line].split(",", 2)
    old = int(fields[0])
    exchange_token = int(registry.exchange_token.max()) + 1
    new = exchange_token << 8 | old & 0xFF
    if new >= 2**32:
        raise ResolverError(f"no free Kite token below 2**32 (exchange token {exchange_token})")
    return new, old, f"{new},{exchange_token},{fields[2]}"


def _texts(values: NDArray[Any], text: Callable[[Any], str]) -> list[str]:
    """`text` of each value, computed once per distinct value."""
    distinct, inverse = np.unique(values, return_inverse=True)
    table = np.array([_field(text(v)) for v in distinct.tolist()], dtype=object)
    result: list[str] = table[inverse.reshape(-1)].tolist()
    return result


def _strings(column: Categorical, rows: NDArray[np.intp]) -> list[str]:
    table = np.array([_field(c) for c in column.categories], dtype=object)
    result: list[str] = table[column.codes[rows]].tolist()
    return result


def _number(value: float) -> str:
    """The shortest text that reads back as `value`, as Kite writes it (``22500``, ``0.05``)."""
    return repr(value).removesuffix(".0")


def _needs_quotes(text: str) -> bool:
    return any(c in text for c in ',"\r\n')


def _field(text: str) -> str:
    """`text` as a CSV field, quoted as `csv` quotes it when it must be."""
    return '"' + text.replace('"', '""') + '"' if _needs_quotes(text) else text


# -- the reader --------------------------------------------------------------------------------


class _Reader:
    """The second process, its output echoed line by line as it comes."""

    def __init__(self, directory: Path, keys: Sequence[str], timeout: float) -> None:
        argv = [sys.executable, "-c", _READER_CODE, REGISTRY_NAME, str(directory), str(timeout)]
        self.process = subprocess.Popen(
            [*argv, *keys],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as output:
            for line in output:
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def echo_until(self, wanted: Callable[[str], bool], timeout: float) -> str:
        """Echo the reader's lines up to and including the first `wanted` one, and return it.
        Raises ResolverError if the reader ends or `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ResolverError(
                    f"the reader said nothing expected in {timeout:.0f} s"
                ) from None
            if line is None:
                code = self.process.wait()
                raise ResolverError(f"the reader exited with code {code} too early")
            _say("", f"  reader | {line}")
            if wanted(line):
                return line

    def tell_changed(self, at_ns: int) -> None:
        """Give the reader the time (CLOCK_MONOTONIC, one clock for the whole host) at which the
        source changed, so that it can say how long it took to notice."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{at_ns}\n")
        self.process.stdin.flush()

    def finish(self, timeout: float) -> int:
        """Echo the rest of the reader's output, wait for it to exit and return its exit code."""
        deadline = time.monotonic() + timeout
        try:
            while (
                line := self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            ) is not None:
                _say("", f"  reader | {line}")
            return self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except (queue.Empty, subprocess.TimeoutExpired):
            raise ResolverError(f"the reader did not exit within {timeout:.0f} s") from None
        finally:
            self._close_input()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close_input()

    def _close_input(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()


def _reader_main(argv: Sequence[str] | None = None) -> int:
    """The reader process: ``NAME DIRECTORY TIMEOUT KEY...``; the demo changes the first key.

    Opens the registry by name, resolves each key both ways, then follows the registry until a
    swap (an `on_swap` callback; `refresh` every millisecond) and prints the first key's new
    answer. Stdin brings the time the source changed. Returns 0, or 1 if no swap came within
    TIMEOUT seconds or another key's answer changed.
    """
    name, directory, timeout, *keys = sys.argv[1:] if argv is None else argv

    def say(text: str) -> None:
        print(text, flush=True)

    t0 = time.perf_counter_ns()
    with Resolver.open(name, directory=directory) as resolver:
        t1 = time.perf_counter_ns()
        say(
            f"opened {name!r} by name in {(t1 - t0) / 1e6:.1f} ms: generation "
            f"{resolver.generation}, {len(resolver):,} instruments"
        )
        before = {}
        for key in keys:
            token = resolver.token(key, "kite")
            before[key] = token
            back = resolver.key(token, "kite")
            say(f"token({key!r}, 'kite') = {token}   key({token}, 'kite') = {back!r}")
        swaps: list[tuple[int, int, int]] = []
        resolver.on_swap(lambda old, new: swaps.append((old, new, time.monotonic_ns())))
        say(f"{_WAITING} (an on_swap callback; refresh() every millisecond)")
        changed_at: int | None = None
        deadline = time.monotonic() + float(timeout)
        while not swaps or changed_at is None:
            if time.monotonic() > deadline:
                say(f"no swap within {float(timeout):.0f} s")
                return 1
            if not swaps:
                resolver.refresh()
            if changed_at is None and select.select([sys.stdin], [], [], 0.001)[0]:
                message = os.read(sys.stdin.fileno(), 64).split()
                if not message:
                    say("the demo went away")
                    return 1
                changed_at = int(message[0])
            elif changed_at is not None:
                time.sleep(0.001)
        old_generation, new_generation, noticed = swaps[0]
        key = keys[0]
        token = resolver.token(key, "kite")
        say(
            f"swap: generation {old_generation} -> {new_generation}, noticed "
            f"{(noticed - changed_at) / 1e9:.2f} s after the source changed"
        )
        say(
            f"token({key!r}, 'kite') = {token} (was {before[key]})   "
            f"key({token}, 'kite') = {resolver.key(token, 'kite')!r}   "
            f"get_key({before[key]}, 'kite') = {resolver.get_key(before[key], 'kite')!r}"
        )
        unchanged = all(resolver.token(k, "kite") == before[k] for k in keys[1:])
        say(
            f"the other {len(keys) - 1} keys resolve as before"
            if unchanged
            else "another key's token changed too: WRONG"
        )
        return 0 if unchanged else 1
