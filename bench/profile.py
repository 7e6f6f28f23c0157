"""Where a batch lookup's time goes: the steps of `Resolver.keys` and `Resolver.tokens`, redone
one numpy operation at a time on the resolver's own mapped arrays and timed separately.

The steps mirror `resolverd/client.py` and `resolverd/phf.py` as they are; they reach into the
resolver's private tables, so if those change, the breakdown is skipped with a note instead of
measuring something else. A few alternative formulations are timed beside the steps they could
replace (rows marked "alternative"), as evidence for proposed changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Literal

import numpy as np
import xxhash
from numpy.typing import NDArray

from resolverd._hot import bind
from resolverd.phf import PILOT_MIX_ARRAY

from .timing import no_gc, percentile

Step = tuple[str, Callable[[], Any]]
_MIX = np.uint64(0x9E3779B97F4A7C15)
_U32 = np.uint64(32)


def _time_steps(steps: list[Step], items: int, *, repeats: int) -> list[dict[str, Any]]:
    """Median ns per item of each step; steps run in order so that each sees fresh inputs."""
    samples: dict[str, list[float]] = {name: [] for name, _ in steps}
    with no_gc():
        for _ in range(repeats + 1):
            for name, step in steps:
                start = perf_counter_ns()
                step()
                samples[name].append((perf_counter_ns() - start) / items)
    rows: list[dict[str, Any]] = []
    for name, values in samples.items():
        rows.append({"step": name, "ns/item": round(percentile(values[1:], 50), 2)})
    counted = [r for r in rows if not r["step"].startswith("alternative")]
    total = sum(r["ns/item"] for r in counted)
    for r in rows:
        r["share"] = "" if r["step"].startswith("alternative") else f"{r['ns/item'] / total:.0%}"
    rows.append({"step": "sum of the steps", "ns/item": round(total, 2), "share": "100%"})
    return rows


def keys_steps(
    resolver: Any,
    tokens: NDArray[np.uint64],
    feed: str,
    *,
    repeats: int = 7,
) -> list[dict[str, Any]]:
    """`Resolver.keys(tokens, feed)` for an integer feed, one step at a time."""
    try:
        table = resolver._feeds[feed]
        keys = resolver._keys
        seed, shift = np.uint64(table.seed), np.uint64(64 - table.bucket_bits)
        modulus, n = np.uint64(table.slot_count), table.count
        pilots, remap, stored, targets = table.pilots, table.remap, table.tokens, table.targets
    except (AttributeError, KeyError) as exc:
        return [{"step": f"skipped: the resolver's internals changed ({exc!r})"}]
    s: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        s[name] = value

    def remap_high() -> None:
        o = s["o"]
        high = np.flatnonzero(o >= n)
        if high.size:
            o[high] = remap.take(o[high] - n)

    def hit() -> None:
        s["hit"] = stored.take(s["o"]) == tokens

    def miss() -> None:
        s["found"][~s["hit"]] = -1

    def blank() -> None:
        s["out"][s["found"] < 0] = b""

    steps: list[Step] = [
        (
            "asarray + astype(uint64, copy=False)",
            lambda: put("w", np.asarray(tokens).astype(np.uint64, copy=False)),
        ),
        ("mix: (t ^ seed) * M", lambda: put("h", (s["w"] ^ seed) * _MIX)),
        ("mix: h ^= h >> 32", lambda: s["h"].__ixor__(s["h"] >> _U32)),
        ("bucket: h >> shift", lambda: put("b", s["h"] >> shift)),
        ("pilots.take(bucket) (gather, u8)", lambda: put("p", pilots.take(s["b"]))),
        (
            "PILOT_MIX.take(pilot) (gather, 256 entries)",
            lambda: put("m", PILOT_MIX_ARRAY.take(s["p"])),
        ),
        ("h ^ pilot_mix", lambda: put("x", s["h"] ^ s["m"])),
        ("% slot_count (uint64 remainder)", lambda: put("slot", s["x"] % modulus)),
        ("view as intp", lambda: put("o", s["slot"].view(np.intp))),
        ("remap: flatnonzero(o >= n) + gather", remap_high),
        ("tokens.take(slot) == t (gather u8 + compare)", hit),
        (
            "targets.take(slot).astype(intp) (gather u4)",
            lambda: put("found", targets.take(s["o"]).astype(np.intp)),
        ),
        ("found[~hit] = -1", miss),
        (
            f"keys.take(found) (gather {keys.dtype.str} rows)",
            lambda: put("out", keys.take(s["found"])),
        ),
        ("out[found < 0] = b''", blank),
        ("alternative: keys[found] (fancy indexing)", lambda: keys[s["found"]]),
        (
            "alternative: x - (x // S) * S instead of x % S",
            lambda: s["x"] - (s["x"] // modulus) * modulus,
        ),
        (
            "alternative: (x >> 32) * S >> 32, a multiply-shift reduction (new layout)",
            lambda: ((s["x"] >> _U32) * modulus) >> _U32,
        ),
    ]
    rows = _time_steps(steps, len(tokens), repeats=repeats)
    expected = resolver.keys(tokens, feed)
    if not np.array_equal(s["out"], expected):
        return [{"step": "skipped: the step-by-step result differs from Resolver.keys"}]
    # A step timed alone finds its inputs in cache more often than inside the whole call, where
    # the call's other temporaries have evicted them: the whole calls show the difference.
    rows += _time_steps(
        [
            (
                "whole: Resolver.feed_ordinals(tokens, feed)",
                lambda: resolver.feed_ordinals(tokens, feed),
            ),
            ("whole: Resolver.keys(tokens, feed)", lambda: resolver.keys(tokens, feed)),
        ],
        len(tokens),
        repeats=repeats,
    )[:-1]
    for row in rows[-2:]:
        row["share"] = ""
    return rows


def tokens_steps(
    resolver: Any, keys: list[str], broker: str = "kite", *, repeats: int = 3
) -> list[dict[str, Any]]:
    """`Resolver.tokens(keys, broker)` for a list of str, one step at a time."""
    try:
        seed = resolver.header.key_seed
        bits = resolver.header.key_bucket_bits
        modulus = np.uint64(resolver.header.key_slot_count)
        pilots, remap, fingerprints = resolver._pilots, resolver._remap, resolver._fingerprints
        column = resolver._broker_arrays[broker]
    except (AttributeError, KeyError) as exc:
        return [{"step": f"skipped: the resolver's internals changed ({exc!r})"}]
    n = int(modulus) - len(remap)
    shift = np.uint64(64 - bits)
    xxh = xxhash.xxh3_64_intdigest
    s: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        s[name] = value

    def remap_high() -> None:
        o = s["o"]
        high = np.flatnonzero(o >= n)
        if high.size:
            o[high] = remap.take(o[high] - n)

    def gather() -> None:
        out = column[s["o"]]
        out[s["miss"]] = np.uint64(2**64 - 1)
        s["out"] = out

    steps: list[Step] = [
        (
            "[xxh3(k.encode(), seed) for k in keys] (Python loop)",
            lambda: put("list", [xxh(k.encode(), seed) for k in keys]),
        ),
        (
            "np.array(list of int, uint64)",
            lambda: put("hashes", np.array(s["list"], dtype=np.uint64).reshape(-1)),
        ),
        (
            "phf.query: bucket, pilot, mix",
            lambda: put("x", s["hashes"] ^ PILOT_MIX_ARRAY[pilots[s["hashes"] >> shift]]),
        ),
        (
            "phf.query: % slot_count + astype(intp)",
            lambda: put("o", (s["x"] % modulus).astype(np.intp)),
        ),
        ("phf.query: remap", remap_high),
        ("fingerprints[o] != hashes", lambda: put("miss", fingerprints[s["o"]] != s["hashes"])),
        ("column[o], misses -> NO_TOKEN", gather),
        (
            "alternative: np.fromiter(map(xxh3, map(str.encode, keys), repeat(seed)))",
            lambda: np.fromiter(
                map(xxh, map(str.encode, keys), itertools.repeat(seed)), np.uint64, count=len(keys)
            ),
        ),
        (
            "alternative: the encode alone, list(map(str.encode, keys))",
            lambda: list(map(str.encode, keys)),
        ),
        (
            "alternative: the hash alone, keys already bytes",
            lambda: [xxh(k, seed) for k in encoded],
        ),
        (
            "alternative: list of str -> numpy S array (np.array(keys, 'S'))",
            lambda: np.array(keys, dtype="S"),
        ),
    ]
    encoded = [k.encode() for k in keys]
    rows = _time_steps(steps, len(keys), repeats=repeats)
    if not np.array_equal(s["out"], resolver.tokens(keys, broker)):
        return [{"step": "skipped: the step-by-step result differs from Resolver.tokens"}]
    rows += _time_steps(
        [("whole: Resolver.tokens(keys, broker)", lambda: resolver.tokens(keys, broker))],
        len(keys),
        repeats=repeats,
    )[:-1]
    rows[-1]["share"] = ""
    return rows


def open_steps(path: Path, key: str, broker: str, *, repeats: int = 11) -> list[dict[str, Any]]:
    """`Resolver.open(path)` and a first lookup, beside the parts of opening that a reader
    cannot skip (mapping, reading the header) and the one `verify=True` adds."""
    import mmap

    from resolverd import Resolver
    from resolverd.shm_layout import read_header, verify_payload

    def whole() -> None:
        r = Resolver.open(path)
        r.token(key, broker)
        r.close()

    def mapped() -> mmap.mmap:
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)

    def map_only() -> None:
        mapped().close()

    def header_only() -> None:
        m = mapped()
        read_header(m)
        m.close()

    def checksum() -> None:
        m = mapped()
        verify_payload(m, read_header(m))
        m.close()

    steps: list[Step] = [
        ("whole: Resolver.open + token() + close()", whole),
        ("open + mmap + close the file", map_only),
        ("... + read_header (header checksum, section table)", header_only),
        ("... + verify_payload (what verify=True adds: xxh3 over the file)", checksum),
    ]
    samples: dict[str, list[float]] = {name: [] for name, _ in steps}
    with no_gc():
        for _ in range(repeats):
            for name, step in steps:
                start = perf_counter_ns()
                step()
                samples[name].append((perf_counter_ns() - start) / 1e3)
    return [{"step": name, "µs": round(percentile(v, 50), 1)} for name, v in samples.items()]


def token_steps(
    snapshot: Any, key: str, broker: str, expected: int, resolver: Any, random_keys: list[str]
) -> list[dict[str, Any]]:
    """The single `token()` lookup in fingerprint mode, built up one step at a time.

    Each row is a complete function that does the steps so far, on memoryviews of the layout's
    sections (the client's technique), timed on one hot key and over uniform random keys (fresh
    str objects); the increments show what each step adds, and at random keys how much of
    that is waiting for memory. The last row is the real `Resolver.token`, for comparison.
    """
    from resolverd.shm_layout import NO_TOKEN, PILOT_MIX, read_header

    from . import _steps
    from .data import fresh
    from .timing import hot, over

    header = read_header(snapshot)
    memory = memoryview(snapshot).toreadonly().cast("B")

    def view(name: str, fmt: Literal["B", "I", "Q"] = "B") -> memoryview:
        entry = header.sections[name]
        return memory[entry.offset : entry.offset + entry.nbytes].cast(fmt)

    section = header.sections["brokers"]
    brokers = np.frombuffer(memory, section.dtype, header.broker_count, section.offset)
    j = [b.decode() for b in brokers["name"].tolist()].index(broker)
    pairs = view(f"tokens.{j}", "Q")  # an integer broker's (fingerprint, token) pairs
    tables = {
        "xxh": xxhash.xxh3_64_intdigest,
        "seed": header.key_seed,
        "mixes": PILOT_MIX,
        "pilots": view("key.pilots"),
        "shift": 64 - header.key_bucket_bits,
        "slots": header.key_slot_count,
        "n": header.instrument_count,
        "remap": view("key.remap", "I"),
        "fingerprints": pairs[0::2],
        "columns": {broker: pairs[1::2]},
        "absent": NO_TOKEN,
    }
    steps = [
        ("a Python call with two arguments (and the loop)", _steps.call_only),
        ("+ key.encode()", _steps.encode),
        ("+ xxh3_64(key, seed)", _steps.hash_),
        ("+ h >> shift, pilots[bucket], PILOT_MIX[pilot]", _steps.pilot),
        ("+ h ^ mix and % slot_count (64-bit Python ints)", _steps.slot),
        ("+ the remap test", _steps.ordinal),
        (
            "+ the broker's copy of fingerprints[s] (strided memoryview 'Q') and compare",
            _steps.fingerprint,
        ),
        ("+ the token beside it, columns[broker][s], and the NO_TOKEN test", _steps.token),
    ]
    bound = [(name, bind(template, **tables)) for name, template in steps]
    if bound[-1][1](key, broker) != expected:
        return [{"step": "skipped: the step-by-step lookup differs from Resolver.token"}]
    rows = []
    previous = (0.0, 0.0)
    bound.append(("the real Resolver.token, for comparison", resolver.token))
    for name, function in bound:
        one = hot(function, key, broker, batches=200).p50
        many = over(function, fresh(random_keys), broker).p50
        rows.append(
            {
                "step": name,
                "hot key, ns": round(one, 1),
                "hot key, step adds": round(one - previous[0], 1),
                "random keys, ns": round(many, 1),
                "random keys, step adds": round(many - previous[1], 1),
            }
        )
        previous = (one, many)
    rows[-1]["hot key, step adds"] = rows[-1]["random keys, step adds"] = ""
    return rows


def compile_profile(run: Callable[[], Any], *, top: int = 12) -> list[dict[str, Any]]:
    """cProfile of one compile: the functions with the most time of their own. cProfile adds a
    fixed cost to every Python-level call, so per-item generators look dearer than they are."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    entries = stats.stats.items()  # type: ignore[attr-defined]
    for (filename, line, name), (_, calls, own, cumulative, _) in sorted(
        entries, key=lambda item: -item[1][2]
    )[:top]:
        where = f"{Path(filename).name}:{line}" if line else "built-in"
        rows.append(
            {
                "function": f"{name} ({where})",
                "calls": calls,
                "own s": round(own, 3),
                "cumulative s": round(cumulative, 3),
                "own share": f"{own / total:.0%}",
            }
        )
    rows.append(
        {
            "function": "total under cProfile",
            "calls": "",
            "own s": round(total, 3),
            "cumulative s": "",
            "own share": "100%",
        }
    )
    return rows
