"""Memory with 1, 4 and 16 reader processes: the readers' PSS from ``/proc/<pid>/smaps_rollup``.

For each contender, reader processes are started (`bench.processes.spawn`: fresh interpreters,
as independent trading processes are) one group after another, 1, then 3 more, then 12 more.
Each reader imports the same modules, opens the store, resolves every key forward and every
token in reverse in batches, so that every page a long-running process needs is touched, checks
the answers, reports ready and waits. The keys reach it as a numpy array, made str a chunk at a
time, and it hands freed heap back (malloc_trim) before it reports: the checking is not data.
With all N ready, the harness reads each reader's ``smaps_rollup`` and sums ``Pss`` (and Rss,
Private_*, Shared_* for the notes); PSS charges a page shared by k processes 1/k to each, so the
sum counts a shared mapping once and a private copy N times.

Baseline: as many readers that import the same modules and read the same keys and tokens, but
open nothing. The data's share of the PSS is the readers' sum less the baseline's: what the data
costs, not the interpreters.

Server peers (a store with ``remote = True``) hold their data in the server, once for every
reader and outside the readers' PSS: Redis's is the ``MEMORY USAGE`` of its two hashes,
PostgreSQL's the ``pg_total_relation_size`` of its table (on disk; the server caches what it
reads of it in its shared buffers).

Before each group the harness estimates what the N readers will need (N times the latest PSS
per reader, or a guess from the dataset's size before any was measured) and skips N, and every
larger N, when that exceeds 60% of MemAvailable.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .compare_startup import libraries, times
from .compare_types import Section
from .processes import finish, receive, spawn

if TYPE_CHECKING:
    from .datasets import Dataset
    from .stores import Opened, Store

Log = Callable[[str], None]
Started = list[Any]  # (process, connection) pairs, as `spawn` returns them

READERS = (1, 4, 16)
QUICK_READERS = (1, 4)
BASELINE = "baseline (nothing opened)"
FIELDS = (
    "Rss",
    "Pss",
    "Pss_Anon",
    "Pss_File",
    "Pss_Shmem",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Swap",
)
"""The ``smaps_rollup`` fields recorded (kB); Pss is the figure, the others explain it."""
MEMORY_SHARE = 0.6
"""At most this share of MemAvailable may the readers of one group be estimated to need."""
PRIOR_KB_PER_READER = 100 * 1024
"""An interpreter with numpy and the peers' libraries, before the baseline is measured."""
PRIOR_BYTES_PER_PAIR = 1_000
"""What one pair may cost a reader before any reader of a store was measured: two dicts' entries,
a str and an int (about 300 bytes at 1M), with a wide margin."""
CHUNK = 4_096
"""Keys per batch call in a reader. The keys live in a numpy array and become str a chunk at a
time: a million str objects made and freed would leave the reader's heap fragmented, and the
leftovers would be counted as the store's data."""
SINGLES = 32
"""Single lookups each way per reader, besides the batches."""


@dataclass
class Group:
    """The readers of one contender (or the baseline), measured as their number grows."""

    name: str
    store: Store | None
    spec: Any
    measured: dict[int, dict[str, int]] = field(default_factory=dict)
    """Reader count -> summed smaps_rollup fields, kB."""
    failure: str | None = None
    skipped: dict[int, str] = field(default_factory=dict)
    server: tuple[int, str] | None = None
    """Bytes the server holds for the data, and how that was measured."""
    server_error: str | None = None
    lookups: int = 0
    """The answers each reader checked."""


def run(
    dataset: Dataset,
    stores: Sequence[Store],
    *,
    log: Log = print,
    readers: Sequence[int] = READERS,
    quick: bool = False,
) -> Section:
    """The readers' PSS for every store in `stores` and every count in `readers` (1 and 4 with
    `quick`), beside a baseline of readers that open nothing."""
    counts = sorted(set(QUICK_READERS if quick else readers))
    section = Section("Memory: reader processes' PSS")
    workdir = Path(tempfile.mkdtemp(prefix="memory-", dir=dataset.directory))
    try:
        keys_path, tokens_path = _write_pairs(dataset, workdir)
        available = [s for s in stores if not _skip(s, section)]
        modules = _modules(available)
        files = (str(keys_path), str(tokens_path))
        baseline = Group(BASELINE, None, None)
        _measure(baseline, counts, (modules, *files), len(dataset), log)
        groups = [baseline]
        for store in available:
            groups.append(_store_group(store, dataset, workdir, counts, modules, files, log))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _fill(section, groups, counts)
    return section


def _skip(store: Store, section: Section) -> bool:
    why = store.missing()
    if why:
        section.skipped.append(f"{store.name}: {why}")
    return why is not None


