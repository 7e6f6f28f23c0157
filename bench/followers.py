"""The reader processes of the daemon benchmarks: trading processes following a registry by name.

Each runs in a process of its own (multiprocessing, spawn: a fresh interpreter, as a trading
process is) and talks to the harness over a `Connection`. Every message is a plain tuple or
dict, and a reader's first message is ``("ready", generation)`` once it has opened the registry.
"""

from __future__ import annotations

import random
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from resolverd import Resolver

from .data import BROKER
from .moving import Moving

# Lookups between two looks at the stop event (an Event costs a system call to read).
_CHUNK = 4096
# Wrong answers and exceptions shown in full per reader; the rest are counted.
_EXAMPLES = 3


def await_token(conn: Connection, name: str, directory: str, key: str, poll: float) -> None:
    """Follow registry `name`. For each token the harness sends, answer ``"polling"``, then look
    `key` up every `poll` seconds until it resolves to that token, and send back
    ``(time.time_ns() of that lookup, generation)``. None (or a closed pipe) ends it."""
    with Resolver.open(name, directory=Path(directory)) as r:
        conn.send(("ready", r.generation))
        while True:
            try:
                expected = conn.recv()
            except EOFError:  # the harness has gone
                return
            if expected is None:
                return
            conn.send("polling")
            while r.get_token(key, BROKER) != expected:
                time.sleep(poll)
            conn.send((time.time_ns(), r.generation))


def check_lookups(
    conn: Connection,
    stop: Event,
    name: str,
    directory: str,
    static: list[tuple[str, int]],
    moving: Moving,
    seed: int,
) -> None:
    """Resolve random keys both ways, as fast as it can, from ``"go"`` until `stop` is set, and
    check every answer against the generation it was read from; send back the counts.

    Half the lookups are on static instruments (the answer never changes). The other half are
    on moving ones (`bench.moving`), each bracketed by two reads of the generation, so that its
    answer must be of a generation between them: forward, the token ``token(key)`` returns
    (read between g1 and g2) must decode to the key's own index and a generation from g1 to
    g2; in reverse, ``get_key(the key's token in g2)`` (read between g2 and g3) must be that
    key, or None only if a swap came between (g3 > g2: the token is in no other generation).
    """
    with Resolver.open(name, directory=Path(directory)) as r:
        first = r.generation
        conn.send(("ready", first))
        conn.recv()  # "go"
        rng = random.Random(seed)
        s = len(static)
        picks = [
            rng.randrange(s) if rng.random() < 0.5 else s + rng.randrange(moving.count)
            for _ in range(_CHUNK)
        ]
        counts = {"lookups": 0, "wrong": 0, "exceptions": 0, "straddled": 0}
        examples: list[str] = []

        def note(kind: str, text: str) -> None:
            counts[kind] += 1
            if len(examples) < _EXAMPLES:
                examples.append(f"{kind}: {text}")

        while not stop.is_set():
            for j in picks:
                try:
                    if j < s:
                        key, token = static[j]
                        got = r.token(key, BROKER)
                        if got != token:
                            note("wrong", f"token({key!r}) = {got!r}, not {token}")
                        back = r.key(token, BROKER)
                        if back != key:
                            note("wrong", f"key({token}) = {back!r}, not {key!r}")
                        continue
                    i = j - s
                    key = moving.key(i)
                    g1 = r.generation
                    got = r.token(key, BROKER)
                    g2 = r.generation
                    generation, index = moving.decode(int(got))
                    if index != i or not g1 <= generation <= g2:
                        note(
                            "wrong",
                            f"token({key!r}) = {got} (generation {generation}, "
                            f"index {index}) read between generations {g1} and {g2}",
                        )
                    token = moving.token(g2, i)
                    back = r.get_key(token, BROKER)
                    g3 = r.generation
                    if not (back == key or (back is None and g3 > g2)):
                        note(
                            "wrong",
                            f"get_key({token}) = {back!r} read between generations "
                            f"{g2} and {g3}, expected {key!r}",
                        )
                    counts["straddled"] += (g2 != g1) + (g3 != g2)
                except Exception as exc:  # every failure is counted, whatever it is
                    note("exceptions", f"{type(exc).__name__}: {exc}")
            counts["lookups"] += 2 * len(picks)
        result: dict[str, Any] = {
            **counts,
            "first_generation": first,
            "last_generation": r.generation,
            "swaps_seen": r.swaps,  # type: ignore[attr-defined]  # a Following's counter
            "failed_refreshes": r.failed_refreshes,  # type: ignore[attr-defined]
            "last_error": r.last_error,  # type: ignore[attr-defined]
            "examples": examples,
        }
        conn.send(result)
