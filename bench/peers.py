"""The peers resolverd is measured against: a dict in the process and py-lmdb.

Each peer is written the way a caller would write it inline, so that it pays for no wrapper
function resolverd does not also pay for: ``d[key]`` for the dict, and for lmdb
``int.from_bytes(get(key.encode()), "little")`` on a long-lived read-only transaction opened
with ``buffers=True`` (the key's encoding and the value's decoding are part of the lookup).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from .timing import BATCH, Timing, no_gc

try:
    import lmdb
except ImportError:  # an optional peer: its rows are skipped with a printed line
    lmdb = None  # type: ignore[assignment]  # checked by lmdb_missing() before any use


def lmdb_missing() -> str | None:
    """Why the lmdb peer cannot run, or None if it can."""
    return None if lmdb is not None else "py-lmdb is not installed (pip install lmdb)"


def lmdb_map_size(count: int, key_bytes: int) -> int:
    """Room for `count` entries of at most `key_bytes` of key and 8 of value. Leaf pages hold
    key + value + an 8-byte node header at about half fill after random inserts; twice the raw
    size plus slack is room enough."""
    return max(1 << 22, 2 * count * (key_bytes + 8 + 16) + (1 << 22))


class LmdbPeer:
    """An lmdb environment holding key -> 8-byte little-endian token, in a temporary directory
    (in /dev/shm where it exists, so that it lives in memory like a resolverd snapshot)."""

    def __init__(self, items: Iterable[tuple[str, int]], count: int, *, key_bytes: int) -> None:
        if lmdb is None:
            raise RuntimeError(lmdb_missing())
        parent = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.directory = tempfile.mkdtemp(prefix="resolverd-bench-lmdb-", dir=parent)
        self.env = lmdb.open(
            self.directory,
            map_size=lmdb_map_size(count, key_bytes),
            sync=False,
            metasync=False,
            readahead=False,
            max_dbs=0,
            lock=True,
        )
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor()
            cursor.putmulti(
                ((key.encode(), value.to_bytes(8, "little")) for key, value in sorted(items)),
                append=True,
            )
        self.txn = self.env.begin(buffers=True)
        # Every key looked up is present; Any spares the inline loops an Optional check.
        self.get: Callable[[bytes], Any] = self.txn.get

    def token(self, key: str) -> int:
        return int.from_bytes(self.get(key.encode()), "little")

    def hot(self, key: str, *, batches: int = 300, batch: int = BATCH) -> Timing:
        get, from_bytes = self.get, int.from_bytes
        per_call = []
        loop = range(batch)
        with no_gc():
            for _ in range(batches):
                start = perf_counter_ns()
                for _ in loop:
                    from_bytes(get(key.encode()), "little")
                per_call.append((perf_counter_ns() - start) / batch)
        return Timing.of(per_call, batches * batch)

    def over(self, queries: Sequence[str], *, batch: int = BATCH) -> Timing:
        get, from_bytes = self.get, int.from_bytes
        per_call = []
        with no_gc():
            for first in range(0, len(queries) - batch + 1, batch):
                chunk = queries[first : first + batch]
                start = perf_counter_ns()
                for q in chunk:
                    from_bytes(get(q.encode()), "little")
                per_call.append((perf_counter_ns() - start) / batch)
        return Timing.of(per_call, len(per_call) * batch)

    def batch(self, keys: Sequence[str]) -> list[int]:
        get, from_bytes = self.get, int.from_bytes
        return [from_bytes(get(k.encode()), "little") for k in keys]

    def close(self) -> None:
        self.txn.abort()
        self.env.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LmdbPeer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def dict_batch(d: dict[Any, Any], keys: Sequence[Any]) -> list[Any]:
    """The dict peer of a batch lookup: a list comprehension."""
    return [d[k] for k in keys]


def dict_get_batch(d: dict[Any, Any], keys: Sequence[Any]) -> list[Any]:
    """The dict peer of a batch lookup that tolerates misses: ``[d.get(t) for t in tokens]``."""
    return [d.get(t) for t in keys]