def _modules(stores: Sequence[Store]) -> tuple[str, ...]:
    """Every module a reader imports, whatever it opens: each store's own module and the
    libraries its `open` uses, so that the baseline's interpreters are the readers' own."""
    names = {type(store).__module__ for store in stores}
    for store in stores:
        names.update(libraries(store))
    return tuple(sorted(names))


def _write_pairs(dataset: Dataset, workdir: Path) -> tuple[Path, Path]:
    """The keys (UTF-8, fixed-width bytes) and tokens every reader resolves, as .npy files."""
    keys_path, tokens_path = workdir / "keys.npy", workdir / "tokens.npy"
    np.save(keys_path, np.array([key.encode() for key in dataset.keys], dtype=np.bytes_))
    np.save(tokens_path, dataset.tokens)
    return keys_path, tokens_path


def _store_group(
    store: Store,
    dataset: Dataset,
    workdir: Path,
    counts: list[int],
    modules: tuple[str, ...],
    files: tuple[str, str],
    log: Log,
) -> Group:
    group = Group(store.name, store, None)
    try:
        group.spec = store.prepare(dataset, workdir)
    except Exception as exc:  # a peer that cannot load the data fails alone
        group.failure = f"prepare failed: {type(exc).__name__}: {exc}"
        log(f"  {store.name}: {group.failure}")
        return group
    try:
        try:
            group.server = _server_side(store, group.spec)
            if group.server is None and getattr(store, "remote", False):
                group.server_error = "its Spec names neither Redis hashes nor a PostgreSQL table"
        except Exception as exc:  # the readers' figures stand without it
            group.server_error = f"{type(exc).__name__}: {_first_line(exc)}"
        _measure(group, counts, (modules, *files), len(dataset), log)
    finally:
        store.cleanup(group.spec)
    return group


def _measure(group: Group, counts: list[int], args: tuple[Any, ...], pairs: int, log: Log) -> None:
    """Grow `group`'s readers to each count in turn and sum their smaps_rollup at each; skip a
    count (and every larger one) whose estimate does not fit."""
    available_kb = _mem_available_kb()
    per_reader_kb = PRIOR_KB_PER_READER + PRIOR_BYTES_PER_PAIR * pairs // 1024
    started: Started = []
    try:
        for n in counts:
            estimate = n * per_reader_kb
            log(f"  {group.name}, {n} readers: estimated {_mb(estimate)}, {_mb(available_kb)} free")
            if estimate > MEMORY_SHARE * available_kb:
                for m in (c for c in counts if c >= n):
                    group.skipped[m] = (
                        f"{m} readers would need about {_mb(m * per_reader_kb)} (estimated from "
                        f"{_mb(per_reader_kb)} per reader), more than {MEMORY_SHARE:.0%} of the "
                        f"{_mb(available_kb)} available"
                    )
                return
            try:
                group.measured[n] = _grow(group, started, n, args, pairs)
            except (RuntimeError, EOFError, OSError) as exc:
                group.failure = f"{n} readers: {_first_line(exc)}"
                log(f"  {group.name}: failed: {group.failure}")
                return
            per_reader_kb = group.measured[n]["Pss"] // n
            log(f"  {group.name}, {n} readers: PSS {_mb(group.measured[n]['Pss'])} in all")
    finally:
        finish(started)


def _grow(
    group: Group, started: Started, n: int, args: tuple[Any, ...], pairs: int
) -> dict[str, int]:
    """Start readers until `started` holds `n`, wait for the new ones, sum all n's fields."""
    more = spawn(reader, [(group.store, group.spec, *args)] * (n - len(started)))
    started += more
    group.lookups = max(group.lookups, *_wait_ready(group.name, more, n, pairs))
    return _rollup(process.pid for process, _ in started)


def _wait_ready(name: str, started: Started, n: int, pairs: int) -> list[int]:
    """Each new reader's "ready" and the answers it checked; RuntimeError naming the reader if
    it failed or fell silent."""
    deadline = time.monotonic() + 120 + n * pairs * 20e-6
    checked = []
    for index, (process, conn) in enumerate(started):
        what = f"{name} reader {index}"
        try:
            message = receive(conn, what, max(1.0, deadline - time.monotonic()))
        except EOFError:
            process.join(5)
            raise RuntimeError(f"{what} died (exit code {process.exitcode})") from None
        if message[0] != "ready":
            raise RuntimeError(f"{what}: {message[1]}")
        checked.append(message[1])
    return checked


