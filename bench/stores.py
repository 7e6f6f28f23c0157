"""The contenders of the peer comparison: resolverd and what trading code uses today.

Each contender is a `Store`: `prepare` builds what it needs once, in the harness process (a
file, a Redis hash, a PostgreSQL table), and returns a picklable `Spec`; `open(spec)` then gives
its lookups in any process: the harness, a reader process of the memory figure, a fresh
interpreter of the start-up figure. `cleanup(spec)` removes what `prepare` made. A contender
that cannot run here says why in `missing()` and is skipped with that line.

Lookups are written the way a caller writes them inline: each `Opened` exposes the plain
callables (a bound method, a dict's ``__getitem__``), so that the timing loop pays for nothing
a caller would not.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from resolverd import Resolver

from .data import BROKER, FEED
from .peers import lmdb_map_size, lmdb_missing

if TYPE_CHECKING:
    from .datasets import Dataset

try:
    import lmdb
except ImportError:  # an optional peer: skipped with its missing() line (lmdb_missing)
    lmdb = None  # type: ignore[assignment]  # checked by LmdbStore.missing() before any use


# redis and psycopg are imported on first use, not with this module: every reader and start-up
# child of the comparison imports bench.stores, and a process using one store must not pay
# 0.5 s for the network clients' imports.
def _redis() -> Any:
    import redis

    return redis


def _psycopg() -> Any:
    import psycopg

    return psycopg


def _sql() -> Any:
    from psycopg import sql

    return sql


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


Spec = dict[str, Any]


@dataclass
class Opened:
    """A contender's lookups in one process.

    `forward(key) -> token` and `reverse(token) -> key` raise KeyError (or return None) for a
    miss; the batches take a list of keys / tokens and return a sequence of the same length.
    `close()` releases what `open` took (a mapping, a connection)."""

    forward: Callable[[str], Any]
    reverse: Callable[[int], Any]
    forward_batch: Callable[[Sequence[str]], Any]
    reverse_batch: Callable[[Sequence[int]], Any]
    close: Callable[[], None] = lambda: None
    keep: list[Any] = field(default_factory=list)  # objects the callables need alive
    inline: dict[str, Any] = field(default_factory=dict)
    """How a caller writes a single lookup inline, where that is cheaper than calling `forward`
    or `reverse` (a one-argument wrapper costs a Python frame): ``{"forward": (token, "kite")}``
    is timed as ``token(q, "kite")`` and ``{"forward": by_key}`` (a dict) as ``by_key[q]``."""


class Store(Protocol):
    name: str
    """The contender as the report names it."""
    shared: bool
    """Whether reader processes share one copy (a mapping, a server) or each hold their own."""

    def missing(self) -> str | None: ...

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec: ...

    def open(self, spec: Spec) -> Opened: ...

    def cleanup(self, spec: Spec) -> None: ...


class ResolverdStore:
    """A snapshot mapped read-only with `Resolver.open` (fingerprint mode, the default)."""

    name = "resolverd"
    shared = True

    def missing(self) -> str | None:
        return None

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        return {"path": str(dataset.snapshot)}

    def open(self, spec: Spec) -> Opened:
        r = Resolver.open(spec["path"])
        token, key = r.token, r.key

        def forward(k: str) -> Any:
            return token(k, BROKER)

        def reverse(t: int) -> Any:
            return key(t, FEED)

        def forward_batch(keys: Sequence[str]) -> Any:
            return r.tokens(keys, BROKER)

        def reverse_batch(tokens: Sequence[int]) -> Any:
            return r.keys(np.asarray(tokens, dtype=np.uint64), FEED)

        inline = {"forward": (token, BROKER), "reverse": (key, FEED)}
        return Opened(forward, reverse, forward_batch, reverse_batch, r.close, [r], inline)

    def cleanup(self, spec: Spec) -> None:
        pass  # the snapshot belongs to the dataset


def parse_kite_csv(path: str) -> tuple[dict[str, int], dict[int, str]]:
    """What most trading code does at start-up: the broker's dump parsed into two dicts."""
    by_key: dict[str, int] = {}
    by_token: dict[int, str] = {}
    with open(path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            key = f"{row['exchange']}:{row['tradingsymbol']}"
            token = int(row["instrument_token"])
            by_key[key] = token
            by_token[token] = key
    return by_key, by_token


class CsvDictStore:
    """Two dicts per process, parsed from the broker's CSV at start-up (csv.DictReader)."""

    name = "dict from CSV"
    shared = False

    def missing(self) -> str | None:
        return None

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        return {"csv": str(dataset.csv)}

    def open(self, spec: Spec) -> Opened:
        return _dicts_opened(*parse_kite_csv(spec["csv"]))

    def cleanup(self, spec: Spec) -> None:
        pass


def _dicts_opened(by_key: dict[str, int], by_token: dict[int, str]) -> Opened:
    """Lookups on two dicts: subscripted inline, list comprehensions for a batch."""

    def forward_batch(keys: Sequence[str]) -> list[int]:
        return [by_key[k] for k in keys]

    def reverse_batch(tokens: Sequence[int]) -> list[str]:
        return [by_token[t] for t in tokens]

    return Opened(
        by_key.__getitem__,
        by_token.__getitem__,
        forward_batch,
        reverse_batch,
        keep=[by_key, by_token],
        inline={"forward": by_key, "reverse": by_token},
    )


class DictStore:
    """Two dicts per process, built from the pairs at start-up: the fastest a process can hold
    a copy of its own. `prepare` writes the pairs as a numpy ``.npz`` (the keys as one
    newline-joined UTF-8 blob, the tokens as uint64) so that `open` costs the dicts' building
    and little else, where `CsvDictStore` pays for parsing the broker's CSV."""

    name = "dict"
    shared = False

    def missing(self) -> str | None:
        return None

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        for row, key in enumerate(dataset.keys):
            if "\n" in key:
                raise ValueError(
                    f"{self.name}: dataset {dataset.name}, key {row}: {key!r} holds a newline"
                )
        path = workdir / "dict-pairs.npz"
        blob = "\n".join(dataset.keys).encode()
        np.savez(path, keys=np.frombuffer(blob, dtype=np.uint8), tokens=dataset.tokens)
        return {"path": str(path)}

    def open(self, spec: Spec) -> Opened:
        with np.load(spec["path"], allow_pickle=False) as pairs:
            text = pairs["keys"].tobytes().decode()
            tokens = pairs["tokens"].tolist()
        keys = text.split("\n") if text else []
        by_key = dict(zip(keys, tokens, strict=True))
        return _dicts_opened(by_key, dict(zip(tokens, keys, strict=True)))

    def cleanup(self, spec: Spec) -> None:
        Path(spec["path"]).unlink(missing_ok=True)


T = TypeVar("T")
MAX_SIGNED = (1 << 63) - 1


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def _in_order(asked: Sequence[Any], found: dict[Any, Any]) -> list[Any]:
    """Answers in the order asked: SQL returns rows in index order, once per distinct key
    (KeyError for one not found)."""
    return [found[a] for a in asked]


def _signed_tokens(dataset: Dataset, store: str) -> None:
    """SQL's INTEGER and bigint are signed 64-bit: refuse a token they cannot hold."""
    if len(dataset) and int(dataset.tokens.max()) > MAX_SIGNED:
        raise ValueError(
            f"{store}: dataset {dataset.name} has a token above 2^63 - 1, which a signed 64-bit "
            "column cannot hold"
        )


LMDB_FORWARD, LMDB_REVERSE = b"forward", b"reverse"


class LmdbStore:
    """py-lmdb, read-only: key -> 8-byte little-endian token in one named database, token
    (8-byte big-endian, so that tokens sort as numbers) -> UTF-8 key in another, each read
    through a long-lived read transaction opened with ``buffers=True`` (the value is decoded
    straight from the map). Single lookups go through a one-line helper, as a caller writes
    one: the key's encoding and the value's decoding are part of the lookup."""

    name = "lmdb"
    shared = True

    def missing(self) -> str | None:
        return lmdb_missing()

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        directory = workdir / "lmdb"
        directory.mkdir()
        pairs = [(k.encode(), t) for k, t in dataset.pairs()]
        forward = sorted((k, t.to_bytes(8, "little")) for k, t in pairs)
        reverse = sorted((t.to_bytes(8, "big"), k) for k, t in pairs)
        width = max((len(k) for k, _ in pairs), default=0)
        env = lmdb.open(
            str(directory),
            map_size=lmdb_map_size(2 * len(pairs), width),
            max_dbs=2,
            sync=False,
            metasync=False,
            readahead=False,
        )
        try:
            with env.begin(write=True) as txn:
                for name, items in ((LMDB_FORWARD, forward), (LMDB_REVERSE, reverse)):
                    db = env.open_db(name, txn=txn)
                    _, added = txn.cursor(db).putmulti(items, append=True)
                    if added != len(items):
                        raise ValueError(
                            f"{self.name}: dataset {dataset.name}: {len(items) - added} "
                            f"duplicate entries in the {name.decode()} database"
                        )
            env.sync(True)
        finally:
            env.close()
        return {"path": str(directory)}

    def open(self, spec: Spec) -> Opened:
        # lock=False: nothing writes the environment once prepared, so readers need no lock
        # table (and any number of reader processes can open it).
        env = lmdb.open(spec["path"], readonly=True, lock=False, max_dbs=2, readahead=False)
        forward_txn = env.begin(db=env.open_db(LMDB_FORWARD, create=False), buffers=True)
        reverse_txn = env.begin(db=env.open_db(LMDB_REVERSE, create=False), buffers=True)
        # Every key looked up is present; a miss gets None, which from_bytes and str refuse
        # with a TypeError (turned into KeyError outside the timed path's fast case).
        get_token: Callable[[bytes], Any] = forward_txn.get
        get_key: Callable[[bytes], Any] = reverse_txn.get
        from_bytes = int.from_bytes

        def forward(key: str) -> int:
            try:
                return from_bytes(get_token(key.encode()), "little")
            except TypeError:
                raise KeyError(key) from None

        def reverse(token: int) -> str:
            try:
                return str(get_key(token.to_bytes(8, "big")), "utf-8")
            except TypeError:
                raise KeyError(token) from None

        def forward_batch(keys: Sequence[str]) -> list[int]:
            try:
                return [from_bytes(get_token(k.encode()), "little") for k in keys]
            except TypeError:
                raise KeyError(next(k for k in keys if get_token(k.encode()) is None)) from None

        def reverse_batch(tokens: Sequence[int]) -> list[str]:
            try:
                return [str(get_key(t.to_bytes(8, "big")), "utf-8") for t in tokens]
            except TypeError:
                raise KeyError(
                    next(t for t in tokens if get_key(t.to_bytes(8, "big")) is None)
                ) from None

        def close() -> None:
            forward_txn.abort()
            reverse_txn.abort()
            env.close()

        return Opened(forward, reverse, forward_batch, reverse_batch, close, [env])

    def cleanup(self, spec: Spec) -> None:
        for name in ("data.mdb", "lock.mdb"):
            (Path(spec["path"]) / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            Path(spec["path"]).rmdir()


SQLITE_FORWARD = "SELECT token FROM pairs WHERE key = ?"
SQLITE_REVERSE = "SELECT key FROM pairs WHERE token = ?"
SQLITE_VARIABLES = 999
"""Host parameters per statement in a batch: SQLite's limit before 3.32, still the safe one."""


@functools.lru_cache(maxsize=8)
def _sqlite_in(select: str, column: str, count: int) -> str:
    return f"SELECT {select} FROM pairs WHERE {column} IN ({','.join('?' * count)})"


class SqliteStore:
    """sqlite3 on a file: ``pairs (key TEXT PRIMARY KEY, token INTEGER) WITHOUT ROWID`` and an
    index on token, opened read-only (``mode=ro``) with the file memory-mapped (``PRAGMA
    mmap_size``, as a reader tuned for lookups sets it, and so shared like lmdb's map). One
    cursor; the SQL strings are constants, so sqlite3's statement cache prepares each once. A
    batch is one ``SELECT ... WHERE key IN (?, ...)`` per 999 keys, its rows put back in the
    order asked: the way to ask SQLite for many rows in one call that needs no temporary table
    (executemany cannot return rows)."""

    name = "sqlite"
    shared = True

    def missing(self) -> str | None:
        return None

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        _signed_tokens(dataset, self.name)
        path = workdir / "pairs.sqlite3"
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA journal_mode = OFF")  # a throwaway file: no rollback journal
            with con:
                con.execute(
                    "CREATE TABLE pairs (key TEXT PRIMARY KEY, token INTEGER NOT NULL) "
                    "WITHOUT ROWID"
                )
                # In key order, so that the b-tree is filled by appends.
                con.executemany("INSERT INTO pairs VALUES (?, ?)", sorted(dataset.pairs()))
                con.execute("CREATE INDEX pairs_token ON pairs (token)")
            con.execute("ANALYZE")
        finally:
            con.close()
        return {"path": str(path)}

    def open(self, spec: Spec) -> Opened:
        path = Path(spec["path"])
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        con.execute(f"PRAGMA mmap_size = {path.stat().st_size}")
        execute: Callable[..., Any] = con.cursor().execute

        def forward(key: str) -> int:
            try:
                token: int = execute(SQLITE_FORWARD, (key,)).fetchone()[0]
            except TypeError:  # fetchone() found no row
                raise KeyError(key) from None
            return token

        def reverse(token: int) -> str:
            try:
                key: str = execute(SQLITE_REVERSE, (token,)).fetchone()[0]
            except TypeError:
                raise KeyError(token) from None
            return key

        def batch(asked: Sequence[Any], select: str, column: str) -> list[Any]:
            found: dict[Any, Any] = {}
            for chunk in _chunks(asked, SQLITE_VARIABLES):
                found.update(execute(_sqlite_in(select, column, len(chunk)), chunk).fetchall())
            return _in_order(asked, found)

        def forward_batch(keys: Sequence[str]) -> list[int]:
            return batch(keys, "key, token", "key")

        def reverse_batch(tokens: Sequence[int]) -> list[str]:
            return batch(tokens, "token, key", "token")

        return Opened(forward, reverse, forward_batch, reverse_batch, con.close, [con])

    def cleanup(self, spec: Spec) -> None:
        Path(spec["path"]).unlink(missing_ok=True)


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_CHUNK = 10_000
"""Fields per HSET when loading and per HMGET in a batch."""
REDIS_PIPELINE = 10
"""HSETs sent per pipeline round trip when loading."""


def _redis_client(spec: Spec | None = None, *, retries: int = 3) -> Any:
    host, port = (spec["host"], spec["port"]) if spec else (REDIS_HOST, REDIS_PORT)
    retry = _redis().retry.Retry(_redis().backoff.ExponentialBackoff(), retries)
    return _redis().Redis(
        host=host, port=port, socket_connect_timeout=2, socket_timeout=30, retry=retry
    )


class RedisStore:
    """Two hashes on the local Redis server (key -> token, token -> key) read with redis-py:
    one HGET over loopback TCP per lookup, HMGET of up to 10,000 fields per round trip for a
    batch. The hashes' names carry a prefix unique to the run; cleanup deletes them."""

    name = "redis HGET"
    shared = True
    remote = True

    def missing(self) -> str | None:
        if not _installed("redis"):
            return "Redis is not installed (pip install redis)"
        client = _redis_client(retries=0)  # an absent server is refused at once: say so
        try:
            client.ping()
        except (_redis().RedisError, OSError) as exc:
            return f"no Redis server at {REDIS_HOST}:{REDIS_PORT} ({exc})"
        finally:
            client.close()
        return None

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        prefix = f"resolverd-bench:{secrets.token_hex(8)}"
        spec = {
            "host": REDIS_HOST,
            "port": REDIS_PORT,
            "forward": f"{prefix}:forward",
            "reverse": f"{prefix}:reverse",
        }
        client = _redis_client(spec)
        try:
            pipe = client.pipeline(transaction=False)
            for chunk in _chunks(dataset.pairs(), REDIS_CHUNK):
                pipe.hset(spec["forward"], mapping=dict(chunk))
                pipe.hset(spec["reverse"], mapping={t: k for k, t in chunk})
                if len(pipe) >= 2 * REDIS_PIPELINE:
                    pipe.execute()
            pipe.execute()
            loaded = (client.hlen(spec["forward"]), client.hlen(spec["reverse"]))
            if loaded != (len(dataset), len(dataset)):
                raise ValueError(
                    f"{self.name}: dataset {dataset.name}: {len(dataset):,} pairs sent, the "
                    f"hashes hold {loaded[0]:,} keys and {loaded[1]:,} tokens"
                )
        except BaseException:
            with contextlib.suppress(_redis().RedisError, OSError):
                client.delete(spec["forward"], spec["reverse"])
            raise
        finally:
            client.close()
        return spec

    def open(self, spec: Spec) -> Opened:
        client = _redis_client(spec)
        hget, hmget = client.hget, client.hmget
        by_key, by_token = spec["forward"], spec["reverse"]

        def forward(key: str) -> int:
            try:
                return int(hget(by_key, key))
            except TypeError:  # None: no such field
                raise KeyError(key) from None

        def reverse(token: int) -> str:
            try:
                key: str = hget(by_token, token).decode()
            except AttributeError:  # None: no such field
                raise KeyError(token) from None
            return key

        def forward_batch(keys: Sequence[str]) -> list[int]:
            values = [v for chunk in _chunks(keys, REDIS_CHUNK) for v in hmget(by_key, chunk)]
            try:
                return [int(v) for v in values]
            except TypeError:
                raise KeyError(keys[values.index(None)]) from None

        def reverse_batch(tokens: Sequence[int]) -> list[str]:
            values = [v for chunk in _chunks(tokens, REDIS_CHUNK) for v in hmget(by_token, chunk)]
            try:
                return [v.decode() for v in values]
            except AttributeError:
                raise KeyError(tokens[values.index(None)]) from None

        return Opened(forward, reverse, forward_batch, reverse_batch, client.close, [client])

    def cleanup(self, spec: Spec) -> None:
        client = _redis_client(spec)
        try:
            client.delete(spec["forward"], spec["reverse"])
        finally:
            client.close()


POSTGRES_CONNECT_TIMEOUT_S = 3


def postgres_dsn() -> str:
    """The server and database for the PostgreSQL peer: $RESOLVERD_BENCH_DSN, else the local
    server's database ``test``."""
    return os.environ.get("RESOLVERD_BENCH_DSN", "host=127.0.0.1 dbname=test")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresStore:
    """An indexed SELECT on PostgreSQL through psycopg 3: a table of its own (a unique name,
    dropped at cleanup) with the primary key on key and an index on token, filled by COPY and
    ANALYZEd. One autocommit connection per process and server-side prepared statements
    (``prepare=True``); a batch is one ``= ANY(%s)`` query with the keys as an array, its rows
    put back in the order asked."""

    name = "PostgreSQL SELECT"
    shared = True
    remote = True

    def missing(self) -> str | None:
        if not _installed("psycopg"):
            return "psycopg is not installed (pip install 'psycopg[binary]')"
        dsn = postgres_dsn()
        try:
            _psycopg().connect(dsn, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S).close()
        except _psycopg().Error as exc:
            return f"no PostgreSQL server at {dsn!r} ({_first_line(exc)})"
        return None

    def prepare(self, dataset: Dataset, workdir: Path) -> Spec:
        _signed_tokens(dataset, self.name)
        spec = {"dsn": postgres_dsn(), "table": f"resolverd_bench_pairs_{secrets.token_hex(6)}"}
        table = _sql().Identifier(spec["table"])
        with _psycopg().connect(
            spec["dsn"], autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S
        ) as conn:
            try:
                # UNLOGGED spares the load its WAL; reads are the same as a logged table's.
                conn.execute(
                    _sql()
                    .SQL("CREATE UNLOGGED TABLE {} (key text NOT NULL, token bigint NOT NULL)")
                    .format(table)
                )
                copy_sql = _sql().SQL("COPY {} (key, token) FROM STDIN").format(table)
                with conn.cursor().copy(copy_sql) as copy:
                    for pair in dataset.pairs():
                        copy.write_row(pair)
                # The indexes are built after the load: faster than maintaining them row by row.
                conn.execute(_sql().SQL("ALTER TABLE {} ADD PRIMARY KEY (key)").format(table))
                conn.execute(_sql().SQL("CREATE INDEX ON {} (token)").format(table))
                conn.execute(_sql().SQL("ANALYZE {}").format(table))
            except BaseException:
                with contextlib.suppress(_psycopg().Error):
                    conn.execute(_sql().SQL("DROP TABLE IF EXISTS {}").format(table))
                raise
        return spec

    def open(self, spec: Spec) -> Opened:
        conn = _psycopg().connect(
            spec["dsn"], autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S
        )
        table = _sql().Identifier(spec["table"])

        def text(query: str) -> str:
            return _sql().SQL(query).format(table).as_string(conn)

        forward_sql = text("SELECT token FROM {} WHERE key = %s")
        reverse_sql = text("SELECT key FROM {} WHERE token = %s")
        forward_batch_sql = text("SELECT key, token FROM {} WHERE key = ANY(%s)")
        reverse_batch_sql = text("SELECT token, key FROM {} WHERE token = ANY(%s)")
        execute: Callable[..., Any] = conn.cursor().execute

        def forward(key: str) -> int:
            try:
                token: int = execute(forward_sql, (key,), prepare=True).fetchone()[0]
            except TypeError:  # fetchone() found no row
                raise KeyError(key) from None
            return token

        def reverse(token: int) -> str:
            try:
                key: str = execute(reverse_sql, (token,), prepare=True).fetchone()[0]
            except TypeError:
                raise KeyError(token) from None
            return key

        def forward_batch(keys: Sequence[str]) -> list[int]:
            rows = execute(forward_batch_sql, (list(keys),), prepare=True).fetchall()
            return _in_order(keys, dict(rows))

        def reverse_batch(tokens: Sequence[int]) -> list[str]:
            rows = execute(reverse_batch_sql, (list(tokens),), prepare=True).fetchall()
            return _in_order(tokens, dict(rows))

        return Opened(forward, reverse, forward_batch, reverse_batch, conn.close, [conn])

    def cleanup(self, spec: Spec) -> None:
        with _psycopg().connect(
            spec["dsn"], autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S
        ) as conn:
            conn.execute(
                _sql().SQL("DROP TABLE IF EXISTS {}").format(_sql().Identifier(spec["table"]))
            )


STORES: list[Store] = [
    ResolverdStore(),
    CsvDictStore(),
    DictStore(),
    LmdbStore(),
    SqliteStore(),
    RedisStore(),
    PostgresStore(),
]
"""Every contender, resolverd first; the peers' modules append theirs."""
