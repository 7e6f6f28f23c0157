"""Single and batch lookups of every contender on one dataset, side by side.

Per contender, four single-lookup figures: forward (key -> token) and reverse (token -> key),
on one hot key repeated and on uniform random keys (one shuffled list, the same order for every
contender), each the p50 / p99 / p99.9 of per-call nanoseconds over batches of calls
(`bench.timing`); then batch throughput, forward and reverse, in keys per second on batches of
10,000 random keys or tokens. Contenders take turns in rounds (`timing.interleaved`), so that a
passing load on the machine falls on all of them alike.

Every answer is checked before anything is timed: every key both ways, singly and in batches
(100,000 random keys where a dataset has more than 200,000). A contender that answers wrong, or
cannot be prepared or opened, is listed in ``data["failures"]`` and not timed.

Single lookups are timed the way a caller writes them (`Opened.inline`): the dicts subscripted
(``d[k]``), resolverd called as ``token(k, "kite")``, the other peers through a one-line helper
function; the notes say what the loop and such a helper cost here. The peers differ by three
orders of magnitude per call, so each figure is given a time (`Plan.seconds`) rather than a
number of calls: a contender makes as many calls as fit, estimated from its checked lookups,
between a floor of timed batches and a cap; the network peers (Redis, PostgreSQL) have a
lower cap and smaller timed batches. A section on the real Kite file takes well under a minute.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

from . import timing
from .compare_types import Section
from .data import fresh, shuffled
from .datasets import Dataset
from .stores import Opened, ResolverdStore, Spec, Store
from .timing import Timing

Log = Callable[[str], None]

SUBJECT = ResolverdStore.name
"""The contender the notes state ratios for."""


@dataclass(frozen=True)
class Plan:
    """How much to time and check.

    Single lookups: about `seconds` per figure and contender, in timed batches of `batch` calls
    (`remote_batch` for a network peer), no fewer than `min_batches` batches and no more than
    `calls` calls (`remote_calls`), over `rounds` interleaved rounds. Batches: `batch_rounds`
    calls of `batch_keys` keys per direction. Checks: every sampled key both ways, singly and
    in batches; a network peer's single lookups on the first `remote_checks` only, if set."""

    seconds: float
    calls: int
    remote_calls: int
    batch: int
    remote_batch: int
    min_batches: int
    rounds: int
    batch_keys: int
    batch_rounds: int
    remote_checks: int | None

    def single_calls(self, contender: Contender) -> tuple[int, int]:
        """(calls per round, calls per timed batch) for the contender."""
        batch = self.remote_batch if contender.remote else self.batch
        cap = self.remote_calls if contender.remote else self.calls
        fitting = int(self.seconds * 1e9 / max(contender.estimate_ns, 1.0))
        calls = min(cap, max(self.min_batches * batch, fitting))
        return max(1, calls // self.rounds // batch) * batch, batch


FULL = Plan(
    seconds=1.0,
    calls=200_000,
    remote_calls=20_000,
    batch=100,
    remote_batch=10,
    min_batches=200,
    rounds=10,
    batch_keys=10_000,
    batch_rounds=10,
    remote_checks=5_000,  # every key is checked in batches; singly, 5,000 over the network
)
QUICK = Plan(
    seconds=0.1,
    calls=20_000,
    remote_calls=1_000,
    batch=100,
    remote_batch=10,
    min_batches=20,
    rounds=5,
    batch_keys=10_000,
    batch_rounds=3,
    remote_checks=2_000,
)
CHECK_ALL_UP_TO = 200_000
CHECK_SAMPLE = 100_000
"""Keys checked (both ways, singly and in batches) where a dataset has more than
`CHECK_ALL_UP_TO`."""
LEVEL = 1.05
"""Two p50s within this ratio of each other are called level (closer than run-to-run noise)."""
WRONG_SHOWN = 3
"""Wrong answers quoted per contender and kind of lookup."""

FIGURES = {
    "forward_hot": "forward (key → token), one hot key",
    "forward_random": "forward, uniform random keys",
    "reverse_hot": "reverse (token → key), one hot token",
    "reverse_random": "reverse, uniform random tokens",
}
"""The single-lookup figures: `data["single"][contender]` keys and the rows' labels."""


@dataclass(frozen=True)
class Single:
    """One direction of a contender's single lookup, in the form a caller writes it:
    ``call(q)`` ("call"), ``call(q, arg)`` ("call2") or ``call[q]`` ("subscript")."""

    call: Any
    arg: Any = None
    form: str = "call"

    @classmethod
    def of(cls, opened: Opened, direction: str) -> Single:
        inline = opened.inline.get(direction)
        if isinstance(inline, tuple):
            return cls(inline[0], inline[1], "call2")
        if inline is not None:
            return cls(inline, form="subscript")
        return cls(getattr(opened, direction))

    def answer(self, q: Any) -> Any:
        if self.form == "call2":
            return self.call(q, self.arg)
        if self.form == "subscript":
            return self.call[q]
        return self.call(q)

    def hot(self, q: Any, *, batches: int, batch: int) -> Timing:
        if self.form == "call2":
            return timing.hot(self.call, q, self.arg, batches=batches, batch=batch)
        if self.form == "subscript":
            return timing.hot_subscript(self.call, q, batches=batches, batch=batch)
        return timing.hot1(self.call, q, batches=batches, batch=batch)

    def over(self, queries: Sequence[Any], *, batch: int) -> Timing:
        if self.form == "call2":
            return timing.over(self.call, queries, self.arg, batch=batch)
        if self.form == "subscript":
            return timing.over_subscript(self.call, queries, batch=batch)
        return timing.over1(self.call, queries, batch=batch)


@dataclass
class Contender:
    name: str
    opened: Opened
    remote: bool
    estimate_ns: float = 0.0
    """A forward lookup's cost as the check saw it: what sizes the timed figures."""

    def single(self, direction: str) -> Single:
        return Single.of(self.opened, direction)


def run(dataset: Dataset, stores: Sequence[Store], *, log: Log, quick: bool = False) -> Section:
    """Prepare, open and check every store that is not missing, then time them all on
    `dataset`; everything prepared is cleaned up, whatever happens."""
    plan = QUICK if quick else FULL
    section = Section(f"Lookups, {dataset.name} ({len(dataset):,} keys)")
    failures: list[str] = []
    prepared: list[tuple[Store, Spec]] = []
    opened: list[Contender] = []
    contenders: list[Contender] = []
    with tempfile.TemporaryDirectory(prefix="lookups-", dir=dataset.directory) as workdir:
        try:
            sample = _sample(dataset)
            for store in stores:
                why = store.missing()
                if why:
                    log(f"  skipping {store.name}: {why}")
                    section.skipped.append(f"{store.name}: {why}")
                    continue
                contender = _ready(store, dataset, Path(workdir), prepared, failures, log)
                if contender is None:
                    continue
                opened.append(contender)
                singly = plan.remote_checks if contender.remote else None
                log(
                    f"  checking {store.name} on {len(sample[0][:singly]):,} keys singly and "
                    f"{len(sample[0]):,} in batches, both ways ..."
                )
                wrong = _check(contender, *sample, singly, plan.batch_keys)
                if wrong:
                    failures += [f"{store.name}: {w}" for w in wrong]
                    log(f"  {store.name} answered wrong; not timed: {wrong[0]}")
                    continue
                contenders.append(contender)
            if contenders:
                with _frozen_heap():
                    _measure(section, dataset, contenders, plan, log)
        finally:
            _release(opened, prepared, failures, log)
    section.data.setdefault("dataset", dataset.name)
    section.data["failures"] = failures
    return section


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Everything allocated so far (the dataset, the contenders' dicts) moved out of the
    cyclic collector's sight: each timed round starts with `gc.collect()`, which would otherwise
    walk it all, tens of milliseconds a time on a loaded machine."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _ready(
    store: Store,
    dataset: Dataset,
    workdir: Path,
    prepared: list[tuple[Store, Spec]],
    failures: list[str],
    log: Log,
) -> Contender | None:
    """`store` prepared (recorded in `prepared` for the cleanup) and opened, or None with the
    reason in `failures`."""
    log(f"  preparing {store.name} ...")
    try:
        spec = store.prepare(dataset, workdir)
    except Exception as exc:
        log(traceback.format_exc())
        failures.append(f"{store.name}: prepare failed: {exc!r}")
        return None
    prepared.append((store, spec))
    try:
        opened = store.open(spec)
    except Exception as exc:
        log(traceback.format_exc())
        failures.append(f"{store.name}: open failed: {exc!r}")
        return None
    return Contender(store.name, opened, bool(getattr(store, "remote", False)))


def _release(
    contenders: list[Contender],
    prepared: list[tuple[Store, Spec]],
    failures: list[str],
    log: Log,
) -> None:
    """Close every contender and clean up every prepared store, each despite the others'
    failures (which are recorded)."""
    steps: list[tuple[str, Callable[[], None]]] = [
        (f"{c.name}: close", c.opened.close) for c in contenders
    ]
    steps += [(f"{s.name}: cleanup", functools.partial(s.cleanup, spec)) for s, spec in prepared]
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            log(traceback.format_exc())
            failures.append(f"{what} failed: {exc!r}")


def _sample_size(n: int) -> int:
    return n if n <= CHECK_ALL_UP_TO else CHECK_SAMPLE


def _sample(dataset: Dataset) -> tuple[list[str], list[int]]:
    """The keys to check (fresh str objects, in random order) and their tokens."""
    order = shuffled(len(dataset), seed=7)[: _sample_size(len(dataset))]
    return fresh(dataset.keys[i] for i in order.tolist()), dataset.tokens[order].tolist()


def _check(
    contender: Contender,
    keys: list[str],
    tokens: list[int],
    singly: int | None,
    batch_keys: int,
) -> list[str]:
    """What the contender answered wrong (a few lines per kind of lookup); empty if nothing.
    Single lookups are checked on the first `singly` keys (all if None), batches on all.
    Tokens must come back as int and keys as str (a batch may return a numpy array of them).
    Sets the contender's `estimate_ns` from its forward lookups."""
    forward, reverse = contender.single("forward"), contender.single("reverse")
    few = slice(0, singly)
    start = perf_counter_ns()
    wrong = _check_singles("forward", forward.answer, keys[few], tokens[few], int)
    contender.estimate_ns = (perf_counter_ns() - start) / max(1, len(keys[few]))
    wrong += _check_singles("reverse", reverse.answer, tokens[few], keys[few], str)
    for first in range(0, len(keys), batch_keys):
        chunk = slice(first, first + batch_keys)
        wrong += _check_batch(
            "forward_batch", contender.opened.forward_batch, keys[chunk], tokens[chunk], as_tokens
        )
        wrong += _check_batch(
            "reverse_batch", contender.opened.reverse_batch, tokens[chunk], keys[chunk], as_keys
        )
        if wrong:
            break
    return wrong


def _check_singles(
    what: str, lookup: Callable[[Any], Any], asked: list[Any], expected: list[Any], kind: type
) -> list[str]:
    wrong: list[str] = []
    for q, want in zip(asked, expected, strict=True):
        try:
            got = lookup(q)
        except Exception as exc:
            return [*wrong, f"{what}({q!r}) raised {exc!r}, expected {want!r}"]
        if type(got) is not kind or got != want:
            wrong.append(f"{what}({q!r}) gave {got!r}, expected {want!r}")
            if len(wrong) == WRONG_SHOWN:
                break
    return wrong


def _check_batch(
    what: str,
    lookup: Callable[[Any], Any],
    asked: list[Any],
    expected: list[Any],
    convert: Callable[[Any], list[Any]],
) -> list[str]:
    try:
        got = convert(lookup(asked))
    except Exception as exc:
        return [f"{what} of {len(asked):,} raised {exc!r}"]
    if got == expected:
        return []
    if len(got) != len(expected):
        return [f"{what} of {len(asked):,} gave {len(got):,} answers"]
    i = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
    return [f"{what}: answer {i} for {asked[i]!r} was {got[i]!r}, expected {expected[i]!r}"]


def as_tokens(result: Any) -> list[int]:
    """A batch's tokens as a list of int; TypeError if any is not one."""
    values = result.tolist() if isinstance(result, np.ndarray) else list(result)
    if not all(type(v) is int for v in values):
        raise TypeError(f"not all ints: {next(v for v in values if type(v) is not int)!r}")
    return values


def as_keys(result: Any) -> list[str]:
    """A batch's keys as a list of str (UTF-8 bytes arrays decoded); TypeError if any is not."""
    if isinstance(result, np.ndarray) and result.dtype.kind == "S":
        values = [b.decode() for b in result.tolist()]
    else:
        values = result.tolist() if isinstance(result, np.ndarray) else list(result)
    if not all(type(v) is str for v in values):
        raise TypeError(f"not all str: {next(v for v in values if type(v) is not str)!r}")
    return values


def _measure(
    section: Section, dataset: Dataset, contenders: list[Contender], plan: Plan, log: Log
) -> None:
    singles = _singles(dataset, contenders, plan, log)
    batches = _batches(dataset, contenders, plan, log)
    names = [c.name for c in contenders]
    section.rows += [
        {"figure": label, **{n: _latency(singles[n][figure]) for n in names}}
        for figure, label in FIGURES.items()
    ]
    size = min(plan.batch_keys, len(dataset))
    for direction, noun in (("forward", "keys"), ("reverse", "tokens")):
        section.rows.append(
            {
                "figure": f"{direction} batch, {size:,} random {noun} per call",
                **{n: _rate(batches[n][direction]) for n in names},
            }
        )
    section.rows.append(
        {
            "figure": "single lookups timed per figure (calls per timed batch)",
            **{
                c.name: f"{singles[c.name]['forward_random'].calls:,} ({plan.single_calls(c)[1]})"
                for c in contenders
            },
        }
    )
    section.notes += _ratio_notes(singles, batches, names, size)
    section.notes += _method_notes(dataset, contenders, plan, size)
    section.data.update(
        dataset=dataset.name,
        keys=len(dataset),
        contenders=names,
        single={
            n: {
                figure: {
                    "p50": t.p50,
                    "p99": t.p99,
                    "p999": t.p999,
                    "calls": t.calls,
                    "batches": t.batches,
                }
                for figure, t in singles[n].items()
            }
            for n in names
        },
        batch={
            n: {
                "batch_keys": size,
                "batches": plan.batch_rounds,
                "forward_keys_per_s": 1e9 / batches[n]["forward"].p50,
                "reverse_keys_per_s": 1e9 / batches[n]["reverse"].p50,
            }
            for n in names
        },
    )


def _singles(
    dataset: Dataset, contenders: list[Contender], plan: Plan, log: Log
) -> dict[str, dict[str, Timing]]:
    """Every figure of `FIGURES` for every contender: {contender: {figure: Timing}}."""
    n = len(dataset)
    middle = n // 2
    hot = {"forward": dataset.keys[middle], "reverse": int(dataset.tokens[middle])}
    order = shuffled(n, seed=1)
    longest = max(plan.single_calls(c)[0] for c in contenders) * plan.rounds
    indices = np.resize(order, longest)  # the order repeated where n is smaller
    ordered = {
        "forward": [dataset.keys[i] for i in indices.tolist()],
        "reverse": dataset.tokens[indices].tolist(),
    }
    measured: dict[str, dict[str, Timing]] = {c.name: {} for c in contenders}
    for figure in FIGURES:
        direction, kind = figure.split("_")
        log(f"  {FIGURES[figure]} ...")
        rounds = {
            c.name: _single_round(c, direction, kind, hot[direction], ordered[direction], plan)
            for c in contenders
        }
        for name, t in timing.interleaved(rounds, plan.rounds).items():
            measured[name][figure] = t
        log(
            "    "
            + ", ".join(f"{c.name} {measured[c.name][figure].p50:,.0f} ns" for c in contenders)
        )
    return measured


def _single_round(
    contender: Contender,
    direction: str,
    kind: str,
    hot: Any,
    ordered: list[Any],
    plan: Plan,
) -> Callable[[int], Timing]:
    """What the contender does in one round of one figure."""
    single = contender.single(direction)
    per_round, batch = plan.single_calls(contender)
    if kind == "hot":
        return lambda _: single.hot(hot, batches=per_round // batch, batch=batch)

    def random_round(r: int) -> Timing:
        segment = ordered[r * per_round : (r + 1) * per_round]
        # Keys arrive from elsewhere in a real process: equal strings, no cached hash.
        queries = fresh(segment) if direction == "forward" else segment
        return single.over(queries, batch=batch)

    return random_round


def _batches(
    dataset: Dataset, contenders: list[Contender], plan: Plan, log: Log
) -> dict[str, dict[str, Timing]]:
    """Per-key nanoseconds of whole batch calls: {contender: {"forward"|"reverse": Timing}}."""
    n = len(dataset)
    size = min(plan.batch_keys, n)
    rng = np.random.default_rng(2)
    picks = [rng.choice(n, size, replace=False) for _ in range(plan.batch_rounds)]
    asked = {
        "forward": [[dataset.keys[i] for i in p.tolist()] for p in picks],
        "reverse": [dataset.tokens[p].tolist() for p in picks],
    }
    measured: dict[str, dict[str, Timing]] = {c.name: {} for c in contenders}
    for direction in ("forward", "reverse"):
        log(f"  {direction} batches of {size:,} ...")
        rounds = {
            c.name: _batch_round(
                getattr(c.opened, f"{direction}_batch"), asked[direction], direction
            )
            for c in contenders
        }
        for name, t in timing.interleaved(rounds, plan.batch_rounds).items():
            measured[name][direction] = t
        log(
            "    " + ", ".join(f"{c.name} {_rate(measured[c.name][direction])}" for c in contenders)
        )
    return measured


def _batch_round(
    lookup: Callable[[Any], Any], asked: list[list[Any]], direction: str
) -> Callable[[int], Timing]:
    def one(r: int) -> Timing:
        queries = fresh(asked[r]) if direction == "forward" else asked[r]
        with timing.no_gc():
            start = perf_counter_ns()
            lookup(queries)
            elapsed = perf_counter_ns() - start
        return Timing.of([elapsed / len(queries)], len(queries))

    return one


def _ns(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _latency(t: Timing) -> str:
    return f"{_ns(t.p50)} / {_ns(t.p99)} / {_ns(t.p999)} ns"


def _rate(t: Timing) -> str:
    per_second = 1e9 / t.p50
    if per_second >= 1e6:
        return f"{per_second / 1e6:,.2f} M keys/s"
    return f"{per_second / 1e3:,.1f} k keys/s"


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:,.0f}x"


def _compared(label: str, mine: float, peers: dict[str, float], unit: str) -> str:
    """One sentence: who beats resolverd and by how much, who is level with it, then whom it
    beats; the values are costs (lower is better) in `unit`."""
    wins, level, beaten = [], [], []
    for name, cost in peers.items():
        if LEVEL * cost <= mine:
            wins.append(
                f"{name} wins by {_times(mine / cost)} ({_ns(cost)} {unit} against {_ns(mine)})"
            )
        elif cost < LEVEL * mine:
            level.append(f"{name} is level with {SUBJECT} ({_ns(cost)} {unit} against {_ns(mine)})")
        else:
            beaten.append(f"{_times(cost / mine)} faster than {name}")
    parts = wins + level + ([f"{SUBJECT} is " + ", ".join(beaten)] if beaten else [])
    return f"{label}: " + "; ".join(parts) + "."


def _ratio_notes(
    singles: dict[str, dict[str, Timing]],
    batches: dict[str, dict[str, Timing]],
    names: list[str],
    size: int,
) -> list[str]:
    """The ratios of resolverd against each peer, stated plainly, p50 against p50."""
    if SUBJECT not in names or len(names) < 2:
        return []
    peers = [n for n in names if n != SUBJECT]
    notes = [
        _compared(
            f"{label} (p50)",
            singles[SUBJECT][figure].p50,
            {n: singles[n][figure].p50 for n in peers},
            "ns",
        )
        for figure, label in FIGURES.items()
    ]
    for direction in ("forward", "reverse"):
        notes.append(
            _compared(
                f"{direction} batches of {size:,} (ns per key, the inverse of keys/s)",
                batches[SUBJECT][direction].p50,
                {n: batches[n][direction].p50 for n in peers},
                "ns/key",
            )
        )
    return notes


def _method_notes(
    dataset: Dataset, contenders: list[Contender], plan: Plan, size: int
) -> list[str]:
    loop = timing.loop_overhead(batches=100, batch=plan.batch)

    def helper(_: object) -> None:
        return None

    call = timing.hot1(helper, "key", batches=100, batch=plan.batch)
    forms = {"subscript": "subscripted inline (`d[k]`)", "call2": "called as `token(k, 'kite')`"}
    helped = [c.name for c in contenders if c.single("forward").form == "call"]
    inline = [
        f"{c.name} {forms[c.single('forward').form]}"
        for c in contenders
        if c.single("forward").form in forms
    ]
    notes = [
        f"Single lookups are timed as a caller writes them: {', '.join(inline) or 'none inline'}"
        + (
            f"; {', '.join(helped)} through a one-line helper function, which costs about "
            f"{call.p50 - loop.p50:.0f} ns of each of their figures here"
            if helped
            else ""
        )
        + f". Every per-call figure includes the timing loop ({loop.p50:.1f} ns per iteration).",
        f"Figures are p50 / p99 / p99.9 of per-call times over timed batches (of {plan.batch} "
        f"calls, {plan.remote_batch} for a network peer), in {plan.rounds} interleaved rounds; "
        "random keys follow one shuffled order, the same for every contender, as fresh str "
        "objects (no cached hash). Each contender makes the calls that fit in about "
        f"{plan.seconds:g} s per figure, at least {plan.min_batches} timed batches and at most "
        f"{plan.calls:,} calls ({plan.remote_calls:,} for a network peer): the row above.",
    ]
    remote = [c.name for c in contenders if c.remote]
    if remote:
        checked = (
            f"; their single lookups were checked on "
            f"{min(plan.remote_checks, _sample_size(len(dataset))):,} keys each way, "
            "their batches on every key"
            if plan.remote_checks is not None
            else ""
        )
        notes.append(f"{' and '.join(remote)} answer over loopback TCP{checked}.")
    arrays = _array_notes(dataset, contenders, size)
    return notes + arrays


def _str_list(keys: Any) -> list[str]:
    """What a caller does with resolverd's keys() to get str: the client's documented way."""
    return keys.astype(str).tolist()  # type: ignore[no-any-return]


def _array_notes(dataset: Dataset, contenders: list[Contender], size: int) -> list[str]:
    """What turning an array-returning batch into a list of int / str would add, since the
    peers' batches return lists and their figures include building them."""
    notes = []
    keys = dataset.keys[:size]
    tokens = dataset.tokens[:size].tolist()
    for c in contenders:
        tokens_out = c.opened.forward_batch(fresh(keys))
        keys_out = c.opened.reverse_batch(tokens)
        if not isinstance(tokens_out, np.ndarray) and not isinstance(keys_out, np.ndarray):
            continue
        to_int = timing.whole(tokens_out.tolist, size, repeats=5)
        to_str = timing.whole(functools.partial(_str_list, keys_out), size, repeats=5)
        notes.append(
            f"{c.name}'s batches return numpy arrays (uint64 tokens; keys as fixed-width UTF-8 "
            f"bytes), timed as such: a list of int (`.tolist()`) would add {to_int.p50:.1f} "
            f"ns per key and a list of str (`.astype(str).tolist()`) {to_str.p50:.1f} ns."
        )
    return notes
