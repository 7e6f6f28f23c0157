"""Start-up: from process start to the first correct lookup, per contender.

Each contender is prepared once in the harness (`Store.prepare`). Then, `repeats` times, a fresh
interpreter is started with ``python -c`` (`CHILD`) and given the store and its Spec, pickled,
in argv. It imports the store's libraries, unpickles the store, opens it, resolves one key
forward, checks the token and prints its clock readings. The harness reads the clock just before
`Popen`. One unmeasured run first warms the page cache, as a restarting process finds it, and
the contenders take turns in each round, so that a passing load on the machine falls on all of
them alike.

The clock is CLOCK_MONOTONIC (`time.clock_gettime_ns`): on Linux one clock for every process,
and unlike the wall clock it never steps.

The readings split each run into four phases:

- interpreter: `Popen` to the child's first statement (exec, Python's own start, site);
- imports: the libraries the store's `open` uses (`libraries`: resolverd for resolverd, csv for
  the dict from CSV, the client library of a server), what a process using that store imports;
- harness: unpickling the store, which imports the rest of ``bench.stores`` (every peer's
  library, the benchmark's modules). A process using one store does not pay it, so it is
  measured and left out of the start-up figure;
- open + first lookup: `Store.open` and one `forward` (parsing the CSV into dicts, a
  connection to a server, a mapping for resolverd).

Start-up = interpreter + imports + open + first lookup. Two baselines say how much is Python
itself: ``python -c pass`` and ``python -c "import numpy"`` (resolverd's main import).
"""

from __future__ import annotations

import base64
import dis
import inspect
import itertools
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .compare_types import Section

if TYPE_CHECKING:
    from .datasets import Dataset
    from .stores import Store

Log = Callable[[str], None]

REPEATS = 5
QUICK_REPEATS = 3
CHILD_TIMEOUT_S = 600.0
"""The longest one child may take: parsing the 5M CSV into dicts on a busy machine takes
tens of seconds."""
ROOT = Path(__file__).resolve().parents[1]
"""The repository: the children's working directory, so that ``bench`` imports."""
PHASES = ("interpreter", "imports", "harness", "open + first lookup")
COUNTED = ("interpreter", "imports", "open + first lookup")
"""The phases a process using one store pays: all but the harness's own imports."""
FAILED = 3
"""The child's exit code for a wrong answer."""

_CLOCK = "time.clock_gettime_ns(time.CLOCK_MONOTONIC)"
CHILD = f"""\
import importlib, sys, time
started = {_CLOCK}
for name in filter(None, sys.argv[1].split(",")):
    importlib.import_module(name)
imported = {_CLOCK}
import base64, pickle
store, spec, key, expected = pickle.loads(base64.b64decode(sys.argv[2]))
unpickled = {_CLOCK}
opened = store.open(spec)
got = opened.forward(key)
answered = {_CLOCK}
if got is None or int(got) != expected:
    print(f"forward({{key!r}}) gave {{got!r}}, expected {{expected}}", file=sys.stderr)
    sys.exit({FAILED})
print(started, imported, unpickled, answered)
opened.close()
"""
"""The fresh interpreter's program: argv[1] the libraries to import, comma-separated; argv[2]
base64 of a pickled (store, spec, key, token). Every clock reading follows its phase directly;
the answer is checked after the last one."""
BASELINES = {
    "python -c pass": f"import time; print({_CLOCK})",
    'python -c "import numpy"': f"import time; t = {_CLOCK}; import numpy; print(t, {_CLOCK})",
}
"""Each prints its readings: at its first statement and, if it imports, after its imports."""


@dataclass(frozen=True)
class Launch:
    """One child: nanoseconds from `Popen` to its first clock reading and between each of its
    readings (the phases, in `PHASES` order), or why it failed."""

    phases: tuple[int, ...] = ()
    failure: str | None = None

    def of(self, name: str) -> int | None:
        i = PHASES.index(name)
        return self.phases[i] if i < len(self.phases) else None

    @property
    def startup(self) -> int:
        return sum(self.of(p) or 0 for p in COUNTED)


