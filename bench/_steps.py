"""Templates of the single key lookup cut short after each step, for `profile.token_steps`.

Like the client's hot paths, each is copied with a globals dict holding one snapshot's tables
(`bind`), so that every table read is the same LOAD_GLOBAL the client pays for.
"""

from __future__ import annotations

from typing import Any

xxh: Any = None
seed: Any = None
mixes: Any = None
pilots: Any = None
shift: Any = None
slots: Any = None
n: Any = None
remap: Any = None
fingerprints: Any = None
columns: Any = None
absent: Any = None


def call_only(key: str, broker: str) -> Any:
    return 0


def encode(key: str, broker: str) -> Any:
    return key.encode()


def hash_(key: str, broker: str) -> Any:
    return xxh(key.encode(), seed)


def pilot(key: str, broker: str) -> Any:
    h = xxh(key.encode(), seed)
    return mixes[pilots[h >> shift]]


def slot(key: str, broker: str) -> Any:
    h = xxh(key.encode(), seed)
    return (h ^ mixes[pilots[h >> shift]]) % slots


def ordinal(key: str, broker: str) -> Any:
    h = xxh(key.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    return s


def fingerprint(key: str, broker: str) -> Any:
    h = xxh(key.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    if fingerprints[s] != h:
        raise KeyError(key)
    return s


def token(key: str, broker: str) -> Any:
    h = xxh(key.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    if fingerprints[s] != h or (t := columns[broker][s]) == absent:
        raise KeyError(key)
    return t
