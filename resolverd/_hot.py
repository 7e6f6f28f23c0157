"""The pure-Python single-lookup hot paths, written once and bound to each snapshot's tables.

The client uses them where the compiled lookups (resolverd/_speedups.c) were not built, for a
buffer that is not 8-byte aligned, and under RESOLVERD_PURE_PYTHON=1; both give the same answers.

Every function here is a template: `bind(function, **tables)` copies it with a globals dict
holding one snapshot's (or one feed's) tables, so each table read is a LOAD_GLOBAL from that
dict, the cheapest name lookup CPython has: closure cells cost about 20 ns more per call and
keyword-only defaults about 100 ns (bench/bench_lookup.py measures the result). Element reads
go through memoryviews, several times cheaper than numpy scalars, except a key's text, which a
numpy ``S`` element gives NUL-stripped in half the time of slicing the memoryview. The formulas
are the ones specified in `shm_layout`. The ``followed_`` templates repeat their plain twins
behind the generation check of a following resolver, written out rather than wrapped because a
wrapper's extra call costs more than the lookup's whole budget for the check. The fingerprint
mode's `token` checks a broker's ``pairs``: an integer broker's own copy of the fingerprints,
strided beside its tokens, so that the check and the answer come from one cache line.
"""

from __future__ import annotations

import builtins
import types
from collections.abc import Callable
from typing import Any

# Per-snapshot names: placeholders that `bind` replaces.
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
pairs: Any = None
absent: Any = None
keys: Any = None
width: Any = None
stored: Any = None
targets: Any = None
key_array: Any = None
ordinal: Any = None
unknown: Any = None
multiplier: Any = None
mask: Any = None
missing: Any = None
column: Any = None
strict: Any = None
feeds: Any = None
control: Any = None
sequence: Any = None
follow: Any = None
inner: Any = None
attribute: Any = None

# The control segment's `sequence` as an index into its 8-byte words (see shm_layout).
SEQUENCE_WORD = 2


def bind(function: Callable[..., Any], **tables: Any) -> Callable[..., Any]:
    """A copy of a template function whose globals are `tables`."""
    namespace = {"__builtins__": builtins, **tables}
    return types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__
    )


def token(key: str, broker: str) -> Any:
    h = xxh(key.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    try:
        own, col = pairs[broker]
    except KeyError:
        raise unknown("broker", broker, pairs) from None
    if own[s] != h or (t := col[s]) == absent:
        raise KeyError(key)
    return t


def followed_token(key: str, broker: str) -> Any:
    """`token` behind the generation check of a following resolver: one 8-byte read; on a
    change, the lookup is made by the generation `follow()` switched to."""
    if control[2] != sequence:
        return follow().token(key, broker)
    h = xxh(key.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    try:
        own, col = pairs[broker]
    except KeyError:
        raise unknown("broker", broker, pairs) from None
    if own[s] != h or (t := col[s]) == absent:
        raise KeyError(key)
    return t


def get_token(key: str, broker: str, default: Any = None) -> Any:
    h = xxh(key.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    try:
        own, col = pairs[broker]
    except KeyError:
        raise unknown("broker", broker, pairs) from None
    if own[s] != h or (t := col[s]) == absent:
        return default
    return t


def followed_get_token(key: str, broker: str, default: Any = None) -> Any:
    if control[2] != sequence:
        return follow().get_token(key, broker, default)
    h = xxh(key.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    try:
        own, col = pairs[broker]
    except KeyError:
        raise unknown("broker", broker, pairs) from None
    if own[s] != h or (t := col[s]) == absent:
        return default
    return t


def followed(first: Any, second: Any, *rest: Any) -> Any:
    """Any other lookup (`inner`, named `attribute` on the resolver) behind the generation
    check; strict and cached lookups cost more than the extra call this wrapper adds."""
    if control[2] != sequence:
        return getattr(follow(), attribute)(first, second, *rest)
    return inner(first, second, *rest)


def key(token: Any, feed: str) -> Any:
    try:
        lookup = feeds[feed]
    except KeyError:
        raise unknown("feed", feed, feeds) from None
    return lookup(token, missing)


def get_key(token: Any, feed: str, default: Any = None) -> Any:
    try:
        lookup = feeds[feed]
    except KeyError:
        raise unknown("feed", feed, feeds) from None
    return lookup(token, default)


def followed_key(token: Any, feed: str) -> Any:
    if control[2] != sequence:
        return follow().key(token, feed)
    try:
        lookup = feeds[feed]
    except KeyError:
        raise unknown("feed", feed, feeds) from None
    return lookup(token, missing)


def followed_get_key(token: Any, feed: str, default: Any = None) -> Any:
    if control[2] != sequence:
        return follow().get_key(token, feed, default)
    try:
        lookup = feeds[feed]
    except KeyError:
        raise unknown("feed", feed, feeds) from None
    return lookup(token, default)


def fingerprint_ordinal(key: str) -> int:
    """The key's ordinal or -1, by fingerprint."""
    h = xxh(key.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    return s if fingerprints[s] == h else -1


def strict_ordinal(key: str) -> int:
    """The key's ordinal or -1, comparing the stored key bytes as well as the fingerprint."""
    raw = key.encode()
    h = xxh(raw, seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    if fingerprints[s] != h:
        return -1
    start = s * width
    end = start + len(raw)
    if keys[start:end] != raw or (end < start + width and keys[end]):
        return -1
    return s  # type: ignore[no-any-return]


def strict_token(key: str, broker: str) -> Any:
    try:
        col = columns[broker]
    except KeyError:
        raise unknown("broker", broker, columns) from None
    s = ordinal(key)
    if s < 0 or (t := col[s]) == absent:
        raise KeyError(key)
    return t


def strict_get_token(key: str, broker: str, default: Any = None) -> Any:
    try:
        col = columns[broker]
    except KeyError:
        raise unknown("broker", broker, columns) from None
    s = ordinal(key)
    if s < 0 or (t := col[s]) == absent:
        return default
    return t


def int_feed_key(token: Any, default: Any) -> Any:
    """One integer feed's token -> key; `default` is `missing` to raise KeyError instead."""
    t = token if token.__class__ is int else int(token)
    h = ((t ^ seed) * multiplier) & mask
    h ^= h >> 32
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    if stored[s] != t:
        if default is missing:
            raise KeyError(token)
        return default
    return key_array[targets[s]].decode()


def str_feed_key(token: Any, default: Any) -> Any:
    """One string feed's token -> key; strict mode also compares the broker's stored token."""
    text = str(token)
    h = xxh(text.encode(), seed)
    s = (h ^ mixes[pilots[h >> shift]]) % slots
    if s >= n:
        s = remap[s - n]
    if stored[s] != h or (strict and column[targets[s]] != text):
        if default is missing:
            raise KeyError(token)
        return default
    return key_array[targets[s]].decode()