def launch(code: str, args: Sequence[str] = ()) -> Launch:
    """Run ``python -c code *args`` from the repository and return its phases."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return Launch(failure=f"no answer within {CHILD_TIMEOUT_S:g} s")
    if process.returncode != 0:
        last = err.strip().splitlines()[-1] if err.strip() else "no message"
        what = "wrong answer" if process.returncode == FAILED else "failed"
        return Launch(failure=f"{what}, exit code {process.returncode}: {last}")
    try:
        readings = [before, *map(int, out.split())]
    except ValueError:
        return Launch(failure=f"unexpected output {out[-200:]!r}")
    return Launch(tuple(b - a for a, b in itertools.pairwise(readings)))


def libraries(store: Store) -> tuple[str, ...]:
    """The modules a process using only `store` imports: its ``imports`` attribute if it has
    one, else every module that `store.open` (and the functions of ``bench`` it calls) loads
    as a global or imports, e.g. ``("resolverd",)`` or ``("csv",)``."""
    declared = getattr(store, "imports", None)
    if declared is not None:
        return tuple(declared)
    found: set[str] = set()
    _walk(type(store).open, found, set())
    return tuple(sorted(found))


def _walk(function: Any, found: set[str], seen: set[Any]) -> None:
    code = getattr(function, "__code__", None)
    if code is None or code in seen:
        return
    seen.add(code)
    namespace = getattr(function, "__globals__", {})
    for instruction in (i for c in _codes(code) for i in dis.get_instructions(c)):
        if instruction.opname == "IMPORT_NAME":
            found.add(str(instruction.argval).partition(".")[0])
        elif instruction.opname == "LOAD_GLOBAL" and instruction.argval in namespace:
            _note(namespace[instruction.argval], found, seen)


def _note(value: Any, found: set[str], seen: set[Any]) -> None:
    """Record the package `value` (a module, class or function) comes from; follow the
    benchmark's own functions and classes into what they use."""
    module = (
        value.__name__
        if isinstance(value, types.ModuleType)
        else getattr(value, "__module__", None)
    )
    if not isinstance(module, str):
        return
    package = module.partition(".")[0]
    if package != __name__.partition(".")[0]:
        if package not in ("builtins", "typing"):
            found.add(package)
    elif inspect.isclass(value):
        for name, member in vars(value).items():
            if not name.startswith("__"):  # generated ones (a dataclass's) import nothing
                _walk(member, found, seen)
    else:
        _walk(value, found, seen)


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """A code object and those nested in it (its closures and comprehensions)."""
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _codes(constant)


@dataclass
class Contender:
    """One line of the table: a store's child or a baseline, and its runs."""

    name: str
    code: str
    args: tuple[str, ...] = ()
    launches: list[Launch] = field(default_factory=list)
    failure: str | None = None

    def run(self, *, keep: bool = True) -> None:
        if self.failure:
            return
        result = launch(self.code, self.args)
        if result.failure:
            self.failure = result.failure
        elif keep:
            self.launches.append(result)


def run(
    dataset: Dataset,
    stores: Sequence[Store],
    *,
    log: Log = print,
    repeats: int = REPEATS,
    quick: bool = False,
) -> Section:
    """Start-up to the first correct lookup of every store in `stores`, `repeats` fresh
    interpreters each (at most 3 with `quick`), beside the interpreter's own start."""
    if quick:
        repeats = min(repeats, QUICK_REPEATS)
    section = Section("Start-up: process start to the first correct lookup")
    key, token = _probe(dataset)
    contenders = [Contender(name, code) for name, code in BASELINES.items()]
    prepared: list[tuple[Store, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="startup-", dir=dataset.directory))
    try:
        for store in stores:
            why = store.missing()
            if why:
                section.skipped.append(f"{store.name}: {why}")
                continue
            try:
                spec = store.prepare(dataset, workdir)
            except Exception as exc:  # a peer that cannot load the data fails alone
                failed = f"prepare failed: {type(exc).__name__}: {exc}"
                contenders.append(Contender(store.name, CHILD, failure=failed))
                continue
            prepared.append((store, spec))
            payload = base64.b64encode(pickle.dumps((store, spec, key, token))).decode()
            args = (",".join(libraries(store)), payload)
            contenders.append(Contender(store.name, CHILD, args))
        log(f"  start-up of {len(contenders)} programs, {repeats} fresh interpreters each ...")
        _rounds(contenders, repeats, warm=not quick)
    finally:
        for store, spec in prepared:
            store.cleanup(spec)
        shutil.rmtree(workdir, ignore_errors=True)
    _fill(section, contenders, repeats, key, warm=not quick)
    for contender in contenders:
        if contender.launches:
            median = statistics.median(launch.startup for launch in contender.launches)
            log(f"  {contender.name}: {_ms(median)}")
    return section


def _probe(dataset: Dataset) -> tuple[str, int]:
    """The key the children look up (from the middle of the file) and its token."""
    middle = len(dataset) // 2
    return dataset.keys[middle], int(dataset.tokens[middle])


def _rounds(contenders: list[Contender], repeats: int, *, warm: bool) -> None:
    """A warm-up run of each (if `warm`), then `repeats` rounds, the order rotating each
    round."""
    for contender in contenders if warm else ():
        contender.run(keep=False)
    for r in range(repeats):
        first = r % len(contenders)
        for contender in contenders[first:] + contenders[:first]:
            contender.run()


