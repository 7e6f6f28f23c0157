"""Coverage-guided fuzzing of the snapshot reader with atheris (libFuzzer for Python).

    python tests/fuzz/atheris_layout.py [-atheris_runs=N] [-timeout=S] [CORPUS_DIR] [...]

Any libFuzzer flag works (``-help=1`` lists them). Each input is read as the choices of
`tests.fuzzing.draw_mutations` (a forge or a recipe, then flipped bytes, resizes, lying header,
section-table or payload fields with their checksums recomputed), applied to the small base
snapshot; `tests.fuzzing.check_python_reader` then opens the result every way the client can
and makes every lookup. A breach of its contract (an exception other than those it allows,
or `tests.fuzzing.Hang` from a call that does not return within TIME_LIMIT_S; with
``-timeout=S`` libFuzzer's own timeout instead) stops the run with the traceback and writes
the input as ``crash-<sha1>``. Inputs are up to ``-max_len`` bytes (512 unless given) from the
first run. The resolverd package is instrumented, so libFuzzer steers towards inputs that
reach new branches of the reader. tests/fuzz/test_atheris_layout.py runs this for a bounded
number of runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# The reader (resolverd.client and the modules it imports, shm_layout among them) is imported
# first, inside this block, so that atheris instruments it.
with atheris.instrument_imports(include=["resolverd"]):
    import resolverd.client  # noqa: F401  (imported for its instrumentation)

from tests import fuzzing

T = TypeVar("T")


class AtherisChooser:
    """tests.fuzzing.Chooser over libFuzzer's input; an exhausted input gives the lowest choice."""

    def __init__(self, data: bytes) -> None:
        self.provider = atheris.FuzzedDataProvider(data)

    def integer(self, low: int, high: int) -> int:
        return int(self.provider.ConsumeIntInRange(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.provider.ConsumeIntInRange(0, len(options) - 1)]

    def blob(self, max_size: int) -> bytes:
        return bytes(self.provider.ConsumeBytes(self.provider.ConsumeIntInRange(0, max_size)))


# Both libFuzzer's -timeout and the contract's own time limit run on SIGALRM: only one of them
# may. The contract's, unless the command line asks for libFuzzer's (whose periodic alarm was
# also seen killing the process as it exited after a long run).
limit_s: float | None = fuzzing.TIME_LIMIT_S


def test_one_input(data: bytes) -> None:
    mutations = fuzzing.draw_mutations(AtherisChooser(data))
    fuzzing.check_python_reader(fuzzing.mutate(mutations), limit_s=limit_s)


def main() -> None:
    global limit_s
    fuzzing.base_snapshot()  # compile once, before the clock of the first input starts
    argv = list(sys.argv)
    if any(arg.startswith("-timeout=") for arg in argv):
        limit_s = None
    # Long enough inputs from the start: a short one exhausts its choices on the first draws.
    for default in ("-timeout=0", "-max_len=512", "-len_control=0"):
        if not any(arg.startswith(default.partition("=")[0] + "=") for arg in argv):
            argv.append(default)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
