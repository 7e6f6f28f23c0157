"""Batch timing with `time.perf_counter_ns` and the percentiles the reports quote.

A single lookup takes tens to hundreds of nanoseconds, below what one clock read resolves well,
so calls are timed in batches (1,000 calls in a plain ``for`` loop) and each batch yields one
per-call figure: its time divided by its calls. p50 and p99 are taken over those per-call
figures. The loop and the call itself are inside the timed region for every contender alike;
`loop_overhead` measures an empty loop so that a reader can see how much of a figure it is.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any

BATCH = 1_000


@dataclass(frozen=True)
class Timing:
    """Per-call nanoseconds: the median and 99th percentile over batches."""

    p50: float
    p99: float
    batches: int
    calls: int
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, per_call: Sequence[float], calls: int) -> Timing:
        return cls(
            percentile(per_call, 50),
            percentile(per_call, 99),
            len(per_call),
            calls,
            tuple(per_call),
        )

    @property
    def p999(self) -> float:
        """The 99.9th percentile of the per-call figures: with fewer than 1,000 batches, close
        to the slowest batch."""
        return percentile(self.samples, 99.9)

    @classmethod
    def merged(cls, parts: Sequence[Timing]) -> Timing:
        """One figure from several measurements of the same thing (interleaved rounds)."""
        return cls.of([x for t in parts for x in t.samples], sum(t.calls for t in parts))


def interleaved(contenders: dict[str, Callable[[int], Timing]], rounds: int) -> dict[str, Timing]:
    """Measure every contender `rounds` times, taking turns (the order rotates each round), so
    that a passing load on the machine falls on all of them alike; `contenders[name](r)`
    measures round r."""
    parts: dict[str, list[Timing]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        first = r % len(names)
        for name in names[first:] + names[:first]:
            parts[name].append(contenders[name](r))
    return {name: Timing.merged(measured) for name, measured in parts.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@contextmanager
def no_gc() -> Iterator[None]:
    """Keep the cyclic collector out of the timed region (the lookups allocate no cycles)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def hot(
    call: Callable[[Any, Any], Any], a: Any, b: Any, *, batches: int = 300, batch: int = BATCH
) -> Timing:
    """`call(a, b)` repeated: the same arguments every time (a hot key)."""
    per_call = []
    loop = range(batch)
    with no_gc():
        for _ in range(10):
            call(a, b)
        for _ in range(batches):
            start = perf_counter_ns()
            for _ in loop:
                call(a, b)
            per_call.append((perf_counter_ns() - start) / batch)
    return Timing.of(per_call, batches * batch)


def hot_subscript(mapping: Any, key: Any, *, batches: int = 300, batch: int = BATCH) -> Timing:
    """`mapping[key]` repeated, written inline as a caller would (no function call)."""
    per_call = []
    loop = range(batch)
    with no_gc():
        for _ in range(batches):
            start = perf_counter_ns()
            for _ in loop:
                mapping[key]
            per_call.append((perf_counter_ns() - start) / batch)
    return Timing.of(per_call, batches * batch)


def over(
    call: Callable[[Any, Any], Any], queries: Sequence[Any], b: Any, *, batch: int = BATCH
) -> Timing:
    """`call(q, b)` for each query in order, timed in consecutive batches of `batch`."""
    per_call = []
    with no_gc():
        for first in range(0, len(queries) - batch + 1, batch):
            chunk = queries[first : first + batch]
            start = perf_counter_ns()
            for q in chunk:
                call(q, b)
            per_call.append((perf_counter_ns() - start) / batch)
    return Timing.of(per_call, len(per_call) * batch)


def hot1(call: Callable[[Any], Any], a: Any, *, batches: int = 300, batch: int = BATCH) -> Timing:
    """`call(a)` repeated: a one-argument lookup on a hot key."""
    per_call = []
    loop = range(batch)
    with no_gc():
        for _ in range(10):
            call(a)
        for _ in range(batches):
            start = perf_counter_ns()
            for _ in loop:
                call(a)
            per_call.append((perf_counter_ns() - start) / batch)
    return Timing.of(per_call, batches * batch)


def over1(call: Callable[[Any], Any], queries: Sequence[Any], *, batch: int = BATCH) -> Timing:
    """`call(q)` for each query in order, timed in consecutive batches of `batch`."""
    per_call = []
    with no_gc():
        for first in range(0, len(queries) - batch + 1, batch):
            chunk = queries[first : first + batch]
            start = perf_counter_ns()
            for q in chunk:
                call(q)
            per_call.append((perf_counter_ns() - start) / batch)
    return Timing.of(per_call, len(per_call) * batch)


def over_subscript(mapping: Any, queries: Sequence[Any], *, batch: int = BATCH) -> Timing:
    """`mapping[q]` for each query in order, timed in consecutive batches of `batch`."""
    per_call = []
    with no_gc():
        for first in range(0, len(queries) - batch + 1, batch):
            chunk = queries[first : first + batch]
            start = perf_counter_ns()
            for q in chunk:
                mapping[q]
            per_call.append((perf_counter_ns() - start) / batch)
    return Timing.of(per_call, len(per_call) * batch)


def loop_overhead(*, batches: int = 300, batch: int = BATCH) -> Timing:
    """An empty `for` loop over a batch: the floor every per-call figure includes."""
    per_call = []
    loop = range(batch)
    with no_gc():
        for _ in range(batches):
            start = perf_counter_ns()
            for _ in loop:
                pass
            per_call.append((perf_counter_ns() - start) / batch)
    return Timing.of(per_call, batches * batch)


def whole(run: Callable[[], Any], items: int, *, repeats: int = 5) -> Timing:
    """A batch call timed whole, `repeats` times; per-item nanoseconds."""
    per_item = []
    with no_gc():
        run()
        for _ in range(repeats):
            start = perf_counter_ns()
            run()
            per_item.append((perf_counter_ns() - start) / items)
    return Timing.of(per_item, repeats * items)


def seconds(run: Callable[[], Any], *, repeats: int = 3) -> tuple[float, Any]:
    """The median wall time of `run()` in seconds, and the last result."""
    times = []
    result = None
    for _ in range(repeats):
        gc.collect()
        start = perf_counter_ns()
        result = run()
        times.append((perf_counter_ns() - start) / 1e9)
    return statistics.median(times), result