def _fill(
    section: Section, contenders: list[Contender], repeats: int, key: str, *, warm: bool
) -> None:
    medians: dict[str, float] = {}
    phases: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    for contender in contenders:
        if contender.failure or not contender.launches:
            why = contender.failure or "no run"
            failures.append(f"{contender.name}: {why}")
            section.rows.append(_row(contender.name, None, None, {}, f"failed: {why}"))
            continue
        totals = [launch.startup for launch in contender.launches]
        medians[contender.name] = statistics.median(totals)
        phases[contender.name] = _phase_medians(contender.launches)
        section.rows.append(
            _row(
                contender.name,
                medians[contender.name],
                min(totals),
                phases[contender.name],
                _dominant(phases[contender.name]),
            )
        )
        section.data.setdefault("startup_ms", {})[contender.name] = [t / 1e6 for t in totals]
    section.data["phases_ms"] = {
        name: {phase: ns / 1e6 for phase, ns in figures.items()} for name, figures in phases.items()
    }
    section.data["repeats"] = repeats
    section.data["failures"] = failures
    section.notes += _notes(medians, phases, repeats, key, warm)


def _phase_medians(launches: list[Launch]) -> dict[str, float]:
    """The median of each phase the children reported (a baseline reports fewer)."""
    medians = {}
    for phase in PHASES:
        values = [v for v in (launch.of(phase) for launch in launches) if v is not None]
        if values:
            medians[phase] = statistics.median(values)
    return medians


def _row(
    name: str,
    median: float | None,
    least: float | None,
    phases: dict[str, float],
    dominant: str,
) -> dict[str, Any]:
    return {
        "contender": name,
        "start-up, median": _ms(median),
        "min": _ms(least),
        "interpreter": _ms(phases.get("interpreter")),
        "imports": _ms(phases.get("imports")),
        "open + first lookup": _ms(phases.get("open + first lookup")),
        "most of it": dominant,
        "harness imports (not counted)": _ms(phases.get("harness")),
    }


def _dominant(phases: dict[str, float]) -> str:
    counted = {p: ns for p, ns in phases.items() if p in COUNTED}
    if len(counted) < 2:
        return ""
    phase, ns = max(counted.items(), key=lambda item: item[1])
    return f"{phase} ({ns / sum(counted.values()):.0%})"


def _notes(
    medians: dict[str, float],
    phases: dict[str, dict[str, float]],
    repeats: int,
    key: str,
    warm: bool,
) -> list[str]:
    warmed = ", after one warm-up run each" if warm else " (no warm-up run: the quick form)"
    notes = [
        f"Medians and minima of {repeats} fresh interpreters per contender{warmed}: from "
        "the parent's clock reading just before `Popen` to the child's right "
        f"after `forward({key!r})` returned (checked to be the right token), less the "
        "harness's own imports (unpickling the store loads every peer's library and the "
        "benchmark's modules, which a process using one store never imports)."
    ]
    bare = medians.get("python -c pass")
    numpy = medians.get('python -c "import numpy"')
    if bare is not None and numpy is not None:
        notes.append(
            f"Python itself: `python -c pass` reaches its first statement in {_ms(bare)}; "
            f"with `import numpy` (resolverd's main import) that becomes {_ms(numpy)}."
        )
    mine = medians.get("resolverd")
    own = phases.get("resolverd", {}).get("open + first lookup")
    for name, median in medians.items():
        if name in BASELINES or name == "resolverd":
            continue
        opened = phases[name].get("open + first lookup")
        line = f"{name}: {_ms(median)}"
        if mine is not None:
            line += f" ({_against(median, mine)} {_ms(mine)})"
        line += f"; of it open + first lookup {_ms(opened)}"
        if opened is not None and own:
            line += f" ({_against(opened, own)} {_ms(own)})"
        notes.append(line + ".")
    return notes


def _against(peer: float, mine: float) -> str:
    """The peer's time beside resolverd's, stated plainly whichever is faster."""
    if peer >= mine:
        return f"{times(peer / mine)} resolverd's"
    return f"faster: resolverd takes {times(mine / peer)} as long,"


def times(ratio: float) -> str:
    """A ratio as the notes print it: ``1.3x``, ``42x``, ``6,015x``."""
    return f"{ratio:,.0f}x" if ratio >= 20 else f"{ratio:.1f}x"


def _ms(ns: float | None) -> str:
    if ns is None:
        return "—"
    ms = ns / 1e6
    if ms >= 100:
        return f"{ms:,.0f} ms"
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"