def reader(
    conn: Connection,
    store: Store | None,
    spec: Any,
    modules: Sequence[str],
    keys_path: str,
    tokens_path: str,
) -> None:
    """One reader process: import `modules`, open `store` (None: the baseline, which opens
    nothing), resolve every key forward and every token in reverse, checking the answers; send
    ``("ready", lookups)`` or ``("failed", why)``, then hold the store open until told to end."""
    opened = None
    try:
        for module in modules:
            importlib.import_module(module)
        opened = None if store is None else store.open(spec)
        keys, tokens = np.load(keys_path), np.load(tokens_path)
        lookups = 0 if opened is None else resolve_everything(opened, keys, tokens)
        del keys, tokens
        _release_freed()
        conn.send(("ready", lookups))
        with contextlib.suppress(EOFError):
            conn.recv()  # None: the harness has read our smaps_rollup
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        if opened is not None:
            opened.close()


def _release_freed() -> None:
    """Collect garbage and hand freed heap pages back to the kernel (glibc's malloc_trim), so
    that what the readers' checking loop allocated and freed is counted for none of them."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def resolve_everything(opened: Opened, keys: NDArray[np.bytes_], tokens: NDArray[np.uint64]) -> int:
    """Every key forward and every token in reverse through the batch calls, then a few of each
    through the single ones; ValueError naming the first wrong answer. The lookups made."""
    for first in range(0, len(keys), CHUNK):
        asked = [key.decode() for key in keys[first : first + CHUNK].tolist()]
        expected = tokens[first : first + CHUNK].tolist()
        _same("forward_batch", asked, _as_tokens(opened.forward_batch(asked)), expected, first)
        _same("reverse_batch", expected, _as_keys(opened.reverse_batch(expected)), asked, first)
    step = max(1, len(keys) // SINGLES)
    for i in range(0, len(keys), step):
        key, token = keys[i].decode(), int(tokens[i])
        _same("forward", [key], _as_tokens([opened.forward(key)]), [token], i)
        _same("reverse", [token], _as_keys([opened.reverse(token)]), [key], i)
    return 2 * len(keys) + 2 * len(range(0, len(keys), step))


def _same(call: str, asked: list[Any], got: list[Any], expected: list[Any], first: int) -> None:
    if got == expected:
        return
    if len(got) != len(expected):
        raise ValueError(f"{call}: {len(asked)} asked from pair {first}, {len(got)} answers")
    i = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
    raise ValueError(
        f"{call}({asked[i]!r}), pair {first + i}: got {got[i]!r}, expected {expected[i]!r}"
    )


def _as_tokens(answers: Any) -> list[int | None]:
    """Tokens as ints, whatever the store hands back (a list, a numpy array, bytes)."""
    values = answers.tolist() if hasattr(answers, "tolist") else list(answers)
    return [None if v is None else int(v) for v in values]


def _as_keys(answers: Any) -> list[str | None]:
    values = answers.tolist() if hasattr(answers, "tolist") else list(answers)
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _rollup(pids: Any) -> dict[str, int]:
    """The `FIELDS` of each process's smaps_rollup, summed (kB)."""
    total = dict.fromkeys(FIELDS, 0)
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in total:
                total[name] += int(rest.split()[0])
    return total


def _mem_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def _server_side(store: Store, spec: Any) -> tuple[int, str] | None:
    """What a server peer holds for the data, and how that was measured; None for a store
    that holds nothing in a server or says too little (in its Spec) to measure it."""
    if not getattr(store, "remote", False) or not isinstance(spec, dict):
        return None
    if {"host", "port", "forward", "reverse"} <= spec.keys():
        import redis

        client = redis.Redis(host=spec["host"], port=spec["port"])
        try:
            used = sum(client.memory_usage(spec[h], samples=0) or 0 for h in ("forward", "reverse"))
        finally:
            client.close()
        return int(used), "the server holds its two hashes in memory (MEMORY USAGE)"
    if {"dsn", "table"} <= spec.keys():
        import psycopg

        with psycopg.connect(spec["dsn"], autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_total_relation_size(oid) FROM pg_class WHERE relname = %s",
                (spec["table"],),
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), (
            "its table and indexes on the server (pg_total_relation_size; the server caches "
            "the pages readers touch in its shared buffers)"
        )
    return None


def _fill(section: Section, groups: list[Group], counts: list[int]) -> None:
    baseline = groups[0].measured
    failures = [f"{g.name}: {g.failure}" for g in groups if g.failure]
    for group in groups:
        for n in counts:
            section.rows.append(_row(group, n, baseline.get(n)))
        section.skipped += [f"{group.name}, {why}" for why in group.skipped.values()]
    section.data.update(
        readers=counts,
        pss_mb={g.name: {n: kb / 1024 for n, kb in _pss(g).items()} for g in groups},
        data_mb={
            g.name: {n: (_pss(g)[n] - baseline[n]["Pss"]) / 1024 for n in _pss(g) if n in baseline}
            for g in groups[1:]
        },
        smaps_kb={g.name: g.measured for g in groups},
        server_bytes={g.name: g.server[0] for g in groups if g.server},
        failures=failures,
    )
    section.notes += _notes(groups, counts)


