"""tests/fuzz/atheris_layout.py, run for a bounded number of inputs: the coverage-guided fuzzer
finds no breach of the reader's contract (tests/fuzzing.py) on this machine."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HARNESS = Path(__file__).resolve().parent / "atheris_layout.py"
RUNS = 1000


def test_the_coverage_guided_fuzzer_finds_no_breach_of_the_reader_contract(
    tmp_path: Path,
) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed")
    result = subprocess.run(
        [sys.executable, str(HARNESS), f"-atheris_runs={RUNS}", "-seed=1"],
        cwd=tmp_path,  # where libFuzzer would write a crash-* input
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = result.stderr[-4000:]
    assert result.returncode == 0, f"the fuzzer found a breach:\n{tail}"
    assert f"Done {RUNS} " in result.stderr, tail
    assert not list(tmp_path.iterdir()), "libFuzzer wrote an artifact"