def _pss(group: Group) -> dict[int, int]:
    return {n: fields["Pss"] for n, fields in group.measured.items()}


def _row(group: Group, n: int, baseline: dict[str, int] | None) -> dict[str, Any]:
    fields = group.measured.get(n)
    row: dict[str, Any] = {"contender": group.name, "readers": n}
    if fields is None:
        why = "skipped: memory" if n in group.skipped else "failed" if group.failure else "—"
        row.update(dict.fromkeys(("PSS in all", "per reader", "data", "data per reader"), why))
    else:
        data = fields["Pss"] - baseline["Pss"] if baseline and group.store else None
        row.update(
            {
                "PSS in all": _mb(fields["Pss"]),
                "per reader": _mb(fields["Pss"] / n),
                "data": _mb(data),
                "data per reader": _mb(None if data is None else data / n),
            }
        )
    row["server (shared)"] = _mb(group.server[0] / 1024) if group.server else ""
    return row


def _notes(groups: list[Group], counts: list[int]) -> list[str]:
    notes = [
        "PSS summed over the readers with all of them running, from /proc/<pid>/smaps_rollup; "
        "'data' is that less the PSS of as many readers that imported the same modules and "
        "read the same keys but opened nothing. Each reader resolved every key forward and "
        f"every token in reverse ({max(g.lookups for g in groups):,} answers checked) before "
        "it was measured."
    ]
    baseline, stores = groups[0], groups[1:]
    top = max(
        (n for n in counts if n in baseline.measured and any(n in g.measured for g in stores)),
        default=None,
    )
    if top is not None:
        present = [g for g in stores if top in g.measured]
        notes.append(_sharing(present, top, baseline.measured[top]["Pss"]))
        notes.append(_private(present, top))
    least, most = counts[0], counts[-1]
    growth = {
        g.name: (g.measured[most]["Pss"] - g.measured[least]["Pss"]) / (most - least)
        for g in groups
        if least in g.measured and most in g.measured and most > least
    }
    if growth:
        notes.append(
            f"Each further reader (from {least} to {most}) adds: "
            + ", ".join(f"{name} {_mb(kb)}" for name, kb in growth.items())
            + ". A store each process loads for itself grows by its data per reader; a shared "
            "one by the interpreter only."
        )
    for group in groups:
        if group.server_error:
            notes.append(
                f"{group.name}: the server's memory was not measured ({group.server_error})."
            )
        if group.server:
            notes.append(
                f"{group.name}: {group.server[1]}: {_mb(group.server[0] / 1024)}, one copy for "
                "all readers, not in their PSS."
            )
    return notes


def _sharing(groups: list[Group], top: int, base_kb: int) -> str:
    """The data's share at `top` readers, each peer beside resolverd (a server's memory
    included: the data is the data wherever it lives)."""
    data = {g.name: g.measured[top]["Pss"] - base_kb + _server_kb(g) for g in groups}
    text = f"{top} readers, PSS in all (of it the data, with a server's share): " + ", ".join(
        f"{g.name} {_mb(g.measured[top]['Pss'])} ({_mb(data[g.name])})" for g in groups
    )
    own = data.get("resolverd")
    if own is not None and len(data) > 1:
        ratios = [f"{name} {_times(kb, own)}" for name, kb in data.items() if name != "resolverd"]
        text += f". The data, against resolverd's {_mb(own)}: " + ", ".join(ratios)
    return text + "."


def _server_kb(group: Group) -> float:
    return group.server[0] / 1024 if group.server else 0.0


def _times(peer_kb: float, mine_kb: float) -> str:
    if mine_kb <= 0 or peer_kb <= 0:
        return "not comparable (a share within the baseline's noise)"
    if peer_kb >= mine_kb:
        return f"{times(peer_kb / mine_kb)} as much"
    return f"{times(mine_kb / peer_kb)} less (the peer wins)"


def _private(groups: list[Group], top: int) -> str:
    """How much of each reader is its own: the pages no other process maps."""
    parts = []
    for g in groups:
        fields = g.measured[top]
        private = (fields["Private_Clean"] + fields["Private_Dirty"]) / top
        shared = (fields["Shared_Clean"] + fields["Shared_Dirty"]) / top
        parts.append(f"{g.name} {_mb(private)} private, {_mb(shared)} shared")
    return f"Per reader at {top} readers (RSS split): " + ", ".join(parts) + "."


def _mb(kb: float | None) -> str:
    if kb is None:
        return "—"
    mb = kb / 1024
    if abs(mb) >= 1024:
        return f"{mb / 1024:.2f} GB"
    return f"{mb:,.0f} MB" if abs(mb) >= 100 else f"{mb:.1f} MB"
